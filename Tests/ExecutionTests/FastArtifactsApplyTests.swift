import Bundles
import Execution
import Foundation
import JSON
import Plan
import TSExportCLI
import XCTest

/// `formats: [aoti]` alone with `quantize: dynamic_int8` through `tsexport apply` with real torch and torchao (one
/// AOTInductor compile of a tiny BERT): model.pt2 is the bundle's artifact and there is no model.pt; the record says
/// which layers torchao quantized, how AOTInductor compiled and how long it took; the quality gate holds at every
/// envelope point; triton serves model.pt2; verify (Python and libtorch), bench and a second plan read the bundle.
final class FastArtifactsApplyTests: XCTestCase {
    static let manifest = """
        apiVersion: tsexport/v1
        kind: Export
        metadata: {name: int8-pt2}
        spec:
          model:
            class: BertModel
            config: {vocab_size: 99, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 37, max_position_embeddings: 64}
          inputs:
            tensors:
              - {name: input_ids, from: random, shape: [2, 16]}
              - {name: attention_mask, from: ones, shape: [2, 16]}
          trace:
            envelope: {batch: [1, 2], sequence: [1, 16]}
          target: {quantize: dynamic_int8}
          output:
            formats: [aoti]
            deploy:
              - {kind: triton, repository: build/triton, format: aoti}

        """

    func testInt8AOTIAloneAppliesVerifiesBenchesAndStaysUpToDate() throws {
        let dir = try Harness.tempDir("fast-artifacts")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("m.yaml")
        try Self.manifest.write(to: file, atomically: true, encoding: .utf8)
        let root = dir.appendingPathComponent("out")
        let (code, out) = try Harness.apply([file.path, "--output-root", root.path])
        XCTAssertEqual(code, 0, out.stderr + out.stdout)

        let bundle = root.appendingPathComponent("build/int8-pt2")
        XCTAssertEqual(Harness.tree(bundle).filter { !$0.hasPrefix(".") }.sorted(),
                       ["build.json", "model.pt2", "record.json", "reference_outputs.safetensors", "sample_inputs.safetensors"])
        let record = try JSONValue(parsing: Data(contentsOf: bundle.appendingPathComponent("record.json")))
        XCTAssertEqual(record["artifact"], "model.pt2")
        XCTAssertNil(record["model_sha256"])
        let q = try XCTUnwrap(record["quantize"])
        XCTAssertEqual(q["library"], "torchao")
        XCTAssertEqual(q["activations"], "per_token")
        XCTAssertEqual(q["activation_mapping"], .string(WorkerRequests.torchaoActivationMapping))
        XCTAssertEqual(q["config"], "Int8DynamicActivationInt8WeightConfig")
        XCTAssertEqual(q["candidates"]?.intValue, 13, "2 layers x 6 Linear + the pooler")
        XCTAssertFalse(q["quantized"]?.arrayValue?.isEmpty ?? true)
        let aoti = try XCTUnwrap(record["aoti"])
        XCTAssertEqual(aoti["file"], "model.pt2")
        XCTAssertEqual(aoti["inductor_configs"]?["freezing"], .bool(true))
        // The compile time is a build fact: build.json, not the record.
        XCTAssertNil(aoti["compile_seconds"])
        let build = try JSONValue(parsing: Data(contentsOf: bundle.appendingPathComponent("build.json")))
        XCTAssertGreaterThan(build["aoti_seconds"]?["compile_seconds"]?.doubleValue ?? 0, 0)
        XCTAssertEqual(aoti["sha256"]?.stringValue, try Digest.sha256(file: bundle.appendingPathComponent("model.pt2").path))
        XCTAssertEqual(record["fingerprint_inputs"]?["versions"]?["policy.quantize.library"], "torchao")
        XCTAssertEqual(record["fingerprint_inputs"]?["versions"]?["policy.quantize.activation_mapping"], .string(WorkerRequests.torchaoActivationMapping))
        XCTAssertEqual(record["fingerprint_inputs"]?["versions"]?["policy.aoti.inductor_configs"], "{\"freezing\":true}")
        // the compiled int8 model against its eager model at the wider default, and the gate against float32
        XCTAssertEqual(record["parity"]?["tolerance"], .object([("atol", .double(0.5)), ("rtol", .double(5e-2)), ("min_cosine", .double(0.99))]))
        let cases = record["parity"]?["cases"]?.arrayValue ?? []
        XCTAssertGreaterThanOrEqual(cases.count, 5, "the traced shape, the envelope's corners and interior points")
        for c in cases {
            XCTAssertEqual(c["passed"], .bool(true), "\(c)")
            XCTAssertGreaterThanOrEqual(c["float32"]?["min_cosine"]?.doubleValue ?? 0, 0.99, "\(c)")
        }
        XCTAssertGreaterThanOrEqual(record["quality"]?["worst_cosine_to_float32"]?.doubleValue ?? 0, 0.99)
        XCTAssertTrue(FileManager.default.fileExists(atPath: root.appendingPathComponent("build/triton/int8-pt2/1/model.pt2").path))

        let (console, captured) = Harness.console()
        XCTAssertEqual(Verify.execute(try Verify.parse([bundle.path, "--python", Harness.python]), console: console), 0, captured.stderr + captured.stdout)
        XCTAssertEqual(captured.stdout.components(separatedBy: "model.pt2 ").count - 1, cases.count, captured.stdout)
        XCTAssertFalse(captured.stdout.contains("model.pt  "), captured.stdout)
        let (nconsole, ncaptured) = Harness.console()
        XCTAssertEqual(Verify.execute(try Verify.parse([bundle.path, "--native", "--python", Harness.python]), console: nconsole), 0, ncaptured.stderr + ncaptured.stdout)
        XCTAssertTrue(ncaptured.stdout.contains("model.pt2"), ncaptured.stdout)

        let bench = try Bench.parse([bundle.path, "--runs", "2", "--warmup", "1", "--threads", "1", "--json", "--python", Harness.python])
        let (bconsole, bcaptured) = Harness.console()
        XCTAssertEqual(Bench.execute(bench, console: bconsole), 0, bcaptured.stderr)
        let result = try XCTUnwrap(JSONValue(parsing: bcaptured.stdout)["bundles"]?[0]?["result"])
        XCTAssertEqual(result["artifact"]?["file"], "model.pt2")
        XCTAssertGreaterThan(result["shapes"]?[0]?["artifact"]?["p50_ms"]?.doubleValue ?? 0, 0)

        // the bundle is complete and its fingerprint (policy included) matches: nothing to do
        let (again, out2) = try Harness.apply([file.path, "--output-root", root.path])
        XCTAssertEqual(again, 0, out2.stderr)
        XCTAssertTrue(out2.stdout.contains("1 up to date") || out2.stderr.contains("1 up to date"), out2.stdout + out2.stderr)
    }
}
