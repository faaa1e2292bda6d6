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
}
