import Diagnostics
import JSON

/// `spec.trace.envelope`: ranges in order, the traced shape and the check shapes inside, lengths the model's
/// positions can hold, and `dims` naming real tensors and dimensions.
extension SemanticChecker {
    /// `spec.trace.split`: lengths the positions hold, targets that can run it, and settings the greedy loop applies.
    mutating func checkSplit(maxPositions: Int?, config: [String: JSONValue]) {
        guard let split = manifest.trace.split else { return }
        let hw = manifest.target.hardware
        if hw == "inf1" || hw == "inf2" {
            error("spec.trace.split", "split artifacts are traced with torch.jit.trace for cpu and cuda; target \(hw) is compiled by the Neuron SDK (remove split, or use hardware cpu or cuda)")
        }
        if let p = maxPositions, split.maxLength > p {
            error("spec.trace.split.max_length", "max_length \(split.maxLength) is beyond the model's \(p) positions (max_position_embeddings); the cache cannot hold longer sequences")
        }
        if !manifest.inputs.tensors.contains(where: { $0.name == "input_ids" }) {
            error("spec.inputs.tensors", "spec.trace.split generates from the input_ids tensor (the prompt or the source), which is missing")
        }
        // The loop is greedy: sampling or beam settings in the config would make it differ from generate().
        let greedyOnly: [(String, (JSONValue) -> Bool)] = [
            ("do_sample", { $0.boolValue == true }), ("num_beams", { ($0.intValue ?? 1) > 1 }),
            ("num_beam_groups", { ($0.intValue ?? 1) > 1 }), ("penalty_alpha", { $0 != .null }),
            ("repetition_penalty", { ($0.doubleValue ?? 1) != 1 }), ("no_repeat_ngram_size", { ($0.intValue ?? 0) > 0 }),
        ]
        for (key, applies) in greedyOnly {
            if let v = manifest.model.config.first(where: { $0.0 == key })?.1, applies(v) {
                error("spec.model.config.\(key)", "\(key) is a generation setting the exported greedy loop does not apply (do_sample false, num_beams 1, no penalties); remove it, or it would differ from generate()")
            }
        }
        _ = config
    }

    /// The most elements one input tensor may have, at the traced shape or the envelope's largest (documented in the
    /// README): 2^27 (134,217,728; 512 MiB of float32), far beyond any real input, and small enough that a typo such
    /// as `shape: [100000, 100000]` is refused here instead of by the allocator.
    static let maxTensorElements = 1 << 27

    mutating func checkTensorSizes() {
        let traced = StaticShapes(manifest)
        let e = manifest.trace.envelope
        for (i, t) in manifest.inputs.tensors.enumerated() {
            guard let shape = traced.shapes[i] else { continue }
            let field = "spec.inputs.tensors[\(i)].\(t.from == .values ? "values" : "shape")"
            let elements = shape.reduce(1) { $0.multipliedReportingOverflow(by: max($1, 1)).partialValue }
            if elements > Self.maxTensorElements || shape.contains(where: { $0 > Self.maxTensorElements }) {
                error(field, "tensor '\(t.name)' has shape \(shape), \(elements) elements; the limit is \(Self.maxTensorElements) per tensor")
                continue
            }
            // The largest shape the envelope lets this tensor take.
            var largest = shape
            for (dim, axis) in traced.axes[i].enumerated() where dim < largest.count {
                if let axis, let r = e.range(of: axis), r.min <= r.max { largest[dim] = max(largest[dim], r.max) }
            }
            for (index, r) in e.dims[t.name] ?? [:] where index < largest.count && r.min <= r.max { largest[index] = max(largest[index], r.max) }
            let most = largest.reduce(1) { $0.multipliedReportingOverflow(by: max($1, 1)).partialValue }
            if most > Self.maxTensorElements {
                error("spec.trace.envelope", "the envelope lets tensor '\(t.name)' reach shape \(largest), \(most) elements; the limit is \(Self.maxTensorElements) per tensor")
            }
        }
    }

