import Bundles
import Diagnostics
import Execution
import Foundation
import JSON
import Manifest
import Plan
import XCTest

/// A progress sink that keeps what it was told.
final class RecordingProgress: ProgressSink, @unchecked Sendable {
    private let lock = NSLock()
    private var _messages: [String] = []
    private var _finished: [(String, String)] = []
    var messages: [String] { lock.lock(); defer { lock.unlock() }; return _messages }
    var finished: [(String, String)] { lock.lock(); defer { lock.unlock() }; return _finished }
    func message(_ text: String) { lock.lock(); _messages.append(text); lock.unlock() }
    func stage(_ manifest: String, _ stage: String, seconds: Double?) {}
    func finished(_ manifest: String, status: String, seconds: Double) { lock.lock(); _finished.append((manifest, status)); lock.unlock() }
}

/// The orchestration of apply without Python: the real `ApplyRunner` and `Exporter` over a scripted in-memory
/// process runner (`StubProcessRunner`): fail-fast, --keep-going, a worker that dies, an interrupt that kills the
/// workers, what is installed and what is left, and that the requests sent are the plan's.
final class OrchestrationTests: XCTestCase {
    /// A manifest planned and ready to run, with the text it was loaded from.
    struct Fixture {
        var dir: URL
        var root: URL
        var file: URL
        var text: String
        var manifests: [Manifest]
        var plan: Plan
        var items: [ExportItem]

        func item(_ name: String) -> ExportItem { items.first { $0.entry.name == name }! }
        var stagingRoot: URL { root.appendingPathComponent(".tsexport/staging") }

        /// 1-based line and column of the `n`th (0-based) occurrence of `needle` in the text, at `needle`'s value
        /// (the text after `key: `) when `value` is true.
        func position(of needle: String, occurrence n: Int, value: Bool = true) -> SourceLocation {
            let lines = text.components(separatedBy: "\n")
            var seen = 0
            for (i, line) in lines.enumerated() {
                guard let r = line.range(of: needle) else { continue }
                if seen == n {
                    var col = line.distance(from: line.startIndex, to: r.lowerBound) + 1
                    if value { col += needle.count }
                    return SourceLocation(file: file.path, line: i + 1, column: col)
                }
                seen += 1
            }
            return SourceLocation(file: file.path, line: 0, column: 0)
        }
    }

    let python = "/stub/bin/python3"
    var cacheDir: URL?
    var oldCache: String?

    override func setUpWithError() throws {
        // ApplyRunner remembers the runtime's hello; keep that out of the user's cache.
        oldCache = ProcessInfo.processInfo.environment["TSEXPORT_CACHE_DIR"]
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("tsexport-orch-cache-\(UUID().uuidString.prefix(8))")
        cacheDir = d
        setenv("TSEXPORT_CACHE_DIR", d.path, 1)
    }

    override func tearDownWithError() throws {
        if let oldCache { setenv("TSEXPORT_CACHE_DIR", oldCache, 1) } else { unsetenv("TSEXPORT_CACHE_DIR") }
        if let cacheDir { try? FileManager.default.removeItem(at: cacheDir) }
    }

    static func manifestText(_ name: String) -> String {
        """
        apiVersion: tsexport/v1
        kind: Export
        metadata: {name: \(name)}
        spec:
          model:
            class: BertModel
            config:
              vocab_size: 100
              hidden_size: 32
              num_attention_heads: 4
              hidden_act: gelu
          inputs:
            tensors:
              - {name: input_ids, from: random, shape: [1, 4]}

        """
    }

