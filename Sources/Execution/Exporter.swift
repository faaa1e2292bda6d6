import Bundles
import Diagnostics
import Foundation
import JSON
import Manifest
import Plan
import Registry

/// What happened to one manifest during apply.
public struct ExportOutcome: Sendable {
    /// How it ended.
    public enum Status: String, Sendable {
        case ok, failed
        case notRun = "not run"
        case upToDate = "up to date"
    }
    /// The manifest's name.
    public var name: String
    /// create / rebuild / up-to-date.
    public var action: PlanAction
    /// How it ended.
    public var status: Status
    /// Wall time in seconds.
    public var seconds: Double
    /// The bundle folder.
    public var bundle: String
    /// The record written (nil unless ok).
    public var record: JSONValue?
    /// Errors and warnings, positioned in the manifest where they come from it.
    public var diagnostics: [Diagnostic]
    /// With `--cache`: `pulled` (served from the cache), `pushed`, or `push failed`.
    public var cache: String?

    /// Creates an outcome.
    public init(name: String, action: PlanAction, status: Status, seconds: Double, bundle: String, record: JSONValue?, diagnostics: [Diagnostic]) {
        self.name = name
        self.action = action
        self.status = status
        self.seconds = seconds
        self.bundle = bundle
        self.record = record
        self.diagnostics = diagnostics
    }
}

/// Runs plan entries on one slot's workers: sends each step's request, judges the verification with the envelope
/// rules, writes the record and installs the bundle and its deploys atomically.
public final class Exporter: @unchecked Sendable {
    let store: BundleStore
    let progress: ProgressSink
    let workers: WorkerPair
    let registry: RegistryOptions

    /// Creates an exporter; nothing starts until `start()`.
    public init(python: String, runner: ProcessRunner, outputRoot: URL, progress: ProgressSink, registry: RegistryOptions = RegistryOptions()) {
        self.registry = registry
        self.store = BundleStore(root: outputRoot)
        self.progress = progress
        self.workers = WorkerPair(python: python, runner: runner, progress: progress)
    }

    /// Starts the exporting worker, or only the verifying one when every manifest of the slot comes from the cache.
    public func start(cachedOnly: Bool = false) throws -> WorkerHello {
        cachedOnly ? try workers.startVerifierOnly() : try workers.start()
    }

    /// Stops both workers.
    public func stop() { workers.stop() }

    /// Runs one plan entry. Never throws: every failure becomes diagnostics on the outcome, and staging is removed.
    ///
    /// With `isLast`, the exporting worker is sent away as soon as the trace is saved: verification and deploys run
    /// in the verifying worker.
    public func export(_ item: ExportItem, isLast: Bool = false) -> ExportOutcome {
        if item.entry.action == .redeploy { return redeploy(item) }
        let entry = item.entry, locations = item.locations
        let started = Date()
        var outcome = ExportOutcome(name: entry.name, action: entry.action, status: .failed, seconds: 0, bundle: entry.bundle, record: nil, diagnostics: [])
        if entry.cache?.status == .cached {
            switch fromCache(item, started: started) {
            case .installed(let o): return o
            case .refused(let warning): outcome.diagnostics.append(warning)
            }
        }
        let nameAt = locations.location(of: "metadata.name")
        let staging: URL
        do {
            // The staging folder the plan's export request names.
            let planned = entry.step(.trace)?.request?["job"]?["staging_dir"]?.stringValue
            staging = try planned.map { try store.makeStaging(at: URL(fileURLWithPath: $0)) } ?? store.makeStaging(name: entry.name)
        } catch {
            outcome.diagnostics.append(.error("\(entry.name): cannot create a staging folder in \(store.stagingRoot.path): \(error.localizedDescription)", at: nameAt))
            outcome.seconds = Date().timeIntervalSince(started)
            return outcome
        }
        var deployments: [StagedDeploy] = []
        do {
            defer { for d in deployments { try? FileManager.default.removeItem(at: d.staging) } }
            var run = EntryRun(entry: entry, locations: locations, fingerprint: item.fingerprint, staging: staging,
                               workers: workers, store: store, progress: progress)
            let record = try run.execute(isLast: isLast, deployments: &deployments)
            outcome.diagnostics += run.warnings
            try publish(staging, entry: entry, locations: locations)
            if let step = entry.step(.push) {
                let (result, warning) = try pushToCache(staging, step: step, entry: entry, locations: locations)
                outcome.cache = result
                if let warning { outcome.diagnostics.append(warning) }
            }
            try store.install(staging, at: URL(fileURLWithPath: entry.bundle))
            for d in deployments { try install(d) }
            outcome.status = .ok
            outcome.record = record
        } catch let f as WorkerFailure {
            store.discard(staging)
            outcome.diagnostics.append(Self.diagnostic(for: f, name: entry.name, locations))
        } catch let c as WorkerCrash {
            store.discard(staging)
            workers.recoverFromCrash()
            let tail = c.stderrTail.split(separator: "\n").suffix(5).joined(separator: "\n")
            outcome.diagnostics.append(.error("\(entry.name): \(c.description)" + (tail.isEmpty ? "" : "; the worker's last words:\n\(tail)"),
                                              at: nameAt, field: "metadata.name"))
        } catch let d as Diagnostic {
            store.discard(staging)
            outcome.diagnostics.append(d)
        } catch {
            store.discard(staging)
            outcome.diagnostics.append(.error("\(entry.name): \(error)", at: nameAt))
        }
        outcome.seconds = Date().timeIntervalSince(started)
        return outcome
    }

