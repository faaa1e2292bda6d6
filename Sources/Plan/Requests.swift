import Foundation
import JSON
import Manifest

/// The worker requests a plan step sends, built from the manifest with every default and policy already resolved.
/// The worker (protocol 2) has no defaults of its own: every key is present, nullable ones as null.
public enum WorkerRequests {
    /// The trace API the worker calls, by hardware (inf1: torch.neuron.trace, inf2: torch_neuronx.trace).
    public static func traceAPI(hardware: String) -> String {
        switch hardware {
        case "inf1": return "torch.neuron.trace"
        case "inf2": return "torch_neuronx.trace"
        default: return "torch.jit.trace"
        }
    }

    /// The cosine a sentence-transformers artifact's sentence_embedding must keep to the library's encode() on real
    /// text, per row, at every verified point.
    public static let encodeMinCosine = 0.9999

    /// The tolerance object both the export (split checks) and verification use.
    /// `min_cosine` is the quality gate (nil: none); the worker only measures, `QualityGate` judges.
    public static func tolerance(_ m: Manifest) -> JSONValue {
        tolerance(atol: m.trace.atol, rtol: m.trace.rtol, minCosine: m.trace.minCosine)
    }

    /// The tolerance object from its values (`verify` takes them from a bundle's record).
    public static func tolerance(atol: Double, rtol: Double, minCosine: Double?) -> JSONValue {
        .object([("atol", .double(atol)), ("rtol", .double(rtol)), ("min_cosine", minCosine.map(JSONValue.double) ?? .null)])
    }

    /// The cosine the quantized layers are chosen to keep on the traced inputs: halfway between the gate and 1
    /// (0.995 for the default gate 0.99), so the margin absorbs the other verified points.
    public static func selectionCosine(gate: Double?) -> Double {
        1 - (1 - (gate ?? ManifestDefaults.reducedPrecisionMinCosine)) / 2
    }

    /// `job.target.quantize`: null, or how to quantize — which module type, how weights are quantized, and the cosine
    /// the chosen set must keep. The worker measures each layer's sensitivity and takes the largest set of the least
    /// sensitive layers that keeps it.
    /// The library by artifact: model.pt2 (`formats: [aoti]`) gets torchao's int8 dynamic activations (per token) ×
    /// int8 weights (per channel), which torch.export lowers to plain aten ops that AOTInductor compiles (measured on
    /// the MiniLM: about 2.2× faster than the float32 artifact, cosine 0.997); model.pt gets torch.ao's dynamically
    /// quantized Linear (per-tensor activations), which TorchScript can save.
    /// `activation_mapping`: torch.ao's dynamic Linear is always asymmetric (quint8 with a zero point); for torchao it
    /// is `torchaoActivationMapping`.
    public static func quantize(_ m: Manifest) -> JSONValue {
        guard m.target.quantize == "dynamic_int8" else { return .null }
        let torchao = !m.output.formats.contains("torchscript")
        return .object([
            ("scheme", .string("dynamic_int8")), ("library", .string(torchao ? "torchao" : "torch.ao")),
            ("activations", .string(torchao ? "per_token" : "per_tensor")),
            ("activation_mapping", .string(torchao ? torchaoActivationMapping : "asymmetric")),
            ("modules", .array([.string("torch.nn.Linear")])),
            ("weights", .string("per_channel")), ("select_min_cosine", .double(selectionCosine(gate: m.trace.minCosine))),
        ])
    }

    /// How torchao maps each token's activations to int8: asymmetric (a zero point per token). Measured on the
    /// MiniLM by `scripts/bench_aoti_settings.py` against torchao's default, symmetric: the same kernels through
    /// AOTInductor, 3–6% slower with every Linear in int8, and better quality (sentence-embedding cosine min 0.9982
    /// against 0.9970), so the layer choice keeps more layers in int8 (37 of 37 against 35 of 37 at cosine 0.995 on
    /// real text), and a float32 layer costs several times its int8 form.
    public static let torchaoActivationMapping = "asymmetric"

    /// How the worker compiles model.pt2, fingerprinted beside the inductor configs: with grad disabled, the only
    /// mode in which inductor applies `freezing`.
    public static let aotiCompileMode = "no_grad"

    /// How AOTInductor compiles model.pt2 (`job.aoti`), null without `aoti`. `freezing`: the weights become
    /// constants of the compiled graph, so inductor folds them and prepacks them for the CPU's GEMM kernels (an
    /// inference artifact never updates its weights); the int8 matmuls of torchao's weights need it to reach their
    /// fused kernels (the worker compiles with grad disabled, without which inductor ignores `freezing`). Measured
    /// on the MiniLM by `scripts/bench_aoti_settings.py` and left off: `max_autotune` (with the CPP and ATen GEMM
    /// backends) compiles torchao's int8 model to the same aten `_int_mm` calls, so no gain for twice the compile,
    /// and makes bfloat16 slower (1.6× in the least loaded run); `cpp.enable_concat_linear` gained nothing for int8.
    public static func inductorConfigs(_ m: Manifest) -> JSONValue {
        .object([("freezing", .bool(true))])
    }

