import Bundles
import Diagnostics
import Foundation
import Manifest
import Plan
import Registry

/// One plan entry to run, with where its manifest's fields were written (for positioned diagnostics).
public struct ExportItem: Sendable {
    /// The plan entry: its steps carry the requests that are sent.
    public var entry: PlanEntry
    /// The manifest's field positions.
    public var locations: FieldLocations
    /// The hardware target, checked against the worker's hello before anything loads.
    public var hardware: String
    /// Its fingerprint inputs (the running worker's versions complete it only where the plan did not know them).
    public var fingerprint: FingerprintInputs

    /// Creates an item.
    public init(entry: PlanEntry, locations: FieldLocations, hardware: String, fingerprint: FingerprintInputs) {
        self.entry = entry
        self.locations = locations
        self.hardware = hardware
        self.fingerprint = fingerprint
    }
}

/// Runs exports on `jobs` warm workers in parallel; fail-fast unless told to keep going.
public final class ApplyRunner: @unchecked Sendable {
    let python: String
    let runner: ProcessRunner
    let root: URL
    let progress: ProgressSink
    let report: @Sendable ([Diagnostic]) -> Void
    /// How `oci` deploys reach their registries.
    public var registry = RegistryOptions()

    /// Creates a runner.
    public init(python: String, runner: ProcessRunner, root: URL, progress: ProgressSink,
                report: @escaping @Sendable ([Diagnostic]) -> Void) {
        self.python = python
        self.runner = runner
        self.root = root
        self.progress = progress
        self.report = report
    }

    /// A sensible default for `--jobs`: the cores, the memory (a BERT-base export peaks near 0.8 GB, so one job per
    /// free GB), and the work, whichever is smallest.
    public static func defaultJobs(work: Int) -> Int {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        var gb = cores
        if let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
           let line = text.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }),
           let kb = Int(line.split(separator: " ").dropFirst().first ?? "") {
            gb = max(1, kb / (1024 * 1024))
        }
        return max(1, min(cores, gb, work))
    }

    /// Why the runtime cannot run anything (missing packages), checked on the first worker's hello.
    public enum StartProblem: Error {
        case missing([String], WorkerHello)
        case failed(Error)
    }

    /// Exports every item; returns their outcomes in item order. `start` is called with the first worker's hello
    /// before any export, so the caller can refuse a runtime that lacks torch.
    public func run(_ items: [ExportItem], jobs: Int, keepGoing: Bool) throws(StartProblem) -> [ExportOutcome] {
        let slots = max(1, min(jobs, items.count))
        let first = Exporter(python: python, runner: runner, outputRoot: root, progress: progress, registry: registry)
        // Manifests served from the cache load no model: when all are, no exporting worker starts.
        let cachedOnly = items.allSatisfy { $0.entry.cache?.status == .cached }
        let hello: WorkerHello
        do { hello = try first.start(cachedOnly: cachedOnly) } catch {
            first.stop()
            throw .failed(error)
        }
        if !hello.missing.isEmpty {
            first.stop()
            throw .missing(hello.missing, hello)
        }
        RuntimeCache().store(python: python, hello: hello)
        var exporters = [first]
        for _ in 1..<slots { exporters.append(Exporter(python: python, runner: runner, outputRoot: root, progress: progress, registry: registry)) }

        let state = SharedQueue(count: items.count)
        let group = DispatchGroup()
        for exporter in exporters {
            group.enter()
            Thread.detachNewThread { [self] in
                defer { group.leave() }
                if exporter !== first {
                    do { _ = try exporter.start(cachedOnly: cachedOnly) } catch {
                        progress.message("a parallel worker could not start: \(error)")
                        return
                    }
                }
                while let (index, anyFailed) = state.take() {
                    let skip = anyFailed && !keepGoing
                    let item = items[index]
                    let name = item.entry.name
                    var outcome: ExportOutcome
                    if skip {
                        outcome = ExportOutcome(name: name, action: item.entry.action, status: .notRun, seconds: 0, bundle: item.entry.bundle, record: nil, diagnostics: [])
                    } else if let (index, why) = Self.unavailableDeploy(item.entry, hello: hello) {
                        // Known from the worker's hello, before any model is loaded.
                        let field = "spec.output.deploy[\(index)]"
                        let d = Diagnostic.error("\(name): \(why)", at: item.locations.location(of: field), field: field)
                        outcome = ExportOutcome(name: name, action: item.entry.action, status: .failed, seconds: 0, bundle: item.entry.bundle, record: nil, diagnostics: [d])
                    } else if let why = Planner.unavailableTarget(item.hardware, unavailable: hello.targets.compactMapValues { $0 }) {
                        let d = Diagnostic.error("\(name): \(why)",
                                                 at: item.locations.location(of: "spec.target.hardware"), field: "spec.target.hardware")
                        outcome = ExportOutcome(name: name, action: item.entry.action, status: .failed, seconds: 0, bundle: item.entry.bundle, record: nil, diagnostics: [d])
                    } else {
                        progress.stage(name, "start", seconds: nil)
                        outcome = exporter.export(item, isLast: state.isDrained)
                        let done = outcome.status == .ok ? (item.entry.action == .create ? "created" : "rebuilt") + (outcome.cache == "pulled" ? " from the cache" : "") : outcome.status.rawValue
                        progress.finished(name, status: done, seconds: outcome.seconds)
                    }
                    report(outcome.diagnostics)
                    state.put(index, outcome)
                }
                exporter.stop()
            }
        }
        group.wait()
        return state.outcomes.enumerated().map { i, o in
            o ?? ExportOutcome(name: items[i].entry.name, action: items[i].entry.action, status: .notRun, seconds: 0, bundle: items[i].entry.bundle, record: nil, diagnostics: [])
        }
    }
}

extension ApplyRunner {
    /// The first deploy of the entry that the runtime cannot do (`hello.deploy.<kind>.available` false), with the
    /// worker's reason; nil when every one can run.
    static func unavailableDeploy(_ entry: PlanEntry, hello: WorkerHello) -> (Int, String)? {
        let deploys = entry.steps.filter { $0.kind == .deploy }
        for (i, step) in deploys.enumerated() {
            guard let kind = step.request?["kind"]?.stringValue, let status = hello.raw["deploy"]?[kind] else { continue }
            if status["available"] == .bool(false) {
                return (i, status["reason"]?.stringValue ?? "deploy kind \(kind) is not available in this runtime")
            }
        }
        return nil
    }
}

/// The work queue and results shared by the job threads.
private final class SharedQueue: @unchecked Sendable {
    private let lock = NSLock()
    private var next = 0
    private var failed = false
    private let count: Int
    private(set) var outcomes: [ExportOutcome?]

    init(count: Int) {
        self.count = count
        outcomes = Array(repeating: nil, count: count)
    }

    /// The next index to run and whether anything has failed so far; nil when all are taken.
    func take() -> (Int, Bool)? {
        lock.lock()
        defer { lock.unlock() }
        guard next < count else { return nil }
        next += 1
        return (next - 1, failed)
    }

    /// Whether every item has been taken (the caller's current one was the last for its slot).
    var isDrained: Bool {
        lock.lock()
        defer { lock.unlock() }
        return next >= count
    }

    func put(_ index: Int, _ outcome: ExportOutcome) {
        lock.lock()
        defer { lock.unlock() }
        outcomes[index] = outcome
        if outcome.status == .failed { failed = true }
    }
}
