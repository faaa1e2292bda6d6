import Bundles
import Diagnostics
import Execution
import Foundation
import JSON
import Manifest
import Plan
import TestSupport
import XCTest

/// `ApplySession` without Python: what needs the lock, that the plan acted on is made under it, leftover staging,
/// the outcomes' order and success. Workers are the scripted `StubProcessRunner`; the runtime is a stub path that
/// is never executed.
final class ApplySessionTests: XCTestCase {
    let python = "/stub/bin/python3"
    var dir: URL!
    var root: URL!
    var file: URL!
    var oldCache: String?

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("tsexport-session-\(UUID().uuidString.prefix(8))")
        root = dir.appendingPathComponent("out")
        file = dir.appendingPathComponent("models.yaml")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        // ApplyRunner remembers the runtime's hello; keep that out of the user's cache.
        oldCache = ProcessInfo.processInfo.environment["TSEXPORT_CACHE_DIR"]
        setenv("TSEXPORT_CACHE_DIR", dir.appendingPathComponent("cache").path, 1)
    }

    override func tearDownWithError() throws {
        if let oldCache { setenv("TSEXPORT_CACHE_DIR", oldCache, 1) } else { unsetenv("TSEXPORT_CACHE_DIR") }
        try? FileManager.default.removeItem(at: dir)
    }

    func write(_ names: [String], hidden: Int = 32) throws {
        let config = "{vocab_size: 100, hidden_size: \(hidden), num_attention_heads: 4}"
        let text = TinyBertManifest.stream(names.map { TinyBertManifest.text($0, config: config) })
        try text.write(to: file, atomically: true, encoding: .utf8)
    }

    var observer: PlanObserver {
        PlanObserver(PlanObserver.Request(paths: [file.path], validation: ValidationOptions(outputRoot: root), outputRoot: root,
                                          selection: ManifestSelection(), python: python))
    }

    /// Lines the session told, and diagnostics it reported.
    final class Told: @unchecked Sendable {
        private let lock = NSLock()
        private var _messages: [ApplySession.Message] = []
        private var _runtimeAsked = 0
        var messages: [ApplySession.Message] { lock.lock(); defer { lock.unlock() }; return _messages }
        var runtimeAsked: Int { lock.lock(); defer { lock.unlock() }; return _runtimeAsked }
        func add(_ m: ApplySession.Message) { lock.lock(); _messages.append(m); lock.unlock() }
        func askedRuntime() { lock.lock(); _runtimeAsked += 1; lock.unlock() }
    }

    /// An environment over `observe`, the stub runner and a runtime that is counted when asked for.
    func environment(observe: @escaping (PlanObserver.Annotate?) -> Result<PlanObserver.Observation, InvalidManifests>,
                     runner: StubProcessRunner, told: Told) -> ApplySession.Environment {
        let python = self.python
        let observer = self.observer
        return ApplySession.Environment(
            observe: observe, orphans: { observer.orphans(loaded: $0).0 }, annotate: nil,
            runtime: { told.askedRuntime(); return PythonRuntime(python: python, origin: .flag) },
            runner: runner, progress: { RecordingProgress() }, report: { _ in }, message: { told.add($0) })
    }

    /// Whether someone holds the output root's lock now (a second `flock` from this process is refused too).
    func lockIsHeld() -> Bool {
        guard let probe = try? OutputRootLock(root: root, timeout: 0) else { return true }
        probe.release()
        return false
    }

    func applied(_ ending: ApplySession.Ending, file: StaticString = #filePath, line: UInt = #line) throws -> ApplySession.Summary {
        guard case .applied(let summary) = ending else {
            XCTFail("expected an applied ending, got \(ending)", file: file, line: line)
            throw XCTSkip("no summary")
        }
        return summary
    }

    // MARK: - the plan acted on is made under the lock

    func testThePlanActedOnIsMadeUnderTheLock() throws {
        try write(["a"], hidden: 32)
        let observer = self.observer
        var held: [Bool] = []
        var plans: [Plan] = []
        let told = Told()
        let runner = StubProcessRunner()
        var env = environment(observe: { [self] annotate in
            held.append(lockIsHeld())
            let o = observer.observe(annotate: annotate)
            if case .success(let observed) = o { plans.append(observed.plan) }
            return o
        }, runner: runner, told: told)
        // While this apply waited for the lock, the manifest changed: the export must follow the plan made now.
        env.locked = { [self] _ in
            try? write(["a"], hidden: 64)
            return {}
        }
        let summary = try applied(ApplySession(options: ApplySession.Options(outputRoot: root), environment: env).run())

        XCTAssertEqual(held, [false, true], "planned once to decide, once more holding the lock")
        XCTAssertEqual(plans.count, 2)
        XCTAssertNotEqual(plans[0].entries[0].fingerprint, plans[1].entries[0].fingerprint)
        XCTAssertEqual(summary.plan, plans[1], "the summary's plan is the one acted on")
        let exported = try XCTUnwrap(runner.requests.first { $0.op == "export" })
        XCTAssertEqual(exported.request["job"]?["model"]?["config"]?["hidden_size"], 64)
        // The executor fills in only the running worker's versions (and the fingerprint over them) in the record.
        XCTAssertEqual(OrchestrationTests.withoutRecordRuntime(OrchestrationTests.withoutID(exported.request)),
                       OrchestrationTests.withoutRecordRuntime(try XCTUnwrap(plans[1].entries[0].step(.trace)?.request)),
                       "the request sent is the under-lock plan's")
        XCTAssertEqual(summary.outcomes.map(\.status), [.ok])
        XCTAssertTrue(summary.succeeded)
        XCTAssertEqual(told.runtimeAsked, 1)
        XCTAssertFalse(lockIsHeld(), "released at the end")
        let state = OutputState.read(root: root)
        XCTAssertEqual(state.bundles["build/a"]?.name, "a", "the owner is recorded under the lock")
    }

    func testABusyRootStopsBeforePythonWithTheHolder() throws {
        try write(["a"])
        let other = try OutputRootLock(root: root, timeout: 0)
        defer { other.release() }
        let told = Told()
        let observer = self.observer
        var observed = 0
        let env = environment(observe: { observed += 1; return observer.observe(annotate: $0) }, runner: StubProcessRunner(), told: told)
        guard case .stopped = ApplySession(options: ApplySession.Options(outputRoot: root), environment: env).run() else {
            return XCTFail("a locked root must stop the apply")
        }
        XCTAssertEqual(observed, 1, "no plan under a lock never held")
        XCTAssertEqual(told.runtimeAsked, 0, "no Python")
        guard case .error(let text) = try XCTUnwrap(told.messages.last) else { return XCTFail("\(told.messages)") }
        XCTAssertTrue(text.hasPrefix("the output root \(root.path) is locked by tsexport pid \(getpid()), running since "), text)
        XCTAssertTrue(text.contains("--lock-timeout"), text)
    }

    func testInvalidManifestsAndDryRunTouchNothing() throws {
        try "apiVersion: tsexport/v1\nkind: Export\nmetadata: {name: a}\nspec: {model: {}}\n".write(to: file, atomically: true, encoding: .utf8)
        let told = Told()
        let observer = self.observer
        let env = environment(observe: { observer.observe(annotate: $0) }, runner: StubProcessRunner(), told: told)
        guard case .invalid(let invalid) = ApplySession(options: ApplySession.Options(outputRoot: root), environment: env).run() else {
            return XCTFail("an invalid manifest must end the session")
        }
        XCTAssertTrue(invalid.diagnostics.contains { $0.severity == .error && $0.location?.file == file.path }, "\(invalid.diagnostics)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: root.path), "nothing written under the output root")

        try write(["a", "b"])
        var options = ApplySession.Options(outputRoot: root)
        options.dryRun = true
        guard case .planned(let planned) = ApplySession(options: options, environment: env).run() else { return XCTFail("dry run") }
        XCTAssertEqual(planned.plan.entries.map(\.action), [.create, .create])
        XCTAssertFalse(FileManager.default.fileExists(atPath: root.appendingPathComponent(".tsexport/state.json").path))
        XCTAssertEqual(told.runtimeAsked, 0)
        XCTAssertEqual(told.messages, [])
    }

    func testFailedEntriesFailTheApplyInPlanOrderAndOnlyOkOnesAreOwned() throws {
        try write(["a", "b", "c"])
        let told = Told()
        let observer = self.observer
        let bad = StubProcessRunner.ScriptedError(stage: "load", code: "bad_config", message: "no such activation", field: "spec.model.config")
        let runner = StubProcessRunner(script: .init(exportErrors: ["b": bad]))
        var options = ApplySession.Options(outputRoot: root)
        options.keepGoing = true
        options.jobs = 2
        let env = environment(observe: { observer.observe(annotate: $0) }, runner: runner, told: told)
        let summary = try applied(ApplySession(options: options, environment: env).run())
        XCTAssertEqual(summary.outcomes.map(\.name), ["a", "b", "c"])
        XCTAssertEqual(summary.outcomes.map(\.status), [.ok, .failed, .ok])
        XCTAssertFalse(summary.succeeded)
        XCTAssertEqual(OutputState.read(root: root).bundles.keys.sorted(), ["build/a", "build/c"])
        XCTAssertEqual((try? FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent(".tsexport/staging").path)) ?? [], [])
    }

    // MARK: - nothing to do

    /// A plan with every entry up to date (records that match the fingerprints), observed without a disk.
    func upToDate(_ names: [String]) throws -> PlanObserver.Observation {
        try write(names)
        let (manifests, diagnostics) = ManifestLoader(options: ValidationOptions(outputRoot: root)).load(
            bytes: try Data(contentsOf: file), file: file.path, directory: dir)
        XCTAssertEqual(diagnostics.filter { $0.severity == .error }, [])
        var fingerprints: [String: FingerprintInputs] = [:]
        var existing: [String: RecordSummary] = [:]
        for m in manifests {
            let fp = FingerprintInputs(manifest: FingerprintInputs.normalise(m.document), files: [:],
                                       versions: ["worker": WorkerInfo.version].merging(Planner.policyInputs(m)) { _, p in p })
            fingerprints[m.name] = fp
            existing[m.name] = RecordSummary(fingerprint: fp.fingerprint, manifest: fp.manifest, inputFiles: fp.files, versions: fp.versions, modelSHA256: nil)
        }
        let plan = Planner().plan(PlannerInput(manifests: manifests, outputRoot: root, fingerprints: fingerprints, existing: existing,
                                               unavailableTargets: nil, force: false, replace: []))
        XCTAssertEqual(plan.entries.map(\.action), names.map { _ in .upToDate })
        return PlanObserver.Observation(plan: plan, diagnostics: diagnostics, manifests: manifests, loaded: manifests, fingerprints: fingerprints)
    }

    func testUpToDateAndTrackedNeedsNoLockAndNoPython() throws {
        let observation = try upToDate(["a", "b"])
        let work = ApplyWork(observation, root: root, state: OutputState())
        XCTAssertEqual(work.items.count, 0)
        XCTAssertEqual(work.upToDate.map(\.name), ["a", "b"])
        XCTAssertTrue(work.untracked, "an empty state does not record the owners yet")
        XCTAssertEqual(work.lockUse(stagingLeftovers: false), .hold)
        var state = OutputState()
        OutputOwners.claim(&state, bundles: work.upToDate.map(\.bundle), owners: work.owners, root: root)
        XCTAssertEqual(state.bundles.keys.sorted(), ["build/a", "build/b"])
        let tracked = ApplyWork(observation, root: root, state: state)
        XCTAssertFalse(tracked.untracked)
        XCTAssertEqual(tracked.lockUse(stagingLeftovers: false), .none)
        XCTAssertEqual(tracked.lockUse(stagingLeftovers: true), .tidyStaging)

        // With the state written, the session neither waits for a held lock nor asks for Python.
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        try state.write(root: root)
        let other = try OutputRootLock(root: root, timeout: 0)
        let told = Told()
        var observed = 0
        let env = environment(observe: { _ in observed += 1; return .success(observation) }, runner: StubProcessRunner(), told: told)
        let summary = try applied(ApplySession(options: ApplySession.Options(outputRoot: root), environment: env).run())
        other.release()
        XCTAssertEqual(observed, 1)
        XCTAssertEqual(summary.outcomes.map(\.status), [.upToDate, .upToDate])
        XCTAssertTrue(summary.succeeded)
        XCTAssertEqual(told.runtimeAsked, 0)
        XCTAssertEqual(told.messages, [])
    }

    func testLeftoverStagingIsRemovedOnlyWhenTheLockIsFree() throws {
        let observation = try upToDate(["a"])
        var state = OutputState()
        let work = ApplyWork(observation, root: root, state: state)
        OutputOwners.claim(&state, bundles: work.upToDate.map(\.bundle), owners: work.owners, root: root)
        let staging = root.appendingPathComponent(".tsexport/staging")
        try FileManager.default.createDirectory(at: staging.appendingPathComponent("a.staging"), withIntermediateDirectories: true)
        try state.write(root: root)
        let told = Told()
        let env = environment(observe: { _ in .success(observation) }, runner: StubProcessRunner(), told: told)
        let session = ApplySession(options: ApplySession.Options(outputRoot: root), environment: env)

        let other = try OutputRootLock(root: root, timeout: 0)
        _ = try applied(session.run())
        other.release()
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: staging.path), ["a.staging"], "another holder's staging is left alone")
        XCTAssertEqual(told.messages, [])

        XCTAssertTrue(try applied(session.run()).succeeded)
        XCTAssertEqual((try? FileManager.default.contentsOfDirectory(atPath: staging.path)) ?? [], [])
        XCTAssertEqual(told.messages, [.note("removed 1 staging folder(s) left by an interrupted run")])
        XCTAssertEqual(told.runtimeAsked, 0)
    }

    // MARK: - pure decisions

    func outcome(_ name: String, _ status: ExportOutcome.Status) -> ExportOutcome {
        ExportOutcome(name: name, action: status == .upToDate ? .upToDate : .create, status: status, seconds: 0, bundle: "/out/build/\(name)",
                      record: nil, diagnostics: [])
    }

    func testOutcomesInPlanOrderAndWhatFailsTheApply() throws {
        let plan = Plan(outputRoot: "/out", entries: ["x", "y", "z"].map {
            PlanEntry(name: $0, file: "m.yaml", line: 1, action: .create, reasons: [], bundle: "/out/build/\($0)", fingerprint: "sha256:0", steps: [])
        })
        let ordered = ApplySession.ordered([outcome("z", .ok), outcome("x", .upToDate), outcome("y", .failed)], plan: plan)
        XCTAssertEqual(ordered.map(\.name), ["x", "y", "z"])
        XCTAssertFalse(ApplySession.succeeded(ordered, pruned: PruneResult()))
        XCTAssertFalse(ApplySession.succeeded([outcome("x", .ok), outcome("y", .notRun)], pruned: PruneResult()), "an entry left unrun fails")
        XCTAssertTrue(ApplySession.succeeded([outcome("x", .ok), outcome("y", .upToDate)], pruned: PruneResult()))
        var pruned = PruneResult()
        pruned.kept = ["build/x/notes.txt: not written by tsexport"]
        XCTAssertTrue(ApplySession.succeeded([outcome("x", .ok)], pruned: pruned), "a path kept on purpose is no failure")
        pruned.failed = ["build/old: a symbolic link on the way"]
        XCTAssertFalse(ApplySession.succeeded([outcome("x", .ok)], pruned: pruned))
    }

    func testAnUnreachableRequiredCacheBlocksAndUnknownVersionsAreLearned() throws {
        try write(["a", "b"])
        guard case .success(var observation) = observer.observe() else { return XCTFail("the manifests are valid") }
        XCTAssertNil(ApplySession.cacheBlocker(observation.plan))
        XCTAssertTrue(ApplySession.needsVersions(observation), "the stub runtime's versions are not known: the fingerprints lack torch")
        CachePlanner.apply(&observation.plan, repository: "reg:5000/team/cache", required: false,
                           lookups: ["a": .unreachable("connection refused")], versionsKnown: ["a"])
        XCTAssertNil(ApplySession.cacheBlocker(observation.plan), "without --cache-required an unreachable cache is a warning")
        CachePlanner.apply(&observation.plan, repository: "reg:5000/team/cache", required: true,
                           lookups: ["a": .unreachable("connection refused")], versionsKnown: ["a"])
        XCTAssertEqual(ApplySession.cacheBlocker(observation.plan),
                       "the cache reg:5000/team/cache could not be reached and --cache-required is set: connection refused")
    }
}
