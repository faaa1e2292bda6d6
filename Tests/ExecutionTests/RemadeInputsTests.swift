import Execution
import Foundation
import JSON
import TSExportCLI
import XCTest

/// Remade inputs keep their structure (BART for sequence classification, which needs one </s> per row at its last
/// real token, applies over its envelope), and a point the eager model itself refuses is recorded as not an input
/// the model accepts, without failing the artifact or counting against its tracer warnings.
final class RemadeInputsTests: XCTestCase {
    static let manifests = """
        apiVersion: tsexport/v1
        kind: Export
        metadata: {name: bart-cls}
        spec:
          model:
            class: BartForSequenceClassification
            config: {vocab_size: 99, d_model: 32, encoder_layers: 2, decoder_layers: 2, encoder_attention_heads: 4,
                     decoder_attention_heads: 4, encoder_ffn_dim: 37, decoder_ffn_dim: 37, max_position_embeddings: 64,
                     num_labels: 3, pad_token_id: 1, bos_token_id: 0, eos_token_id: 2}
          inputs:
            tensors:
              - {name: input_ids, from: values, values: [[0, 31, 14, 52, 17, 23, 9, 44, 2], [0, 5, 6, 7, 2, 1, 1, 1, 1]]}
              - {name: attention_mask, from: values, values: [[1, 1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0, 0, 0]]}
          trace:
            envelope: {batch: [1, 4], sequence: [1, 16]}
        ---
        apiVersion: tsexport/v1
        kind: Export
        metadata: {name: gpt2-cls-nopad}
        spec:
          model:
            class: GPT2ForSequenceClassification
            config: {vocab_size: 99, n_embd: 32, n_layer: 2, n_head: 4, n_positions: 64, num_labels: 2}
          inputs:
            tensors:
              - {name: input_ids, from: random, shape: [1, 8]}
              - {name: attention_mask, from: ones, shape: [1, 8]}
          trace:
            envelope: {batch: [1, 2], sequence: [1, 16]}
        """

    func testStructuredIdsAndInputsTheModelRefuses() throws {
        let dir = try Harness.tempDir("remade")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("remade.yaml")
        try Self.manifests.write(to: file, atomically: true, encoding: .utf8)
        let root = dir.appendingPathComponent("out")
        let (code, out) = try Harness.apply([file.path, "--output-root", root.path, "--jobs", "1"])
        XCTAssertEqual(code, 0, out.stderr + out.stdout)

        // BART: every point verified, none refused by the model.
        let bart = try JSONValue(parsing: Data(contentsOf: root.appendingPathComponent("build/bart-cls/record.json")))
        XCTAssertEqual(bart["envelope"]?["verified"], .object([("batch", [1, 4]), ("sequence", [1, 16])]))
        let points = bart["envelope"]?["points"]?.arrayValue ?? []
        XCTAssertGreaterThanOrEqual(points.count, 8, "corners, traced and interior points")
        for p in points {
            XCTAssertEqual(p["passed"], .bool(true), "\(p)")
            XCTAssertNil(p["rejected_by_model"], "\(p)")
        }
        // Every remade row: <s> first, </s> at its last real token and nowhere else, <pad> where the mask is 0.
        let rows = try Harness.pythonJSON(["-c", """
            import json, sys
            from safetensors.torch import load_file
            s = load_file(sys.argv[1])
            out = []
            for key in sorted(k for k in s if k.endswith("/input_ids")):
                case = key.split("/")[0]
                ids, mask = s[key], s[case + "/attention_mask"]
                for row, m in zip(ids.tolist(), mask.tolist()):
                    real = [t for t, k in zip(row, m) if k]
                    pads = [t for t, k in zip(row, m) if not k]
                    out.append(len(real) == 0 or (real[-1] == 2 and real.count(2) == 1 and (len(real) == 1 or real[0] == 0) and set(pads) <= {1}))
            print(json.dumps({"rows": len(out), "ok": all(out)}))
            """, root.appendingPathComponent("build/bart-cls/sample_inputs.safetensors").path])
        XCTAssertEqual(rows["ok"], .bool(true), "\(rows)")
        XCTAssertGreaterThan(rows["rows"]?.intValue ?? 0, 10)

        // GPT-2 for classification without a pad token refuses batches above 1: recorded, warned, not a failure.
        let warnings = out.stderr.split(separator: "\n").filter { $0.contains("warning:") }.map(String.init)
        XCTAssertEqual(warnings, [
            "\(file.path):29:15: warning: gpt2-cls-nopad: 4 envelope points are not inputs the model accepts, so the artifact is not judged there (the record lists them); the first: the eager model refuses it at shape [2, 1] (ValueError: Cannot handle batch sizes > 1 if no padding token is defined.)",
        ], out.stderr)
        let gpt2 = try JSONValue(parsing: Data(contentsOf: root.appendingPathComponent("build/gpt2-cls-nopad/record.json")))
        let refused = (gpt2["envelope"]?["points"]?.arrayValue ?? []).filter { $0["rejected_by_model"] != nil }
        XCTAssertEqual(refused.count, 4)
        for p in refused {
            XCTAssertEqual(p["verdict"], "not an input the model accepts")
            XCTAssertEqual(p["sizes"]?["batch"], 2)
            XCTAssertEqual(p["passed"], .null)
        }
        XCTAssertFalse((gpt2["tracer_warnings"]?.arrayValue ?? []).isEmpty, "strict holds although the tracer warned")
        XCTAssertEqual(gpt2["envelope"]?["tracer_warnings_verdict"], "covered: the artifact matched the eager model at all 3 points of the recorded envelope")
    }
}
