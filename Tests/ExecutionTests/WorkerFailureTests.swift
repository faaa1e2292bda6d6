import Execution
import Foundation
import TSExportCLI
import XCTest

/// A process runner that starts real workers but SIGKILLs the first one to announce the trace stage: a worker
/// killed mid-trace, on cue.
final class KillAtTraceRunner: ProcessRunner, @unchecked Sendable {
    let base = SystemProcessRunner()
    let lock = NSLock()
    var killed = false

    func start(_ argv: [String], environment: [String: String], directory: URL?) throws -> ChildProcess {
        Watched(try base.start(argv, environment: environment, directory: directory), owner: self)
    }

    final class Watched: ChildProcess, @unchecked Sendable {
        let inner: ChildProcess
        let owner: KillAtTraceRunner
        init(_ inner: ChildProcess, owner: KillAtTraceRunner) {
            self.inner = inner
            self.owner = owner
        }
        func write(_ data: Data) throws { try inner.write(data) }
        func readLine() -> String? {
            let line = inner.readLine()
            if let line, line.contains(#""stage": "trace""#) || line.contains(#""stage":"trace""#), line.contains("start") {
                owner.lock.lock()
                let first = !owner.killed
                owner.killed = true
                owner.lock.unlock()
                if first { inner.signal(SIGKILL) }
            }
            return line
        }
        var stderrTail: String { inner.stderrTail }
        func closeInput() { inner.closeInput() }
        func signal(_ sig: Int32) { inner.signal(sig) }
        func wait() -> Int32 { inner.wait() }
        var pid: Int32 { inner.pid }
    }
}

/// Failures at each stage: a clear message naming manifest, stage and (where it comes from the manifest) line and
/// column, and nothing left in the output root.
final class WorkerFailureTests: XCTestCase {
    func manifest(_ name: String, model: String, tensors: String) -> String {
        """
        apiVersion: tsexport/v1
        kind: Export
        metadata: {name: \(name)}
        spec:
          model:
        \(model)
          inputs:
            tensors:
        \(tensors)

        """
    }

    let tinyConfig = "    config: {vocab_size: 100, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 4, intermediate_size: 37}"
    let ids = "      - {name: input_ids, from: random, shape: [1, 6]}"

    func applyExpectingFailure(_ text: String, extra: [String] = [], runner: ProcessRunner = SystemProcessRunner()) throws -> (String, URL, URL) {
        let dir = try Harness.tempDir("fail")
        let file = dir.appendingPathComponent("m.yaml")
        try text.write(to: file, atomically: true, encoding: .utf8)
        let root = dir.appendingPathComponent("out")
        let (code, out) = try Harness.apply([file.path, "--output-root", root.path] + extra, runner: runner)
        XCTAssertEqual(code, 1, out.stderr)
        XCTAssertEqual(Harness.tree(root), [], "nothing is left in the output root")
        return (out.stderr, file, dir)
    }

    func testUnknownClassIsReportedAtTheClassField() throws {
        let (err, file, dir) = try applyExpectingFailure(manifest("unknown-class", model: "    class: BertModle\n" + tinyConfig, tensors: ids))
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertTrue(err.contains("\(file.path):6:12: error: unknown-class: load failed: "), err)
        XCTAssertTrue(err.contains("BertModel"), "suggests the close name: \(err)")
    }

    func testConfigKeyTransformersRejectsMapsToItsLine() throws {
        let model = "    class: BertModel\n    config:\n      vocab_size: 100\n      hidden_size: 32\n      num_attention_heads: 4\n      hidden_act: not_an_activation\n"
        let (err, file, dir) = try applyExpectingFailure(manifest("bad-config", model: model, tensors: ids))
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertTrue(err.contains("\(file.path):11:19: error: bad-config: load failed: "), err)
        XCTAssertTrue(err.contains("hidden_act"), err)
    }

