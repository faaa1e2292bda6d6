import ArgumentParser
import Bundles
import Diagnostics
import Execution
import Foundation
import Manifest
import Plan

/// `tsexport apply PATH...`
public struct Apply: ParsableCommand {
    public static let configuration = CommandConfiguration(abstract: "Plan, then trace, serialize, verify and deploy each manifest that needs it.")
    @OptionGroup public var options: ManifestOptions
    @OptionGroup public var selection: SelectionOptions
    @OptionGroup public var runtime: RuntimeOptions
    @OptionGroup public var registry: RegistryFlags
    @OptionGroup public var cache: CacheFlags
    @Flag(name: .customLong("dry-run"), help: "Only show the plan.")
    public var dryRun = false
    @Flag(name: .customLong("keep-going"), help: "After a failed manifest, go on with the others (default: stop starting new ones).")
    public var keepGoing = false
    @Option(name: .customLong("jobs"), help: "Warm workers exporting in parallel (default: from the cores and free memory).")
    public var jobs: Int?
    @Option(name: .customLong("lock-timeout"), help: "Seconds to wait for another apply on the same output root (default 0: fail at once).")
    public var lockTimeout: Double = 0
    public init() {}

    public func run() throws {
        let code = Apply.execute(self, console: .standard)
        if code != 0 { throw ExitCode(code) }
    }

    /// Runs apply and returns the exit code: flags → `ApplySession` → the rendered plan or summary.
    public static func execute(_ cmd: Apply, console: Console, runner: ProcessRunner = SystemProcessRunner()) -> Int32 {
        let cacheSetting: CacheSetting?
        switch cmd.cache.setting(registry: cmd.registry.options()) {
        case .success(let s): cacheSetting = s
        case .failure(let e):
            console.err("error: \(e.message)")
            return ExitStatus.failure
        }
        guard !cmd.options.paths.isEmpty else {
            console.err("error: name at least one manifest file or folder")
            return ExitStatus.failure
        }
        var options = ApplySession.Options(outputRoot: cmd.options.resolvedOutputRoot)
        options.dryRun = cmd.dryRun
        options.keepGoing = cmd.keepGoing
        options.jobs = cmd.jobs
        options.lockTimeout = cmd.lockTimeout
        options.registry = cmd.registry.options()
        var environment = ApplySession.Environment(
            observer: Planning.observer(cmd.options, selection: cmd.selection, python: cmd.runtime.python),
            annotate: cacheSetting.map(Planning.annotate), runner: runner, progress: { Progress.make(console: console) },
            report: { console.report($0) }, message: { Apply.show($0, console: console) })
        environment.locked = { lock in
            Interrupts.install(lock: lock, console: console)
            return { Interrupts.uninstall() }
        }
        switch ApplySession(options: options, environment: environment).run() {
        case .invalid(let invalid):
            Planning.show(invalid, json: cmd.options.json, console: console)
            return ExitStatus.failure
        case .stopped:
            return ExitStatus.failure
        case .planned(let planned):
            let plan = planned.plan
            console.out(cmd.options.json ? PlanRenderer.json(plan) : PlanRenderer.text(plan, color: console.colorOut, relativeTo: FileManager.default.currentDirectoryPath))
            return ExitStatus.success
        case .applied(let done):
            let pruned = done.pruned
            if cmd.options.json {
                var report = ApplyReport.json(done.outcomes, wall: done.wall)
                report["removed"] = pruned.removed.map { ["name": $0.name, "bundle": $0.bundle, "paths": $0.paths, "reason": $0.reason] as [String: Any] }
                report["prune_failed"] = pruned.failed
                console.printJSON(report)
            } else {
                let removedPaths = pruned.removed.reduce(0) { $0 + $1.paths.count }
                console.out(ApplyReport.table(done.outcomes, served: done.served, wall: done.wall, base: FileManager.default.currentDirectoryPath)
                            + (!done.pruneAsked ? "" : "\nPruned: \(removedPaths) path(s) of \(pruned.removed.count) orphan(s) removed"
                               + (pruned.failed.isEmpty ? "." : ", \(pruned.failed.count) could not be removed.")))
            }
            return done.succeeded ? ExitStatus.success : ExitStatus.failure
        }
    }