    /// `versions`: the runtime's versions the plan knows (none: a runtime never seen).
    func fixture(_ names: [String], extra: String = "", versions: [String: String] = [:]) throws -> Fixture {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tsexport-orch-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let root = dir.appendingPathComponent("out")
        let file = dir.appendingPathComponent("models.yaml")
        let text = names.map { Self.manifestText($0) + extra }.joined(separator: "---\n")
        try text.write(to: file, atomically: true, encoding: .utf8)
        let (manifests, diagnostics) = ManifestLoader(options: ValidationOptions(outputRoot: root)).load(bytes: Data(text.utf8), file: file.path, directory: dir)
        XCTAssertEqual(diagnostics.filter { $0.severity == .error }, [], "test manifests must be valid")
        XCTAssertEqual(manifests.map(\.name), names)
        var fingerprints: [String: FingerprintInputs] = [:]
        for m in manifests {
            fingerprints[m.name] = FingerprintInputs(manifest: FingerprintInputs.normalise(m.document), files: [:], versions: versions.merging(["worker": WorkerInfo.version]) { a, _ in a })
        }
        let plan = Planner().plan(PlannerInput(manifests: manifests, outputRoot: root, fingerprints: fingerprints))
        XCTAssertEqual(plan.entries.map(\.action), names.map { _ in PlanAction.create })
        let items = plan.entries.map { e in
            let m = manifests.first { $0.name == e.name }!
            return ExportItem(entry: e, locations: m.locations, hardware: m.target.hardware, fingerprint: fingerprints[e.name]!)
        }
        return Fixture(dir: dir, root: root, file: file, text: text, manifests: manifests, plan: plan, items: items)
    }

    final class Reported: @unchecked Sendable {
        private let lock = NSLock()
        private var _all: [Diagnostic] = []
        var all: [Diagnostic] { lock.lock(); defer { lock.unlock() }; return _all }
        func add(_ d: [Diagnostic]) { lock.lock(); _all += d; lock.unlock() }
    }

    func run(_ f: Fixture, _ runner: StubProcessRunner, jobs: Int = 1, keepGoing: Bool) throws -> (outcomes: [ExportOutcome], progress: RecordingProgress, reported: [Diagnostic]) {
        let progress = RecordingProgress()
        let reported = Reported()
        let apply = ApplyRunner(python: python, runner: runner, root: f.root, progress: progress, report: { reported.add($0) })
        let outcomes = try apply.run(f.items, jobs: jobs, keepGoing: keepGoing)
        return (outcomes, progress, reported.all)
    }

    /// Every child the runner started has ended (told to shut down, end of input, or killed) and was waited for,
    /// and nothing blocked on a child that would never answer.
    func assertEveryChildEnded(_ runner: StubProcessRunner, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(runner.children.isEmpty, file: file, line: line)
        for c in runner.children {
            XCTAssertNotNil(c.exitStatus, "child \(c.index) still running (ops \(c.ops))", file: file, line: line)
            XCTAssertTrue(c.ops.contains("shutdown") || c.inputClosed || c.signals.contains(SIGKILL) || c.exitStatus.map { $0 > 128 } == true,
                          "child \(c.index) neither told to shut down nor killed (ops \(c.ops))", file: file, line: line)
            XCTAssertTrue(c.reaped, "child \(c.index) was never waited for", file: file, line: line)
            XCTAssertEqual(c.hangs, [], "child \(c.index)", file: file, line: line)
            XCTAssertEqual(c.argv, WorkerClient.argv(python: python), file: file, line: line)
        }
    }

    func assertNoStagingLeft(_ f: Fixture, file: StaticString = #filePath, line: UInt = #line) {
        let left = (try? FileManager.default.contentsOfDirectory(atPath: f.stagingRoot.path)) ?? []
        XCTAssertEqual(left, [], "staging folders left under \(f.stagingRoot.path)", file: file, line: line)
    }