    func testMissingTokenizerFolderIsRefusedBeforePythonStarts() throws {
        let dir = try Harness.tempDir("tok")
        defer { try? FileManager.default.removeItem(at: dir) }
        let text = """
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: no-tokenizer}
            spec:
              model: {class: BertModel, config: {vocab_size: 100}}
              inputs:
                tokenizer: ./missing-tokenizer
                text: "hello world"
                tensors: [{name: input_ids, from: text}]
            """
        let file = dir.appendingPathComponent("m.yaml")
        try text.write(to: file, atomically: true, encoding: .utf8)
        let cmd = try Apply.parse([file.path, "--output-root", dir.appendingPathComponent("out").path, "--python", "/bin/false"])
        let (console, out) = Harness.console()
        XCTAssertEqual(Apply.execute(cmd, console: console), 1)
        XCTAssertTrue(out.stderr.contains("\(file.path):7:16: error: tokenizer folder './missing-tokenizer' does not exist"), out.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("out").path))
    }

    func testExceptionInsideForwardNamesTheStage() throws {
        let tensors = "      - {name: input_ids, from: values, dtype: float32, values: [[1.5, 2.5, 3.5]]}"
        let (err, _, dir) = try applyExpectingFailure(manifest("bad-forward", model: "    class: BertModel\n" + tinyConfig, tensors: tensors))
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertTrue(err.contains("error: bad-forward: "), err)
        XCTAssertTrue(err.lowercased().contains("forward"), err)
        XCTAssertFalse(err.contains("Traceback"), "no Python traceback in the message: \(err)")
    }

    func testWorkerKilledMidTraceIsReportedAndReplacedWithKeepGoing() throws {
        let two = manifest("first-killed", model: "    class: BertModel\n" + tinyConfig, tensors: ids) + "---\n"
            + manifest("second-fine", model: "    class: BertModel\n" + tinyConfig, tensors: ids)
        let dir = try Harness.tempDir("killed")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("m.yaml")
        try two.write(to: file, atomically: true, encoding: .utf8)
        let root = dir.appendingPathComponent("out")
        let (code, out) = try Harness.apply([file.path, "--output-root", root.path, "--keep-going", "--jobs", "1"], runner: KillAtTraceRunner())
        XCTAssertEqual(code, 1, out.stderr + out.stdout)
        XCTAssertTrue(out.stderr.contains("\(file.path):3:18: error: first-killed: the Python worker died during export (killed by signal 9 (SIGKILL))"), out.stderr)
        XCTAssertTrue(out.stderr.contains("starting a new Python worker"), out.stderr)
        XCTAssertEqual(Harness.tree(root.appendingPathComponent("build")), ["second-fine"] + ["build.json", "model.pt", "record.json", "reference_outputs.safetensors", "sample_inputs.safetensors"].map { "second-fine/\($0)" })
        XCTAssertTrue(out.stdout.contains("first-killed  create  failed"), out.stdout)
    }

    func testRuntimeWithoutTorchNamesWhatIsMissingAndTheFix() throws {
        let dir = try Harness.tempDir("notorch")
        defer { try? FileManager.default.removeItem(at: dir) }
        // An interpreter whose `import torch` fails: python with a torch.py that raises ImportError first on the path.
        let shadow = dir.appendingPathComponent("shadow")
        try FileManager.default.createDirectory(at: shadow, withIntermediateDirectories: true)
        try "raise ImportError('No module named torch (shadowed for the test)')\n".write(to: shadow.appendingPathComponent("torch.py"), atomically: true, encoding: .utf8)
        let fake = dir.appendingPathComponent("python-without-torch")
        try "#!/bin/sh\nPYTHONPATH=\(shadow.path):$PYTHONPATH exec \(Harness.python) \"$@\"\n".write(to: fake, atomically: true, encoding: .utf8)
        chmod(fake.path, 0o755)
        let file = dir.appendingPathComponent("m.yaml")
        try manifest("no-torch", model: "    class: BertModel\n" + tinyConfig, tensors: ids).write(to: file, atomically: true, encoding: .utf8)
        let root = dir.appendingPathComponent("out")
        let cmd = try Apply.parse([file.path, "--output-root", root.path, "--python", fake.path])
        let (console, out) = Harness.console()
        XCTAssertEqual(Apply.execute(cmd, console: console), 1)
        XCTAssertTrue(out.stderr.contains("the Python runtime \(fake.path) (chosen by --python) cannot import torch"), out.stderr)
        XCTAssertTrue(out.stderr.contains("-m pip install -r "), out.stderr)
        XCTAssertEqual(Harness.tree(root), [])
    }

    func testNeuronTargetIsBlockedAtPlanAndFailsBeforeLoadingWithNothingLeft() throws {
        let dir = try Harness.tempDir("inf2")
        defer { try? FileManager.default.removeItem(at: dir) }
        setenv("TSEXPORT_CACHE_DIR", dir.appendingPathComponent("cache").path, 1)
        defer { unsetenv("TSEXPORT_CACHE_DIR") }
        // doctor probes the runtime once and remembers what it lacks, so plan can say so without starting Python.
        let (doctorConsole, doctorOut) = Harness.console()
        XCTAssertEqual(Doctor.execute(try Doctor.parse(["--python", Harness.python]), console: doctorConsole), 0, doctorOut.stderr)
        XCTAssertTrue(doctorOut.stdout.contains("inf2  unavailable: target inf2 needs torch-neuronx in the Python runtime"), doctorOut.stdout)

        let file = dir.appendingPathComponent("m.yaml")
        try (manifest("neuron", model: "    class: BertModel\n" + tinyConfig, tensors: ids) + "  target: {hardware: inf2}\n")
            .write(to: file, atomically: true, encoding: .utf8)
        let root = dir.appendingPathComponent("out")
        let (planConsole, planOut) = Harness.console()
        let plan = try PlanCommand.parse([file.path, "--output-root", root.path, "--python", Harness.python])
        XCTAssertEqual(PlanCommand.execute(plan.options, selection: plan.selection, detailedExitcode: false, python: Harness.python, console: planConsole), 0)
        XCTAssertTrue(planOut.stdout.contains("blocked: target inf2 is not available in this runtime: target inf2 needs torch-neuronx in the Python runtime"), planOut.stdout)

        let (code, out) = try Harness.apply([file.path, "--output-root", root.path])
        XCTAssertEqual(code, 1)
        XCTAssertTrue(out.stderr.contains("\(file.path):11:22: error: neuron: target inf2 is not available in this runtime: target inf2 needs torch-neuronx"), out.stderr)
        XCTAssertFalse(out.stderr.contains("load done"), "no model was loaded")
        XCTAssertEqual(Harness.tree(root), [])
    }
}
