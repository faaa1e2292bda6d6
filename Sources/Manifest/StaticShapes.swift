import JSON

/// The traced sizes a manifest states without running anything: from `values`, `shape` and `pad_to`. A text tensor
/// without `pad_to` has a length only the tokenizer knows (nil here).
public struct StaticShapes: Sendable, Hashable {
    /// Dimension 0 (a text tensor has batch 1).
    public var batch: Int?
    /// Dimension 1 of the non-decoder token-shaped tensors.
    public var sequence: Int?
    /// Dimension 1 of the decoder_* tensors.
    public var decoderSequence: Int?
    /// Every tensor's full shape where it is stated (nil for text without pad_to).
    public var shapes: [[Int]?]
    /// Whether some tensor belongs to each group.
    public var hasSequence: Bool
    public var hasDecoderSequence: Bool

    /// What the manifest states.
    public init(_ m: Manifest) {
        var shapes: [[Int]?] = []
        var batch: Int?, seq: Int?, dec: Int?
        var hasSeq = false, hasDec = false
        for t in m.inputs.tensors {
            var shape: [Int]?
            switch t.from {
            case .values: shape = t.values.map(Self.shape(of:))
            case .random, .zeros, .ones: shape = t.shape
            case .text: shape = m.inputs.padTo.map { [1, $0] }
            }
            if t.from == .text && shape == nil { batch = batch ?? 1 }
            shapes.append(shape)
            let group = SequenceGroup.of(tensor: t.name)
            let rank = shape?.count ?? (t.from == .text ? 2 : 0)
            if rank >= 2 {
                if group == .sequence { hasSeq = true } else { hasDec = true }
            }
            guard let s = shape else { continue }
            if let b = s.first { batch = batch ?? b }
            if s.count >= 2 {
                if group == .sequence { seq = seq ?? s[1] } else { dec = dec ?? s[1] }
            }
        }
        self.batch = batch
        self.sequence = seq
        self.decoderSequence = dec
        self.shapes = shapes
        self.hasSequence = hasSeq
        self.hasDecoderSequence = hasDec
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
