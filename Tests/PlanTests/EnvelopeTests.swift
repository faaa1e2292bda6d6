import Foundation
import JSON
import Manifest
import Plan
import XCTest

/// The envelope rules as pure functions: the default rule, declared ranges, sequence groups, the points, and the
/// verdict (a declared range is a promise; a default one narrows to the largest box that verified).
final class EnvelopeTests: XCTestCase {
    static func manifest(_ tensors: String, trace: String = "", model: String = "class: BertModel\n    config: {vocab_size: 100, hidden_size: 32, num_attention_heads: 4}") throws -> Manifest {
        try PlannerTests.manifest("""
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: env}
            spec:
              model:
                \(model)
              inputs:
                tensors:
            \(tensors)
              trace:
                \(trace.isEmpty ? "strict: true" : trace)

            """)
    }

    func testTheDefaultIsTheBoxOfTheTracedAndCheckShapesFromOne() throws {
        let m = try Self.manifest("      - {name: input_ids, from: random, shape: [2, 32]}", trace: "check_shapes: [[4, 16]]")
        let e = EnvelopePlanner.plan(m)
        XCTAssertEqual(e.axes.map(\.name), ["batch", "sequence"])
        XCTAssertEqual(e.axes.map(\.rangeText), ["[1, 4]", "[1, 32]"], "the contract's example: traced [2, 32], check [4, 16]")
        XCTAssertEqual(e.axes.map(\.declared), [false, false])
        XCTAssertEqual(e.axes.map(\.traced), [2, 32])
        XCTAssertFalse(e.padMasks)
        // The traced point, the 3×3 grid {min, traced, max} less the traced one, two interior points, the check shape.
        XCTAssertEqual(e.points.first?.role, .traced)
        XCTAssertEqual(e.points.filter { $0.role == .corner }.count, 5)
        XCTAssertEqual(e.points.filter { $0.role == .check }.map(\.sizes), [["batch": 4, "sequence": 16]])
        let grid = Set(e.points.filter { $0.role == .corner }.map { p in [p.sizes["batch"]! ?? 2, p.sizes["sequence"]! ?? 32] })
        XCTAssertEqual(grid, [[1, 1], [1, 32], [2, 1], [4, 1], [4, 32]], "sequence max 32 is the traced size: one value less")
        XCTAssertFalse(grid.contains([2, 32]), "the traced point is listed once, as traced")
        // Interior points are seeded: the same manifest gives the same points.
        XCTAssertEqual(EnvelopePlanner.plan(m).points, e.points)
    }

    func testDeclaredRangesMasksAndDims() throws {
        let m = try Self.manifest("""
                  - {name: input_ids, from: random, shape: [2, 16]}
                  - {name: attention_mask, from: ones, shape: [2, 16]}
            """, trace: "envelope: {batch: [1, 4], sequence: [4, 32]}")
        let e = EnvelopePlanner.plan(m)
        XCTAssertEqual(e.axes.map(\.rangeText), ["[1, 4]", "[4, 32]"])
        XCTAssertEqual(e.axes.map(\.declared), [true, true])
        XCTAssertTrue(e.padMasks, "a mask gets padding at the points")
        XCTAssertEqual(e.tensors.map(\.axes), [["batch", "sequence"], ["batch", "sequence"]])
        XCTAssertEqual(e.json["axes"]?[0], .object([("name", "batch"), ("min", 1), ("max", 4)]))

        let vit = try Self.manifest("      - {name: pixel_values, from: random, dtype: float32, shape: [1, 3, 32, 32]}",
                                    trace: "envelope: {batch: [1, 4], dims: {pixel_values: {2: [32, 32], 3: [16, 32]}}}",
                                    model: "class: ViTModel\n    config: {image_size: 32, patch_size: 8}\n    forward: {interpolate_pos_encoding: true}")
        let v = EnvelopePlanner.plan(vit)
        XCTAssertEqual(v.tensors.map(\.axes), [["batch", nil, nil, "pixel_values.3"]], "channels and a fixed dim are not axes")
        XCTAssertEqual(v.axes.map(\.name), ["batch", "pixel_values.3"])
        XCTAssertEqual(v.axes.last?.field, "spec.trace.envelope.dims.pixel_values.3")
    }

