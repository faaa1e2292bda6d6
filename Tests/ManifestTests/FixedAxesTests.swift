import Diagnostics
import Foundation
import Manifest
import XCTest

/// Axes a model family accepts at one size only: a range over one is refused at the range's position, and a traced
/// size the model refuses at the tensor's shape, at validation (before Python starts).
final class FixedAxesTests: XCTestCase {
    func load(_ text: String) -> [Diagnostic] {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("tsexport-fixed-axes-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        return ManifestLoader(options: ValidationOptions(outputRoot: root)).load(bytes: Data(text.utf8), file: "m.yaml", directory: root).1
    }

    /// (line, column, field, message) of each error.
    func errors(_ text: String) -> [(Int, Int, String, String)] {
        load(text).filter { $0.severity == .error }.map { ($0.location?.line ?? 0, $0.location?.column ?? 0, $0.field ?? "", $0.message) }
    }

    static func whisper(frames: Int, envelope: String) -> String {
        """
        apiVersion: tsexport/v1
        kind: Export
        metadata: {name: whisper}
        spec:
          model:
            class: WhisperForAudioClassification
            config: {d_model: 32, encoder_layers: 2, encoder_attention_heads: 4, num_mel_bins: 8, max_source_positions: 16}
          inputs:
            tensors:
              - {name: input_features, from: random, dtype: float32, shape: [2, 8, \(frames)]}
          trace:
            envelope: \(envelope)

        """
    }

    func testWhisperFramesAtTheirOneSizeAreValid() {
        XCTAssertTrue(errors(Self.whisper(frames: 32, envelope: "{batch: [1, 4]}")).isEmpty)
        XCTAssertTrue(errors(Self.whisper(frames: 32, envelope: "{frames: [32, 32]}")).isEmpty)
    }

    func testAWhisperFramesRangeIsRefusedAtTheRange() {
        let e = errors(Self.whisper(frames: 32, envelope: "{batch: [1, 4], frames: [16, 64]}"))
        XCTAssertEqual(e.count, 1, "\(e)")
        XCTAssertEqual(e.first?.0, 12)
        XCTAssertEqual(e.first?.1, 39)
        XCTAssertEqual(e.first?.2, "spec.trace.envelope.frames")
        XCTAssertEqual(e.first?.3, "WhisperForAudioClassification cannot serve a range of frames ('input_features' dimension 2): Whisper's encoder accepts exactly 2 × max_source_positions = 32 mel frames (it raises \"Whisper expects the mel input features to be of length 32\" for any other length); pad or cut audio features to that length before the model, and leave frames fixed")
    }

    func testAWhisperFramesRangeByDimsIsRefusedAtTheDimension() {
        let e = errors(Self.whisper(frames: 32, envelope: "{dims: {input_features: {2: [16, 32]}}}"))
        XCTAssertEqual(e.map(\.2), ["spec.trace.envelope.dims.input_features.2"], "\(e)")
        XCTAssertEqual(e.first?.0, 12)
        XCTAssertTrue(e.first?.3.hasPrefix("WhisperForAudioClassification cannot serve a range of sizes at 'input_features' dimension 2: Whisper's encoder accepts exactly 2 × max_source_positions = 32 mel frames") == true, "\(e)")
    }

    func testAWhisperTracedAtAnotherFrameCountIsRefusedAtItsShape() {
        let e = errors(Self.whisper(frames: 30, envelope: "{batch: [1, 4]}"))
        XCTAssertEqual(e.count, 1, "\(e)")
        XCTAssertEqual(e.first?.0, 10)
        XCTAssertEqual(e.first?.2, "spec.inputs.tensors[0].shape")
        XCTAssertEqual(e.first?.3, "tensor 'input_features' is traced with size 30 at dimension 2, which WhisperForAudioClassification refuses: Whisper's encoder accepts exactly 2 × max_source_positions = 32 mel frames (it raises \"Whisper expects the mel input features to be of length 32\" for any other length)")
    }

    func testTheDefaultFramesFollowTheDefaultMaxSourcePositions() {
        let text = Self.whisper(frames: 3000, envelope: "{batch: [1, 2]}").replacingOccurrences(of: ", max_source_positions: 16", with: "")
        XCTAssertTrue(errors(text).isEmpty, "\(errors(text))")
        XCTAssertEqual(errors(text.replacingOccurrences(of: "3000", with: "32")).map(\.2), ["spec.inputs.tensors[0].shape"])
    }

    static func image(_ cls: String, size: Int = 32, axes: String = "[batch, null, height, width]", forward: String = "", envelope: String) -> String {
        """
        apiVersion: tsexport/v1
        kind: Export
        metadata: {name: image}
        spec:
          model:
            class: \(cls)
            config: {image_size: 32, patch_size: 8, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4}
            \(forward.isEmpty ? "seed: 0" : "forward: " + forward)
          inputs:
            tensors:
              - {name: pixel_values, from: random, dtype: float32, shape: [2, 3, \(size), \(size)], axes: \(axes)}
          trace:
            envelope: \(envelope)

        """
    }

    func testAnImageRangeWithoutInterpolationIsRefusedAtTheRange() {
        let e = errors(Self.image("ViTForImageClassification", envelope: "{batch: [1, 2], height: [16, 48]}"))
        XCTAssertEqual(e.count, 1, "\(e)")
        XCTAssertEqual(e.first?.0, 13)
        XCTAssertEqual(e.first?.1, 39)
        XCTAssertEqual(e.first?.2, "spec.trace.envelope.height")
        XCTAssertEqual(e.first?.3, "ViTForImageClassification cannot serve a range of height ('pixel_values' dimension 2): its patch embedding accepts only the config's image_size (32×32) unless forward is given interpolate_pos_encoding: true (then the position embeddings are interpolated to the image's size); add spec.model.forward: {interpolate_pos_encoding: true}, or leave the image size fixed")
        // One axis for both dimensions is reported once per dimension, at the same range.
        let square = errors(Self.image("CLIPVisionModel", axes: "[batch, null, image, image]", envelope: "{image: [16, 48]}"))
        XCTAssertEqual(square.map(\.2), ["spec.trace.envelope.image", "spec.trace.envelope.image"], "\(square)")
        XCTAssertTrue(square.allSatisfy { $0.3.hasPrefix("CLIPVisionModel cannot serve a range of image ('pixel_values' dimension ") })
        let dims = errors(Self.image("SiglipVisionModel", axes: "[batch, null, null, null]", envelope: "{dims: {pixel_values: {3: [16, 48]}}}"))
        XCTAssertEqual(dims.map(\.2), ["spec.trace.envelope.dims.pixel_values.3"], "\(dims)")
    }

    func testInterpolatePosEncodingLiftsTheImageRule() {
        XCTAssertTrue(errors(Self.image("ViTModel", forward: "{interpolate_pos_encoding: true}", envelope: "{height: [16, 48], width: [16, 48]}")).isEmpty)
        XCTAssertTrue(errors(Self.image("ViTModel", size: 40, forward: "{interpolate_pos_encoding: true}", envelope: "{height: [16, 48], width: [16, 48]}")).isEmpty)
        // false is no interpolation: still refused.
        XCTAssertEqual(errors(Self.image("ViTModel", forward: "{interpolate_pos_encoding: false}", envelope: "{height: [16, 48]}")).map(\.2), ["spec.trace.envelope.height"])
    }

    func testAnImageTracedAtAnotherSizeIsRefusedAtItsShapeAndTheDefaultKeepsItFixed() {
        let e = errors(Self.image("ViTModel", size: 40, envelope: "{batch: [1, 2]}"))
        XCTAssertEqual(e.map(\.2), ["spec.inputs.tensors[0].shape"], "\(e)")
        XCTAssertEqual(e.first?.3, "tensor 'pixel_values' is traced with sizes 40×40 at dimensions 2, 3, which ViTModel refuses: its patch embedding accepts only the config's image_size (32×32) unless forward is given interpolate_pos_encoding: true (then the position embeddings are interpolated to the image's size)")
        // Named axes without a range stay fixed at the traced size: nothing to refuse.
        XCTAssertTrue(errors(Self.image("ViTModel", envelope: "{batch: [1, 2]}")).isEmpty)
    }

    func testForwardArgumentsAreConstantsBesideTheTensors() {
        let e = errors(Self.image("ViTModel", forward: "{pixel_values: true}", envelope: "{batch: [1, 2]}"))
        XCTAssertEqual(e.map(\.2), ["spec.model.forward.pixel_values"], "\(e)")
        XCTAssertEqual(e.first?.3, "'pixel_values' is an input tensor; forward arguments are constants beside the tensors: remove one of them")
        let schema = errors(Self.image("ViTModel", forward: "{interpolate_pos_encoding: [1]}", envelope: "{batch: [1, 2]}"))
        XCTAssertEqual(schema.map(\.2), ["spec.model.forward.interpolate_pos_encoding"], "\(schema)")
    }
}
