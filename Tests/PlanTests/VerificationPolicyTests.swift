import Bundles
import Foundation
import JSON
import Manifest
import Plan
import XCTest

/// The verification policy the planner decides once per entry, from the manifest with every default resolved.
final class VerificationPolicyTests: XCTestCase {
    static func text(model: String = "", target: String = "", output: String = "", trace: String = "") -> String {
        """
        apiVersion: tsexport/v1
        kind: Export
        metadata: {name: small}
        spec:
          model:
            class: BertModel
            config: {vocab_size: 100, hidden_size: 32, num_attention_heads: 4}
        \(model)
          inputs:
            tensors:
              - {name: input_ids, from: values, values: [[1, 2, 3]]}
              - {name: attention_mask, from: ones, shape: [1, 3]}
          trace:
            check_shapes: [[2, 3]]
        \(trace)
        \(target)
        \(output)
        """
    }

    func policy(_ text: String) throws -> VerificationPolicy {
        let m = try PlannerTests.manifest(text)
        let p = Planner().plan(PlannerInput(manifests: [m], outputRoot: PlannerTests.root, fingerprints: [:], existing: [:],
                                            unavailableTargets: nil, force: false, replace: []))
        return try XCTUnwrap(p.entries.first?.policy)
    }

    func testFloat32Defaults() throws {
        let p = try policy(Self.text())
        XCTAssertEqual(p.strict, true)
        XCTAssertEqual(p.atol, 1e-5)
        XCTAssertEqual(p.rtol, 1e-4)
        XCTAssertNil(p.minCosine, "no gate at full precision")
        XCTAssertEqual(p.dtype, "float32")
        XCTAssertFalse(p.quantized)
        XCTAssertFalse(p.reducedPrecision)
        XCTAssertNil(p.selectMinCosine)
        XCTAssertTrue(p.guarded)
        XCTAssertEqual(p.artifact, "model.pt")
        let staging = BundleStore(root: PlannerTests.root.standardizedFileURL).stagingURL(name: "small")
        XCTAssertEqual(p.guardRequest, WorkerRequests.guardRequest(bundle: staging, ranges: .null))
        XCTAssertEqual(p.tolerance, .object([("atol", 1e-5), ("rtol", 1e-4), ("min_cosine", .null)]))
    }

    func testReducedPrecisionGetsTheGateAndItsTolerances() throws {
        let p = try policy(Self.text(model: "    dtype: bfloat16", trace: "    strict: false"))
        XCTAssertEqual(p.strict, false)
        XCTAssertEqual(p.atol, 5e-2)
        XCTAssertEqual(p.rtol, 5e-2)
        XCTAssertEqual(p.minCosine, 0.99)
        XCTAssertTrue(p.reducedPrecision)
        XCTAssertEqual(p.dtype, "bfloat16")
    }

    func testInt8CompiledAloneIsNotGuarded() throws {
        let p = try policy(Self.text(target: "  target: {quantize: dynamic_int8}", output: "  output: {formats: [aoti]}"))
        XCTAssertTrue(p.quantized)
        XCTAssertEqual(p.minCosine, 0.99)
        XCTAssertEqual(p.selectMinCosine, 0.995)
        XCTAssertEqual(p.atol, 0.5)
        XCTAssertEqual(p.artifact, "model.pt2")
        XCTAssertFalse(p.guarded, "model.pt2 has no envelope guard")
        XCTAssertNil(p.guardRequest)
    }

    func testAWrittenGateAndToleranceWin() throws {
        let p = try policy(Self.text(trace: "    tolerance: {atol: 0.001, rtol: 0.01, min_cosine: 0.9}"))
        XCTAssertEqual(p.atol, 0.001)
        XCTAssertEqual(p.rtol, 0.01)
        XCTAssertEqual(p.minCosine, 0.9)
    }
}