    /// Pushes the verified, recorded bundle (still in staging) for every `oci` deploy step: blobs and the manifest
    /// first, the plan's tags last, so a failed push leaves the registry's tags where they were and, like any failed
    /// deploy, installs nothing.
    func publish(_ staging: URL, entry: PlanEntry, locations: FieldLocations) throws {
        let deploys = entry.steps.filter { $0.kind == .deploy }
        for (index, step) in deploys.enumerated() where step.request?["op"]?.stringValue == "push" {
            guard let repository = step.request?["repository"]?.stringValue else { continue }
            let tags = (step.request?["tags"]?.arrayValue ?? []).compactMap(\.stringValue)
            progress.stage(entry.name, "push oci", seconds: nil)
            let start = Date()
            do {
                let ref = try Reference(parsing: repository)
                let pushed = try BundleTransfer(client: RegistryClient(options: registry)).push(bundle: staging, to: ref, tags: tags)
                try BuildFile.append("published", .object([("repository", .string(repository)), ("digest", .string(pushed.digest)),
                                                           ("tags", .array(tags.map { .string($0) }))]), bundle: staging)
            } catch {
                let field = "spec.output.deploy[\(index)].repository"
                throw Diagnostic.error("\(entry.name): push to \(repository) failed, nothing installed and no tag moved: \(error)",
                                       at: locations.location(of: field), field: field)
            }
            progress.stage(entry.name, "push oci", seconds: Date().timeIntervalSince(start))
        }
    }

    /// A worker error, placed at the manifest field it names (or the manifest's name).
    static func diagnostic(for f: WorkerFailure, name: String, _ locations: FieldLocations) -> Diagnostic {
        let field = f.field ?? "metadata.name"
        var message = "\(name): \(f.stage) failed: " + (f.field.map { "\($0): " } ?? "") + f.message
        if ProcessInfo.processInfo.environment["TSEXPORT_VERBOSE"] == "1", let d = f.detail { message += "\n\(d)" }
        return .error(message, at: locations.location(of: field), field: f.field)
    }

    /// Moves a staged deploy output into place: a Triton model folder is swapped in like a bundle; a .mar is one
    /// file, renamed over the old one.
    func install(_ d: StagedDeploy) throws {
        if d.kind == "triton" {
            try store.install(d.staging, at: d.destination)
            return
        }
        do {
            try store.installFile(d.staging.appendingPathComponent(d.destination.lastPathComponent), at: d.destination)
            try? FileManager.default.removeItem(at: d.staging)
        } catch {
            throw WorkerFailure(stage: "deploy", code: "deploy_failed", message: "\(error)", field: nil, detail: nil)
        }
    }
}

extension Exporter {
    /// Makes drifted deploys again from the installed bundle (the worker's deploy checks model.pt against the
    /// record), installs them, and records their files in the bundle's build.json.
    func redeploy(_ item: ExportItem) -> ExportOutcome {
        let entry = item.entry, started = Date()
        var outcome = ExportOutcome(name: entry.name, action: entry.action, status: .failed, seconds: 0, bundle: entry.bundle, record: nil, diagnostics: [])
        var staged: [StagedDeploy] = []
        defer { for d in staged { try? FileManager.default.removeItem(at: d.staging) } }
        do {
            var files: [DeployedFiles] = []
            for step in entry.steps where step.kind == .deploy {
                guard let request = step.request?.objectValue, let kind = step.request?["kind"]?.stringValue,
                      let dest = step.request?["dest"]?.stringValue, let install = step.install else { continue }
                let destination = URL(fileURLWithPath: install)
                let d = StagedDeploy(kind: kind, staging: try store.makeStaging(at: URL(fileURLWithPath: dest)), destination: destination)
                staged.append(d)
                progress.stage(entry.name, "deploy \(kind)", seconds: nil)
                let t = Date()
                _ = try workers.verifier().request("deploy", request.filter { $0.0 != "op" })
                progress.stage(entry.name, "deploy \(kind)", seconds: Date().timeIntervalSince(t))
                files.append(try EntryRun.stagedFiles(d, root: store.root))
            }
            for d in staged { try install(d) }
            try BuildInfo.replaceDeployments(files, bundle: URL(fileURLWithPath: entry.bundle))
            outcome.status = .ok
        } catch let f as WorkerFailure {
            outcome.diagnostics.append(Self.diagnostic(for: f, name: entry.name, item.locations))
        } catch {
            outcome.diagnostics.append(.error("\(entry.name): redeploy failed: \(error)", at: item.locations.location(of: "metadata.name")))
        }
        store.tidy()
        outcome.seconds = Date().timeIntervalSince(started)
        return outcome
    }
}

/// A deploy output assembled in staging, and where it goes.
struct StagedDeploy {
    var kind: String
    var staging: URL
    /// For triton: the model folder `<repository>/<name>`; for torchserve: `<store>/<name>.mar`.
    var destination: URL
}
