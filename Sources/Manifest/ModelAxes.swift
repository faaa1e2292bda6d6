import JSON

/// Axes that a model family accepts at one size only, whatever the envelope says: a range over such an axis is
/// refused at its position, and the traced size must be the one the model accepts, before any Python starts.
struct FixedAxisRule: Sendable {
    /// The model classes it applies to (class name prefixes).
    var classPrefixes: [String]
    /// The tensor and its dimensions.
    var tensor: String
    var dims: [Int]
    /// The one size the model accepts, from the effective config (nil: unknown, no check).
    var size: @Sendable ([String: JSONValue]) -> Int?
    /// Why, in words, naming the config keys.
    var reason: @Sendable (Int) -> String
    /// Whether the manifest lifts the rule (a forward argument that makes the model accept other sizes).
    var lifted: @Sendable (Manifest) -> Bool = { _ in false }
    /// What helps when a range is asked for.
    var help: String

    func applies(to className: String) -> Bool { classPrefixes.contains { className.hasPrefix($0) } }

    static let all: [FixedAxisRule] = [
        FixedAxisRule(
            classPrefixes: ["Whisper"], tensor: "input_features", dims: [2],
            size: { config in 2 * (config["max_source_positions"]?.intValue ?? 1500) },
            reason: { n in "Whisper's encoder accepts exactly 2 × max_source_positions = \(n) mel frames (it raises \"Whisper expects the mel input features to be of length \(n)\" for any other length)" },
            help: "pad or cut audio features to that length before the model, and leave frames fixed"),
        FixedAxisRule(
            classPrefixes: ["ViT", "CLIP", "Siglip"], tensor: "pixel_values", dims: [2, 3],
            size: { config in
                config["image_size"]?.intValue ?? config["vision_config"]?["image_size"]?.intValue ?? 224
            },
            reason: { n in "its patch embedding accepts only the config's image_size (\(n)×\(n)) unless forward is given interpolate_pos_encoding: true (then the position embeddings are interpolated to the image's size)" },
            lifted: { m in m.model.forward.contains { $0.0 == "interpolate_pos_encoding" && $0.1 == .bool(true) } },
            help: "add spec.model.forward: {interpolate_pos_encoding: true}, or leave the image size fixed"),
    ]
}

extension SemanticChecker {
    /// The fixed axes of `FixedAxisRule.all` for the manifest's class.
    mutating func checkFixedAxes(config: [String: JSONValue]) {
        let className = manifest.model.className
        let traced = StaticShapes(manifest)
        let e = manifest.trace.envelope
        for rule in FixedAxisRule.all where rule.applies(to: className) && !rule.lifted(manifest) {
            guard let i = manifest.inputs.tensors.firstIndex(where: { $0.name == rule.tensor }), let size = rule.size(config) else { continue }
            let t = manifest.inputs.tensors[i]
            if let shape = traced.shapes[i] {
                let wrong = rule.dims.filter { $0 < shape.count && shape[$0] != size }
                if !wrong.isEmpty {
                    let which = wrong.count == 1 ? "size \(shape[wrong[0]]) at dimension \(wrong[0])"
                        : "sizes \(wrong.map { String(shape[$0]) }.joined(separator: "×")) at dimensions \(wrong.map(String.init).joined(separator: ", "))"
                    error("spec.inputs.tensors[\(i)].\(t.from == .values ? "values" : "shape")",
                          "tensor '\(t.name)' is traced with \(which), which \(className) refuses: \(rule.reason(size))")
                }
            }
            for dim in rule.dims {
                if let r = e.dims[t.name]?[dim], r.min != r.max {
                    error("spec.trace.envelope.dims.\(t.name).\(dim)", "\(className) cannot serve a range of sizes at '\(t.name)' dimension \(dim): \(rule.reason(size)); \(rule.help)")
                } else if dim < traced.axes[i].count, let axis = traced.axes[i][dim], !axis.contains("."),
                          let r = e.range(of: axis), r.min != r.max {
                    error("spec.trace.envelope.\(axis)", "\(className) cannot serve a range of \(axis) ('\(t.name)' dimension \(dim)): \(rule.reason(size)); \(rule.help)")
                }
            }
        }
    }
}

extension SemanticChecker {
    /// `spec.model.forward`: constant keyword arguments beside the input tensors, never one of them, and only where
    /// the wrapped model is the class's own forward.
    mutating func checkForward() {
        let forward = manifest.model.forward
        guard !forward.isEmpty else { return }
        let names = Set(manifest.inputs.tensors.map(\.name))
        for (key, _) in forward where names.contains(key) {
            error("spec.model.forward.\(key)", "'\(key)' is an input tensor; forward arguments are constants beside the tensors: remove one of them", key: true)
        }
        if manifest.model.library == "sentence-transformers" {
            error("spec.model.forward", "forward arguments go to the transformers class's forward; a sentence-transformers pipeline (library: sentence-transformers) takes token ids only: remove forward")
        }
        if manifest.trace.split != nil {
            error("spec.model.forward", "the split generation artifacts (spec.trace.split) call the encoder and decoder directly, without forward arguments: remove forward or split")
        }
    }
}
