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

    func plan(_ text: String) throws -> PlanEntry {
        let m = try PlannerTests.manifest(text)
        return try XCTUnwrap(Planner().plan(PlannerInput(manifests: [m], outputRoot: PlannerTests.root, fingerprints: [:], existing: [:],
                                                         unavailableTargets: nil, force: false, replace: [])).entries.first)
    }

    func testTritonBatchSettingsAreOneRuleOverThePlannedAndTheVerifiedEnvelope() throws {
        let e = try plan(Self.text(output: "  output:\n    deploy:\n      - {kind: triton, repository: build/triton}\n      - {kind: torchserve, store: build/store}"))
        let rules = try XCTUnwrap(e.policy?.deploys)
        XCTAssertEqual(rules.map(\.index), [0, 1])
        XCTAssertEqual(rules.map(\.kind), ["triton", "torchserve"])
        let triton = rules[0]
        XCTAssertTrue(triton.batching)
        XCTAssertTrue(triton.followsVerifiedEnvelope, "the default envelope may narrow")
        XCTAssertEqual(triton.planned, DeploySettings(maxBatchSize: 2, variableDims: true), "batch [1, 2], sequence [1, 3]")
        // the request the plan carries is the rule's planned settings, and plan prints them
        let step = try XCTUnwrap(e.steps.first { $0.request?["kind"] == "triton" })
        XCTAssertEqual(step.request?["max_batch_size"], 2)
        XCTAssertEqual(step.request?["variable_dims"], .bool(true))
        XCTAssertEqual(step.request?["batch_dim"], .null, "the recorded batch dimension, left out when batched")
        XCTAssertEqual(step.description, "triton: model repository entry, platform pytorch_libtorch, max_batch_size 2 (lower if the default envelope narrows in verification)")
        // a narrowed envelope: batch 1 only gives no batching; a fixed sequence gives fixed dims
        XCTAssertEqual(triton.settings(verified: VerifiedEnvelope(ranges: [("batch", 1, 1), ("sequence", 1, 3)])),
                       DeploySettings(maxBatchSize: 0, variableDims: true))
        XCTAssertEqual(triton.settings(verified: VerifiedEnvelope(ranges: [("batch", 1, 2), ("sequence", 3, 3)])),
                       DeploySettings(maxBatchSize: 2, variableDims: false))
        XCTAssertEqual(triton.settings(recorded: DeploySettings(maxBatchSize: 2, variableDims: false)), DeploySettings(maxBatchSize: 2, variableDims: false))
    }

    func testModelPt2IsServedAtBatchOneDecidedInThePlan() throws {
        let e = try plan(Self.text(output: "  output:\n    formats: [torchscript, aoti]\n    deploy:\n      - {kind: triton, repository: build/triton, format: aoti}",
                                   trace: "    envelope: {batch: [1, 4], sequence: [1, 3]}"))
        let rule = try XCTUnwrap(e.policy?.deployRule(index: 0))
        XCTAssertFalse(rule.batching)
        XCTAssertFalse(rule.followsVerifiedEnvelope, "a declared envelope verifies whole or fails")
        XCTAssertEqual(rule.planned, DeploySettings(maxBatchSize: 0, variableDims: true, batchDim: 1))
        let step = try XCTUnwrap(e.steps.first { $0.request?["kind"] == "triton" })
        XCTAssertEqual(step.request?["max_batch_size"], 0, "the worker refuses any other value for format aoti")
        XCTAssertEqual(step.request?["batch_dim"], 1, "the config states batch 1")
        XCTAssertEqual(step.request?["format"], "aoti")
        XCTAssertEqual(step.description, "triton: model repository entry, platform torch_aoti, max_batch_size 0 (model.pt2 is served at batch 1)")
        XCTAssertEqual(rule.settings(verified: VerifiedEnvelope(ranges: [("batch", 1, 4), ("sequence", 1, 3)])).maxBatchSize, 0)
        XCTAssertEqual(rule.settings(recorded: DeploySettings(maxBatchSize: 4, variableDims: true)), DeploySettings(maxBatchSize: 0, variableDims: true, batchDim: 1),
                       "a record written before the rule moved to the plan is redeployed at batch 1")
    }

    func testSplitBoundsAndTheGuardFlagAreDecidedHereAndCarriedByTheRequest() throws {
        let text = Self.text(trace: "    split: {kind: encoder-decoder, max_length: 16}\n    tolerance: {atol: 0.0001, rtol: 0.002}")
            .replacingOccurrences(of: "class: BertModel", with: "class: MarianMTModel")
        let e = try plan(text)
        let bounds = try XCTUnwrap(e.policy?.split)
        XCTAssertEqual(bounds.driftLimit, 0.01, accuracy: 1e-12, "100 × atol")
        XCTAssertEqual(bounds.paddingAbsolute, 0.01, accuracy: 1e-12, "the same drift rule")
        XCTAssertEqual(bounds.paddingRelative, 0.02, accuracy: 1e-12, "10 × rtol")
        XCTAssertTrue(bounds.refuseTracerWarnings, "strict by default")
        let trace = try XCTUnwrap(e.steps.first { $0.kind == .trace }?.request?["job"]?["trace"])
        XCTAssertEqual(trace["split"], .object([
            ("kind", "encoder-decoder"), ("max_length", 16), ("cache", .bool(false)), ("drift_limit", .double(bounds.driftLimit)),
            ("padding_bound", .object([("absolute", .double(bounds.paddingAbsolute)), ("relative", 0.02)])),
            ("refuse_tracer_warnings", .bool(true)),
        ]))
        XCTAssertEqual(trace["guard"], .bool(true))
        // float32 defaults: the floors; strict: false keeps a split part whose trace warned
        let loose = try XCTUnwrap(plan(Self.text(trace: "    split: {kind: encoder-decoder, max_length: 16}\n    strict: false")
            .replacingOccurrences(of: "class: BertModel", with: "class: MarianMTModel")).policy?.split)
        XCTAssertEqual(loose, SplitBounds(driftLimit: 1e-3, paddingAbsolute: 1e-3, paddingRelative: 1e-2, refuseTracerWarnings: false))
        XCTAssertNil(try plan(Self.text()).policy?.split)
    }

    func testOnlyATorchJitTraceOfModelPtIsGuarded() throws {
        let aoti = try plan(Self.text(output: "  output: {formats: [aoti]}"))
        XCTAssertEqual(aoti.steps.first { $0.kind == .trace }?.request?["job"]?["trace"]?["guard"], .bool(false))
        let neuron = try plan(Self.text(target: "  target: {hardware: inf2}"))
        XCTAssertEqual(neuron.policy?.guarded, false)
        XCTAssertEqual(neuron.steps.first { $0.kind == .trace }?.request?["job"]?["trace"]?["guard"], .bool(false))
    }

    func testARedeployFollowsTheRecordBySameRule() throws {
        let text = Self.text(output: "  output:\n    formats: [torchscript, aoti]\n    deploy:\n      - {kind: triton, repository: build/pt}\n      - {kind: triton, repository: build/pt2, format: aoti}")
        let m = try PlannerTests.manifest(text)
        var fp = PlannerTests.fingerprint(m)
        for (key, value) in Planner.policyInputs(m) { fp.versions[key] = value }
        var record = PlannerTests.record(fp)
        // A record written before the plan decided model.pt2's batch settings states the envelope's for both.
        let settings = JSONValue.object([("max_batch_size", 4), ("variable_dims", .bool(true)), ("format", "torchscript"), ("version", "1.0")])
        let aoti = JSONValue.object([("max_batch_size", 4), ("variable_dims", .bool(true)), ("format", "aoti"), ("version", "1.0")])
        record.deploys = [(kind: "triton", path: "build/pt/small", settings: settings), (kind: "triton", path: "build/pt2/small", settings: aoti)]
        let drift = Drift(deploys: ["build/pt/small": ["deploy triton: config.pbtxt changed"], "build/pt2/small": ["deploy triton: config.pbtxt changed"]])
        var input = PlannerInput(manifests: [m], outputRoot: PlannerTests.root, fingerprints: [m.name: fp], existing: [m.name: record],
                                 unavailableTargets: nil, force: false, replace: [])
        input.drift = [m.name: drift]
        let e = try XCTUnwrap(Planner().plan(input).entries.first)
        XCTAssertEqual(e.action, .redeploy, "\(e.reasons)")
        XCTAssertEqual(e.steps.map { $0.request?["max_batch_size"] }, [4, 0])
        XCTAssertEqual(e.steps.map { $0.request?["format"] }, ["torchscript", "aoti"])
        XCTAssertEqual(e.steps.map { $0.request?["batch_dim"] }, [.null, 1])
        XCTAssertEqual(e.steps.map(\.description), ["triton: made again from the installed bundle (max_batch_size 4)",
                                                    "triton: made again from the installed bundle (max_batch_size 0)"])
    }
}
