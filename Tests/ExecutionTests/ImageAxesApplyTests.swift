import Foundation
import JSON
import XCTest

/// Image sizes as envelope axes: ViT (height and width, specs/families/vit.yaml) and CLIP (one square `image` axis,
/// with text) given `forward: {interpolate_pos_encoding: true}`, applied in one run, verified at every point, then
/// reloaded in a separate Python and compared with the eager model at sizes that were not points; the artifact
/// refuses a size outside the envelope.
final class ImageAxesApplyTests: XCTestCase {
    static let clip = """
        apiVersion: tsexport/v1
        kind: Export
        metadata: {name: clip-image-sizes}
        spec:
          model:
            class: CLIPModel
            config:
              text_config: {vocab_size: 99, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 37, max_position_embeddings: 64}
              vision_config: {hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 37, image_size: 32, patch_size: 8}
              projection_dim: 16
            forward: {interpolate_pos_encoding: true}
          inputs:
            tensors:
              - {name: input_ids, from: random, shape: [2, 12], low: 1}
              - {name: pixel_values, from: random, dtype: float32, shape: [2, 3, 32, 32], axes: [batch, null, image, image]}
          trace:
            strict: true
            envelope: {batch: [1, 2], image: [16, 48]}

        """

    /// Per bundle and shape: the max abs error of model.pt against the eager model (with the manifest's forward
    /// arguments) on fresh inputs, or the artifact's error text when it refuses the shape.
    static let reload = #"""
        import json, sys
        import torch, transformers

        report = {}
        for bundle, shapes in json.loads(sys.argv[1]).items():
            record = json.load(open(bundle + "/record.json"))
            spec = record["fingerprint_inputs"]["manifest"]["spec"]["model"]
            cls = getattr(transformers, record["model_class"])
            config = cls.config_class(**spec["config"])
            config._attn_implementation = "eager"
            torch.manual_seed(spec.get("seed", 0))
            eager = cls(config).eval()
            traced = torch.jit.load(bundle + "/model.pt")
            names = [s["name"] for s in record["input_signature"]]
            g = torch.Generator().manual_seed(7)
            for batch, height, width in shapes:
                args = []
                for name in names:
                    if name == "pixel_values":
                        args.append(torch.randn(batch, 3, height, width, generator=g))
                    else:
                        args.append(torch.randint(3, 98, (batch, 12), generator=g))
                key = f"{record['name']} {batch}x{height}x{width}"
                with torch.no_grad():
                    try:
                        got = traced(*args)
                    except Exception as exc:
                        report[key] = str(exc).strip().splitlines()[-1]
                        continue
                    want = eager(**dict(zip(names, args)), **spec["forward"]).to_tuple()
                flat = lambda o: [o] if isinstance(o, torch.Tensor) else [t for i in (o.to_tuple() if hasattr(o, "to_tuple") else o) for t in flat(i)]
                report[key] = max(float((a - b).abs().max()) for a, b in zip(flat(got), flat(want)))
        print(json.dumps(report))
        """#

    func testImageAxesVaryWithInterpolatedPositionsAndTheGuardRefusesOthers() throws {
        let dir = try Harness.tempDir("image-axes")
        defer { try? FileManager.default.removeItem(at: dir) }
        let clip = dir.appendingPathComponent("clip.yaml")
        try Self.clip.write(to: clip, atomically: true, encoding: .utf8)
        let vit = Harness.repo.appendingPathComponent("specs/families/vit.yaml")
        let root = dir.appendingPathComponent("out")
        let (code, out) = try Harness.apply([vit.path, clip.path, "--output-root", root.path])
        XCTAssertEqual(code, 0, out.stderr)

        let build = root.appendingPathComponent("build")
        for (name, verified) in [("family-vit-sizes", ["batch": [1, 3], "height": [16, 48], "width": [16, 48]]),
                                 ("clip-image-sizes", ["batch": [1, 2], "sequence": [1, 12], "image": [16, 48]])] {
            let record = try JSONValue(parsing: Data(contentsOf: build.appendingPathComponent("\(name)/record.json")))
            let envelope = try XCTUnwrap(record["envelope"])
            XCTAssertEqual(envelope["narrowed"], .bool(false), name)
            for (axis, range) in verified {
                XCTAssertEqual(envelope["verified"]?[axis], .array(range.map(JSONValue.int)), "\(name) \(axis)")
            }
            let points = envelope["points"]?.arrayValue ?? []
            XCTAssertTrue(points.allSatisfy { $0["passed"] == .bool(true) }, name)
            // The points reach both ends of every image axis.
            for axis in verified.keys where axis != "batch" && axis != "sequence" {
                let sizes = Set(points.compactMap { $0["sizes"]?[axis]?.intValue })
                XCTAssertTrue(sizes.isSuperset(of: [16, 32, 48]), "\(name) \(axis): \(sizes)")
            }
        }

        let shapes: JSONValue = .object([
            (build.appendingPathComponent("family-vit-sizes").path, [[1, 24, 40], [3, 48, 16], [2, 20, 44], [1, 64, 32]]),
            (build.appendingPathComponent("clip-image-sizes").path, [[1, 24, 24], [2, 40, 40], [1, 8, 8]]),
        ].map { ($0.0, JSONValue.array($0.1.map { .array($0.map(JSONValue.int)) })) })
        let report = try Harness.pythonJSON(["-c", Self.reload, CanonicalJSON.text(shapes)])
        for key in ["family-vit-sizes 1x24x40", "family-vit-sizes 3x48x16", "family-vit-sizes 2x20x44",
                    "clip-image-sizes 1x24x24", "clip-image-sizes 2x40x40"] {
            guard let error = report[key]?.doubleValue else { XCTFail("\(key): \(String(describing: report[key]))"); continue }
            XCTAssertLessThanOrEqual(error, 1e-4, key)
        }
        XCTAssertEqual(report["family-vit-sizes 1x64x32"]?.stringValue,
                       "builtins.RuntimeError: tsexport envelope: pixel_values dimension 2 (height) is 64, outside the verified range [16, 48]")
        XCTAssertEqual(report["clip-image-sizes 1x8x8"]?.stringValue,
                       "builtins.RuntimeError: tsexport envelope: pixel_values dimension 2 (image) is 8, outside the verified range [16, 48]")
    }
}
