import Bundles
import Execution
import Foundation
import Plan
import XCTest

/// OutputOwners alone: which orphan paths a prune under the lock may remove.
final class OutputOwnersTests: XCTestCase {
    func orphan(_ name: String, _ action: PlanOrphan.Action, _ paths: [String]) -> PlanOrphan {
        PlanOrphan(name: name, action: action, manifestFile: "/specs/a.yaml", documentIndex: 0, reason: "the manifest file is gone",
                   bundle: "/out/build/\(name)", paths: paths)
    }

    func testOnlyPathsBothPlansRemoveAreConfirmed() {
        let shown = [orphan("x", .remove, ["/out/build/x", "/out/triton/x"]), orphan("y", .orphaned, ["/out/build/y"])]
        let again = [orphan("x", .remove, ["/out/build/x", "/out/store/x.mar"]), orphan("y", .remove, ["/out/build/y"]),
                     orphan("z", .orphaned, ["/out/build/z"])]
        let confirmed = OutputOwners.confirmed(shown: shown, again: again)
        XCTAssertEqual(confirmed.map(\.name), ["x", "y"])
        XCTAssertEqual(confirmed.map(\.paths), [["/out/build/x"], []], "y was only shown as orphaned, so none of its paths go")
        XCTAssertEqual(OutputOwners.confirmed(shown: [], again: again).flatMap(\.paths), [])
    }
}
