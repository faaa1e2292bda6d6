import Foundation

/// The named axis of every dimension of every input tensor: a tensor's `axes` as written, else the default by its
/// name (the contract's list); `envelope.dims` entries name their dimension `<tensor>.<index>`. Every consumer
/// (the size agreement check, the default envelope, the points, the guard, Triton's -1 dims, torch.export's Dims
/// and the record) reads the axes from here.
public enum AxisNames {
    /// The defaults by tensor name; any other tensor has `batch` for dimension 0 and fixed dimensions after it.
    public static let defaults: [String: [String?]] = [
        "input_ids": ["batch", "sequence"], "attention_mask": ["batch", "sequence"],
        "token_type_ids": ["batch", "sequence"], "position_ids": ["batch", "sequence"],
        "inputs_embeds": ["batch", "sequence", nil],
        "decoder_input_ids": ["batch", "decoder_sequence"], "decoder_attention_mask": ["batch", "decoder_sequence"],
        "decoder_position_ids": ["batch", "decoder_sequence"],
        "pixel_values": ["batch", nil, nil, nil],
        "input_features": ["batch", nil, "frames"],
        "input_values": ["batch", "samples"],
    ]

    /// The axes the envelope names directly (the rest are named by tensors' `axes`).
    public static let builtIn = ["batch", "sequence", "decoder_sequence"]

    /// The default axes of a tensor of `rank` dimensions named `name`.
    public static func defaultAxes(tensor name: String, rank: Int) -> [String?] {
        let base = defaults[name] ?? ["batch"]
        return (0..<rank).map { $0 < base.count ? base[$0] : nil }
    }

    /// The rank of each tensor where the manifest states it: its shape or values, 2 for text, else the length of
    /// its `axes`.
    public static func ranks(_ m: Manifest, shapes: [[Int]?]) -> [Int?] {
        m.inputs.tensors.enumerated().map { i, t in
            shapes[i]?.count ?? (t.from == .text ? 2 : t.axes?.count)
        }
    }

    /// Per tensor, the axis of each dimension (nil: fixed). `axes` whose length is not the rank fall back to the
    /// defaults (the semantic check reports them).
    public static func resolve(_ m: Manifest, shapes: [[Int]?]) -> [[String?]] {
        let ranks = ranks(m, shapes: shapes)
        return m.inputs.tensors.enumerated().map { i, t in
            let rank = ranks[i] ?? 0
            var axes = defaultAxes(tensor: t.name, rank: rank)
            if let written = t.axes, written.count == rank { axes = written }
            for (index, r) in m.trace.envelope.dims[t.name] ?? [:] where index >= 2 && index < rank && r.min != r.max {
                axes[index] = "\(t.name).\(index)"
            }
            return axes
        }
    }
}
