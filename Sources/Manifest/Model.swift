import Foundation
import JSON

/// Where a model or tokenizer comes from: a local folder (resolved against the manifest's folder) or a hub id.
public enum ModelSource: Hashable, Sendable, Codable {
    /// An absolute, standardised path to a local directory.
    case local(String)
    /// A Hugging Face hub id such as `org/name`.
    case hub(String)

    /// The path or id, as the worker receives it.
    public var reference: String {
        switch self {
        case .local(let p): return p
        case .hub(let id): return id
        }
    }

    /// Whether it is a local folder.
    public var isLocal: Bool { if case .local = self { return true } else { return false } }
}

/// One dummy input tensor, bound by name to a `forward()` parameter.
public struct TensorSpec: Hashable, Sendable {
    /// How the tensor's values are made.
    public enum Source: String, Sendable, Codable { case text, values, random, zeros, ones }
    /// The forward() parameter it feeds.
    public var name: String
    /// How it is made.
    public var from: Source
    /// The values, for `from: values`.
    public var values: JSONValue?
    /// The shape, for random/zeros/ones.
    public var shape: [Int]?
    /// Element type.
    public var dtype: String
    /// Lower bound for random.
    public var low: Double?
    /// Upper bound for random.
    public var high: Double?
    /// `axes`: the named axis of each dimension (nil entries: fixed), as written; nil: the default by name.
    public var axes: [String?]? = nil
}

/// An inclusive size range `[min, max]` of one dimension.
public struct SizeRange: Hashable, Sendable, Codable, CustomStringConvertible {
    public var min: Int
    public var max: Int

    /// Creates a range.
    public init(_ min: Int, _ max: Int) {
        self.min = min
        self.max = max
    }

    /// Whether a size lies in it.
    public func contains(_ size: Int) -> Bool { size >= min && size <= max }

    /// `[1, 8]`.
    public var description: String { "[\(min), \(max)]" }

    public init(from decoder: Decoder) throws {
        var c = try decoder.unkeyedContainer()
        min = try c.decode(Int.self)
        max = try c.decode(Int.self)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.unkeyedContainer()
        try c.encode(min)
        try c.encode(max)
    }
}

/// `spec.trace.envelope`: the shapes the artifact must serve. A dimension left out (nil) follows the default rule.
public struct Envelope: Hashable, Sendable {
    /// Dimension 0 of every input tensor.
    public var batch: SizeRange?
    /// Dimension 1 of token-shaped inputs that are not decoder inputs.
    public var sequence: SizeRange?
    /// Dimension 1 of `decoder_*` inputs.
    public var decoderSequence: SizeRange?
    /// Other dimensions: tensor name → dimension index → range, in the order written.
    public var dims: [String: [Int: SizeRange]]
    /// Ranges of other named axes (those a tensor's `axes` names: `image`, `frames`, …), in the order written.
    public var named: [(name: String, range: SizeRange)] = []

    /// Creates an envelope.
    public init(batch: SizeRange? = nil, sequence: SizeRange? = nil, decoderSequence: SizeRange? = nil, dims: [String: [Int: SizeRange]] = [:]) {
        self.batch = batch
        self.sequence = sequence
        self.decoderSequence = decoderSequence
        self.dims = dims
    }

    /// Whether the manifest declares anything.
    public var isEmpty: Bool { batch == nil && sequence == nil && decoderSequence == nil && dims.isEmpty && named.isEmpty }

    /// The declared range of an axis by name (batch, sequence, decoder_sequence, or a named one).
    public func range(of axis: String) -> SizeRange? {
        switch axis {
        case "batch": return batch
        case "sequence": return sequence
        case "decoder_sequence": return decoderSequence
        default: return named.first { $0.name == axis }?.range
        }
    }

    public static func == (a: Envelope, b: Envelope) -> Bool {
        a.batch == b.batch && a.sequence == b.sequence && a.decoderSequence == b.decoderSequence && a.dims == b.dims
            && a.named.map(\.name) == b.named.map(\.name) && a.named.map(\.range) == b.named.map(\.range)
    }

    public func hash(into h: inout Hasher) {
        h.combine(batch); h.combine(sequence); h.combine(decoderSequence); h.combine(dims)
        for (n, r) in named { h.combine(n); h.combine(r) }
    }
}

