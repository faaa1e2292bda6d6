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
            for dim in rule.dims {
                if let shape = traced.shapes[i], dim < shape.count, shape[dim] != size {
                    error("spec.inputs.tensors[\(i)].\(t.from == .values ? "values" : "shape")",
                          "tensor '\(t.name)' is traced with size \(shape[dim]) at dimension \(dim), which \(className) refuses: \(rule.reason(size))")
                }
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
