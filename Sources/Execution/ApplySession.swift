import Bundles
import Diagnostics
import Foundation
import Manifest
import Plan
import Registry

/// `tsexport apply` as one library call. It observes and plans (learning the runtime's versions first when a shared
/// cache needs them), stops before Python on a refusal, and when something is to be done takes the output root's
/// lock and plans again under it: that plan is the one acted on. Under the lock it removes leftover staging, runs
/// the exports, records the owners in `.tsexport/state.json` and prunes; the outcomes come back in plan order with
/// whether the apply succeeded. The caller renders.
public struct ApplySession {
    /// What the flags ask for.
    public struct Options: Sendable {
        /// The output root.
        public var outputRoot: URL
        /// `--dry-run`: plan only.
        public var dryRun = false
        /// `--keep-going`.
        public var keepGoing = false
        /// `--jobs` (nil: `ApplyRunner.defaultJobs`).
        public var jobs: Int?
        /// `--lock-timeout`, seconds.
        public var lockTimeout: Double = 0
        /// How `oci` deploys reach their registries.
        public var registry = RegistryOptions()

        public init(outputRoot: URL) { self.outputRoot = outputRoot }
    }

    /// A line for the user while the session runs.
    public enum Message: Equatable, Sendable {
        /// What tsexport did on its own (`tsexport: ...`).
        case note(String)
        /// Why something failed (`error: ...`).
        case error(String)
        /// Text that follows an error as it is (a worker's stderr).
        case detail(String)
    }

    /// Where the session reads the manifests and the runtime, and where it reports while it runs.
    public struct Environment {
        /// Observes and plans; called before the lock, and again under it.
        public var observe: (PlanObserver.Annotate?) -> Result<PlanObserver.Observation, InvalidManifests>
        /// The orphans as the root's state is now, for the loaded manifests.
        public var orphans: ([Manifest]) -> [PlanOrphan]
        /// The shared cache's lookups (nil: no cache).
        public var annotate: PlanObserver.Annotate?
        /// The Python runtime; called only when a worker must start.
        public var runtime: () throws -> PythonRuntime
        /// Starts the workers.
        public var runner: ProcessRunner
        /// The exports' progress; made when the exports start.
        public var progress: () -> ProgressSink
        /// Diagnostics: validation warnings, then each outcome's.
        public var report: @Sendable ([Diagnostic]) -> Void
        /// Lines for the user.
        public var message: @Sendable (Message) -> Void
        /// Called once the lock is held; returns what to call before it is released (the CLI's signal handlers).
        public var locked: (OutputRootLock) -> () -> Void = { _ in {} }

        public init(observe: @escaping (PlanObserver.Annotate?) -> Result<PlanObserver.Observation, InvalidManifests>,
                    orphans: @escaping ([Manifest]) -> [PlanOrphan], annotate: PlanObserver.Annotate?,
                    runtime: @escaping () throws -> PythonRuntime, runner: ProcessRunner, progress: @escaping () -> ProgressSink,
                    report: @escaping @Sendable ([Diagnostic]) -> Void, message: @escaping @Sendable (Message) -> Void) {
            self.observe = observe
            self.orphans = orphans
            self.annotate = annotate
            self.runtime = runtime
            self.runner = runner
            self.progress = progress
            self.report = report
            self.message = message
        }

        /// The observer's stages, the runtime `--python` (else `TSEXPORT_PYTHON`, else the managed one) names.
        public init(observer: PlanObserver, annotate: PlanObserver.Annotate?, runner: ProcessRunner, progress: @escaping () -> ProgressSink,
                    report: @escaping @Sendable ([Diagnostic]) -> Void, message: @escaping @Sendable (Message) -> Void) {
            let python = observer.request.python
            self.init(observe: { observer.observe(annotate: $0) }, orphans: { observer.orphans(loaded: $0).0 }, annotate: annotate,
                      runtime: { try RuntimeResolver(progress: { message(.note($0)) }).resolve(flag: python) },
                      runner: runner, progress: progress, report: report, message: message)
        }
    }

