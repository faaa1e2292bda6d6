import Foundation
import JSON
import TestSupport
import XCTest

/// One apply over a folder holding a manifest for every option that changes the artifact (`optimize` both values,
/// `dtype` bfloat16 and float16, `quantize: dynamic_int8`, `formats: [torchscript, aoti]`, and the triton and
/// torchserve deploy kinds), each under the default envelope, on a tiny random BERT; every artifact is then reloaded
/// in a separate Python (torch.jit.load, aoti_load_package) and run on its bundle's sample inputs.
final class OptionMatrixApplyTests: XCTestCase {
    static let config = "{vocab_size: 99, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 4, intermediate_size: 37}"

    static func manifest(_ name: String, model: String = "", target: String = "", output: String = "") -> String {
        TinyBertManifest.text(name, config: config, model: model.isEmpty ? "" : model + "\n",
                              tensors: ["{name: input_ids, from: random, shape: [2, 8]}", "{name: attention_mask, from: ones, shape: [2, 8]}"],
                              spec: "  target: {hardware: cpu\(target)}\n  output: {\(output)}\n")
    }

    /// name → (manifest, the largest max-abs error its artifacts may show against the bundle's references).
    static let cases: [(String, String, Double)] = [
        ("opt-freeze", manifest("opt-freeze", target: ", optimize: freeze", output: "deploy: [{kind: triton, repository: build/triton}]"), 1e-4),
        ("opt-inference", manifest("opt-inference", target: ", optimize: optimize_for_inference", output: "deploy: [{kind: torchserve, store: build/store}]"), 1e-4),
        ("dtype-bf16", manifest("dtype-bf16", model: "    dtype: bfloat16"), 1e-1),
        ("dtype-fp16", manifest("dtype-fp16", model: "    dtype: float16"), 5e-2),
        ("int8", manifest("int8", target: ", quantize: dynamic_int8"), 1e-4),
        ("aoti", manifest("aoti", output: "formats: [torchscript, aoti], deploy: [{kind: triton, repository: build/triton-aoti, format: aoti}]"), 1e-4),
    ]

    func testEveryArtifactOptionAppliesUnderTheDefaultEnvelopeAndReloads() throws {
        let dir = try Harness.tempDir("matrix")
        defer { try? FileManager.default.removeItem(at: dir) }
        let manifests = dir.appendingPathComponent("manifests")
        try FileManager.default.createDirectory(at: manifests, withIntermediateDirectories: true)
        for (name, text, _) in Self.cases {
            try text.replacingOccurrences(of: "\n\n  inputs", with: "\n  inputs")
                .write(to: manifests.appendingPathComponent("\(name).yaml"), atomically: true, encoding: .utf8)
        }
        let root = dir.appendingPathComponent("out")
        let (code, out) = try Harness.apply([manifests.path, "--output-root", root.path])
        XCTAssertEqual(code, 0, out.stderr)
        XCTAssertFalse(out.stderr.contains("error:"), out.stderr)

        let build = root.appendingPathComponent("build")
        var pairs: [(String, String, Double)] = []  // (bundle, artifact, bound)
        for (name, _, bound) in Self.cases {
            let bundle = build.appendingPathComponent(name).path
            pairs.append((bundle, "\(bundle)/model.pt", bound))
        }
        pairs.append((build.appendingPathComponent("aoti").path, build.appendingPathComponent("aoti/model.pt2").path, 1e-4))
        pairs.append((build.appendingPathComponent("opt-freeze").path, build.appendingPathComponent("triton/opt-freeze/1/model.pt").path, 1e-4))
        pairs.append((build.appendingPathComponent("aoti").path, build.appendingPathComponent("triton-aoti/aoti/1/model.pt2").path, 1e-4))
        pairs.append((build.appendingPathComponent("opt-inference").path, build.appendingPathComponent("store/opt-inference.mar").path, 1e-4))

        let script = Harness.support.appendingPathComponent("reload.py").path
        let result = try Harness.pythonJSON([script] + pairs.flatMap { [$0.0, $0.1] })
        for (bundle, artifact, bound) in pairs {
            let r = try XCTUnwrap(result[artifact], "\(artifact) was not reloaded")
            XCTAssertEqual(r["outputs"]?.intValue, 2, artifact)
            XCTAssertLessThanOrEqual(r["max_abs_error"]?.doubleValue ?? 1, bound, artifact)
            guard !artifact.hasSuffix(".pt2") else { continue }
            // The default envelope holds the traced batch 2; one past it is refused by the guard, optimized or not.
            let record = try JSONValue(parsing: Data(contentsOf: URL(fileURLWithPath: "\(bundle)/record.json")))
            XCTAssertEqual(r["envelope_batch"]?.intValue, 2, artifact)
            XCTAssertEqual(r["refusal"], .string("builtins.RuntimeError: tsexport envelope: input_ids dimension 0 (batch) is 3, outside the verified range [1, 2]"), artifact)
            XCTAssertNotNil(record["envelope"], artifact)
        }
        let freeze = try JSONValue(parsing: Data(contentsOf: build.appendingPathComponent("opt-freeze/record.json")))
        XCTAssertEqual(freeze["target"]?["optimize"], "freeze")
        let inference = try JSONValue(parsing: Data(contentsOf: build.appendingPathComponent("opt-inference/record.json")))
        XCTAssertEqual(inference["target"]?["optimize"], "optimize_for_inference")
        let int8 = try JSONValue(parsing: Data(contentsOf: build.appendingPathComponent("int8/record.json")))
        XCTAssertEqual(int8["target"]?["quantize"], "dynamic_int8")
    }
}
