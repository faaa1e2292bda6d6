import Foundation
import JSON

/// What the manifest states about the traced sizes, without running anything: per tensor its shape, and per named
/// axis the size its first tensor gives it.
public struct StaticShapes: Sendable, Hashable {
    /// The size of `batch` (a text tensor has batch 1).
    public var batch: Int? { sizes["batch"] }
    /// The size of `sequence`.
    public var sequence: Int? { sizes["sequence"] }
    /// The size of `decoder_sequence`.
    public var decoderSequence: Int? { sizes["decoder_sequence"] }
    /// Every tensor's full shape where it is stated (nil for text without pad_to).
    public var shapes: [[Int]?]
    /// Per tensor, the axis of each dimension (`AxisNames.resolve`).
    public var axes: [[String?]]
    /// Axis name → the traced size, from the first tensor that states it.
    public var sizes: [String: Int]
    /// Every axis some tensor uses, in first use order.
    public var used: [String]
    /// Whether some tensor belongs to each group.
    public var hasSequence: Bool { used.contains("sequence") }
    public var hasDecoderSequence: Bool { used.contains("decoder_sequence") }

    /// What the manifest states.
    public init(_ m: Manifest) {
        var shapes: [[Int]?] = []
        for t in m.inputs.tensors {
            switch t.from {
            case .values: shapes.append(t.values.map(Self.shape(of:)))
            case .random, .zeros, .ones: shapes.append(t.shape)
            case .text: shapes.append(m.inputs.padTo.map { [1, $0] })
            }
        }
        let axes = AxisNames.resolve(m, shapes: shapes)
        var sizes: [String: Int] = [:]
        var used: [String] = []
        for (i, t) in m.inputs.tensors.enumerated() {
            for (dim, axis) in axes[i].enumerated() {
                guard let axis else { continue }
                if !used.contains(axis) { used.append(axis) }
                if sizes[axis] == nil {
                    if let s = shapes[i], dim < s.count { sizes[axis] = s[dim] } else if t.from == .text && dim == 0 { sizes[axis] = 1 }
                }
            }
        }
        self.shapes = shapes
        self.axes = axes
        self.sizes = sizes
        self.used = used
    }

    /// The shape of a nested array of values.
    static func shape(of v: JSONValue) -> [Int] {
        var out: [Int] = []
        var node = v
        while let items = node.arrayValue {
            out.append(items.count)
            guard let first = items.first else { break }
            node = first
        }
        return out
    }
}
