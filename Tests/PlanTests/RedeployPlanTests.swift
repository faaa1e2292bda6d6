import Bundles
import Foundation
import JSON
import Manifest
import Plan
import XCTest

/// A deploy that drifted alone is planned as a redeploy from the installed bundle, installed where the manifest says.
final class RedeployPlanTests: XCTestCase {
    func testADriftedDeployIsARedeployWhoseStepNamesWhereItIsInstalled() throws {
        let m = try PlannerTests.manifest(PlannerTests.deployText)
        let fp = PlannerTests.fingerprint(m).withPolicy(of: m)
        var existing = PlannerTests.record(fp)
        existing.deploys = [
            (kind: "triton", path: "build/triton/small", settings: .object([("max_batch_size", 2), ("variable_dims", .bool(true))])),
            (kind: "torchserve", path: "build/model-store/small.mar", settings: .object([("max_batch_size", 2), ("variable_dims", .bool(false))])),
        ]
        var input = PlannerInput(manifests: [m], outputRoot: PlannerTests.root, fingerprints: [m.name: fp], existing: [m.name: existing])
        input.drift = [m.name: Drift(deploys: ["build/model-store/small.mar": ["build/model-store/small.mar: missing"]])]
        let e = try XCTUnwrap(Planner().plan(input).entries.first)
        XCTAssertEqual(e.action, .redeploy)
        let r = PlannerTests.root.path
        XCTAssertEqual(e.steps.map(\.kind), [.deploy])
        XCTAssertEqual(e.steps.map(\.install), [r + "/build/model-store/small.mar"])
        XCTAssertEqual(e.steps.map(\.outputs), [[r + "/build/model-store/small.mar"]])
        XCTAssertEqual(e.steps.first?.request?["max_batch_size"], 2, "the settings the record states")
        XCTAssertEqual(e.steps.first?.request?["dest"], .string(r + "/.tsexport/staging/small.deploy-2.staging"))
    }
}

extension FingerprintInputs {
    /// These inputs with the manifest's policy inputs, as the observer fingerprints it.
    fileprivate func withPolicy(of m: Manifest) -> FingerprintInputs {
        var fp = self
        for (k, v) in Planner.policyInputs(m) { fp.versions[k] = v }
        return fp
    }
}
