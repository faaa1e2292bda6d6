import Execution
import Foundation
import JSON
import TSExportCLI
import XCTest

/// The serving envelope through `tsexport apply` with real torch and transformers: a declared envelope is a promise
/// (GPT-2 without a mask is refused with the fix named, nothing written), a padded DistilBERT verifies over its
/// envelope under the default strict, Marian has a target length of its own, ViT varies the batch, and
/// `formats: [torchscript, aoti]` adds a verified model.pt2 with a torch_aoti Triton entry.
final class EnvelopeApplyTests: XCTestCase {
    func write(_ text: String, in dir: URL, _ name: String = "m.yaml") throws -> URL {
        let file = dir.appendingPathComponent(name)
        try text.write(to: file, atomically: true, encoding: .utf8)
        return file
    }

    func record(_ root: URL, _ name: String) throws -> JSONValue {
        try JSONValue(parsing: Data(contentsOf: root.appendingPathComponent("build/\(name)/record.json")))
    }

    func testGPT2WithoutAMaskIsRefusedForADeclaredBatchRangeWithTheFixAndNothingWritten() throws {
        let dir = try Harness.tempDir("gpt2-envelope")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = try write("""
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: gpt2-nomask}
            spec:
              model:
                class: GPT2LMHeadModel
                config: {vocab_size: 99, n_embd: 32, n_layer: 2, n_head: 4, n_positions: 64}
              inputs:
                tensors:
                  - {name: input_ids, from: random, shape: [1, 16]}
              trace:
                envelope: {batch: [1, 4]}
            """, in: dir)
        let root = dir.appendingPathComponent("out")
        let (code, out) = try Harness.apply([file.path, "--output-root", root.path])
        XCTAssertEqual(code, 1)
        let error = out.stderr.split(separator: "\n").first { $0.contains("error:") }.map(String.init) ?? ""
        XCTAssertTrue(error.hasPrefix("\(file.path):12:23: error: gpt2-nomask: verify failed: spec.trace.envelope.batch: the artifact does not match the eager model at batch "), error)
        XCTAssertTrue(error.contains("out of bounds"), error)
        XCTAssertTrue(error.contains("the largest envelope that verified is batch [1, 1], sequence [1, 16]"), error)
        XCTAssertTrue(error.contains("attention_mask"), "the setting that helps is named: \(error)")
        XCTAssertTrue(error.hasSuffix("nothing was written"), error)
        XCTAssertEqual(Harness.tree(root), [], "no bundle, no staging, no lock left")
    }

