import Bundles
import Execution
import Foundation
import JSON
import Manifest
import Plan
import TSExportCLI
import XCTest

/// `BundleVerifier` without torch: a bundle folder with stand-in artifact bytes, and `NativeCheckerDouble`, a shell
/// script in place of the libtorch checker that prints the JSON lines given to it. The hashing, the record's
/// tolerance and gate and the judging are the verifier's own.
final class BundleVerifierTests: XCTestCase {
    var dir: URL!
    var bundle: URL!

    override func setUpWithError() throws {
        dir = try Harness.tempDir("bundle-verifier")
        bundle = dir.appendingPathComponent("b")
        try FileManager.default.createDirectory(at: bundle, withIntermediateDirectories: true)
        try Data("model.pt bytes".utf8).write(to: bundle.appendingPathComponent("model.pt"))
        try Data("model.pt2 bytes".utf8).write(to: bundle.appendingPathComponent("model.pt2"))
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    /// A record for the two files as written, with a quality gate of 0.99 and p3 outside model.pt2's envelope.
    func record(tolerance: Bool = true) throws -> JSONValue {
        var o: [(String, JSONValue)] = [
            ("dtype", "bfloat16"), ("quantize", .null),
            ("model_sha256", .string(try Digest.sha256(file: bundle.appendingPathComponent("model.pt").path))),
            ("aoti", .object([("sha256", .string(try Digest.sha256(file: bundle.appendingPathComponent("model.pt2").path))),
                              ("cases", [.object([("case", "p3"), ("inside", false)])])])),
        ]
        if tolerance { o.append(("parity", .object([("tolerance", .object([("atol", 0.05), ("rtol", 0.05), ("min_cosine", 0.99)]))]))) }
        return .object(o)
    }

    /// The checker double: prints `lines`, then the summary line.
    func checker(_ lines: [String], artifacts: [String] = ["model.pt", "model.pt2"]) throws -> BundleVerifier.Checker {
        let script = dir.appendingPathComponent("native-checker-double.sh")
        let summary = #"{"summary": true, "artifacts": [\#(artifacts.map { "\"\($0)\"" }.joined(separator: ", "))]}"#
        let body = (lines + [summary]).map { "echo '\($0)'" }.joined(separator: "\n")
        try Data("#!/bin/sh\n\(body)\n".utf8).write(to: script)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: script.path)
        return .native(binary: script.path, environment: ["PATH": "/usr/bin:/bin"], runner: SystemProcessRunner())
    }

    static func line(_ artifact: String, _ name: String, passed: Bool, cosine: Double = 0.9999) -> String {
        #"{"artifact": "\#(artifact)", "case": "\#(name)", "shape": [1, 8], "passed": \#(passed), "max_abs_error": 0.001, "max_rel_error": 0.002, "min_cosine": 0.99999, "float32": {"min_cosine": \#(cosine)}}"#
    }

    func testAllCasesPassing() throws {
        let v = BundleVerifier.verify(bundle: bundle, record: try record(),
                                      with: try checker([Self.line("model.pt", "traced", passed: true), Self.line("model.pt2", "traced", passed: true)]))
        XCTAssertTrue(v.ok)
        XCTAssertNil(v.error)
        XCTAssertEqual(v.checks.map(\.artifact), ["model.pt", "model.pt2"])
        XCTAssertEqual(v.checks.map(\.counted), [true, true])
        XCTAssertEqual(v.native?.summary?["artifacts"], ["model.pt", "model.pt2"])
    }

    func testAChangedFileIsFoundByItsHashWhateverTheCheckerSays() throws {
        let r = try record()
        try Data("other bytes".utf8).write(to: bundle.appendingPathComponent("model.pt"))
        let v = BundleVerifier.verify(bundle: bundle, record: r, with: try checker([Self.line("model.pt", "traced", passed: true)]))
        XCTAssertFalse(v.ok)
        guard case .problem(let message) = v.findings.first else { return XCTFail("\(v.findings)") }
        XCTAssertEqual(message, "model.pt sha256 \(Digest.sha256("other bytes")) differs from the recorded \(r["model_sha256"]!.stringValue!): the file changed after apply")
    }