    /// What apply did.
    public struct Summary {
        /// The plan acted on (made under the lock when anything was done).
        public var plan: Plan
        /// One outcome per plan entry, in plan order.
        public var outcomes: [ExportOutcome]
        /// What each up-to-date bundle serves, from the plan's reading of its record.
        public var served: [String: [VerifiedAxis]]
        /// What the prune removed, kept and could not remove.
        public var pruned: PruneResult
        /// The plan removed orphans (`--prune` found some).
        public var pruneAsked: Bool
        /// Seconds from the start.
        public var wall: Double
        /// Every entry ended ok or up to date and every orphan to remove went.
        public var succeeded: Bool
    }

    /// How apply ended.
    public enum Ending {
        /// The manifests, the selection or a config key are wrong: nothing started.
        case invalid(InvalidManifests)
        /// Stopped on an error already told through `message`.
        case stopped
        /// `--dry-run`: the plan.
        case planned(PlanObserver.Observation)
        /// Applied (possibly with failed entries: see `succeeded`).
        case applied(Summary)
    }

    public let options: Options
    public let environment: Environment

    public init(options: Options, environment: Environment) {
        self.options = options
        self.environment = environment
    }

    /// Runs apply.
    public func run() -> Ending {
        let started = Date()
        let env = environment
        let root = options.outputRoot
        var first: PlanObserver.Observation
        switch env.observe(env.annotate) {
        case .failure(let invalid): return .invalid(invalid)
        case .success(let o): first = o
        }
        if env.annotate != nil, !options.dryRun, Self.needsVersions(first) {
            // The fingerprint names the runtime's versions: learn them (one worker's hello, remembered) so the
            // lookups ask for the tags the builds will push.
            guard learnVersions() else { return .stopped }
            switch env.observe(env.annotate) {
            case .failure(let invalid): return .invalid(invalid)
            case .success(let o): first = o
            }
        }
        env.report(first.diagnostics)
        if !options.dryRun, let why = Self.cacheBlocker(first.plan) {
            env.message(.error(why))
            return .stopped
        }
        if options.dryRun { return .planned(first) }

        let work = ApplyWork(first, root: root, state: OutputState.read(root: root))
        let staging = (try? FileManager.default.contentsOfDirectory(atPath: BundleStore(root: root).stagingRoot.path)) ?? []
        switch work.lockUse(stagingLeftovers: !staging.isEmpty) {
        case .none:
            return .applied(summary(first.plan, work: work, outcomes: work.upToDate, pruned: PruneResult(), started: started))
        case .tidyStaging:
            // Nothing else to do, but a killed run left staging (a prune's moved files): removed while nobody holds
            // the lock.
            if let lock = try? OutputRootLock(root: root, timeout: 0) {
                let leftovers = lock.removeLeftoverStaging()
                lock.release()
                if !leftovers.isEmpty { env.message(.note("removed \(leftovers.count) staging folder(s) left by an interrupted run")) }
            }
            return .applied(summary(first.plan, work: work, outcomes: work.upToDate, pruned: PruneResult(), started: started))
        case .hold:
            break
        }

        // The state file, the prune and every install happen under the output root's lock.
        let lock: OutputRootLock
        do {
            lock = try OutputRootLock(root: root, timeout: options.lockTimeout)
        } catch {
            env.message(.error("\(error)"))
            return .stopped
        }
        let leftovers = lock.removeLeftoverStaging()
        if !leftovers.isEmpty { env.message(.note("removed \(leftovers.count) staging folder(s) left by an interrupted run")) }
        let unlocked = env.locked(lock)
        defer {
            unlocked()
            lock.release()
        }
        // The plan acted on is made while holding the lock: another apply that finished while this one waited has
        // changed the bundles, their records and the state.
        let planned: PlanObserver.Observation
        switch env.observe(env.annotate) {
        case .failure(let invalid): return .invalid(invalid)
        case .success(let o): planned = o
        }
        env.report(planned.diagnostics.filter { !first.diagnostics.contains($0) })
        if let why = Self.cacheBlocker(planned.plan) {
            env.message(.error(why))
            return .stopped
        }
        let acted = ApplyWork(planned, root: root, state: OutputState.read(root: root))
        var outcomes = acted.upToDate
        if !acted.items.isEmpty {
            // Python starts only now: the manifests are valid and something needs doing.
            guard let exported = export(acted.items) else { return .stopped }
            outcomes += exported
        }
        var state = OutputState.read(root: root)
        let before = state
        OutputOwners.claim(&state, bundles: outcomes.filter { $0.status == .ok || $0.status == .upToDate }.map(\.bundle), owners: acted.owners, root: root)
        if state != before {
            do { try state.write(root: root) } catch { env.message(.error("the output root's state cannot be written: \(error)")) }
        }
        var pruned = PruneResult()
        if !acted.removals.isEmpty {
            // The orphans are planned again from the state as it is now, after this apply's owners were written, so
            // a bundle that a manifest owns now is not touched; only paths both plans name go.
            let confirmed = OutputOwners.confirmed(shown: acted.removals, again: env.orphans(planned.loaded))
            pruned = Pruner(root: root).prune(confirmed, state: &state)
            for note in pruned.kept { env.message(.note(note)) }
            for note in pruned.failed { env.message(.error(note)) }
            for r in pruned.removed { env.message(.note("removed \(r.name) (\(r.paths.count) path(s)): \(r.reason)")) }
        }
        return .applied(summary(planned.plan, work: acted, outcomes: outcomes, pruned: pruned, started: started))
    }