/// The sequence group a tensor's dimension 1 belongs to: decoder inputs have a length of their own.
public enum SequenceGroup: String, Sendable, Codable {
    case sequence
    case decoderSequence = "decoder_sequence"

    /// `decoder_input_ids`, `decoder_attention_mask`, … are decoder inputs.
    public static func of(tensor name: String) -> SequenceGroup { name.hasPrefix("decoder_") ? .decoderSequence : .sequence }
}

/// A deployment of the bundle.
public enum DeployTarget: Hashable, Sendable {
    /// The bundle folder itself.
    case directory
    /// A Triton model repository entry under the given root-relative folder, serving `model.pt` (torchscript) or
    /// `model.pt2` (aoti).
    case triton(repository: String, format: String = "torchscript")
    /// A TorchServe .mar archive in the given root-relative model store.
    case torchserve(store: String)
    /// An OCI registry repository (`host[:port]/path`): the verified bundle pushed as a ModelPack artifact.
    case oci(repository: String)

    /// The kind, as written in the manifest.
    public var kind: String {
        switch self {
        case .directory: return "directory"
        case .triton: return "triton"
        case .torchserve: return "torchserve"
        case .oci: return "oci"
        }
    }
}

/// One validated `Export` document, typed, with defaults filled in and the position of every field kept.
public struct Manifest: Sendable {
    /// The model to export.
    public struct Model: Sendable {
        public var className: String
        public var pretrained: ModelSource?
        public var revision: String?
        /// Config keyword arguments, in the order written.
        public var config: [(String, JSONValue)]
        public var torchscript: Bool
        public var seed: Int
        public var dtype: String
        /// The attention implementation to trace (eager or sdpa).
        public var attnImplementation: String
        public var trustRemoteCode: Bool
        public var allowPickle: Bool
        /// `transformers` (the class is the model) or `sentence-transformers` (the folder's modules.json pipeline).
        public var library: String = "transformers"
        /// `forward`: constant keyword arguments given to the model's forward beside the input tensors, in order.
        public var forward: [(String, JSONValue)] = []
    }
    /// The dummy inputs.
    public struct Inputs: Sendable {
        public var tokenizer: ModelSource?
        public var text: String?
        public var addSpecialTokens: Bool
        public var mask: [Int]
        public var padTo: Int?
        public var tensors: [TensorSpec]
    }
    /// Tracing options.
    public struct Trace: Sendable {
        public var strict: Bool
        /// `trace.envelope` as written (each dimension nil when left out: the default rule applies to it).
        public var envelope: Envelope
        public var checkShapes: [[Int]]
        public var atol: Double
        public var rtol: Double
        /// The quality gate against the float32 eager model (`tolerance.min_cosine`), resolved: the manifest's value,
        /// else 0.99 when precision is reduced (dtype float16/bfloat16 or a quantize scheme), else nil (no gate).
        public var minCosine: Double?
        /// `trace.split`: also export generation artifacts (kind, max length, whether the cache is explicit).
        public var split: (kind: String, maxLength: Int, cache: Bool)?
    }
    /// The hardware target.
    public struct Target: Sendable {
        public var hardware: String
        public var optimize: String
        /// `none` or `dynamic_int8`.
        public var quantize: String = "none"
    }
    /// Where the bundle goes.
    public struct Output: Sendable {
        /// Relative to the output root.
        public var dir: String
        /// `torchscript` (model.pt) and optionally `aoti` (model.pt2), in the order written.
        public var formats: [String] = ["torchscript"]
        public var deploy: [DeployTarget]
    }

    /// The file as the user named it.
    public var file: String
    /// 0-based index of the document in its file.
    public var documentIndex: Int
    public var name: String
    public var labels: [String: String]
    public var model: Model
    public var inputs: Inputs
    public var trace: Trace
    public var target: Target
    public var output: Output
    /// The document as JSON (after YAML resolution): the normalised content that fingerprints hash.
    public var document: JSONValue
    /// Where every field was written.
    public var locations: FieldLocations
    /// The folder local `pretrained`/`tokenizer` paths resolve against.
    public var directory: URL

    /// Whether the artifact runs at less than float32 precision (and so is also compared with the float32 model).
    public var reducedPrecision: Bool { model.dtype != "float32" || target.quantize != "none" }
}
