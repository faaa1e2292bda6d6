import Bundles
import Execution
import Foundation
import JSON
import XCTest

/// What apply does when model.pt2 verifies in a narrower envelope than it was compiled for, and the environment of
/// apply's workers (the same scripted process runner as OrchestrationTests).
extension OrchestrationTests {
    /// formats: [aoti] alone: model.pt2 has no guard and accepts the dims it was compiled for, so when a default
    /// envelope narrows it is exported and compiled again for the verified box, verified again in the fresh worker,
    /// and the record states the planned range, the verified one and the compiled one (equal to the verified one).
    func testNarrowedAOTIOnlyEnvelopeIsCompiledAgainForTheVerifiedBox() throws {
        let f = try fixture(["narrow"], extra: "  output: {formats: [aoti]}\n")
        let runner = StubProcessRunner(script: .init(failVerifyCase: ["narrow": "p1"]))
        let (outcomes, _, _) = try run(f, runner, keepGoing: false)
        XCTAssertEqual(outcomes.map(\.status), [.ok], outcomes.first?.diagnostics.description ?? "")
        let exports = runner.requests.filter { $0.op == "export" }
        guard exports.count == 2 else { return XCTFail("exported \(exports.count) time(s): once for the planned envelope, once for the verified box") }
        let axes = exports.map { e in (e.request["job"]?["trace"]?["envelope"]?["axes"]?.arrayValue ?? []).map { a in
            "\(a["name"]?.stringValue ?? "?") [\(a["min"]?.intValue ?? -1), \(a["max"]?.intValue ?? -1)]" } }
        XCTAssertEqual(axes, [["batch [1, 1]", "sequence [1, 4]"], ["batch [1, 1]", "sequence [4, 4]"]])
        let points = exports.map { e in (e.request["job"]?["trace"]?["envelope"]?["points"]?.arrayValue ?? []).compactMap { $0["case"]?.stringValue } }
        XCTAssertTrue(points[0].contains("p1"))
        XCTAssertFalse(points[1].contains("p1"), "the second export checks only points inside the verified box")
        XCTAssertEqual(runner.requests.filter { $0.op == "verify_bundle" }.count, 2, "the recompiled model.pt2 is verified again")
        XCTAssertEqual(runner.requests.filter { $0.op == "guard" }.count, 0, "model.pt2 has no TorchScript guard to rewrite")
        XCTAssertEqual(Set(exports.map(\.child)).count, 1, "the last entry's exporter is kept for the re-export, not started again")
        XCTAssertEqual(f.plan.entries[0].policy?.recompileWhenNarrowed, true, "the plan decides the re-export")
        let record = try XCTUnwrap(outcomes[0].record)
        let verified: JSONValue = .object([("batch", .array([1, 1])), ("sequence", .array([4, 4]))])
        XCTAssertEqual(record["artifact"], "model.pt2")
        XCTAssertEqual(record["envelope"]?["narrowed"], .bool(true))
        XCTAssertEqual(record["envelope"]?["verified"], verified)
        XCTAssertEqual(record["envelope"]?["compiled"], verified)
        XCTAssertEqual(record["envelope"]?["narrowed_by"]?.arrayValue?.map { $0["passed"] }, [.bool(false)], "the record keeps the point that narrowed it")
        XCTAssertEqual(record["envelope"]?["axes"]?[1]?["planned"], .array([1, 4]), "the record keeps the planned range")
        XCTAssertEqual(record["aoti"]?["dynamic_dims"], .object([]), "sequence [4, 4] is a single size: compiled static")
        let bundle = URL(fileURLWithPath: outcomes[0].bundle)
        let package = try String(contentsOf: bundle.appendingPathComponent("model.pt2"), encoding: .utf8)
        XCTAssertEqual(package, "stub AOTInductor package for narrow, dims {}\n", "the installed model.pt2 is the second compile")
        XCTAssertEqual(record["aoti"]?["sha256"], .string(try Digest.sha256(file: bundle.appendingPathComponent("model.pt2").path)))
        XCTAssertTrue(outcomes[0].diagnostics.contains { $0.severity == .warning && $0.message.contains("sequence") }, outcomes[0].diagnostics.description)
        assertNoStagingLeft(f)
        assertEveryChildEnded(runner)
    }

    /// model.pt2 beside model.pt: a narrowed envelope exports both again for the verified box (model.pt's guard is
    /// written with it at export, so no `guard` request), and model.pt2 is compiled for it too.
    func testNarrowedEnvelopeWithBothFormatsExportsBothAgain() throws {
        let f = try fixture(["both"], extra: "  output: {formats: [torchscript, aoti]}\n")
        let runner = StubProcessRunner(script: .init(failVerifyCase: ["both": "p1"]))
        let (outcomes, _, _) = try run(f, runner, keepGoing: false)
        XCTAssertEqual(outcomes.map(\.status), [.ok], outcomes.first?.diagnostics.description ?? "")
        let exports = runner.requests.filter { $0.op == "export" }
        XCTAssertEqual(exports.map { $0.request["job"]?["trace"]?["envelope"]?["axes"]?[1]?["min"] }, [.int(1), .int(4)])
        XCTAssertEqual(runner.requests.filter { $0.op == "guard" }.count, 0)
        let record = try XCTUnwrap(outcomes[0].record)
        XCTAssertEqual(record["artifact"], "model.pt")
        XCTAssertEqual(record["envelope"]?["narrowed"], .bool(true))
        XCTAssertEqual(record["envelope"]?["compiled"], record["envelope"]?["verified"])
        XCTAssertEqual(record["aoti"]?["dynamic_dims"], .object([]))
        let bundle = URL(fileURLWithPath: outcomes[0].bundle)
        XCTAssertEqual(record["model_sha256"], .string(try Digest.sha256(file: bundle.appendingPathComponent("model.pt").path)))
        assertNoStagingLeft(f)
        assertEveryChildEnded(runner)
    }

    /// apply's workers wait passively between OpenMP regions (two workers share the cores), unless the caller chose
    /// a policy; other commands' workers get the caller's environment as it is.
    func testApplyWorkersWaitPassivelyUnlessTheCallerChose() throws {
        XCTAssertEqual(WorkerClient.applyEnvironment(base: [:])["OMP_WAIT_POLICY"], "PASSIVE")
        XCTAssertEqual(WorkerClient.applyEnvironment(base: ["OMP_WAIT_POLICY": "ACTIVE"])["OMP_WAIT_POLICY"], "ACTIVE")
        XCTAssertNil(WorkerClient.environment(base: [:])["OMP_WAIT_POLICY"])
        let f = try fixture(["plain"])
        let runner = StubProcessRunner()
        let (outcomes, _, _) = try run(f, runner, keepGoing: false)
        XCTAssertEqual(outcomes.map(\.status), [.ok])
        let expected = ProcessInfo.processInfo.environment["OMP_WAIT_POLICY"] ?? "PASSIVE"
        XCTAssertEqual(runner.environments.count, 2, "the exporting and the verifying worker")
        XCTAssertEqual(runner.environments.map { $0["OMP_WAIT_POLICY"] }, [expected, expected])
    }
}
