import Execution
import Foundation
import JSON
import TSExportCLI
import XCTest

/// `tsexport verify --native`: a libtorch program built with the runtime's torch checks model.pt and model.pt2
/// against the bundle's reference outputs without Python; a changed or foreign model.pt2 fails; a bundle without
/// model.pt2 is checked on model.pt alone; no C++ compiler is a clear error. Also the normal verify's model.pt2 cases.
/// One apply (a tiny BERT with formats [torchscript, aoti], plus a one-layer BERT whose model.pt2 is the foreign one)
/// serves the whole class.
final class NativeVerifyTests: XCTestCase {
    struct Fixture: Sendable {
        var root: URL
        var bundle: URL
        var other: URL
    }

    static func manifest(name: String, layers: Int, seed: Int) -> String {
        """
        apiVersion: tsexport/v1
        kind: Export
        metadata:
          name: \(name)
        spec:
          model:
            class: BertModel
            config: {vocab_size: 99, hidden_size: 32, num_hidden_layers: \(layers), num_attention_heads: 4, intermediate_size: 37, max_position_embeddings: 64}
            seed: \(seed)
          inputs:
            tensors:
              - {name: input_ids, from: random, shape: [1, 8], high: 99}
              - {name: attention_mask, from: ones, shape: [1, 8]}
          trace:
            envelope: {batch: [1, 4], sequence: [1, 32]}
          output:
            formats: [torchscript, aoti]

        """
    }

    /// Built once for the class (compiling two model.pt2 packages takes a minute or so).
    static let fixture: Result<Fixture, Error> = Result {
        let root = try Harness.tempDir("native-verify")
        let specs = root.appendingPathComponent("specs")
        try FileManager.default.createDirectory(at: specs, withIntermediateDirectories: true)
        try manifest(name: "tiny-aoti", layers: 2, seed: 0).write(to: specs.appendingPathComponent("tiny-aoti.yaml"), atomically: true, encoding: .utf8)
        try manifest(name: "other-aoti", layers: 1, seed: 1).write(to: specs.appendingPathComponent("other-aoti.yaml"), atomically: true, encoding: .utf8)
        let (code, out) = try Harness.apply([specs.path, "--output-root", root.path])
        guard code == 0 else {
            throw NSError(domain: "apply", code: Int(code), userInfo: [NSLocalizedDescriptionKey: out.stdout + "\n" + out.stderr])
        }
        return Fixture(root: root, bundle: root.appendingPathComponent("build/tiny-aoti"), other: root.appendingPathComponent("build/other-aoti"))
    }

    func bundles() throws -> Fixture {
        let f = try Self.fixture.get()
        XCTAssertTrue(FileManager.default.fileExists(atPath: f.bundle.appendingPathComponent("model.pt2").path), "apply wrote no model.pt2")
        return f
    }

