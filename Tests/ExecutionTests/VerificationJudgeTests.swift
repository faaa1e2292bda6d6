@testable import Execution
import Foundation
import JSON
import Manifest
import Plan
import XCTest

/// The judge applies the entry's `VerificationPolicy` to an export's cases and the fresh process's results: pure, no
/// Python (the results are written here as the worker reports them).
final class VerificationJudgeTests: XCTestCase {
    static let root = URL(fileURLWithPath: "/srv/tsexport-judge-tests/out")

    static func text(trace: String) -> String {
        """
        apiVersion: tsexport/v1
        kind: Export
        metadata: {name: small}
        spec:
          model:
            class: MarianMTModel
            config: {vocab_size: 100, d_model: 32, encoder_attention_heads: 4, decoder_attention_heads: 4}
          inputs:
            tensors:
              - {name: input_ids, from: values, values: [[1, 2, 3]]}
              - {name: attention_mask, from: ones, shape: [1, 3]}
          trace:
            split: {kind: encoder-decoder, max_length: 16}
        \(trace)
        """
    }

    func entry(_ text: String) throws -> PlanEntry {
        let (ms, ds) = ManifestLoader(options: ValidationOptions(outputRoot: Self.root))
            .load(bytes: Data(text.utf8), file: "m.yaml", directory: Self.root)
        XCTAssertEqual(ds, [], "test manifest must be valid")
        let m = try XCTUnwrap(ms.first)
        let plan = Planner().plan(PlannerInput(manifests: [m], outputRoot: Self.root, fingerprints: [:], existing: [:],
                                               unavailableTargets: nil, force: false, replace: []))
        return try XCTUnwrap(plan.entries.first)
    }

    /// Every planned point and the split parts' traced cases, passing, as the export and verify_bundle report them.
    func judged(_ e: PlanEntry) throws -> [(field: String?, message: String)] {
        let envelope = try XCTUnwrap(e.envelope)
        func sizes(_ p: EnvelopePoint) -> JSONValue {
            .object(envelope.axes.map { a in (a.name, .int((p.sizes[a.name] ?? nil) ?? a.traced ?? a.min)) })
        }
        let points = envelope.points.map { p in (p.name, sizes(p)) } + [("encoder.traced", .object([])), ("decoder_step.traced", .object([]))]
        let data = JSONValue.object([("cases", .array(points.map { .object([("case", .string($0.0)), ("sizes", $0.1)]) })),
                                     ("tracer_warnings", .array([]))])
        let verdict = JSONValue.object([("cases", .array(points.map { .object([("case", .string($0.0)), ("shape", [1, 3]), ("passed", .bool(true))]) }))])
        var judge = try VerificationJudge(entry: e, data: data, verdict: verdict)
        _ = try judge.judge()
        lastRecordWarnings = judge.recordWarnings
        return judge.warnings
    }
    var lastRecordWarnings: [JSONValue] = []

    func testAnUncachedSplitWithoutCheckShapesUnderStrictFalseIsWarnedAboutByTheJudge() throws {
        let loose = try entry(Self.text(trace: "    strict: false"))
        XCTAssertEqual(loose.policy?.split?.warnTracedShapeOnly, true)
        let warned = try judged(loose).filter { $0.field == "spec.trace.check_shapes" }
        XCTAssertEqual(warned.map(\.message), [
            "the encoder and decoder step are checked at the traced batch size only (and with a padded source); add check_shapes to prove other batch sizes and source lengths",
        ])
        XCTAssertEqual(lastRecordWarnings.map { $0["code"] }, ["unchecked_split"], "the record keeps it too")
        XCTAssertEqual(lastRecordWarnings.first?["field"], "spec.trace.check_shapes")
        for trace in ["    strict: false\n    check_shapes: [[2, 3]]", "    strict: true"] {
            let e = try entry(Self.text(trace: trace))
            XCTAssertEqual(e.policy?.split?.warnTracedShapeOnly, false, trace)
            XCTAssertEqual(try judged(e).filter { $0.field == "spec.trace.check_shapes" }.count, 0, trace)
        }
        let cached = try entry(Self.text(trace: "    strict: false").replacingOccurrences(of: "max_length: 16}", with: "max_length: 16, cache: true}"))
        XCTAssertEqual(cached.policy?.split?.warnTracedShapeOnly, false, "a cached split is checked by generation and drift")
    }

    func testTheCachedStepIsHeldToThePlansOneDriftLimit() throws {
        let e = try entry(Self.text(trace: "    tolerance: {atol: 0.00005, rtol: 0.0001}").replacingOccurrences(of: "max_length: 16}", with: "max_length: 16, cache: true}"))
        let limit = try XCTUnwrap(e.policy?.split?.driftLimit)
        XCTAssertEqual(limit, 5e-3, accuracy: 1e-12, "SplitBounds.driftLimit: 100 × atol")
        func generation(drift: Double) -> JSONValue {
            .object([("generation", .object([("prompts", .array([.object([("prompt", [5, 6]), ("equal", .bool(true))])])),
                                             ("passed", .bool(true)), ("max_drift", .double(drift))]))])
        }
        let kept = try VerificationJudge(entry: e, data: .object([]), verdict: generation(drift: 4e-3)).judgeGeneration(tolerance: nil)
        XCTAssertEqual(kept?["drift_limit"], .double(limit))
        XCTAssertThrowsError(try VerificationJudge(entry: e, data: .object([]), verdict: generation(drift: 6e-3)).judgeGeneration(tolerance: nil)) { error in
            let failure = error as? WorkerFailure
            XCTAssertEqual(failure?.field, "spec.trace.split.cache")
            XCTAssertEqual(failure?.message, "the cached step drifts from the uncached model: max abs logit error 0.006 (limit 0.005); the cache does not reproduce the model")
        }
    }
}
