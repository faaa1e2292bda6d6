import Bundles
import Diagnostics
import Execution
import Foundation
import JSON
import Manifest
import Plan
import XCTest

/// The observe stage alone, over files in a temporary folder: selection, fingerprints, existing bundles, the state's
/// orphans and the cache annotation. The runtime is named by a path that does not exist, so no Python is asked.
final class PlanObserverTests: XCTestCase {
    var dir: URL!
    var root: URL!
    var file: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("tsexport-observer-\(UUID().uuidString.prefix(8))")
        root = dir.appendingPathComponent("out")
        file = dir.appendingPathComponent("models.yaml")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func write(_ names: [String], labels: [String: String] = [:]) throws {
        let text = names.map { name in
            """
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: \(name), labels: {team: \(labels[name] ?? "core")}}
            spec:
              model:
                class: BertModel
                config: {vocab_size: 100, hidden_size: 32, num_attention_heads: 4}
              inputs:
                tensors:
                  - {name: input_ids, from: random, shape: [1, 4]}

            """
        }.joined(separator: "---\n")
        try text.write(to: file, atomically: true, encoding: .utf8)
    }

    func observer(_ selection: ManifestSelection = ManifestSelection()) -> PlanObserver {
        PlanObserver(PlanObserver.Request(paths: [file.path], validation: ValidationOptions(outputRoot: root), outputRoot: root,
                                          selection: selection, python: dir.appendingPathComponent("no-such-python").path,
                                          workingDirectory: dir.path))
    }

    func observed(_ selection: ManifestSelection = ManifestSelection(), annotate: PlanObserver.Annotate? = nil,
                  file: StaticString = #filePath, line: UInt = #line) throws -> PlanObserver.Observation {
        switch observer(selection).observe(annotate: annotate) {
        case .success(let o): return o
        case .failure(let invalid):
            XCTFail("\(invalid.diagnostics)", file: file, line: line)
            throw invalid
        }
    }

    func testSelectionPlansTheSelectedAndKeepsEveryLoadedManifest() throws {
        try write(["a", "b", "c"], labels: ["b": "search"])
        let all = try observed()
        XCTAssertEqual(all.plan.entries.map(\.name), ["a", "b", "c"])
        XCTAssertEqual(all.plan.entries.map(\.action), [.create, .create, .create])
        XCTAssertEqual(all.plan.entries.map(\.bundle), ["a", "b", "c"].map { root.appendingPathComponent("build/\($0)").path })

        let picked = try observed(ManifestSelection(selectors: ["team=search"]))
        XCTAssertEqual(picked.manifests.map(\.name), ["b"])
        XCTAssertEqual(picked.loaded.map(\.name), ["a", "b", "c"], "orphans are judged against every loaded manifest")
        XCTAssertEqual(picked.plan.entries.map(\.name), ["b"])
        XCTAssertEqual(Array(picked.fingerprints.keys), ["b"])
        XCTAssertEqual(picked.plan.entries[0].fingerprint, all.plan.entries[1].fingerprint, "selection does not change a fingerprint")
    }

    func testFingerprintsNameTheWorkerAndThePolicyButNoUnknownRuntime() throws {
        try write(["a"])
        let o = try observed()
        let fp = try XCTUnwrap(o.fingerprints["a"])
        XCTAssertEqual(fp.versions["worker"], WorkerInfo.version)
        XCTAssertNil(fp.versions["torch"], "the runtime's versions are unknown without its cache entry")
        XCTAssertFalse(CachePlanner.versionsKnown(fp.versions))
        let manifest = try XCTUnwrap(o.manifests.first)
        for (k, v) in Planner.policyInputs(manifest) { XCTAssertEqual(fp.versions[k], v, k) }
        XCTAssertEqual(o.plan.entries[0].fingerprint, fp.fingerprint)
        XCTAssertEqual(try observed().plan.entries[0].fingerprint, fp.fingerprint, "observing again gives the same fingerprint")
    }

    func testWrongSelectionIsRefusedWithEveryDiagnostic() throws {
        try write(["alpha"])
        guard case .failure(let invalid) = observer(ManifestSelection(names: ["alpah"])).observe() else {
            return XCTFail("an unknown name must be refused")
        }
        XCTAssertEqual(invalid.diagnostics.map(\.message), ["no manifest is named 'alpah'; did you mean 'alpha'?"])
        XCTAssertEqual(invalid.diagnostics.map(\.severity), [.error])
        XCTAssertFalse(FileManager.default.fileExists(atPath: root.path), "nothing is written for a refused plan")
    }

    func testTheStatesOrphansArePlannedAndRemovedOnlyUnderPrune() throws {
        try write(["a"])
        var state = OutputState()
        state.bundles["build/a"] = .init(name: "a", manifestFile: file.path, documentIndex: 0, deploys: [])
        state.bundles["build/gone"] = .init(name: "gone", manifestFile: file.path, documentIndex: 1, deploys: [])
        try FileManager.default.createDirectory(at: root.appendingPathComponent("build/gone"), withIntermediateDirectories: true)
        try state.write(root: root)

        let shown = try observed()
        XCTAssertEqual(shown.plan.orphans.map(\.name), ["gone"])
        XCTAssertEqual(shown.plan.orphans.map(\.action), [.orphaned])
        XCTAssertEqual(shown.plan.orphans.first?.paths, [root.appendingPathComponent("build/gone").path])
        XCTAssertEqual(try observed(ManifestSelection(prune: true)).plan.orphans.map(\.action), [.remove])
        XCTAssertEqual(try observed(ManifestSelection(names: ["a"], prune: true)).plan.orphans, [], "--name judges no orphans")
        // `orphans(loaded:)` reads the state as it is when called: the prune under the lock plans from it again.
        try OutputState().write(root: root)
        XCTAssertEqual(observer().orphans(loaded: shown.loaded).0, [])
    }

    func testTheAnnotationSeesThePlanAndTheFingerprintsOnce() throws {
        try write(["a", "b"])
        final class Calls: @unchecked Sendable { var seen: [[String]] = [] }
        let calls = Calls()
        let o = try observed(annotate: { plan, fingerprints in
            calls.seen.append(plan.entries.map(\.name) + fingerprints.keys.sorted())
            CachePlanner.apply(&plan, repository: "reg:5000/cache", required: false, lookups: [:], versionsKnown: [])
        })
        XCTAssertEqual(calls.seen, [["a", "b", "a", "b"]])
        XCTAssertEqual(o.plan.entries.map { $0.cache?.status }, [.build, .build], "the annotation's decision is in the plan returned")
        XCTAssertEqual(o.plan.entries.first?.steps.last?.kind, .push)
    }
}
