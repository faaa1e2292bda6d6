import Execution
import Foundation
import JSON
import TSExportCLI
import TestSupport
import XCTest

/// Reduced precision through `tsexport apply` with real torch: `quantize: dynamic_int8` chooses its layers and says
/// which; bfloat16 and int8 artifacts are compared with the float32 eager model as well as with the model they
/// traced, both recorded; a quality gate that fails fails the apply with both figures and writes nothing; and
/// `tsexport verify` re-applies the gate.
final class QualityApplyTests: XCTestCase {
    static func manifest(_ name: String, model: String = "", trace: String = "", target: String = "") -> String {
        let line = { (s: String) in s.isEmpty ? "" : s + "\n" }
        return TinyBertManifest.text(
            name, config: "{vocab_size: 99, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 37, max_position_embeddings: 64}",
            model: line(model), tensors: ["{name: input_ids, from: random, shape: [2, 16]}", "{name: attention_mask, from: ones, shape: [2, 16]}"],
            spec: "  trace:\n    check_shapes: [[1, 9]]\n" + line(trace) + "  target:\n    hardware: cpu\n" + line(target))
    }

    func record(_ root: URL, _ name: String) throws -> JSONValue {
        try JSONValue(parsing: Data(contentsOf: root.appendingPathComponent("build/\(name)/record.json")))
    }

