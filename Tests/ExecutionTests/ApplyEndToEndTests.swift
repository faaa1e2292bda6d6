import Execution
import Foundation
import JSON
import TSExportCLI
import XCTest

/// `tsexport apply` with real torch and real transformers: each artifact is reloaded in a separate Python and
/// compared with an eager transformers model.
final class ApplyEndToEndTests: XCTestCase {
    static let guideIDs = [101, 2040, 2001, 3958, 27227, 1029, 102, 3958, 103, 2001, 1037, 13997, 11510, 102]
    static let bundleFiles = ["build.json", "model.pt", "record.json", "reference_outputs.safetensors", "sample_inputs.safetensors"]

    func testPretrainedMiniLMWithTheGuideSentence() throws {
        let dir = try Harness.tempDir("minilm")
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try Harness.miniLMDir()
        let manifest = """
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: minilm-guide}
            spec:
              model:
                class: BertModel
                pretrained: \(model)
              inputs:
                tokenizer: \(model)
                text: "[CLS] Who was Jim Henson ? [SEP] Jim Henson was a puppeteer [SEP]"
                mask: [8]
                tensors:
                  - {name: input_ids, from: text}
                  - name: token_type_ids
                    from: values
                    values: [[0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]]
              trace:
                check_shapes: [[1, 9]]
            """
        let file = dir.appendingPathComponent("minilm.yaml")
        try manifest.write(to: file, atomically: true, encoding: .utf8)
        let root = dir.appendingPathComponent("out")
        let (code, out) = try Harness.apply([file.path, "--output-root", root.path])
        XCTAssertEqual(code, 0, out.stderr)
        let bundle = root.appendingPathComponent("build/minilm-guide")
        let cmp = try Harness.compare(bundle: bundle, manifestDir: dir)
        XCTAssertEqual(cmp["sample_inputs"]?["input_ids"], .array([.array(Self.guideIDs.map { .int($0) })]),
                       "the tokenizer must give the guide's token ids, with position 8 masked")
        XCTAssertLessThan(cmp["max_abs_error"]?.doubleValue ?? 1, 1e-4)
        XCTAssertEqual(cmp["segments_as_mask_differs"], true)
        let record = try JSONValue(parsing: Data(contentsOf: bundle.appendingPathComponent("record.json")))
        // Content hashes of the weights, config and tokenizer files that went in.
        guard case .object(let files)? = record["fingerprint_inputs"]?["files"] else { return XCTFail("no input file hashes") }
        XCTAssertTrue(files.contains { $0.0 == "spec.model.pretrained/model.safetensors" }, "\(files.map(\.0))")
        XCTAssertTrue(files.contains { $0.0 == "spec.inputs.tokenizer/vocab.txt" })
    }

    func testTinyFamiliesInOneApplyShareAWarmWorker() throws {
        let dir = try Harness.tempDir("families")
        defer { try? FileManager.default.removeItem(at: dir) }
        let manifest = """
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: tiny-bert}
            spec:
              model: {class: BertForSequenceClassification, config: {vocab_size: 100, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 37}}
              inputs:
                tensors:
                  - {name: input_ids, from: random, shape: [2, 12]}
                  - {name: token_type_ids, from: zeros, shape: [2, 12]}
              trace: {check_shapes: [[1, 5]]}
            ---
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: tiny-distilbert}
            spec:
              model: {class: DistilBertForQuestionAnswering, config: {vocab_size: 100, dim: 32, n_layers: 2, n_heads: 4, hidden_dim: 37}}
              inputs:
                tensors:
                  - {name: input_ids, from: random, shape: [1, 10]}
            ---
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: tiny-roberta}
            spec:
              model: {class: RobertaModel, config: {vocab_size: 100, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 37, pad_token_id: 1}}
              inputs:
                tensors:
                  - {name: input_ids, from: random, low: 3, shape: [1, 10]}
              # RoBERTa's position ids come from a padding check the tracer warns about (torch/nn/functional.py):
              # keep the trace and let the check shape prove it.
              trace: {strict: false, check_shapes: [[1, 6]]}
            ---
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: tiny-gpt2}
            spec:
              model: {class: GPT2LMHeadModel, config: {vocab_size: 100, n_embd: 32, n_layer: 2, n_head: 4, n_positions: 64, use_cache: false}}
              inputs:
                tensors:
                  - {name: input_ids, from: random, shape: [1, 10]}
              # GPT-2's causal mask helper branches on shapes in Python (masking_utils): a TracerWarning.
              trace: {strict: false, check_shapes: [[1, 6]]}
            """
        let file = dir.appendingPathComponent("families.yaml")
        try manifest.write(to: file, atomically: true, encoding: .utf8)
        let root = dir.appendingPathComponent("out")
        let (code, out) = try Harness.apply([file.path, "--output-root", root.path])
        XCTAssertEqual(code, 0, out.stderr)
        XCTAssertEqual(out.stderr.components(separatedBy: "starting a new Python worker").count, 1, "one warm worker serves every manifest")
        for name in ["tiny-bert", "tiny-distilbert", "tiny-roberta", "tiny-gpt2"] {
            let bundle = root.appendingPathComponent("build/\(name)")
            let cmp = try Harness.compare(bundle: bundle, manifestDir: dir)
            XCTAssertLessThan(cmp["max_abs_error"]?.doubleValue ?? 1, 1e-4, name)
            if name == "tiny-gpt2" {
                XCTAssertEqual(cmp["untied_parameters"], ["lm_head.weight"], "the LM head's tied weight is cloned")
            }
        }
    }
}