    func summary(_ plan: Plan, work: ApplyWork, outcomes: [ExportOutcome], pruned: PruneResult, started: Date) -> Summary {
        let ordered = Self.ordered(outcomes, plan: plan)
        let served = Dictionary(plan.entries.compactMap { e in e.verifiedEnvelope.map { (e.name, $0) } }, uniquingKeysWith: { a, _ in a })
        return Summary(plan: plan, outcomes: ordered, served: served, pruned: pruned, pruneAsked: !work.removals.isEmpty,
                       wall: Date().timeIntervalSince(started), succeeded: Self.succeeded(ordered, pruned: pruned))
    }

    /// Runs the exports on warm workers; nil (after telling why) when the runtime cannot run them.
    func export(_ items: [ExportItem]) -> [ExportOutcome]? {
        let env = environment
        let rt: PythonRuntime
        do { rt = try env.runtime() } catch {
            env.message(.error("\(error)"))
            return nil
        }
        let progress = env.progress()
        defer { (progress as? LiveProgress)?.close() }
        let runner = ApplyRunner(python: rt.python, runner: env.runner, root: options.outputRoot, progress: progress, report: env.report)
        runner.registry = options.registry
        do {
            return try runner.run(items, jobs: options.jobs ?? ApplyRunner.defaultJobs(work: items.count), keepGoing: options.keepGoing)
        } catch {
            switch error {
            case .missing(let missing, _): env.message(.error(rt.missingPackagesMessage(missing)))
            case .failed(let e):
                env.message(.error("\(e)"))
                if let c = e as? WorkerCrash, !c.stderrTail.isEmpty { env.message(.detail(String(c.stderrTail.suffix(1500)))) }
            }
            return nil
        }
    }

    /// One worker's hello, remembered by `RuntimeCache`, for a runtime whose versions are not known yet.
    func learnVersions() -> Bool {
        let env = environment
        let rt: PythonRuntime
        do { rt = try env.runtime() } catch {
            env.message(.error("\(error)"))
            return false
        }
        guard let worker = rt.startWorker(runner: env.runner, needs: ["torch", "transformers"], message: env.message) else { return false }
        defer { worker.shutdown() }
        RuntimeCache().store(python: rt.python, hello: worker.hello)
        return true
    }
}

extension ApplySession {
    /// Whether an entry the cache concerns has a fingerprint whose runtime versions are not known yet.
    public static func needsVersions(_ observation: PlanObserver.Observation) -> Bool {
        observation.plan.entries.contains { CachePlanner.concerns($0) && !CachePlanner.versionsKnown(observation.fingerprints[$0.name]?.versions ?? [:]) }
    }

