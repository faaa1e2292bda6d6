import Foundation
import XCTest

/// One `tsexport validate` reports every problem of a document: the semantic checks whose inputs the schema accepted
/// run even when other fields of the same document are refused, and a check about a refused field says nothing.
final class ValidateAllChecksCLITests: XCTestCase {
    func testASchemaErrorABadPathAndAPositionLimitInOneRun() throws {
        let dir = try CLI.tempDir("validate-all")
        defer { try? FileManager.default.removeItem(at: dir) }
        try CLI.write("""
            apiVersion: tsexport/v1
            kind: Export
            metadata:
              name: all-at-once
            spec:
              model:
                class: BertModel
                pretrained: ./no-such-model
                config: {vocab_size: 100, hidden_size: 32, num_attention_heads: 4, max_position_embeddings: 64}
              inputs:
                tensors:
                  - {name: input_ids, from: random, shape: [1, 16]}
                  - {name: attention_mask, from: ones, shape: [0, 16]}
              trace:
                strict: maybe
                envelope:
                  sequence: [1, 128]

            """, to: "m.yaml", in: dir)
        let r = try CLI.run(["validate", "m.yaml"], cwd: dir)
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stdout, "")
        // The refused batch size 0 of attention_mask is reported once, by the schema: no agreement error about it.
        XCTAssertEqual(r.errLines, [
            "m.yaml:8:17: error: pretrained model folder './no-such-model' does not exist (looked in \(dir.path)/no-such-model)",
            "m.yaml:13:52: error: spec.inputs.tensors[1].shape[0]: must be >= 1",
            "m.yaml:15:13: error: spec.trace.strict: expected boolean, got string \"maybe\"",
            "m.yaml:17:21: error: sequence max 128 is beyond the model's 64 positions (max_position_embeddings); the model cannot serve longer inputs",
            "4 errors in 1 file",
        ])
    }
}
