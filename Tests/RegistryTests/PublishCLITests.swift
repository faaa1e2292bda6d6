import Bundles
import Foundation
import JSON
@testable import Registry
import TestSupport
import XCTest

/// `deploy: kind: oci` and `tsexport pull` through the real executable, with real torch: a tiny BERT exported,
/// verified, pushed; pulled into another folder byte-identical and accepted by `tsexport verify`, `bench` and
/// `verify --native`.
final class PublishCLITests: RegistryTestCase {
    func manifest(repository: String) -> String {
        """
        apiVersion: tsexport/v1
        kind: Export
        metadata:
          name: tiny-bert
        spec:
          model:
            class: BertModel
            config: {vocab_size: 64, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 37, max_position_embeddings: 64}
          inputs:
            tensors:
              - {name: input_ids, from: random, shape: [2, 8]}
              - {name: attention_mask, from: ones, shape: [2, 8]}
          output:
            deploy:
              - kind: oci
                repository: \(repository)

        """
    }

    func testApplyPublishesAndPullGivesAVerifiableIdenticalBundle() throws {
        guard ProcessInfo.processInfo.environment["TSEXPORT_PYTHON"] != nil else { throw missing("TSEXPORT_PYTHON names no runtime with torch") }
        let registry = try LocalRegistry(self)
        try manifest(repository: "\(registry.host)/team/models").write(to: tmp.appendingPathComponent("m.yaml"), atomically: true, encoding: .utf8)

        // Registry down: the verified bundle is not installed and the error names the push.
        registry.stop()
        let (failed, failedText) = try tsexport(["apply", "m.yaml", "--output-root", "down", "--registry-insecure", registry.host], cwd: tmp)
        XCTAssertEqual(failed, 1, failedText)
        XCTAssertTrue(failedText.contains("m.yaml:16:21: error: tiny-bert: push to \(registry.host)/team/models failed, nothing installed and no tag moved"), failedText)
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp.appendingPathComponent("down/build/tiny-bert").path))
        try registry.start()

        let (applied, applyText) = try tsexport(["apply", "m.yaml", "--output-root", "out", "--registry-insecure", registry.host], cwd: tmp)
        XCTAssertEqual(applied, 0, applyText)
        let built = tmp.appendingPathComponent("out/build/tiny-bert")
        let fingerprint = try XCTUnwrap(RecordSummary.read(bundle: built)?.fingerprint)
        let hex = String(fingerprint.split(separator: ":").last!)
        XCTAssertEqual(Set(try client(registry).tags(try Reference(parsing: "\(registry.host)/team/models"))),
                       ["tiny-bert", "tiny-bert-\(hex.prefix(12))"])

        let (pulled, pullText) = try tsexport(["pull", "\(registry.host)/team/models:tiny-bert-\(hex.prefix(12))", "pulled/tiny-bert",
                                               "--registry-insecure", registry.host], cwd: tmp)
        XCTAssertEqual(pulled, 0, pullText)
        XCTAssertEqual(try contentFiles(tmp.appendingPathComponent("pulled/tiny-bert")), try contentFiles(built))
        let (verified, verifyText) = try tsexport(["verify", "pulled/tiny-bert"], cwd: tmp)
        XCTAssertEqual(verified, 0, verifyText)
        // bench and the libtorch checker accept the pulled bundle as well.
        let (benched, benchText) = try tsexport(["bench", "pulled/tiny-bert"], cwd: tmp)
        XCTAssertEqual(benched, 0, benchText)
        XCTAssertTrue(FileManager.default.fileExists(atPath: tmp.appendingPathComponent("pulled/tiny-bert/bench.html").path), benchText)
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/g++") else { throw missing("g++ is not installed (verify --native)") }
        let (native, nativeText) = try tsexport(["verify", "--native", "pulled/tiny-bert"], cwd: tmp)
        XCTAssertEqual(native, 0, nativeText)
        XCTAssertTrue(nativeText.contains("pass model.pt  traced"), nativeText)
    }
}