    /// The bundle of an ok outcome: the four files and build.json, a record.json naming the manifest with model.pt's hash.
    func assertInstalled(_ f: Fixture, _ o: ExportOutcome, narrowed: Bool = false, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(o.status, .ok, file: file, line: line)
        let bundle = URL(fileURLWithPath: o.bundle)
        XCTAssertEqual(o.bundle, f.item(o.name).entry.bundle, file: file, line: line)
        XCTAssertTrue(bundle.path.hasPrefix(f.root.path + "/"), file: file, line: line)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: bundle.path).sorted(),
                       ["build.json", "model.pt", "record.json", "reference_outputs.safetensors", "sample_inputs.safetensors"], file: file, line: line)
        let record = try JSONValue(parsing: try Data(contentsOf: bundle.appendingPathComponent("record.json")))
        XCTAssertEqual(record["name"], .string(o.name), file: file, line: line)
        XCTAssertEqual(record["model_sha256"], .string(try Digest.sha256(file: bundle.appendingPathComponent("model.pt").path)), file: file, line: line)
        XCTAssertEqual(record["envelope"]?["narrowed"], .bool(narrowed), file: file, line: line)
        XCTAssertEqual(record["versions"]?["torch"], "2.5.1", file: file, line: line)
        XCTAssertEqual(o.record, record, "the outcome carries the record written", file: file, line: line)
    }

    func assertNotInstalled(_ o: ExportOutcome, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(FileManager.default.fileExists(atPath: o.bundle), "\(o.name) has no bundle", file: file, line: line)
        XCTAssertNil(o.record, file: file, line: line)
    }

    static let badActivation = StubProcessRunner.ScriptedError(
        stage: "load", code: "bad_config", message: "hidden_act 'gelu' is not a known activation (ACT2FN)", field: "spec.model.config.hidden_act")

    // MARK: - 1. fail-fast

    func testFailFastStopsAtTheFirstFailureAndNeverSendsTheRest() throws {
        let f = try fixture(["first", "second", "third"])
        let runner = StubProcessRunner(script: .init(exportErrors: ["second": Self.badActivation]))
        let (outcomes, progress, reported) = try run(f, runner, keepGoing: false)

        XCTAssertEqual(outcomes.map(\.name), ["first", "second", "third"])
        XCTAssertEqual(outcomes.map(\.status), [.ok, .failed, .notRun])
        XCTAssertEqual(runner.requests.filter { $0.op == "export" }.map(\.name), ["first", "second"], "the third export is never sent")
        XCTAssertEqual(runner.requests.filter { $0.op == "verify_bundle" }.map(\.name), ["first"])

        let d = try XCTUnwrap(outcomes[1].diagnostics.first)
        XCTAssertEqual(outcomes[1].diagnostics.count, 1)
        XCTAssertEqual(d.severity, .error)
        XCTAssertEqual(d.message, "second: load failed: spec.model.config.hidden_act: hidden_act 'gelu' is not a known activation (ACT2FN)")
        XCTAssertEqual(d.field, "spec.model.config.hidden_act")
        // The second document's `hidden_act: gelu` line, at the value.
        XCTAssertEqual(d.location, f.position(of: "hidden_act: ", occurrence: 1))
        XCTAssertEqual(d.location, f.item("second").locations.location(of: "spec.model.config.hidden_act"))
        XCTAssertEqual(d.location?.line, 26)
        XCTAssertEqual(d.location?.column, 19)
        XCTAssertEqual(outcomes[0].diagnostics, [])
        XCTAssertEqual(outcomes[2].diagnostics, [])
        XCTAssertEqual(reported, [d], "the runner reports each outcome's diagnostics as it finishes")
        XCTAssertEqual(progress.finished.map { "\($0.0) \($0.1)" }, ["first created", "second failed"])

        // One exporting worker and one verifying worker; each told to shut down at the end.
        XCTAssertEqual(runner.children.count, 2)
        XCTAssertEqual(runner.children[0].opsBesidesGuard, ["export", "export", "shutdown"])
        XCTAssertEqual(runner.children[1].opsBesidesGuard, ["verify_bundle", "shutdown"])
        try assertInstalled(f, outcomes[0])
        assertNotInstalled(outcomes[1])
        assertNotInstalled(outcomes[2])
        assertNoStagingLeft(f)
        assertEveryChildEnded(runner)
    }

    // MARK: - 2. --keep-going

    func testKeepGoingRunsEveryManifestAfterAFailure() throws {
        let f = try fixture(["first", "second", "third"])
        let runner = StubProcessRunner(script: .init(exportErrors: ["second": Self.badActivation]))
        let (outcomes, progress, _) = try run(f, runner, keepGoing: true)

        XCTAssertEqual(outcomes.map(\.status), [.ok, .failed, .ok])
        XCTAssertEqual(runner.requests.filter { $0.op == "export" }.map(\.name), ["first", "second", "third"])
        XCTAssertEqual(runner.requests.filter { $0.op == "verify_bundle" }.map(\.name), ["first", "third"])
        XCTAssertEqual(outcomes[1].diagnostics.map(\.message), ["second: load failed: spec.model.config.hidden_act: hidden_act 'gelu' is not a known activation (ACT2FN)"])
        XCTAssertEqual(outcomes[1].diagnostics.first?.location, f.position(of: "hidden_act: ", occurrence: 1))
        XCTAssertEqual(progress.messages, [], "an error answer keeps the worker: no new worker is started")
        // The worker stays usable after an error answer; the last export sends it away early.
        XCTAssertEqual(runner.children.count, 2)
        XCTAssertEqual(runner.children[0].opsBesidesGuard, ["export", "export", "export", "shutdown"])
        XCTAssertEqual(runner.children[1].opsBesidesGuard, ["verify_bundle", "verify_bundle", "shutdown"])
        try assertInstalled(f, outcomes[0])
        try assertInstalled(f, outcomes[2])
        assertNotInstalled(outcomes[1])
        assertNoStagingLeft(f)
        assertEveryChildEnded(runner)
    }

    // MARK: - 3. a dying worker

    func testWorkerDyingMidExportIsReportedWithItsSignalAndReplacedWithKeepGoing() throws {
        let f = try fixture(["first", "second", "third"])
        let runner = StubProcessRunner(script: .init(dieDuringExport: ["second": SIGKILL]))
        let (outcomes, progress, _) = try run(f, runner, keepGoing: true)

        XCTAssertEqual(outcomes.map(\.status), [.ok, .failed, .ok])
        let d = try XCTUnwrap(outcomes[1].diagnostics.first)
        XCTAssertEqual(outcomes[1].diagnostics.count, 1)
        XCTAssertEqual(d.message, "second: the Python worker died during export (killed by signal 9 (SIGKILL)); the worker's last words:\nstub worker 0 ended with status 137")
        XCTAssertEqual(d.field, "metadata.name")
        XCTAssertEqual(d.location, f.position(of: "metadata: {name: ", occurrence: 1))
        XCTAssertEqual(progress.messages, ["starting a new Python worker"])

        // Three children: the first exporter (died), the verifier, and the exporter started for the third.
        let children = runner.children
        XCTAssertEqual(children.count, 3)
        XCTAssertEqual(children[0].opsBesidesGuard, ["export", "export"])
        XCTAssertEqual(children[0].exitStatus, 128 + SIGKILL)
        XCTAssertEqual(children[1].opsBesidesGuard, ["verify_bundle", "verify_bundle", "shutdown"])
        XCTAssertEqual(children[2].opsBesidesGuard, ["export", "shutdown"])
        XCTAssertEqual(runner.requests.filter { $0.op == "export" }.map { "\($0.name!)@\($0.child)" }, ["first@0", "second@0", "third@2"])
        try assertInstalled(f, outcomes[0])
        try assertInstalled(f, outcomes[2])
        assertNotInstalled(outcomes[1])
        assertNoStagingLeft(f)
        assertEveryChildEnded(runner)
    }

    func testWorkerDyingMidExportStopsTheRunWithoutKeepGoing() throws {
        let f = try fixture(["first", "second", "third"])
        let runner = StubProcessRunner(script: .init(dieDuringExport: ["second": SIGSEGV]))
        let (outcomes, progress, _) = try run(f, runner, keepGoing: false)

        XCTAssertEqual(outcomes.map(\.status), [.ok, .failed, .notRun])
        XCTAssertTrue(outcomes[1].diagnostics.first?.message.hasPrefix("second: the Python worker died during export (killed by signal 11 (SIGSEGV))") == true,
                      outcomes[1].diagnostics.description)
        XCTAssertEqual(progress.messages, [], "no worker is started for a manifest that does not run")
        XCTAssertEqual(runner.children.count, 2)
        XCTAssertEqual(runner.requests.filter { $0.op == "export" }.map(\.name), ["first", "second"])
        assertNoStagingLeft(f)
        assertEveryChildEnded(runner)
    }

    // MARK: - 4. what is installed, what is left

    func testOkBundlesAreInstalledAndNoStagingIsLeftWhateverFailed() throws {
        let f = try fixture(["good", "refused", "crashed", "mismatch", "last"])
        let runner = StubProcessRunner(script: .init(
            exportErrors: ["refused": Self.badActivation], dieDuringExport: ["crashed": SIGKILL], failVerifyCase: ["mismatch": "traced"]))
        let (outcomes, _, _) = try run(f, runner, keepGoing: true)

        XCTAssertEqual(outcomes.map(\.status), [.ok, .failed, .failed, .failed, .ok])
        let mismatch = try XCTUnwrap(outcomes[3].diagnostics.first)
        XCTAssertTrue(mismatch.message.hasPrefix("mismatch: verify failed: spec.trace.tolerance: the saved artifact does not match the eager model at the traced shape [1,4]: max abs error 0.5"), mismatch.message)
        XCTAssertEqual(mismatch.field, "spec.trace.tolerance")
        for o in outcomes where o.status == .ok { try assertInstalled(f, o) }
        for o in outcomes where o.status != .ok { assertNotInstalled(o) }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: f.root.appendingPathComponent("build").path).sorted(), ["good", "last"])
        assertNoStagingLeft(f)
        // The staged files of the failed exports were written (the stub wrote them) and removed again.
        XCTAssertTrue(runner.requests.contains { $0.op == "verify_bundle" && $0.name == "mismatch" })
        assertEveryChildEnded(runner)
    }

    // MARK: - 5. the requests sent are the plan's

    func testRequestsSentAreThePlanSteps() throws {
        let f = try fixture(["alpha", "beta"])
        let runner = StubProcessRunner()
        let (outcomes, _, _) = try run(f, runner, keepGoing: false)
        XCTAssertEqual(outcomes.map(\.status), [.ok, .ok])

        let hello = StubProcessRunner.defaultHello
        let versions: JSONValue = .object([
            ("tsexport", .string(ToolInfo.version)), ("worker", "2.0.0"),
            ("python", hello["python"]!), ("torch", hello["torch"]!), ("transformers", hello["transformers"]!),
        ])
        for item in f.items {
            let sent = runner.requests.filter { $0.name == item.entry.name && $0.op != "guard" }
            XCTAssertEqual(sent.map(\.op), ["export", "verify_bundle"], item.entry.name)
            guard sent.count == 2 else { continue }

            // export: the plan's trace request, with the running worker's versions and fingerprint in the record.
            var fp = item.fingerprint
            for k in ["python", "torch", "transformers"] { fp.versions[k] = hello[k]?.stringValue }
            let planned = try XCTUnwrap(item.entry.step(.trace)?.request)
            var job = try XCTUnwrap(planned["job"]?.objectValue)
            let i = try XCTUnwrap(job.firstIndex { $0.0 == "extra_record" })
            let extra = try XCTUnwrap(job[i].1.objectValue)
            job[i].1 = .object(extra.map { k, v in k == "fingerprint" ? (k, .string(fp.fingerprint)) : k == "versions" ? (k, versions) : (k, v) })
            let expectedExport = JSONValue.object([("op", "export"), ("job", .object(job))])
            let export = sent[0].request
            XCTAssertEqual(export["id"]?.intValue.map { $0 > 0 }, true)
            XCTAssertEqual(Self.withoutID(export), expectedExport, item.entry.name)
            // Only those two record fields differ from the plan (the plan was made without a probed runtime).
            XCTAssertEqual(Self.withoutRecordRuntime(Self.withoutID(export)), Self.withoutRecordRuntime(planned), item.entry.name)
            XCTAssertEqual(export["job"]?["extra_record"]?["versions"], versions)
            XCTAssertEqual(export["job"]?["staging_dir"], .string(f.stagingRoot.appendingPathComponent("\(item.entry.name).staging").path))
            XCTAssertEqual(export["job"]?["trace"]?["envelope"], item.entry.envelope?.json)

            // verify_bundle: exactly the plan's, sent to a process that traced nothing.
            let verify = sent[1].request
            XCTAssertEqual(Self.withoutID(verify), try XCTUnwrap(item.entry.step(.verify)?.request), item.entry.name)
            XCTAssertNotEqual(sent[0].child, sent[1].child)
            XCTAssertFalse(runner.children[sent[1].child].ops.contains("export"))

            // The record written holds the versions of the worker that exported.
            let record = try XCTUnwrap(outcomes.first { $0.name == item.entry.name }?.record)
            XCTAssertEqual(record["fingerprint"], .string(fp.fingerprint))
            XCTAssertEqual(record["versions"], versions)
        }
        // Ids count up per worker.
        for c in runner.children { XCTAssertEqual(c.received.compactMap { $0["id"]?.intValue }, Array(1...c.received.count)) }
        assertEveryChildEnded(runner)
    }

    static func withoutID(_ v: JSONValue) -> JSONValue { .object((v.objectValue ?? []).filter { $0.0 != "id" }) }

    static func withoutRecordRuntime(_ request: JSONValue) -> JSONValue {
        guard var o = request.objectValue, let j = o.firstIndex(where: { $0.0 == "job" }), var job = o[j].1.objectValue,
              let e = job.firstIndex(where: { $0.0 == "extra_record" }), let extra = job[e].1.objectValue
        else { return request }
        job[e].1 = .object(extra.filter { $0.0 != "fingerprint" && $0.0 != "versions" })
        o[j].1 = .object(job)
        return .object(o)
    }

    // MARK: - 6. interrupts

    /// What the interrupt handler does (`ChildRegistry.signalAll(SIGKILL)`), done to the stub children while an
    /// export is in flight: the blocked request ends as a crash, nothing else starts, every child is reaped and the
    /// staging folder goes.
    func testKillingEveryWorkerMidExportEndsTheRunAndEveryChild() throws {
        let f = try fixture(["first", "second", "third"])
        let runner = StubProcessRunner(script: .init(hangDuringExport: ["second"]))
        let progress = RecordingProgress()
        let apply = ApplyRunner(python: python, runner: runner, root: f.root, progress: progress, report: { _ in })
        final class Box: @unchecked Sendable { var outcomes: [ExportOutcome] = []; var error: Error? }
        let box = Box()
        let done = DispatchSemaphore(value: 0)
        let items = f.items
        Thread.detachNewThread {
            do { box.outcomes = try apply.run(items, jobs: 1, keepGoing: false) } catch { box.error = error }
            done.signal()
        }
        XCTAssertEqual(runner.hanging.wait(timeout: .now() + 10), .success, "the second export never started")
        // The second manifest is mid-export: its staging folder exists.
        XCTAssertTrue(FileManager.default.fileExists(atPath: f.stagingRoot.appendingPathComponent("second.staging").path))
        runner.signalAll(SIGKILL)
        XCTAssertEqual(done.wait(timeout: .now() + 10), .success, "run() did not return after its workers were killed")
        XCTAssertNil(box.error)

        XCTAssertEqual(box.outcomes.map(\.status), [.ok, .failed, .notRun])
        XCTAssertTrue(box.outcomes[1].diagnostics.first?.message.hasPrefix("second: the Python worker died during export (killed by signal 9 (SIGKILL))") == true,
                      box.outcomes[1].diagnostics.description)
        XCTAssertEqual(runner.children.count, 2, "no worker is started after the kill")
        for c in runner.children {
            XCTAssertEqual(c.exitStatus, 128 + SIGKILL, "child \(c.index)")
        }
        XCTAssertEqual(runner.requests.filter { $0.op == "export" }.map(\.name), ["first", "second"])
        try assertInstalled(f, box.outcomes[0])
        assertNotInstalled(box.outcomes[1])
        assertNoStagingLeft(f)
        assertEveryChildEnded(runner)
    }

    /// After a run, every child was told to shut down (and its input closed) or killed, and was reaped; the last
    /// export's worker is sent away as soon as its trace is saved, before verification.
    func testEveryChildIsShutDownAndReapedAfterARun() throws {
        let f = try fixture(["one", "two", "three"])
        let runner = StubProcessRunner()
        let (outcomes, _, _) = try run(f, runner, keepGoing: false)
        XCTAssertEqual(outcomes.map(\.status), [.ok, .ok, .ok])
        XCTAssertEqual(runner.children.count, 2)
        XCTAssertEqual(runner.children[0].opsBesidesGuard, ["export", "export", "export", "shutdown"])
        XCTAssertEqual(runner.children[1].opsBesidesGuard, ["verify_bundle", "verify_bundle", "verify_bundle", "shutdown"])
        let log = runner.requests.map { "\($0.op) \($0.name ?? "-")@\($0.child)" }
        XCTAssertEqual(log.firstIndex(of: "shutdown -@0").map { $0 < log.firstIndex(of: "verify_bundle three@1")! }, true,
                       "the exporter is retired before the last verification: \(log)")
        for c in runner.children {
            XCTAssertEqual(c.exitStatus, 0)
            XCTAssertTrue(c.inputClosed)
            XCTAssertEqual(c.signals, [])
        }
        assertEveryChildEnded(runner)
    }

    /// A runtime whose hello lacks torch is refused before anything is exported, and its worker is stopped.
    func testMissingTorchRefusesTheRunBeforeAnyExport() throws {
        let f = try fixture(["only"])
        var hello = StubProcessRunner.defaultHello.objectValue!
        hello = hello.map { k, v in k == "missing" ? (k, .array(["torch"])) : k == "torch" ? (k, .null) : (k, v) }
        let runner = StubProcessRunner(hello: .object(hello))
        let apply = ApplyRunner(python: python, runner: runner, root: f.root, progress: RecordingProgress(), report: { _ in })
        do {
            _ = try apply.run(f.items, jobs: 1, keepGoing: false)
            XCTFail("run() accepted a runtime without torch")
        } catch {
            guard case .missing(let missing, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(missing, ["torch"])
        }
        XCTAssertEqual(runner.requests.map(\.op), ["shutdown"])
        assertEveryChildEnded(runner)
    }

    /// A deploy the runtime cannot do (no torch-model-archiver, said in the hello) fails that manifest at its deploy
    /// entry before any model is loaded: its export request is never sent.
    func testADeployTheRuntimeLacksIsRefusedFromTheHelloBeforeLoading() throws {
        let f = try fixture(["served"], extra: "  output:\n    deploy: [{kind: directory}, {kind: torchserve, store: build/store}]\n")
        var hello = StubProcessRunner.defaultHello.objectValue!
        hello.append(("deploy", .object([
            ("triton", .object([("available", true), ("reason", .null)])),
            ("torchserve", .object([("available", false), ("reason", "deploy kind torchserve needs torch-model-archiver in the Python runtime")])),
        ])))
        let runner = StubProcessRunner(hello: .object(hello))
        let apply = ApplyRunner(python: python, runner: runner, root: f.root, progress: RecordingProgress(), report: { _ in })
        let outcomes = try apply.run(f.items, jobs: 1, keepGoing: false)
        XCTAssertEqual(outcomes.map(\.status), [.failed])
        let d = try XCTUnwrap(outcomes[0].diagnostics.first)
        XCTAssertEqual(d.message, "served: deploy kind torchserve needs torch-model-archiver in the Python runtime")
        XCTAssertEqual(d.field, "spec.output.deploy[1]")
        XCTAssertEqual(d.location?.line, 16)
        XCTAssertFalse(runner.requests.map(\.op).contains("export"), "no model is loaded")
        assertEveryChildEnded(runner)
    }

    // MARK: - verification outcomes

    /// A default envelope that fails at one point narrows: the guard is rewritten with the verified box (sent to the
    /// verifying worker), the record says so, and the user is warned.
    func testDefaultEnvelopeNarrowsAndRewritesTheGuard() throws {
        let f = try fixture(["narrow"])
        let runner = StubProcessRunner(script: .init(failVerifyCase: ["narrow": "p1"]))
        let (outcomes, _, reported) = try run(f, runner, keepGoing: false)
        XCTAssertEqual(outcomes.map(\.status), [.ok])
        let record = try XCTUnwrap(outcomes[0].record)
        XCTAssertEqual(record["envelope"]?["narrowed"], .bool(true))
        let verified: JSONValue = .object([("batch", .array([1, 1])), ("sequence", .array([4, 4]))])
        XCTAssertEqual(record["envelope"]?["verified"], verified)
        let guards = runner.requests.filter { $0.op == "guard" }
        XCTAssertEqual(guards.count, 1)
        XCTAssertEqual(guards.first.map { Self.withoutID($0.request) },
                       .object([("op", "guard"), ("dir", .string(f.stagingRoot.appendingPathComponent("narrow.staging").path)), ("ranges", verified)]))
        XCTAssertEqual(guards.first?.child, runner.requests.first { $0.op == "verify_bundle" }?.child, "the guard is rewritten by the verifying worker")
        XCTAssertFalse(outcomes[0].diagnostics.isEmpty, "the narrowing is a warning")
        XCTAssertTrue(outcomes[0].diagnostics.allSatisfy { $0.severity == .warning }, outcomes[0].diagnostics.description)
        XCTAssertEqual(reported, outcomes[0].diagnostics)
        try assertInstalled(f, outcomes[0], narrowed: true)
        assertNoStagingLeft(f)
        assertEveryChildEnded(runner)
    }

    /// When every point verifies, nothing is narrowed and no `guard` request is sent.
    func testNoGuardRequestWhenTheEnvelopeIsNotNarrowed() throws {
        let f = try fixture(["plain"])
        let runner = StubProcessRunner()
        let (outcomes, _, _) = try run(f, runner, keepGoing: false)
        XCTAssertEqual(outcomes.map(\.status), [.ok])
        XCTAssertEqual(outcomes[0].record?["envelope"]?["narrowed"], .bool(false))
        XCTAssertEqual(runner.requests.filter { $0.op == "guard" }.map { Self.withoutID($0.request) }, [], "no guard request for an envelope that was not narrowed")
        assertEveryChildEnded(runner)
    }

    /// A verifying worker that reports another sha256 than model.pt's fails the export ("model.pt changed while it
    /// was being verified").
    func testVerifiedHashThatDiffersFromModelPtFailsTheExport() throws {
        let f = try fixture(["changed"])
        let runner = StubProcessRunner(script: .init(wrongSHA: ["changed"]))
        let (outcomes, _, _) = try run(f, runner, keepGoing: false)
        XCTAssertEqual(outcomes.map(\.status), [.failed])
        XCTAssertEqual(outcomes[0].diagnostics.map(\.message), ["changed: verify failed: model.pt changed while it was being verified"])
        assertNotInstalled(outcomes[0])
        assertNoStagingLeft(f)
        assertEveryChildEnded(runner)
    }

    /// A verifying worker that dies: that manifest fails naming the signal; with --keep-going the next manifest is
    /// verified by a new verifying worker.
    func testVerifierDyingMidVerifyIsReportedAndReplacedWithKeepGoing() throws {
        let f = try fixture(["first", "second", "third"])
        let runner = StubProcessRunner(script: .init(dieDuringVerify: ["second": SIGKILL]))
        let (outcomes, _, _) = try run(f, runner, keepGoing: true)
        XCTAssertEqual(outcomes[1].status, .failed)
        XCTAssertTrue(outcomes[1].diagnostics.first?.message.hasPrefix("second: the Python worker died during verify_bundle (killed by signal 9 (SIGKILL))") == true,
                      outcomes[1].diagnostics.description)
        XCTAssertEqual(outcomes.map(\.status), [.ok, .failed, .ok], outcomes.map(\.diagnostics).description)
        assertNoStagingLeft(f)
        assertEveryChildEnded(runner)
    }
}
