@testable import Execution
import Foundation
import JSON
import Plan
import XCTest

/// The fingerprint is the plan's: a running worker whose versions the plan named is only checked against them.
extension OrchestrationTests {
    static let stubVersions = ["python": "3.12.0", "torch": "2.5.1", "transformers": "4.46.3"]

    func testAPlanThatKnowsTheRuntimeSendsItsExportRequestAsItIs() throws {
        let f = try fixture(["alpha"], versions: Self.stubVersions)
        let runner = StubProcessRunner()
        let (outcomes, _, _) = try run(f, runner, keepGoing: false)
        XCTAssertEqual(outcomes.map(\.status), [.ok])
        let item = f.item("alpha")
        let export = try XCTUnwrap(runner.requests.first { $0.op == "export" }?.request)
        XCTAssertEqual(Self.withoutID(export), try XCTUnwrap(item.entry.step(.trace)?.request), "the plan's request, fingerprint and versions included")
        XCTAssertEqual(outcomes.first?.record?["fingerprint"], .string(item.entry.fingerprint))
        XCTAssertEqual(item.entry.fingerprint, item.fingerprint.fingerprint)
        assertEveryChildEnded(runner)
    }

    func testARuntimeThatChangedAfterThePlanIsRefusedWithTheVersions() throws {
        let f = try fixture(["alpha"], versions: Self.stubVersions.merging(["torch": "2.4.0"]) { _, new in new })
        let runner = StubProcessRunner()
        let (outcomes, _, _) = try run(f, runner, keepGoing: false)
        XCTAssertEqual(outcomes.map(\.status), [.failed])
        XCTAssertEqual(outcomes.first?.diagnostics.map(\.message), [
            "alpha: export failed: the Python runtime changed after the plan was made: the exporting worker reports torch 2.5.1 where the plan names 2.4.0; nothing was exported (run apply again to plan with this runtime)",
        ])
        XCTAssertFalse(runner.requests.contains { $0.op == "export" }, "nothing is sent under a fingerprint that is not the runtime's")
        XCTAssertFalse(FileManager.default.fileExists(atPath: f.root.appendingPathComponent("alpha").path))
        assertEveryChildEnded(runner)
    }
}