    func testNaturalManifestsExportUnderTheDefaultsWithTheirEnvelopeRecordedAndEnforced() throws {
        let dir = try Harness.tempDir("natural")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = try write("""
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: distil-qa}
            spec:
              model:
                class: DistilBertForQuestionAnswering
                config: {vocab_size: 99, dim: 32, n_layers: 2, n_heads: 4, hidden_dim: 37, max_position_embeddings: 64}
              inputs:
                tensors:
                  - {name: input_ids, from: random, shape: [2, 32]}
                  - {name: attention_mask, from: ones, shape: [2, 32]}
              trace:
                envelope: {batch: [1, 4], sequence: [4, 32]}
              output:
                deploy: [{kind: triton, repository: build/triton}]
            ---
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: marian}
            spec:
              model:
                class: MarianMTModel
                config: {vocab_size: 99, d_model: 32, encoder_layers: 1, decoder_layers: 1, encoder_attention_heads: 4,
                         decoder_attention_heads: 4, encoder_ffn_dim: 37, decoder_ffn_dim: 37, max_position_embeddings: 64,
                         pad_token_id: 0, decoder_start_token_id: 0}
              inputs:
                tensors:
                  - {name: input_ids, from: random, shape: [1, 10], low: 1}
                  - {name: decoder_input_ids, from: random, shape: [1, 6], low: 1}
              trace:
                envelope: {batch: [1, 2], decoder_sequence: [1, 6]}
            ---
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: vit}
            spec:
              model:
                class: ViTModel
                config: {image_size: 32, patch_size: 8, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 4, intermediate_size: 37}
              inputs:
                tensors:
                  - {name: pixel_values, from: random, dtype: float32, shape: [1, 3, 32, 32]}
              trace:
                strict: false
                envelope: {batch: [1, 3]}
            """, in: dir)
        let root = dir.appendingPathComponent("out")
        let (code, out) = try Harness.apply([file.path, "--output-root", root.path, "--jobs", "1"])
        XCTAssertEqual(code, 0, out.stderr)

        // DistilBERT with a padded mask: the tracer warns (masking_utils), strict holds because every point matched.
        let distil = try record(root, "distil-qa")
        XCTAssertEqual(distil["envelope"]?["verified"], .object([("batch", [1, 4]), ("sequence", [4, 32])]))
        XCTAssertEqual(distil["envelope"]?["enforced"], .bool(true))
        XCTAssertEqual(distil["envelope"]?["narrowed"], .bool(false))
        XCTAssertFalse(distil["tracer_warnings"]?.arrayValue?.isEmpty ?? true)
        XCTAssertEqual(distil["envelope"]?["tracer_warnings_verdict"]?.stringValue?.hasPrefix("covered: the artifact matched the eager model at all "), true)
        let points = distil["envelope"]?["points"]?.arrayValue ?? []
        XCTAssertGreaterThanOrEqual(points.count, 8)
        XCTAssertTrue(points.contains { $0["sizes"] == .object([("batch", 4), ("sequence", 4)]) && $0["passed"] == .bool(true) }, "a corner")
        // Triton from the verified envelope: batching up to 4, the sequence dimension variable.
        let config = try String(contentsOf: root.appendingPathComponent("build/triton/distil-qa/config.pbtxt"), encoding: .utf8)
        XCTAssertTrue(config.contains("max_batch_size: 4"), config)
        XCTAssertTrue(config.contains("dims: [ -1 ]"), config)

        // Marian: source and target lengths of their own.
        let marian = try record(root, "marian")
        XCTAssertEqual(marian["envelope"]?["verified"], .object([("batch", [1, 2]), ("sequence", [1, 10]), ("decoder_sequence", [1, 6])]))
        XCTAssertEqual(marian["input_signature"]?[1]?["shape"], [1, 6])

        // ViT: the batch varies, channels and image size stay fixed.
        let vit = try record(root, "vit")
        XCTAssertEqual(vit["envelope"]?["verified"], .object([("batch", [1, 3])]))
        XCTAssertEqual(vit["envelope"]?["tensors"]?[0]?["axes"], .array(["batch", .null, .null, .null]))

        // Enforced by the artifact itself, in a fresh Python.
        let refused = try Harness.pythonJSON(["-c", """
            import json, sys, torch
            m = torch.jit.load(sys.argv[1])
            out = {}
            try:
                m(torch.ones(5, 8, dtype=torch.long), torch.ones(5, 8, dtype=torch.long))
            except Exception as e:
                out["batch"] = str(e).strip().splitlines()[-1]
            v = torch.jit.load(sys.argv[2])
            try:
                v(torch.zeros(1, 3, 48, 48))
            except Exception as e:
                out["image"] = str(e).strip().splitlines()[-1]
            print(json.dumps(out))
            """, root.appendingPathComponent("build/distil-qa/model.pt").path, root.appendingPathComponent("build/vit/model.pt").path])
        XCTAssertEqual(refused["batch"]?.stringValue?.hasSuffix("tsexport envelope: input_ids dimension 0 (batch) is 5, outside the verified range [1, 4]"), true, "\(refused)")
        XCTAssertEqual(refused["image"]?.stringValue?.hasSuffix("tsexport envelope: pixel_values dimension 2 (dim 2) is 48, outside the verified range [32, 32]"), true, "\(refused)")
    }