    /// Why the plan stops apply before anything starts: an unreachable cache under `--cache-required`.
    public static func cacheBlocker(_ plan: Plan) -> String? {
        guard let blocked = plan.entries.first(where: { $0.cache?.blocksApply == true }), let cache = blocked.cache else { return nil }
        return "the cache \(cache.repository) could not be reached and --cache-required is set: \(cache.unreachable ?? "")"
    }

    /// The outcomes in the plan's order of entries.
    public static func ordered(_ outcomes: [ExportOutcome], plan: Plan) -> [ExportOutcome] {
        let order = Dictionary(plan.entries.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
        return outcomes.enumerated().sorted { a, b in
            let (x, y) = (order[a.element.name] ?? Int.max, order[b.element.name] ?? Int.max)
            return x != y ? x < y : a.offset < b.offset
        }.map(\.element)
    }

    /// Apply succeeded when no entry failed or was left unrun and nothing the prune should remove stayed.
    public static func succeeded(_ outcomes: [ExportOutcome], pruned: PruneResult) -> Bool {
        !outcomes.contains { $0.status == .failed || $0.status == .notRun } && pruned.failed.isEmpty
    }
}

/// What a plan asks apply to do, read against the output root's state.
public struct ApplyWork {
    /// The entries to run (create, rebuild, redeploy), with their manifests' positions and fingerprints.
    public var items: [ExportItem]
    /// An outcome for each up-to-date entry.
    public var upToDate: [ExportOutcome]
    /// The orphans the plan removes.
    public var removals: [PlanOrphan]
    /// Who owns each planned bundle, for the state file.
    public var owners: [String: OutputState.Owner]
    /// An up-to-date bundle the state does not record with its owner yet.
    public var untracked: Bool

    /// How apply uses the output root's lock.
    public enum LockUse: Equatable, Sendable {
        /// Nothing to do and nothing left behind.
        case none
        /// Nothing to do but a killed run's staging: removed if the lock is free at once.
        case tidyStaging
        /// Exports, a prune or owners to record: everything under the lock, waiting for it.
        case hold
    }

    /// Reads `observation`'s plan against `state`.
    public init(_ observation: PlanObserver.Observation, root: URL, state: OutputState) {
        let plan = observation.plan
        let manifests = Dictionary(observation.manifests.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        upToDate = plan.entries.filter { $0.action == .upToDate }.map {
            ExportOutcome(name: $0.name, action: .upToDate, status: .upToDate, seconds: 0, bundle: $0.bundle, record: nil, diagnostics: [])
        }
        items = plan.entries.filter { $0.action != .upToDate }.compactMap { e -> ExportItem? in
            guard let m = manifests[e.name], let fp = observation.fingerprints[m.name] else { return nil }
            // The exporter replaces the versions with those of the worker that does the export.
            return ExportItem(entry: e, locations: m.locations, hardware: m.target.hardware, fingerprint: fp)
        }
        owners = OutputOwners.owners(plan, manifests: manifests, root: root)
        removals = plan.orphans.filter { $0.action == .remove }
        var probe = state
        OutputOwners.claim(&probe, bundles: upToDate.map(\.bundle), owners: owners, root: root)
        untracked = probe != state
    }

    /// Whether apply takes the lock (and waits for it), only tidies leftover staging, or leaves the root alone.
    public func lockUse(stagingLeftovers: Bool) -> LockUse {
        if !items.isEmpty || !removals.isEmpty || untracked { return .hold }
        return stagingLeftovers ? .tidyStaging : .none
    }
}

extension PythonRuntime {
    /// The error for a runtime that lacks torch or transformers: what is missing and the command that fixes it.
    public func missingPackagesMessage(_ missing: [String]) -> String {
        "the Python runtime \(python) (chosen by \(origin.rawValue)) cannot import \(missing.joined(separator: ", ")); "
            + "install the pinned versions with: \(python) -m pip install -r \(WorkerResources.requirements.path)"
    }
}
