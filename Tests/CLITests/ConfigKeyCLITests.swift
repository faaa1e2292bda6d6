import Foundation
import XCTest

/// A `spec.model.config` key one slip away from a key the config class declares is refused by `plan` and `apply` at
/// its line and column, before any model is built, from the class's keys alone (the worker's `config_keys`, with real
/// transformers); the answer is cached in tsexport's cache folder, so the next plan starts no Python.
final class ConfigKeyCLITests: XCTestCase {
    static let manifest = """
        apiVersion: tsexport/v1
        kind: Export
        metadata:
          name: typo
        spec:
          model:
            class: BertModel
            config:
              vocab_size: 100
              hiden_size: 32
              my_custom_flag: 1
          inputs:
            tensors: [{name: input_ids, from: values, values: [[1, 2, 3]]}]

        """

    /// The test Python (TSEXPORT_PYTHON, else python3 on PATH), behind a script that counts its starts.
    static func countingPython(in dir: URL) throws -> (String, URL) {
        let real = ProcessInfo.processInfo.environment["TSEXPORT_PYTHON"].flatMap { $0.isEmpty ? nil : $0 } ?? "python3"
        let log = dir.appendingPathComponent("starts.log")
        let script = dir.appendingPathComponent("python")
        try "#!/bin/sh\necho start >> '\(log.path)'\nexec '\(real)' \"$@\"\n".write(to: script, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: script.path)
        return (script.path, log)
    }

    static func starts(_ log: URL) -> Int {
        ((try? String(contentsOf: log, encoding: .utf8)) ?? "").split(separator: "\n").count
    }

    func testATypoedConfigKeyIsAnErrorAtItsPositionAndTheAnswerIsCached() throws {
        let dir = try CLI.tempDir("config-keys")
        defer { try? FileManager.default.removeItem(at: dir) }
        try CLI.write(Self.manifest, to: "typo.yaml", in: dir)
        let (python, log) = try Self.countingPython(in: dir)
        let env = CLI.environment(["TSEXPORT_CACHE_DIR": dir.appendingPathComponent("cache").path, "HF_HUB_OFFLINE": "1"])
        let expected = "typo.yaml:10:7: error: config key 'hiden_size' is not a key of BertConfig; did you mean 'hidden_size'?"

        let probe = try CLI.runProcess(URL(fileURLWithPath: python), ["-c", "import transformers"], cwd: dir, env: env)
        XCTAssertEqual(probe.status, 0, "the test Python (TSEXPORT_PYTHON) needs transformers: \(probe.stderr)")
        try FileManager.default.removeItem(at: log)

        let first = try CLI.run(["plan", "typo.yaml", "--python", python, "--output-root", "out"], cwd: dir, env: env)
        XCTAssertEqual(first.status, 1, first.stderr)
        XCTAssertEqual(first.stderr.split(separator: "\n").map(String.init), [expected], "the far key my_custom_flag is no error")
        XCTAssertEqual(Self.starts(log), 1, "one Python answers from the config class")
        let cached = try String(contentsOf: dir.appendingPathComponent("cache/config-keys.json"), encoding: .utf8)
        XCTAssertTrue(cached.contains("\"BertConfig\""), cached)

        let again = try CLI.run(["plan", "typo.yaml", "--python", python, "--output-root", "out"], cwd: dir, env: env)
        XCTAssertEqual(again.status, 1, again.stderr)
        XCTAssertEqual(again.stderr.split(separator: "\n").map(String.init), [expected])
        XCTAssertEqual(Self.starts(log), 1, "a cache hit starts no Python")

        let apply = try CLI.run(["apply", "typo.yaml", "--python", python, "--output-root", "out"], cwd: dir, env: env)
        XCTAssertEqual(apply.status, 1, apply.stderr)
        XCTAssertEqual(apply.stderr.split(separator: "\n").map(String.init), [expected])
        XCTAssertEqual(Self.starts(log), 1, "apply refuses before any worker starts")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("out").path), "no model was built")

        // Fixed, the far key stays: the plan goes ahead (the worker warns about it when it builds the config).
        try CLI.write(Self.manifest.replacingOccurrences(of: "hiden_size", with: "hidden_size"), to: "typo.yaml", in: dir)
        let fixed = try CLI.run(["plan", "typo.yaml", "--python", python, "--output-root", "out"], cwd: dir, env: env)
        XCTAssertEqual(fixed.status, 0, fixed.stderr)
        XCTAssertTrue(fixed.stdout.contains("typo"), fixed.stdout)
        XCTAssertEqual(Self.starts(log), 1, "BertModel's keys are still cached")
    }
}