    func testAOTIBesideTorchScriptVerifiedDeployedAndRebuiltWhenFormatsChange() throws {
        let dir = try Harness.tempDir("aoti")
        defer { try? FileManager.default.removeItem(at: dir) }
        let text = """
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: tiny-bert-aoti}
            spec:
              model:
                class: BertModel
                config: {vocab_size: 99, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 37}
              inputs:
                tensors:
                  - {name: input_ids, from: random, shape: [2, 16]}
                  - {name: attention_mask, from: ones, shape: [2, 16]}
              trace:
                envelope: {batch: [1, 4], sequence: [1, 32]}
              output:
                formats: [torchscript, aoti]
                deploy: [{kind: triton, repository: build/triton, format: aoti}]
            """
        let file = try write(text, in: dir)
        let root = dir.appendingPathComponent("out")
        let (code, out) = try Harness.apply([file.path, "--output-root", root.path])
        XCTAssertEqual(code, 0, out.stderr)
        XCTAssertTrue(out.stderr.contains("export_aoti"), "the compile is a visible, timed stage: \(out.stderr)")
        let bundle = root.appendingPathComponent("build/tiny-bert-aoti")
        XCTAssertEqual(Harness.tree(bundle), (ApplyEndToEndTests.bundleFiles + ["model.pt2"]).sorted())
        let r = try record(root, "tiny-bert-aoti")
        let aoti = try XCTUnwrap(r["aoti"])
        XCTAssertEqual(aoti["file"], "model.pt2")
        XCTAssertEqual(aoti["dynamic_dims"], .object([("batch", [1, 4]), ("sequence", [1, 32])]))
        let cases = aoti["cases"]?.arrayValue ?? []
        XCTAssertEqual(cases.count, r["parity"]?["cases"]?.arrayValue?.count, "model.pt2 is checked at every point model.pt is")
        for c in cases {
            XCTAssertEqual(c["passed"], .bool(true), "\(c)")
            XCTAssertLessThan(c["max_abs_error"]?.doubleValue ?? 1, 1e-4)
        }
        let sha = try Harness.pythonJSON(["-c", "import hashlib, json, sys; print(json.dumps(hashlib.sha256(open(sys.argv[1], 'rb').read()).hexdigest()))", bundle.appendingPathComponent("model.pt2").path])
        XCTAssertEqual(aoti["sha256"], sha)
        XCTAssertEqual(aoti["bytes"]?.intValue, (try FileManager.default.attributesOfItem(atPath: bundle.appendingPathComponent("model.pt2").path)[.size] as? Int))
        let config = try String(contentsOf: root.appendingPathComponent("build/triton/tiny-bert-aoti/config.pbtxt"), encoding: .utf8)
        XCTAssertTrue(config.contains("platform: \"torch_aoti\""), config)
        XCTAssertTrue(config.contains("name: \"INPUT__1\""), config)
        // model.pt2 is served at batch 1: the plan sends max_batch_size 0 and the record states what was written.
        XCTAssertTrue(config.contains("max_batch_size: 0"), config)
        XCTAssertEqual(r["deployments"]?[0]?["settings"]?["max_batch_size"], 0)
        XCTAssertEqual(r["deployments"]?[0]?["details"]?["max_batch_size"], 0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: root.appendingPathComponent("build/triton/tiny-bert-aoti/1/model.pt2").path))

        // A second apply is a no-op; dropping aoti from formats rebuilds, and the bundle loses model.pt2.
        let (again, out2) = try Harness.apply([file.path, "--output-root", root.path])
        XCTAssertEqual(again, 0, out2.stderr)
        XCTAssertTrue(out2.stdout.contains("up to date"), out2.stdout)
        _ = try write(text.replacingOccurrences(of: "formats: [torchscript, aoti]", with: "formats: [torchscript]")
                          .replacingOccurrences(of: ", format: aoti", with: ""), in: dir)
        let (code3, out3) = try Harness.apply([file.path, "--output-root", root.path, "--dry-run"])
        XCTAssertEqual(code3, 0, out3.stderr)
        XCTAssertTrue(out3.stdout.contains("because spec.output.formats"), out3.stdout)
    }

    func testAnEnvelopeTorchExportRejectsIsAPositionedError() throws {
        let dir = try Harness.tempDir("aoti-bad")
        defer { try? FileManager.default.removeItem(at: dir) }
        // BERT's default 512 positions are not in the config, so validation cannot know; torch.export refuses.
        let file = try write("""
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: too-long}
            spec:
              model:
                class: BertModel
                config: {vocab_size: 99, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 4, intermediate_size: 37}
              inputs:
                tensors:
                  - {name: input_ids, from: random, shape: [1, 16]}
              trace:
                envelope: {sequence: [1, 600]}
              output:
                formats: [torchscript, aoti]
            """, in: dir)
        let root = dir.appendingPathComponent("out")
        let (code, out) = try Harness.apply([file.path, "--output-root", root.path])
        XCTAssertEqual(code, 1)
        let error = out.stderr.split(separator: "\n").first { $0.contains("error:") }.map(String.init) ?? ""
        XCTAssertTrue(error.hasPrefix("\(file.path):12:26: error: too-long: export_aoti failed: spec.trace.envelope.sequence: "), error)
        XCTAssertTrue(error.contains("sequence"), error)
        XCTAssertFalse(error.contains("Traceback"), error)
        XCTAssertEqual(Harness.tree(root), [])
    }
}
