import Diagnostics
import Foundation
import Manifest
import Plan
import XCTest

/// ManifestSelection alone: names, labels, shards, their errors, and the orphan scope they give.
final class ManifestSelectionTests: XCTestCase {
    func manifest(_ name: String, team: String) throws -> Manifest {
        try PlannerTests.manifest("""
        apiVersion: tsexport/v1
        kind: Export
        metadata: {name: \(name), labels: {team: \(team)}}
        spec:
          model: {class: BertModel, config: {vocab_size: 100, hidden_size: 32, num_attention_heads: 4}}
          inputs:
            tensors:
              - {name: input_ids, from: random, shape: [1, 4]}
          output:
            dir: build/\(name)
        """, file: "/specs/\(name).yaml")
    }

    func testNamesAndLabelsPickAndUnknownNamesAreErrorsWithASuggestion() throws {
        let all = [try manifest("alpha", team: "search"), try manifest("beta", team: "ads"), try manifest("gamma", team: "search")]
        let (byLabel, none) = ManifestSelection(selectors: ["team=search"]).select(all)
        XCTAssertEqual(byLabel.map(\.name), ["alpha", "gamma"])
        XCTAssertEqual(none, [])
        let (byName, typo) = ManifestSelection(names: ["beta"], replace: ["alpah"]).select(all)
        XCTAssertEqual(byName.map(\.name), ["beta"])
        XCTAssertEqual(typo.map(\.message), ["no manifest is named 'alpah'; did you mean 'alpha'?"])
        XCTAssertEqual(typo.map(\.severity), [.error])
        let (_, bad) = ManifestSelection(selectors: ["team"], shard: "3/2").select(all)
        XCTAssertEqual(bad.map(\.message), ["--selector 'team' is not key=value", "--shard '3/2' is not i/n with 1 ≤ i ≤ n"])
    }

    func testShardsPartitionTheManifestsByTheStableHashOfTheName() throws {
        let all = try (0..<12).map { try manifest("m\($0)", team: "t") }
        let picked = (1...3).map { i in ManifestSelection(shard: "\(i)/3").select(all).0.map(\.name) }
        XCTAssertEqual(picked.flatMap { $0 }.sorted(), all.map(\.name).sorted())
        for (i, names) in picked.enumerated() {
            XCTAssertTrue(names.allSatisfy { ManifestSelection.shardIndex(of: $0, count: 3) == i })
        }
        XCTAssertEqual(ManifestSelection.shardIndex(of: "m0", count: 1), 0)
    }

    func testTheOrphanScopeNamesTheFiltersAndResolvesRelativePaths() {
        let scope = ManifestSelection(names: ["a"], selectors: ["k=v"], shard: "2/4", prune: true)
            .orphanScope(paths: ["specs", "/abs/x.yaml"], workingDirectory: "/work/dir")
        XCTAssertEqual(scope.paths, ["/work/dir/specs", "/abs/x.yaml"])
        XCTAssertEqual(scope.filtered, "--name and --selector")
        XCTAssertEqual(scope.shard?.0, 2)
        XCTAssertEqual(scope.shard?.1, 4)
        XCTAssertTrue(scope.prune)
        let plain = ManifestSelection().orphanScope(paths: ["/s"], workingDirectory: "/")
        XCTAssertNil(plain.filtered)
        XCTAssertNil(plain.shard)
        XCTAssertFalse(plain.prune)
    }
}