    /// A line the session tells while it runs, on stderr.
    static func show(_ message: ApplySession.Message, console: Console) {
        switch message {
        case .note(let text): console.err("tsexport: \(text)")
        case .error(let text): console.err("error: \(text)")
        case .detail(let text): console.err(text)
        }
    }
}

/// The end-of-apply summary.
enum ApplyReport {
    /// One row per manifest; ENVELOPE is what the bundle on disk serves (verified), from the new record or, for an
    /// up-to-date bundle, from `served` (the plan's reading of its record).
    static func table(_ outcomes: [ExportOutcome], served: [String: [VerifiedAxis]] = [:], wall: Double, base: String) -> String {
        var rows = [["NAME", "ACTION", "RESULT", "TIME", "MAX ABS ERR", "ENVELOPE", "BUNDLE"]]
        for o in outcomes {
            var err = "-"
            if let cases = o.record?["parity"]?["cases"]?.arrayValue {
                let worst = cases.compactMap { $0["max_abs_error"]?.doubleValue }.max() ?? 0
                err = String(format: "%.1e", worst)
            }
            let bundle = o.bundle.hasPrefix(base + "/") ? String(o.bundle.dropFirst(base.count + 1)) : o.bundle
            let axes = o.record.map { VerifiedAxis.read(record: $0) } ?? served[o.name] ?? []
            let envelope = o.status == .ok || o.status == .upToDate ? VerifiedAxis.summary(axes) : ""
            // An up-to-date manifest has no action: its RESULT says so once.
            let action = o.action == .upToDate ? "-" : o.action.rawValue
            let result = o.status.rawValue + (o.cache.map { o.status == .ok ? " (\($0))" : "" } ?? "")
            rows.append([o.name, action, result, o.seconds > 0 ? String(format: "%.1fs", o.seconds) : "-", err,
                         envelope.isEmpty ? "-" : envelope, bundle])
        }
        let widths = (0..<rows[0].count).map { i in rows.map { $0[i].count }.max() ?? 0 }
        var lines = rows.map { r in r.enumerated().map { i, c in i == r.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }.joined(separator: "  ") }
        let count = { (s: ExportOutcome.Status) in outcomes.filter { $0.status == s }.count }
        let created = outcomes.filter { $0.status == .ok && $0.action == .create }.count
        let rebuilt = outcomes.filter { $0.status == .ok && $0.action == .rebuild }.count
        let redeployed = outcomes.filter { $0.status == .ok && $0.action == .redeploy }.count
        lines.append("Apply: \(created) created, \(rebuilt) rebuilt, " + (redeployed > 0 ? "\(redeployed) redeployed, " : "") + "\(count(.upToDate)) up to date, \(count(.failed)) failed, \(count(.notRun)) not run in \(String(format: "%.1f", wall)) s.")
        return lines.joined(separator: "\n")
    }

    static func json(_ outcomes: [ExportOutcome], wall: Double) -> [String: Any] {
        [
            "wall_seconds": wall,
            "manifests": outcomes.map { o -> [String: Any] in
                var d: [String: Any] = ["name": o.name, "action": o.action.rawValue, "status": o.status.rawValue, "seconds": o.seconds, "bundle": o.bundle,
                                        "diagnostics": DiagnosticPrinter.json(o.diagnostics)]
                if let r = o.record, let obj = try? JSONSerialization.jsonObject(with: Data(r.serialized(pretty: false).utf8)) { d["record"] = obj }
                if let c = o.cache { d["cache"] = c }
                return d
            },
        ]
    }
}

/// Live lines on a terminal, plain lines in CI or when stderr is redirected.
enum Progress {
    static func make(console: Console) -> ProgressSink {
        let env = ProcessInfo.processInfo.environment
        if console.isStandard, isatty(2) == 1, env["CI"] == nil, env["TERM"] != "dumb" {
            return LiveProgress(write: { FileHandle.standardError.write(Data($0.utf8)) })
        }
        return PlainProgress(write: { console.err($0) })
    }
}