    mutating func checkEnvelope(maxPositions: Int?) {
        let e = manifest.trace.envelope
        let traced = StaticShapes(manifest)
        let base = "spec.trace.envelope"
        let named: [(String, String, SizeRange?, Int?)] = [
            ("batch", "batch size", e.batch, traced.batch),
            ("sequence", "sequence length", e.sequence, traced.sequence),
            ("decoder_sequence", "decoder sequence length", e.decoderSequence, traced.decoderSequence),
        ]
        for (key, what, range, tracedSize) in named {
            guard let r = range else { continue }
            let field = "\(base).\(key)"
            if r.min > r.max {
                error(field, "\(key) range \(r) has min \(r.min) above max \(r.max); write [min, max]")
                continue
            }
            if let t = tracedSize, !r.contains(t) {
                error(field, "the traced \(what) \(t) is outside the envelope's \(key) \(r); trace at a shape inside the envelope (the guide: trace with inputs as large as the largest expected)")
            }
            if key == "sequence" && !traced.hasSequence {
                error(field, "no input tensor has a sequence dimension (dimension 1 of a non-decoder tensor); remove \(key)")
            }
            if key == "decoder_sequence" && !traced.hasDecoderSequence {
                error(field, "decoder_sequence applies to decoder_* input tensors, and the manifest has none")
            }
            if key != "batch", let p = maxPositions, r.max > p {
                error("\(field)[1]", "\(key) max \(r.max) is beyond the model's \(p) positions (max_position_embeddings); the model cannot serve longer inputs")
            }
        }
        for (key, r) in e.named where traced.used.contains(key) {
            let field = "\(base).\(key)"
            if r.min > r.max {
                error(field, "\(key) range \(r) has min \(r.min) above max \(r.max); write [min, max]")
            } else if let t = traced.sizes[key], !r.contains(t) {
                error(field, "the traced \(key) size \(t) is outside the envelope's \(key) \(r); trace at a shape inside the envelope")
            }
        }
        func valid(_ r: SizeRange?) -> SizeRange? { r.flatMap { $0.min <= $0.max ? $0 : nil } }
        for (i, shape) in manifest.trace.checkShapes.enumerated() where shape.count == 2 {
            let field = "spec.trace.check_shapes[\(i)]"
            if let b = valid(e.batch), !b.contains(shape[0]) {
                error(field, "check shape [\(shape[0]), \(shape[1])] has batch \(shape[0]), outside the envelope's batch \(b)")
            } else if let s = valid(e.sequence), !s.contains(shape[1]) {
                error(field, "check shape [\(shape[0]), \(shape[1])] has sequence length \(shape[1]), outside the envelope's sequence \(s)")
            } else if let p = maxPositions, shape[1] > p {
                error(field, "check shape [\(shape[0]), \(shape[1])] is longer than the model's \(p) positions (max_position_embeddings)")
            }
        }
        if let t = traced.sequence, let p = maxPositions, t > p {
            let field = manifest.inputs.padTo != nil ? "spec.inputs.pad_to" : "spec.inputs.tensors"
            error(field, "the traced sequence length \(t) is beyond the model's \(p) positions (max_position_embeddings)")
        }
        let names = manifest.inputs.tensors.map(\.name)
        for (name, byIndex) in e.dims.sorted(by: { $0.key < $1.key }) {
            let field = "\(base).dims.\(name)"
            guard let ti = names.firstIndex(of: name) else {
                error(field, "dims names '\(name)', which is not an input tensor (inputs: \(names.joined(separator: ", ")))", key: true)
                continue
            }
            for (index, r) in byIndex.sorted(by: { $0.key < $1.key }) {
                let f = "\(field).\(index)"
                if index < 2 {
                    error(f, "dimension \(index) is the \(index == 0 ? "batch" : "sequence") dimension; set envelope.\(index == 0 ? "batch" : SequenceGroup.of(tensor: name).rawValue) instead", key: true)
                } else if r.min > r.max {
                    error(f, "range \(r) has min \(r.min) above max \(r.max); write [min, max]")
                } else if let shape = traced.shapes[ti] {
                    if index >= shape.count {
                        error(f, "tensor '\(name)' has \(shape.count) dimensions; there is no dimension \(index)", key: true)
                    } else if !r.contains(shape[index]) {
                        error(f, "the traced size \(shape[index]) of '\(name)' dimension \(index) is outside the envelope's \(r)")
                    }
                }
            }
        }
    }
}
