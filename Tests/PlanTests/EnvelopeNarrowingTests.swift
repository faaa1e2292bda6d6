import Foundation
import JSON
import Plan
import XCTest

/// `EnvelopePlan.narrowed(to:traced:)`: the plan model.pt2 is compiled again from when a default envelope narrows.
final class EnvelopeNarrowingTests: XCTestCase {
    let plan = EnvelopePlan(
        axes: [AxisPlan(name: "batch", min: 1, max: 4, traced: 2, declared: false),
               AxisPlan(name: "sequence", min: 1, max: 16, traced: nil, declared: false)],
        tensors: [TensorAxes(name: "input_ids", axes: ["batch", "sequence"])],
        points: [EnvelopePoint(name: "traced", role: .traced, checkIndex: nil, sizes: ["batch": nil, "sequence": nil]),
                 EnvelopePoint(name: "p1", role: .corner, checkIndex: nil, sizes: ["batch": 1, "sequence": 1]),
                 EnvelopePoint(name: "p2", role: .corner, checkIndex: nil, sizes: ["batch": 4, "sequence": nil]),
                 EnvelopePoint(name: "p3", role: .corner, checkIndex: nil, sizes: ["batch": nil, "sequence": 16]),
                 EnvelopePoint(name: "p4", role: .interior, checkIndex: nil, sizes: ["batch": 3, "sequence": 5])],
        padMasks: true)

    func testRangesBecomeTheBoxAndOnlyPointsInsideItStay() throws {
        let box = try XCTUnwrap(VerifiedEnvelope(json: .object([("batch", .array([1, 3])), ("sequence", .array([2, 16]))])))
        let narrowed = plan.narrowed(to: box, traced: ["batch": 2, "sequence": 8])
        XCTAssertEqual(narrowed.axes.map { "\($0.name) \($0.min) \($0.max ?? -1) \($0.declared)" },
                       ["batch 1 3 false", "sequence 2 16 false"])
        // p1 (sequence 1) and p2 (batch 4) lie outside; p3 takes the traced batch 2, p4 is inside
        XCTAssertEqual(narrowed.points.map(\.name), ["traced", "p3", "p4"])
        XCTAssertEqual(narrowed.tensors, plan.tensors)
        XCTAssertEqual(narrowed.json["axes"]?[1]?["min"], .int(2), "the request's envelope carries the narrowed ranges")
    }

    func testAPointTakingAnUnknownTracedSizeUsesTheGivenOne() throws {
        let box = try XCTUnwrap(VerifiedEnvelope(json: .object([("batch", .array([1, 4])), ("sequence", .array([1, 7]))])))
        // p2's sequence is the traced size: 8 is outside [1, 7]
        XCTAssertEqual(plan.narrowed(to: box, traced: ["batch": 2, "sequence": 8]).points.map(\.name), ["traced", "p1", "p4"])
    }

    func testTheRecordFormIsReadBackOrRefused() {
        XCTAssertEqual(VerifiedEnvelope(json: .object([("batch", .array([1, 4]))]))?.text, "batch [1, 4]")
        XCTAssertNil(VerifiedEnvelope(json: .object([("batch", .array([1]))])))
        XCTAssertNil(VerifiedEnvelope(json: .string("batch")))
    }
}
