import Foundation
import JSON
import Plan
import XCTest

/// The one encode() gate both apply (the verified box) and `verify` (the record's `inside` flags) judge with.
final class EncodeCheckTests: XCTestCase {
    static func point(_ name: String, batch: Int, sequence: Int, cosine: Double?, skipped: Bool = false) -> JSONValue {
        var o: [(String, JSONValue)] = [("case", .string(name)), ("shape", [.int(batch), .int(sequence)]),
                                        ("sizes", .object([("batch", .int(batch)), ("sequence", .int(sequence))]))]
        if let cosine { o.append(("min_cosine", .double(cosine))) }
        if skipped { o.append(("skipped", "longer than the model's position embeddings")) }
        return .object(o)
    }

    static let points: [JSONValue] = [
        point("traced", batch: 2, sequence: 64, cosine: 0.99999),
        point("grid0", batch: 1, sequence: 16, cosine: 0.9999),
        point("grid1", batch: 8, sequence: 128, cosine: 0.95),
        point("grid2", batch: 4, sequence: 512, cosine: nil, skipped: true),
        point("grid3", batch: 1, sequence: 32, cosine: nil),
    ]

    func testApplyCountsTheTracedPointAndThePointsInsideTheVerifiedBox() {
        let box = VerifiedEnvelope(ranges: [("batch", 1, 4), ("sequence", 1, 64)])
        let j = EncodeCheck.judge(points: Self.points, minCosine: 0.9999, inside: EncodeCheck.insideVerified(box))
        XCTAssertEqual(j.points.map(\.inside), [true, true, false, false, true])
        XCTAssertEqual(j.counted.map(\.name), ["traced", "grid0", "grid3"], "grid1 lies outside the box, grid2 was skipped")
        // Exactly at the gate passes; a point without a cosine that counts fails; outside the box a low cosine does not.
        XCTAssertEqual(j.failures.map(\.name), ["grid3"])
        XCTAssertTrue(j.failures[0].cosine.isNaN)
        XCTAssertEqual(j.least ?? 0, 0.9999, accuracy: 1e-12)

        let traced = VerifiedEnvelope(ranges: [("batch", 3, 3), ("sequence", 3, 3)])
        let onlyTraced = EncodeCheck.judge(points: Self.points, minCosine: 0.9999, inside: EncodeCheck.insideVerified(traced))
        XCTAssertEqual(onlyTraced.counted.map(\.name), ["traced"], "the traced point counts whatever the box")
    }

    func testVerifyCountsThePointsTheRecordMarksInside() {
        let record: JSONValue = ["library": ["encode_check": ["min_cosine_allowed": 0.9, "points": [
            ["case": "traced", "inside": true], ["case": "grid1", "inside": true], ["case": "grid2", "inside": true],
            ["case": "grid0", "inside": false],
        ]]]]
        let j = EncodeCheck.judge(points: Self.points, minCosine: 0.96, inside: EncodeCheck.insideRecorded(record))
        XCTAssertEqual(j.points.map(\.inside), [true, false, true, true, false])
        XCTAssertEqual(j.counted.map(\.name), ["traced", "grid1"])
        XCTAssertEqual(j.failures.map(\.name), ["grid1"])
        XCTAssertEqual(j.failures.first?.cosine ?? 0, 0.95, accuracy: 1e-12)
        XCTAssertEqual(j.least ?? 0, 0.95, accuracy: 1e-12)

        let none = EncodeCheck.judge(points: Self.points, minCosine: 0.96, inside: EncodeCheck.insideRecorded(["library": .null]))
        XCTAssertEqual(none.counted, [], "a record without inside flags counts no point")
        XCTAssertNil(none.least)
    }
}