    func testOutsideTheEnvelopeDoesNotCountAndTheGateDoes() throws {
        let outside = BundleVerifier.verify(bundle: bundle, record: try record(),
                                            with: try checker([Self.line("model.pt", "p3", passed: true), Self.line("model.pt2", "p3", passed: false)]))
        XCTAssertTrue(outside.ok, "a model.pt2 failure outside its verified envelope is shown, not counted")
        XCTAssertEqual(outside.checks.map(\.counted), [true, false])
        // The same failure of model.pt counts.
        let failed = BundleVerifier.verify(bundle: bundle, record: try record(), with: try checker([Self.line("model.pt", "p3", passed: false)]))
        XCTAssertFalse(failed.ok)
        // A passing case below the recorded gate fails, with the figures.
        let low = BundleVerifier.verify(bundle: bundle, record: try record(), with: try checker([Self.line("model.pt", "p1", passed: true, cosine: 0.95)]))
        XCTAssertFalse(low.ok)
        XCTAssertEqual(low.checks.first?.qualityFailure,
                       "cosine to the float32 eager model 0.95 is below min_cosine 0.99; against the bfloat16 eager model it traced: max abs error 0.001, max rel error 0.002, cosine 0.99999")
    }

    func testNoToleranceStopsBeforeAnyChecker() throws {
        let v = BundleVerifier.verify(bundle: bundle, record: try record(tolerance: false),
                                      with: .native(binary: "/nonexistent/checker", environment: [:], runner: SystemProcessRunner()))
        XCTAssertFalse(v.ok)
        XCTAssertEqual(v.error, RecordedTolerance.missingMessage)
        XCTAssertNil(v.native)
    }

    func testAListedModelPT2ThatIsGone() throws {
        let r = try record()
        try FileManager.default.removeItem(at: bundle.appendingPathComponent("model.pt2"))
        let v = BundleVerifier.verify(bundle: bundle, record: r, with: try checker([Self.line("model.pt", "traced", passed: true)], artifacts: ["model.pt"]))
        XCTAssertFalse(v.ok)
        guard case .problem(let message) = v.findings.first else { return XCTFail("\(v.findings)") }
        XCTAssertEqual(message, "the bundle lacks model.pt2, which record.json lists (aoti)")
    }

    func testCheckerLoadErrorsAndCrashesAreFindings() throws {
        let v = BundleVerifier.verify(bundle: bundle, record: try record(),
                                      with: try checker([#"{"artifact": "model.pt2", "load_error": "bad archive"}"#]))
        XCTAssertFalse(v.ok)
        guard case .problem(let message) = v.findings.last else { return XCTFail("\(v.findings)") }
        XCTAssertEqual(message, "FAIL model.pt2: bad archive")
    }
}

/// `verify`/`bench` build their worker requests with the plan's builders.
final class SharedRequestTests: XCTestCase {
    func testBenchRebuildsTheEagerModelThePlanExported() throws {
        let dir = try Harness.tempDir("shared-requests")
        defer { try? FileManager.default.removeItem(at: dir) }
        let text = """
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: tiny}
            spec:
              model:
                class: BertModel
                config: {vocab_size: 100, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 4, intermediate_size: 37}
              inputs:
                tensors:
                  - {name: input_ids, from: random, shape: [1, 8]}
            """
        let (manifests, diagnostics) = ManifestLoader(options: ValidationOptions(outputRoot: dir)).load(
            bytes: Data(text.utf8), file: dir.appendingPathComponent("m.yaml").path, directory: dir)
        XCTAssertEqual(diagnostics, [])
        let m = try XCTUnwrap(manifests.first)
        // The record keeps the manifest as written; the defaults are filled in on both sides from the same place.
        let record: JSONValue = .object([("fingerprint_inputs", .object([("manifest", m.document)]))])
        let decision = BenchRequests.eagerDecision(record: record, manifestDir: dir.path, allowRemoteCode: false, allowPickle: false,
                                                   directoryExists: { _ in false })
        XCTAssertEqual(decision, .model(WorkerRequests.model(m)))
        XCTAssertEqual(WorkerRequests.verify(m, bundle: dir),
                       WorkerRequests.verifyBundle(bundle: dir, tolerance: WorkerRequests.tolerance(atol: m.trace.atol, rtol: m.trace.rtol, minCosine: m.trace.minCosine)))
    }
}