    /// `job.aoti`.
    public static func aoti(_ m: Manifest) -> JSONValue {
        guard m.output.formats.contains("aoti") else { return .null }
        return .object([("inductor_configs", inductorConfigs(m))])
    }

    /// The revision the tokenizer is loaded at: the model's when the tokenizer is the pretrained model itself.
    public static func tokenizerRevision(_ m: Manifest) -> String? {
        guard let t = m.inputs.tokenizer, let p = m.model.pretrained, t == p else { return nil }
        return m.model.revision
    }

    /// `job.model` for a manifest.
    public static func model(_ m: Manifest) -> JSONValue {
        model(EagerModel(m))
    }

    /// `job.model`: what the export loads, and what `bench` sends to rebuild the eager model.
    public static func model(_ e: EagerModel) -> JSONValue {
        func opt(_ s: String?) -> JSONValue { s.map(JSONValue.string) ?? .null }
        return .object([
            ("class", .string(e.className)),
            ("pretrained", opt(e.pretrained)),
            ("pretrained_is_local", .bool(e.pretrainedIsLocal)),
            ("revision", opt(e.revision)),
            ("config", .object(e.config)),
            ("torchscript", .bool(e.torchscript)),
            ("seed", .int(e.seed)),
            ("dtype", .string(e.dtype)),
            ("attn_implementation", .string(e.attnImplementation)),
            ("trust_remote_code", .bool(e.trustRemoteCode)),
            ("allow_pickle", .bool(e.allowPickle)),
            ("library", .string(e.library)),
            ("forward", .object(e.forward)),
        ])
    }

    /// The `export` request's job.
    public static func exportJob(_ m: Manifest, envelope: EnvelopePlan, stagingDir: URL, extraRecord: JSONValue) -> JSONValue {
        func opt(_ s: String?) -> JSONValue { s.map(JSONValue.string) ?? .null }
        func optNum(_ d: Double?) -> JSONValue { d.map(JSONValue.double) ?? .null }
        let axes = StaticShapes(m).axes
        let tensors: [JSONValue] = m.inputs.tensors.enumerated().map { i, t in
            .object([
                ("name", .string(t.name)), ("from", .string(t.from.rawValue)), ("dtype", .string(t.dtype)),
                ("shape", t.shape.map { .array($0.map(JSONValue.int)) } ?? .null),
                ("values", t.values ?? .null), ("low", optNum(t.low)), ("high", optNum(t.high)),
                // the named axis of each dimension, which the worker's size agreement check groups by
                ("axes", .array(axes[i].map { $0.map(JSONValue.string) ?? .null })),
            ])
        }
        return .object([
            ("name", .string(m.name)),
            ("model", model(m)),
            ("inputs", .object([
                ("tokenizer", opt(m.inputs.tokenizer?.reference)),
                ("tokenizer_is_local", .bool(m.inputs.tokenizer?.isLocal ?? false)),
                ("tokenizer_revision", opt(tokenizerRevision(m))),
                ("text", opt(m.inputs.text)),
                ("add_special_tokens", .bool(m.inputs.addSpecialTokens)),
                ("mask", .array(m.inputs.mask.map(JSONValue.int))),
                ("pad_to", m.inputs.padTo.map(JSONValue.int) ?? .null),
                ("tensors", .array(tensors)),
            ])),
            ("trace", .object([
                ("api", .string(traceAPI(hardware: m.target.hardware))),
                ("strict", .bool(m.trace.strict)),
                ("check_shapes", .array(m.trace.checkShapes.map { .array($0.map(JSONValue.int)) })),
                ("split", split(m)),
                ("tolerance", tolerance(m)),
                ("envelope", envelope.json),
                // reduced precision: also record the float32 eager model's outputs, the quality gate's reference
                ("float32_reference", .bool(m.reducedPrecision)),
                // sentence-transformers: the cosine model.pt's sentence_embedding keeps to the library's encode()
                ("encode_check", encodeCheck(m)),
                // wrap model.pt in the envelope guard (`guarded`)
                ("guard", .bool(guarded(m))),
            ])),
            ("target", .object([("hardware", .string(m.target.hardware)), ("optimize", .string(m.target.optimize)),
                                ("quantize", quantize(m))])),
            ("formats", .array(m.output.formats.map(JSONValue.string))),
            ("aoti", aoti(m)),
            ("staging_dir", .string(stagingDir.path)),
            ("extra_record", extraRecord),
        ])
    }

    /// The `verify_bundle` request of a plan's verify step.
    public static func verify(_ m: Manifest, bundle: URL) -> JSONValue {
        verifyBundle(bundle: bundle, tolerance: tolerance(m), encodeCheck: encodeCheck(m))
    }

