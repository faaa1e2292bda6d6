@testable import Execution
import Foundation
import JSON
import XCTest

/// A pulled bundle's verification is judged case by case as `tsexport verify` judges it: pure, no Python.
final class CachedVerdictTests: XCTestCase {
    let tolerance = JSONValue.object([("atol", 0.05), ("rtol", 0.05), ("min_cosine", 0.99)])
    let record = JSONValue.object([
        ("dtype", "bfloat16"), ("quantize", .null), ("model_sha256", "aa"),
        ("aoti", .object([("sha256", "bb"), ("cases", [.object([("case", "p3"), ("inside", false)])])])),
    ])

    func check(_ name: String, passed: Bool, cosine: Double = 0.9999, rejected: Bool = false) -> JSONValue {
        var o: [(String, JSONValue)] = [("case", .string(name)), ("shape", [1, 8]), ("passed", .bool(passed)), ("max_abs_error", 0.001),
                                        ("max_rel_error", 0.002), ("min_cosine", 0.99999), ("float32", .object([("min_cosine", .double(cosine))]))]
        if rejected { o.append(("rejected_by_model", "the eager model refused it")) }
        return .object(o)
    }

    func verdict(_ pt: [JSONValue], _ pt2: [JSONValue], sha: String = "aa") -> JSONValue {
        .object([("sha256", .string(sha)), ("cases", .array(pt)), ("aoti", .object([("sha256", "bb"), ("cases", .array(pt2))]))])
    }

    func testEveryCountedCaseMustPassAndKeepTheGate() {
        let ok = [check("traced", passed: true), check("p3", passed: true)]
        XCTAssertNil(CachedVerdict.failure(record: record, verdict: verdict(ok, ok), tolerance: tolerance))
        XCTAssertNil(CachedVerdict.failure(record: record, verdict: verdict(ok, [check("p3", passed: false)]), tolerance: tolerance),
                     "a model.pt2 failure outside the envelope it was verified over does not count")
        XCTAssertNil(CachedVerdict.failure(record: record, verdict: verdict(ok + [check("p9", passed: false, rejected: true)], ok), tolerance: tolerance),
                     "a point the eager model refused is not a case")
        XCTAssertEqual(CachedVerdict.failure(record: record, verdict: verdict([check("p3", passed: true, cosine: 0.95)], ok), tolerance: tolerance),
                       "model.pt p3: cosine to the float32 eager model 0.95 is below min_cosine 0.99; against the bfloat16 eager model it traced: max abs error 0.001, max rel error 0.002, cosine 0.99999")
        XCTAssertEqual(CachedVerdict.failure(record: record, verdict: verdict(ok, ok, sha: "cc"), tolerance: tolerance),
                       "model.pt sha256 cc differs from the recorded aa")
        XCTAssertTrue(CachedVerdict.failure(record: record, verdict: verdict([check("traced", passed: false)], ok), tolerance: tolerance)?
            .hasPrefix("model.pt traced [1,8]: ") ?? false)
    }
}
