import Bundles
import Foundation
import Manifest
import Plan
import XCTest

/// OrphanPlanner alone: which bundles of the root's state are orphans, what would go and what stays.
final class OrphanPlannerTests: XCTestCase {
    let root = PlannerTests.root

    func text(_ name: String) -> String {
        """
        apiVersion: tsexport/v1
        kind: Export
        metadata: {name: \(name)}
        spec:
          model: {class: BertModel, config: {vocab_size: 100, hidden_size: 32, num_attention_heads: 4}}
          inputs:
            tensors:
              - {name: input_ids, from: random, shape: [1, 4]}
          output:
            dir: build/\(name)-v2
            deploy:
              - {kind: triton, repository: triton}
        """
    }

    func planner() -> OrphanPlanner { OrphanPlanner(shardIndex: { name, n in name == "x" ? 0 : n - 1 }) }

    func testADocumentMovedToAnotherFileLeavesItsOldBundleButNotTheTritonModelItStillDeclares() throws {
        var state = OutputState()
        state.bundles["build/x"] = .init(name: "x", manifestFile: "/specs/a.yaml", documentIndex: 0, deploys: ["triton/x", "store/x.mar"])
        state.bundles["build/elsewhere"] = .init(name: "e", manifestFile: "/other/e.yaml", documentIndex: 0, deploys: ["store/e.mar"])
        let moved = try PlannerTests.manifest(text("x"), file: "/specs/b.yaml")
        let (orphans, notes) = planner().plan(state: state, loaded: [moved], root: root,
                                              scope: .init(paths: ["/specs"]), exists: { _ in true })
        XCTAssertEqual(orphans.count, 1)
        let o = try XCTUnwrap(orphans.first)
        XCTAssertEqual(o.action, .orphaned)
        XCTAssertEqual(o.reason, "no document in the file is named x any more")
        XCTAssertEqual(o.paths, [root.path + "/build/x", root.path + "/store/x.mar"])
        XCTAssertEqual(o.kept, [root.path + "/triton/x"], "triton/x is declared by the manifest that moved")
        XCTAssertEqual(notes, ["1 bundle(s) in the output root were made by manifests outside the given paths; they are not judged"])
    }

    func testSubsetsNeverMakeOrphansAndAShardJudgesOnlyItsOwn() throws {
        var state = OutputState()
        state.bundles["build/x"] = .init(name: "x", manifestFile: "/specs/a.yaml", documentIndex: 0, deploys: [])
        state.bundles["build/y"] = .init(name: "y", manifestFile: "/specs/a.yaml", documentIndex: 1, deploys: [])
        let gone: (String) -> Bool = { $0 != "/specs/a.yaml" }
        let (filtered, filterNotes) = planner().plan(state: state, loaded: [], root: root,
                                                     scope: .init(paths: ["/specs"], filtered: "--selector", prune: true), exists: gone)
        XCTAssertEqual(filtered, [])
        XCTAssertEqual(filterNotes.first?.hasSuffix("--selector selects a subset; plan without it to see them"), true)
        let (sharded, shardNotes) = planner().plan(state: state, loaded: [], root: root,
                                                   scope: .init(paths: ["/specs/a.yaml"], shard: (1, 2), prune: true), exists: gone)
        XCTAssertEqual(sharded.map(\.name), ["x"])
        XCTAssertEqual(sharded.first?.action, .remove)
        XCTAssertEqual(sharded.first?.reason, "the manifest file is gone")
        XCTAssertEqual(shardNotes, ["1 orphan(s) fall in other shards than 1/2 and are left to those"])
        // A file given alone does not cover a sibling that happens to share its prefix.
        XCTAssertFalse(OrphanPlanner.Scope(paths: ["/specs/a"]).covers("/specs/ab.yaml"))
        XCTAssertTrue(OrphanPlanner.Scope(paths: ["/specs"]).covers("/specs/sub/ab.yaml"))
    }

    func testADeployALiveManifestNoLongerDeclaresIsAnOrphanButItsBundleIsNot() throws {
        var state = OutputState()
        state.bundles["build/x-v2"] = .init(name: "x", manifestFile: "/specs/a.yaml", documentIndex: 0, deploys: ["triton/x", "store/x.mar"])
        let live = try PlannerTests.manifest(text("x"), file: "/specs/a.yaml")
        let (orphans, notes) = planner().plan(state: state, loaded: [live], root: root, scope: .init(paths: ["/specs"], prune: true), exists: { _ in true })
        XCTAssertEqual(notes, [])
        let o = try XCTUnwrap(orphans.first)
        XCTAssertEqual(orphans.count, 1)
        XCTAssertEqual(o.action, .remove)
        XCTAssertEqual(o.reason, "its manifest no longer declares the deploy to store/x.mar")
        XCTAssertEqual(o.paths, [root.path + "/store/x.mar"], "the bundle and the Triton model it still declares stay")
        XCTAssertEqual(o.kept, [])
        // Under --name the subset cannot judge it.
        let (filtered, _) = planner().plan(state: state, loaded: [live], root: root, scope: .init(paths: ["/specs"], filtered: "--name"), exists: { _ in true })
        XCTAssertEqual(filtered, [])
    }
}