    /// The `verify_bundle` request: the bundle folder, the tolerance object (`tolerance(...)`) and, for a
    /// sentence-transformers pipeline, `encode_check` (the verifying process also compares model.pt with encode()).
    public static func verifyBundle(bundle: URL, tolerance: JSONValue, encodeCheck: JSONValue = .null) -> JSONValue {
        .object([("dir", .string(bundle.path)), ("tolerance", tolerance), ("encode_check", encodeCheck)])
    }

    /// library sentence-transformers: the cosine model.pt's sentence_embedding keeps to the library's encode() (the
    /// exporting process writes encode()'s embeddings of real text, the verifying one compares); else null.
    public static func encodeCheck(_ m: Manifest) -> JSONValue {
        encodeCheck(minCosine: encodeGate(m))
    }

    /// The `encode_check` object for a cosine to hold to encode() (null: no comparison).
    public static func encodeCheck(minCosine: Double?) -> JSONValue {
        minCosine.map { .object([("min_cosine", .double($0))]) } ?? .null
    }

    /// The cosine a sentence-transformers pipeline's sentence_embedding keeps to encode(); nil for other libraries.
    public static func encodeGate(_ m: Manifest) -> Double? {
        m.model.library == "sentence-transformers" ? encodeMinCosine : nil
    }

    /// The tags an `oci` deploy pushes: `<name>` (moves to each new build) and `<name>-<first 12 of the fingerprint>`.
    public static func ociTags(name: String, fingerprint: String) -> [String] {
        let hex = fingerprint.split(separator: ":").last.map(String.init) ?? fingerprint
        return [name, "\(name)-\(hex.prefix(12))"]
    }

    /// The `oci` deploy's push, run by the executor in Swift (no worker): the destination and the tags, in the order
    /// they are set after every blob and the manifest are in the registry.
    public static func ociPush(repository: String, tags: [String]) -> JSONValue {
        .object([("op", "push"), ("kind", "oci"), ("repository", .string(repository)), ("tags", .array(tags.map { .string($0) }))])
    }

    /// The `deploy` request, with the batch settings of its `DeployBatchRule`.
    public static func deploy(kind: String, bundle: URL, dest: URL, name: String, settings: DeploySettings, format: String) -> JSONValue {
        .object([
            ("kind", .string(kind)), ("bundle", .string(bundle.path)), ("dest", .string(dest.path)), ("name", .string(name)),
        ] + deployFields(settings) + [("version", .string("1.0")), ("format", .string(format))])
    }

    /// The `deploy` request's batch settings fields.
    public static func deployFields(_ settings: DeploySettings) -> [(String, JSONValue)] {
        [("max_batch_size", .int(settings.maxBatchSize)), ("variable_dims", .bool(settings.variableDims)),
         ("batch_dim", settings.batchDim.map(JSONValue.int) ?? .null)]
    }
}

/// The model the export loads (`job.model`), from a manifest or, for `bench`, from a bundle's record.
public struct EagerModel: Sendable {
    public var className: String
    /// The hub id, or the local folder (absolute).
    public var pretrained: String?
    public var pretrainedIsLocal: Bool
    public var revision: String?
    public var config: [(String, JSONValue)]
    public var torchscript: Bool
    public var seed: Int
    public var dtype: String
    public var attnImplementation: String
    public var trustRemoteCode: Bool
    public var allowPickle: Bool
    public var library: String
    /// Constant keyword arguments passed to forward beside the input tensors (`spec.model.forward`).
    public var forward: [(String, JSONValue)]

    public init(className: String, pretrained: String?, pretrainedIsLocal: Bool, revision: String?, config: [(String, JSONValue)],
                torchscript: Bool, seed: Int, dtype: String, attnImplementation: String, trustRemoteCode: Bool,
                allowPickle: Bool, library: String, forward: [(String, JSONValue)] = []) {
        self.className = className
        self.pretrained = pretrained
        self.pretrainedIsLocal = pretrainedIsLocal
        self.revision = revision
        self.config = config
        self.torchscript = torchscript
        self.seed = seed
        self.dtype = dtype
        self.attnImplementation = attnImplementation
        self.trustRemoteCode = trustRemoteCode
        self.allowPickle = allowPickle
        self.library = library
        self.forward = forward
    }

    /// The manifest's model, every default already filled in by the loader.
    public init(_ m: Manifest) {
        self.init(className: m.model.className, pretrained: m.model.pretrained?.reference,
                  pretrainedIsLocal: m.model.pretrained?.isLocal ?? false, revision: m.model.revision, config: m.model.config,
                  torchscript: m.model.torchscript, seed: m.model.seed, dtype: m.model.dtype,
                  attnImplementation: m.model.attnImplementation, trustRemoteCode: m.model.trustRemoteCode,
                  allowPickle: m.model.allowPickle, library: m.model.library, forward: m.model.forward)
    }
}
