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

    /// Runs apply and returns the exit code.
    public static func execute(_ cmd: Apply, console: Console, runner: ProcessRunner = SystemProcessRunner()) -> Int32 {
        let started = Date()
        let cacheSetting: CacheSetting?
        switch cmd.cache.setting(registry: cmd.registry.options()) {
        case .success(let s): cacheSetting = s
        case .failure(let e):
            console.err("error: \(e.message)")
            return ExitStatus.failure
        }
        guard var planned = Planning.build(cmd.options, selection: cmd.selection, python: cmd.runtime.python, console: console, cache: cacheSetting) else { return ExitStatus.failure }
        if cacheSetting != nil, !cmd.dryRun, CacheProbe.needsVersions(planned) {
            // The fingerprint names the runtime's versions: learn them (one worker's hello, remembered) so the
            // lookups ask for the tags the builds will push.
            guard CacheProbe.learnVersions(cmd, console: console, runner: runner),
                  let again = Planning.build(cmd.options, selection: cmd.selection, python: cmd.runtime.python, console: console, cache: cacheSetting)
            else { return ExitStatus.failure }
            planned = again
        }
        let (plan, diagnostics, selected) = (planned.plan, planned.diagnostics, planned.manifests)
        console.report(diagnostics)
        if let blocked = plan.entries.first(where: { $0.cache?.blocksApply == true }), let cache = blocked.cache, !cmd.dryRun {
            console.err("error: the cache \(cache.repository) could not be reached and --cache-required is set: \(cache.unreachable ?? "")")
            return ExitStatus.failure
        }
        if cmd.dryRun {
            console.out(cmd.options.json ? PlanRenderer.json(plan) : PlanRenderer.text(plan, color: console.colorOut, relativeTo: FileManager.default.currentDirectoryPath))
            return ExitStatus.success
        }
        let manifests = Dictionary(selected.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var outcomes: [ExportOutcome] = plan.entries.filter { $0.action == .upToDate }.map {
            ExportOutcome(name: $0.name, action: .upToDate, status: .upToDate, seconds: 0, bundle: $0.bundle, record: nil, diagnostics: [])
        }
        let served = Dictionary(plan.entries.compactMap { e in e.verifiedEnvelope.map { (e.name, $0) } }, uniquingKeysWith: { a, _ in a })
        let items = plan.entries.filter { $0.action != .upToDate }.compactMap { e -> ExportItem? in
            guard let m = manifests[e.name], let fp = planned.fingerprints[m.name] else { return nil }
            // The exporter replaces the versions with those of the worker that does the export.
            return ExportItem(entry: e, locations: m.locations, hardware: m.target.hardware, fingerprint: fp)
        }
        let root = cmd.options.resolvedOutputRoot
        let owners = OutputOwners.owners(plan, manifests: manifests, root: root)
        let removals = plan.orphans.filter { $0.action == .remove }
        let known = OutputState.read(root: root)
        var probe = known
        OutputOwners.claim(&probe, bundles: plan.entries.filter { $0.action == .upToDate }.map(\.bundle), owners: owners, root: root)
        let untracked = probe != known
        let needsLock = !items.isEmpty || !removals.isEmpty || untracked
        if !needsLock, !((try? FileManager.default.contentsOfDirectory(atPath: BundleStore(root: root).stagingRoot.path)) ?? []).isEmpty,
           let lock = try? OutputRootLock(root: root, timeout: 0) {
            // Nothing else to do, but a killed run left staging (a prune's moved files): removed while nobody holds the lock.
            let leftovers = lock.removeLeftoverStaging()
            lock.release()
            if !leftovers.isEmpty { console.err("tsexport: removed \(leftovers.count) staging folder(s) left by an interrupted run") }
        }
        var pruned = PruneResult()
        if needsLock {
            // The state file, the prune and every install happen under the output root's lock.
            let lock: OutputRootLock
            do {
                lock = try OutputRootLock(root: root, timeout: cmd.lockTimeout)
            } catch {
                console.err("error: \(error)")
                return ExitStatus.failure
            }
            let leftovers = lock.removeLeftoverStaging()
            if !leftovers.isEmpty { console.err("tsexport: removed \(leftovers.count) staging folder(s) left by an interrupted run") }
            Interrupts.install(lock: lock, console: console)
            defer {
                Interrupts.uninstall()
                lock.release()
            }
            if !items.isEmpty {
                // Python starts only now: the manifests are valid and something needs doing.
                guard let rt = cmd.runtime.resolve(console: console) else { return ExitStatus.failure }
                let jobs = cmd.jobs ?? ApplyRunner.defaultJobs(work: items.count)
                let progress = Progress.make(console: console)
                defer { (progress as? LiveProgress)?.close() }
                let applyRunner = ApplyRunner(python: rt.python, runner: runner, root: root, progress: progress, report: { console.report($0) })
                applyRunner.registry = cmd.registry.options()
                do {
                    outcomes += try applyRunner.run(items, jobs: jobs, keepGoing: cmd.keepGoing)
                } catch {
                    switch error {
                    case .missing(let missing, _): console.err("error: " + missingPackagesMessage(rt, missing: missing))
                    case .failed(let e):
                        console.err("error: \(e)")
                        if let c = e as? WorkerCrash, !c.stderrTail.isEmpty { console.err(String(c.stderrTail.suffix(1500))) }
                    }
                    return ExitStatus.failure
                }
            }
            var state = OutputState.read(root: root)
            let before = state
            OutputOwners.claim(&state, bundles: outcomes.filter { $0.status == .ok || $0.status == .upToDate }.map(\.bundle), owners: owners, root: root)
            if state != before {
                do { try state.write(root: root) } catch { console.err("error: the output root's state cannot be written: \(error)") }
            }
            if !removals.isEmpty {
                // The orphans are planned again from the state as it is under the lock, so a bundle that another
                // manifest made fresh since the plan is not touched; only paths both plans name go.
                let again = Planning.observer(cmd.options, selection: cmd.selection, python: cmd.runtime.python).orphans(loaded: planned.loaded).0
                let confirmed = OutputOwners.confirmed(shown: removals, again: again)
                pruned = Pruner(root: root).prune(confirmed, state: &state)
                for note in pruned.kept { console.err("tsexport: \(note)") }
                for note in pruned.failed { console.err("error: \(note)") }
                for r in pruned.removed { console.err("tsexport: removed \(r.name) (\(r.paths.count) path(s)): \(r.reason)") }
            }
        }
        let order = Dictionary(plan.entries.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
        outcomes.sort { (order[$0.name] ?? 0) < (order[$1.name] ?? 0) }
        let wall = Date().timeIntervalSince(started)
        if cmd.options.json {
            var report = ApplyReport.json(outcomes, wall: wall)
            report["removed"] = pruned.removed.map { ["name": $0.name, "bundle": $0.bundle, "paths": $0.paths, "reason": $0.reason] as [String: Any] }
            report["prune_failed"] = pruned.failed
            console.printJSON(report)
        } else {
            let removedPaths = pruned.removed.reduce(0) { $0 + $1.paths.count }
            console.out(ApplyReport.table(outcomes, served: served, wall: wall, base: FileManager.default.currentDirectoryPath)
                        + (removals.isEmpty ? "" : "\nPruned: \(removedPaths) path(s) of \(pruned.removed.count) orphan(s) removed"
                           + (pruned.failed.isEmpty ? "." : ", \(pruned.failed.count) could not be removed.")))
        }
        let failed = outcomes.contains { $0.status == .failed || $0.status == .notRun } || !pruned.failed.isEmpty
        return failed ? ExitStatus.failure : ExitStatus.success
    }
}

/// The runtime's versions, which every fingerprint names, learned before a cache lookup when `RuntimeCache` does not
/// know them yet (a fresh CI runner): one worker's hello, stored for the next run.
enum CacheProbe {
    static func needsVersions(_ planned: Planning.Result) -> Bool {
        planned.plan.entries.contains { CachePlanner.concerns($0) && !CachePlanner.versionsKnown(planned.fingerprints[$0.name]?.versions ?? [:]) }
    }

    static func learnVersions(_ cmd: Apply, console: Console, runner: ProcessRunner) -> Bool {
        guard let (rt, worker) = cmd.runtime.startWorker(console: console, runner: runner, needs: ["torch", "transformers"]) else { return false }
        RuntimeCache().store(python: rt.python, hello: worker.hello)
        worker.shutdown()
        return true
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