    /// A copy of the good bundle to damage.
    func copy(_ f: Fixture, _ label: String) throws -> URL {
        let dir = f.root.appendingPathComponent("copies/\(label)-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: dir.deletingLastPathComponent(), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: f.bundle, to: dir)
        return dir
    }

    static func verify(_ args: [String], environment: [String: String] = ProcessInfo.processInfo.environment) throws -> (Int32, Harness.Captured) {
        let cmd = try Verify.parse(args + ["--python", Harness.python])
        let (console, captured) = Harness.console()
        return (Verify.execute(cmd, console: console, environment: environment), captured)
    }

    static func native(_ dir: URL, json: Bool = false) throws -> (Int32, Harness.Captured) {
        try verify(["--native", dir.path] + (json ? ["--json"] : []))
    }

    func testNativeVerifyPassesOnBothArtifactsAndIsBuiltOnce() throws {
        let f = try bundles()
        let started = Date()
        let (code, out) = try Self.native(f.bundle)
        let first = Date().timeIntervalSince(started)
        XCTAssertEqual(code, 0, out.stdout + "\n" + out.stderr)
        XCTAssertTrue(out.stdout.contains("verified natively (model.pt, model.pt2, libtorch"), out.stdout)
        for artifact in ["model.pt ", "model.pt2"] {
            XCTAssertTrue(out.out.contains { $0.hasPrefix("  pass \(artifact) traced [1,8]:") }, out.stdout)
        }
        XCTAssertFalse(out.stdout.contains("FAIL"), out.stdout)
        // Built at most once: the second run finds the build in the cache.
        let again = Date()
        let (code2, out2) = try Self.native(f.bundle, json: true)
        let second = Date().timeIntervalSince(again)
        XCTAssertEqual(code2, 0, out2.stdout + "\n" + out2.stderr)
        XCTAssertFalse(out2.stderr.contains("building the native checker"), out2.stderr)
        let report = try JSONValue(parsing: Data(out2.stdout.utf8))
        XCTAssertEqual(report["ok"], .bool(true))
        let b = try XCTUnwrap(report["bundles"]?[0])
        XCTAssertEqual(b["artifacts"]?.arrayValue?.compactMap(\.stringValue), ["model.pt", "model.pt2"])
        let cases = b["cases"]?.arrayValue ?? []
        XCTAssertEqual(Set(cases.compactMap { $0["artifact"]?.stringValue }), ["model.pt", "model.pt2"])
        XCTAssertTrue(cases.allSatisfy { $0["passed"] == .bool(true) && $0["max_abs_error"]?.doubleValue != nil })
        // as many model.pt2 cases as model.pt cases: every recorded case on both
        XCTAssertEqual(cases.filter { $0["artifact"] == .string("model.pt") }.count, cases.filter { $0["artifact"] == .string("model.pt2") }.count)
        print("verify --native: first run \(String(format: "%.1f", first)) s (\(out.stderr.contains("built the native checker") ? "with the build" : "cached build")), cached run \(String(format: "%.1f", second)) s, check \(b["check_seconds"]?.doubleValue ?? -1) s")
    }

    func testChangedModelPT2Fails() throws {
        let f = try bundles()
        let dir = try copy(f, "flipped")
        let pt2 = dir.appendingPathComponent("model.pt2")
        var bytes = try Data(contentsOf: pt2)
        let middle = bytes.count / 2
        for i in middle..<(middle + 64) { bytes[i] ^= 0xFF }
        try bytes.write(to: pt2)
        let (code, out) = try Self.native(dir)
        XCTAssertEqual(code, 1, out.stdout)
        XCTAssertTrue(out.stdout.contains("FAILED"), out.stdout)
        XCTAssertTrue(out.stdout.contains("model.pt2 sha256") && out.stdout.contains("differs from the recorded") && out.stdout.contains("the file changed after apply"), out.stdout)
    }

    func testForeignModelPT2FailsOnItsNumbers() throws {
        let f = try bundles()
        let dir = try copy(f, "foreign")
        let pt2 = dir.appendingPathComponent("model.pt2")
        try FileManager.default.removeItem(at: pt2)
        try FileManager.default.copyItem(at: f.other.appendingPathComponent("model.pt2"), to: pt2)
        let (code, out) = try Self.native(dir)
        XCTAssertEqual(code, 1, out.stdout)
        XCTAssertTrue(out.stdout.contains("differs from the recorded"), out.stdout)
        // the checker itself sees the wrong numbers, case by case, on model.pt2 only
        XCTAssertTrue(out.out.contains { $0.hasPrefix("  FAIL model.pt2 traced [1,8]: max abs error") }, out.stdout)
        XCTAssertFalse(out.out.contains { $0.hasPrefix("  FAIL model.pt ") }, out.stdout)
        // the normal verify (Python) prints the model.pt2 cases and fails too
        let (pyCode, py) = try Self.verify([dir.path])
        XCTAssertEqual(pyCode, 1, py.stdout)
        XCTAssertTrue(py.out.contains { $0.hasPrefix("  FAIL model.pt2 traced") }, py.stdout)
        XCTAssertTrue(py.out.contains { $0.hasPrefix("  pass model.pt  traced") }, py.stdout)
        let (goodCode, good) = try Self.verify([f.bundle.path])
        XCTAssertEqual(goodCode, 0, good.stdout + good.stderr)
        XCTAssertTrue(good.out.contains { $0.hasPrefix("  pass model.pt2 traced [1,8]") }, good.stdout)
    }

    func testUnloadableModelPT2IsAClearFailure() throws {
        let f = try bundles()
        let dir = try copy(f, "garbage")
        try Data("not a package".utf8).write(to: dir.appendingPathComponent("model.pt2"))
        let (code, out) = try Self.native(dir)
        XCTAssertEqual(code, 1, out.stdout)
        XCTAssertTrue(out.stdout.contains("FAIL model.pt2: could not load model.pt2 with AOTIModelPackageLoader"), out.stdout)
        XCTAssertTrue(out.out.contains { $0.hasPrefix("  pass model.pt  traced") }, out.stdout)
    }

    func testBundleWithoutModelPT2ChecksModelPTOnly() throws {
        let f = try bundles()
        let dir = try copy(f, "torchscript-only")
        try FileManager.default.removeItem(at: dir.appendingPathComponent("model.pt2"))
        // as a bundle of formats [torchscript] records it: no aoti object
        let recordURL = dir.appendingPathComponent("record.json")
        let record = try JSONValue(parsing: Data(contentsOf: recordURL))
        let stripped = JSONValue.object((record.objectValue ?? []).filter { $0.0 != "aoti" })
        try Data(stripped.serialized(pretty: true).utf8).write(to: recordURL)
        let (code, out) = try Self.native(dir)
        XCTAssertEqual(code, 0, out.stdout + out.stderr)
        XCTAssertTrue(out.stdout.contains("verified natively (model.pt, libtorch"), out.stdout)
        XCTAssertFalse(out.stdout.contains("model.pt2"), out.stdout)
        // a bundle whose record lists model.pt2 but lacks the file is incomplete
        let missing = try copy(f, "missing-pt2")
        try FileManager.default.removeItem(at: missing.appendingPathComponent("model.pt2"))
        let (code2, out2) = try Self.native(missing)
        XCTAssertEqual(code2, 1, out2.stdout)
        XCTAssertTrue(out2.stdout.contains("the bundle lacks model.pt2, which record.json lists"), out2.stdout)
    }

    func testNoCompilerIsAClearError() throws {
        let dir = try Harness.tempDir("native-nocxx")  // no bundle needed: the compiler is checked first
        var env = ProcessInfo.processInfo.environment
        env["TSEXPORT_CXX"] = "/nonexistent"
        let (code, out) = try Self.verify(["--native", dir.path], environment: env)
        XCTAssertEqual(code, 1)
        XCTAssertEqual(out.stderr, "error: verify --native needs a C++ compiler (g++); install it with: apt-get install g++")
        var noPath = ProcessInfo.processInfo.environment
        noPath["PATH"] = dir.path
        noPath["TSEXPORT_CXX"] = nil
        XCTAssertNil(NativeVerify.compiler(environment: noPath))
        let (code2, out2) = try Self.verify(["--native", dir.path], environment: noPath)
        XCTAssertEqual(code2, 1)
        XCTAssertTrue(out2.stderr.contains(NativeVerify.noCompilerMessage), out2.stderr)
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/g++") {
            XCTAssertEqual(NativeVerify.compiler(environment: ["PATH": "/usr/bin:/bin"]), "/usr/bin/g++")
        }
    }

    func testDoctorNamesTheCompiler() throws {
        let cmd = try Doctor.parse(["--python", Harness.python])
        let (console, out) = Harness.console()
        _ = Doctor.execute(cmd, console: console)
        let line = try XCTUnwrap(out.out.first { $0.hasPrefix("c++ compiler") }, out.stdout)
        if let cxx = NativeVerify.compiler(environment: ProcessInfo.processInfo.environment) {
            XCTAssertEqual(line, "c++ compiler  \(cxx) (for verify --native)")
        } else {
            XCTAssertEqual(line, "c++ compiler  not found: " + NativeVerify.noCompilerMessage)
        }
    }
}