    func testNamedAxesByTensorNameAndDeclaredInTheEnvelope() throws {
        // CLIP-like: pixel_values' dimension 1 (channels) is not the text's sequence; the image axis named by `axes`
        // is ranged by the envelope; input_features' frames stay fixed unless the envelope ranges them.
        let model = "class: CLIPModel\n    config: {text_config: {vocab_size: 99}, vision_config: {image_size: 32}}\n    forward: {interpolate_pos_encoding: true}"
        let m = try Self.manifest("""
                  - {name: input_ids, from: random, shape: [2, 12]}
                  - {name: pixel_values, from: random, dtype: float32, shape: [2, 3, 32, 32], axes: [batch, null, image, image]}
                  - {name: input_features, from: random, dtype: float32, shape: [2, 8, 30]}
            """, trace: "envelope: {batch: [1, 4], image: [32, 64]}", model: model)
        let e = EnvelopePlanner.plan(m)
        XCTAssertEqual(e.axes.map(\.name), ["batch", "sequence", "image"])
        XCTAssertEqual(e.axes.map(\.rangeText), ["[1, 4]", "[1, 12]", "[32, 64]"])
        XCTAssertEqual(e.axes.map(\.declared), [true, false, true])
        XCTAssertEqual(e.axes.last?.field, "spec.trace.envelope.image")
        XCTAssertEqual(e.tensors.map(\.axes), [["batch", "sequence"], ["batch", nil, "image", "image"], ["batch", nil, nil]])
        XCTAssertEqual(StaticShapes(m).axes[2], ["batch", nil, "frames"], "frames is named by default, fixed until ranged")
        XCTAssertTrue(e.points.contains { $0.sizes["image"] == .some(64) })
        let frames = try Self.manifest("      - {name: input_features, from: random, dtype: float32, shape: [1, 8, 30]}",
                                       trace: "envelope: {frames: [10, 30]}", model: model)
        XCTAssertEqual(EnvelopePlanner.plan(frames).tensors.map(\.axes), [["batch", nil, "frames"]])
        XCTAssertEqual(EnvelopePlanner.plan(frames).axes.map(\.rangeText), ["[1, 1]", "[10, 30]"])
    }

    func testDecoderInputsHaveASequenceOfTheirOwn() throws {
        let m = try Self.manifest("""
                  - {name: input_ids, from: random, shape: [1, 10]}
                  - {name: decoder_input_ids, from: random, shape: [1, 6]}
            """, trace: "envelope: {batch: [1, 2], decoder_sequence: [1, 8]}",
            model: "class: MarianMTModel\n    config: {vocab_size: 100, d_model: 32, encoder_attention_heads: 4, decoder_attention_heads: 4}")
        let e = EnvelopePlanner.plan(m)
        XCTAssertEqual(e.axes.map(\.name), ["batch", "sequence", "decoder_sequence"])
        XCTAssertEqual(e.axes.map(\.rangeText), ["[1, 2]", "[1, 10]", "[1, 8]"])
        XCTAssertEqual(e.axes.map(\.declared), [true, false, true])
        XCTAssertEqual(e.tensors.map(\.axes), [["batch", "sequence"], ["batch", "decoder_sequence"]])
    }

    // MARK: - The verdict

    static let plan = EnvelopePlan(
        axes: [AxisPlan(name: "batch", min: 1, max: 4, traced: 1, declared: true),
               AxisPlan(name: "sequence", min: 1, max: 16, traced: 16, declared: false)],
        tensors: [TensorAxes(name: "input_ids", axes: ["batch", "sequence"])], points: [], padMasks: false)

    static func result(_ b: Int, _ s: Int, _ passed: Bool) -> PointResult {
        PointResult(name: "p\(b)x\(s)", sizes: ["batch": b, "sequence": s], passed: passed, why: passed ? nil : "index 1 is out of bounds",
                    shapeText: "batch \(b), sequence \(s)")
    }

    func testADeclaredRangeThatFailsIsBrokenWithTheLargestEnvelopeThatHeldAndTheHint() {
        let results = [Self.result(1, 16, true), Self.result(1, 1, true), Self.result(4, 1, false), Self.result(4, 16, false), Self.result(2, 8, false)]
        guard case .broken(let field, let message) = EnvelopeVerdict.decide(plan: Self.plan, traced: ["batch": 1, "sequence": 16], results: results, hint: "add an attention_mask") else {
            return XCTFail("a declared batch range that fails is a broken promise")
        }
        XCTAssertEqual(field, "spec.trace.envelope.batch")
        XCTAssertEqual(message, "the artifact does not match the eager model at batch 4, sequence 1, inside the declared envelope (batch and sequence): index 1 is out of bounds; the largest envelope that verified is batch [1, 1], sequence [1, 16]; add an attention_mask")
    }

    func testADefaultRangeNarrowsToTheLargestBoxThatVerified() {
        var plan = Self.plan
        plan.axes[0].declared = false
        let results = [Self.result(1, 16, true), Self.result(1, 1, true), Self.result(4, 1, false), Self.result(4, 16, false)]
        guard case .narrowed(let box, let warnings) = EnvelopeVerdict.decide(plan: plan, traced: ["batch": 1, "sequence": 16], results: results, hint: nil) else {
            return XCTFail("a default range narrows")
        }
        XCTAssertEqual(box.text, "batch [1, 1], sequence [1, 16]")
        XCTAssertEqual(warnings.map { $0.field }, ["spec.trace.envelope.batch"])
        XCTAssertTrue(warnings[0].message.hasPrefix("the artifact does not match the eager model at batch 4, sequence 1 (index 1 is out of bounds); the envelope's batch is narrowed from [1, 4] to [1, 1], which verified"), warnings[0].message)
        XCTAssertEqual(box.json, JSONValue.object([("batch", JSONValue.array([1, 1])), ("sequence", JSONValue.array([1, 16]))]))
    }

    func testEveryPointPassingKeepsThePlannedEnvelope() {
        let results = [Self.result(1, 16, true), Self.result(4, 1, true)]
        guard case .verified(let box) = EnvelopeVerdict.decide(plan: Self.plan, traced: ["batch": 1, "sequence": 16], results: results, hint: nil) else {
            return XCTFail("nothing failed")
        }
        XCTAssertEqual(box.text, "batch [1, 4], sequence [1, 16]")
    }
}