    func testQuantizedAndBfloat16ArtifactsRecordBothComparisonsAndVerifyAgain() throws {
        let dir = try Harness.tempDir("quality")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("m.yaml")
        try (Self.manifest("int8", target: "    quantize: dynamic_int8") + "---\n"
             + Self.manifest("bf16", model: "    dtype: bfloat16")).write(to: file, atomically: true, encoding: .utf8)
        let root = dir.appendingPathComponent("out")
        let (code, out) = try Harness.apply([file.path, "--output-root", root.path])
        XCTAssertEqual(code, 0, out.stderr + out.stdout)

        let int8 = try record(root, "int8")
        let q = try XCTUnwrap(int8["quantize"])
        let quantized = q["quantized"]?.arrayValue?.compactMap(\.stringValue) ?? []
        let kept = q["kept_float"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? []
        XCTAssertEqual(q["candidates"]?.intValue, quantized.count + kept.count)
        XCTAssertEqual(q["candidates"]?.intValue, 13, "2 layers x 6 Linear + the pooler")
        XCTAssertFalse(quantized.isEmpty, "a tiny BERT keeps its quality with some layers in int8")
        XCTAssertEqual(q["select_min_cosine"]?.doubleValue, 0.995)
        XCTAssertGreaterThanOrEqual(q["cosine_on_traced_inputs"]?.doubleValue ?? 0, 0.995)
        XCTAssertEqual(int8["target"]?["quantize"], "dynamic_int8")
        // How long the selection took is a build fact: the quantize stage's time in build.json, never in the record.
        XCTAssertNil(q["seconds"], "record.json holds no timing")
        let build = try JSONValue(parsing: Data(contentsOf: root.appendingPathComponent("build/int8/build.json")))
        XCTAssertGreaterThan(build["timings_ms"]?["quantize"]?.doubleValue ?? 0, 0)
        XCTAssertEqual(int8["parity"]?["tolerance"], .object([("atol", .double(1e-5)), ("rtol", .double(1e-4)), ("min_cosine", .double(0.99))]))

        for (name, record) in [("int8", int8), ("bf16", try record(root, "bf16"))] {
            let quality = try XCTUnwrap(record["quality"], name)
            XCTAssertEqual(quality["min_cosine"]?.doubleValue, 0.99, name)
            XCTAssertEqual(quality["reference"], "float32 eager model", name)
            let worst = try XCTUnwrap(quality["worst_cosine_to_float32"]?.doubleValue, name)
            XCTAssertTrue(worst >= 0.99 && worst < 1.0, "\(name): reduced precision costs something, within the gate: \(worst)")
            XCTAssertGreaterThan(quality["worst_abs_error_to_float32"]?.doubleValue ?? 0, 0, name)
            let cases = record["parity"]?["cases"]?.arrayValue ?? []
            XCTAssertEqual(quality["points"]?.intValue, cases.count, name)
            for c in cases {
                // faithful to the model it traced (atol/rtol), and each case carries the float32 comparison too
                XCTAssertEqual(c["passed"], .bool(true), "\(name) \(c)")
                XCTAssertEqual(c["min_cosine"]?.doubleValue ?? 0, 1.0, accuracy: 1e-6, "\(name) \(c)")
                XCTAssertGreaterThanOrEqual(c["float32"]?["min_cosine"]?.doubleValue ?? 0, worst, "\(name) \(c)")
            }
        }

        let (console, captured) = Harness.console()
        let verify = try Verify.parse(["int8", "bf16"].map { root.appendingPathComponent("build/\($0)").path } + ["--python", Harness.python])
        XCTAssertEqual(Verify.execute(verify, console: console), 0, captured.stderr + captured.stdout)
        XCTAssertTrue(captured.stdout.contains("cosine to float32 0.99"), captured.stdout)

        // verify --native (libtorch, no Python) measures the same two comparisons and applies the same gate
        let (nconsole, ncaptured) = Harness.console()
        let native = try Verify.parse(["int8", "bf16"].map { root.appendingPathComponent("build/\($0)").path } + ["--native", "--python", Harness.python])
        XCTAssertEqual(Verify.execute(native, console: nconsole), 0, ncaptured.stderr + ncaptured.stdout)
        let total = try ["int8", "bf16"].map { try record(root, $0)["parity"]?["cases"]?.arrayValue?.count ?? 0 }.reduce(0, +)
        XCTAssertGreaterThan(total, 4)
        XCTAssertEqual(ncaptured.stdout.components(separatedBy: "cosine to float32 0.99").count - 1, total, ncaptured.stdout)

        // verify applies the recorded gate: a record asking for more than the artifact gives fails it, with the figure
        let recordURL = root.appendingPathComponent("build/bf16/record.json")
        let text = try String(contentsOf: recordURL, encoding: .utf8)
        let stricter = text.replacingOccurrences(of: "\"min_cosine\": 0.99\n", with: "\"min_cosine\": 0.99999999\n")
        XCTAssertNotEqual(stricter, text)
        try stricter.write(to: recordURL, atomically: true, encoding: .utf8)
        let (console2, captured2) = Harness.console()
        XCTAssertEqual(Verify.execute(try Verify.parse([root.appendingPathComponent("build/bf16").path, "--python", Harness.python]), console: console2), 1)
        XCTAssertTrue(captured2.stdout.contains("FAIL traced [2,16]: cosine to the float32 eager model 0.99"), captured2.stdout)
        XCTAssertTrue(captured2.stdout.contains("is below min_cosine 0.99999999; against the bfloat16 eager model it traced"), captured2.stdout)
        let (console4, captured4) = Harness.console()
        XCTAssertEqual(Verify.execute(try Verify.parse([root.appendingPathComponent("build/bf16").path, "--native", "--python", Harness.python]), console: console4), 1)
        XCTAssertTrue(captured4.stdout.contains("FAIL model.pt  traced [2,16]: cosine to the float32 eager model 0.99"), captured4.stdout)
        // an int8 bundle names the model it traced as what it is
        let int8URL = root.appendingPathComponent("build/int8/record.json")
        let int8Text = try String(contentsOf: int8URL, encoding: .utf8)
        try int8Text.replacingOccurrences(of: "\"min_cosine\": 0.99\n", with: "\"min_cosine\": 0.99999999\n").write(to: int8URL, atomically: true, encoding: .utf8)
        let (console5, captured5) = Harness.console()
        XCTAssertEqual(Verify.execute(try Verify.parse([root.appendingPathComponent("build/int8").path, "--python", Harness.python]), console: console5), 1)
        XCTAssertTrue(captured5.stdout.contains("is below min_cosine 0.99999999; against the int8-quantized float32 eager model it traced: max abs error 0"), captured5.stdout)
        // and a record from before the gate (no min_cosine) is verified without one
        let older = text.replacingOccurrences(of: ",\n      \"min_cosine\": 0.99\n", with: "\n")
        XCTAssertNotEqual(older, text)
        try older.write(to: recordURL, atomically: true, encoding: .utf8)
        let (console3, captured3) = Harness.console()
        XCTAssertEqual(Verify.execute(try Verify.parse([root.appendingPathComponent("build/bf16").path, "--python", Harness.python]), console: console3), 0, captured3.stdout + captured3.stderr)
    }

    func testAGateThatFailsFailsTheApplyWithBothFiguresAndWritesNothing() throws {
        let dir = try Harness.tempDir("quality-gate")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("m.yaml")
        try Self.manifest("bf16-strict", model: "    dtype: bfloat16", trace: "    tolerance: {min_cosine: 0.99999999}")
            .write(to: file, atomically: true, encoding: .utf8)
        let root = dir.appendingPathComponent("out")
        let (code, out) = try Harness.apply([file.path, "--output-root", root.path])
        XCTAssertEqual(code, 1)
        let error = out.stderr.split(separator: "\n").first { $0.contains("error:") }.map(String.init) ?? ""
        // the position is spec.model.dtype's value: line 8, column 12
        XCTAssertTrue(error.hasPrefix("\(file.path):8:12: error: bf16-strict: verify failed: spec.model.dtype: model.pt loses quality at the traced shape batch 2, sequence 16: cosine to the float32 eager model 0.99"), error)
        XCTAssertTrue(error.contains("is below min_cosine 0.99999999"), error)
        XCTAssertTrue(error.contains("against the bfloat16 eager model it traced: max abs error 0, max rel error 0, cosine 1"), error)
        XCTAssertTrue(error.hasSuffix("nothing was written"), error)
        XCTAssertEqual(Harness.tree(root), [], "no bundle, no staging, no lock left")
    }
}
