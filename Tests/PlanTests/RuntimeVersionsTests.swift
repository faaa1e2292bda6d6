import Bundles
import JSON
import Plan
import XCTest

/// The plan's fingerprint against the versions the running worker reports.
final class RuntimeVersionsTests: XCTestCase {
    let running = ["python": "3.12.0", "torch": "2.5.1", "transformers": "4.46.3"]

    func fingerprint(_ versions: [String: String]) -> FingerprintInputs {
        FingerprintInputs(manifest: .object([("name", "m")]), files: ["a": "sha256:00"], versions: versions.merging(["worker": "2.0.0"]) { a, _ in a })
    }

    func testKnownVersionsAreCheckedAndUnknownOnesCompleted() {
        guard case .planned = RuntimeVersions.check(planned: fingerprint(running), running: running) else {
            return XCTFail("the same versions: the plan's fingerprint")
        }
        guard case .completed(let fp) = RuntimeVersions.check(planned: fingerprint([:]), running: running) else {
            return XCTFail("a runtime never seen: completed")
        }
        XCTAssertEqual(fp.versions, running.merging(["worker": "2.0.0"]) { a, _ in a })
        XCTAssertEqual(fp.fingerprint, fingerprint(running).fingerprint)
        guard case .changed(let why) = RuntimeVersions.check(planned: fingerprint(["python": "3.12.0", "torch": "2.4.0", "transformers": "4.40.0"]), running: running) else {
            return XCTFail("another torch: refused")
        }
        XCTAssertEqual(why, "the Python runtime changed after the plan was made: the exporting worker reports torch 2.5.1 where the plan names 2.4.0, transformers 4.46.3 where the plan names 4.40.0; nothing was exported (run apply again to plan with this runtime)")
    }
}
