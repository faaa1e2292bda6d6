/// The value a manifest field takes when it is left out: `DocumentValidator.decode` fills them in, and `tsexport init`
/// names them in the comments of the manifests it scaffolds; the planner's policy (`VerificationPolicy`) takes the
/// resolved values from the manifest.
public enum ManifestDefaults {
    /// `spec.model.dtype`.
    public static let dtype = "float32"
    /// `spec.model.torchscript`.
    public static let torchscript = true
    /// `spec.model.attn_implementation`.
    public static let attnImplementation = "eager"
    /// `spec.model.seed`.
    public static let seed = 0
    /// `spec.model.library`.
    public static let library = "transformers"
    /// `spec.inputs.tensors[].dtype`.
    public static let tensorDtype = "int64"
    /// `spec.trace.strict`.
    public static let strict = true
    /// `spec.target.hardware`.
    public static let hardware = "cpu"
    /// `spec.target.optimize`.
    public static let optimize = "none"
    /// `spec.target.quantize`.
    public static let quantize = "none"
    /// `spec.output.formats`.
    public static let formats = ["torchscript"]
    /// `spec.output.dir` for `metadata.name`.
    public static func outputDir(name: String) -> String { "build/\(name)" }

    /// `spec.trace.tolerance.atol`/`rtol` for a model dtype (float32: atol 1e-5, rtol 1e-4; float16: 1e-2, 1e-2; bfloat16: 5e-2, 5e-2).
    /// `compiledInt8` (quantize with formats: [aoti]): atol 0.5, rtol 5e-2 against the int8 eager model. The compiled
    /// kernels quantize activations per token on their own, so a value on a rounding boundary lands one int8 step
    /// away from eager, and the step grows through the layers: tiny BERT max abs error 2.2e-4, the MiniLM 0.19 at
    /// its traced shape (hidden states up to about 10). Fidelity here only says the compile did not break the model;
    /// the quality gate against the float32 model (min_cosine) is the bar that holds the artifact's answers.
    public static func tolerance(dtype: String, compiledInt8: Bool = false) -> (atol: Double, rtol: Double) {
        if compiledInt8 { return (0.5, 5e-2) }
        switch dtype {
        case "float16": return (1e-2, 1e-2)
        case "bfloat16": return (5e-2, 5e-2)
        default: return (1e-5, 1e-4)
        }
    }

    /// The quality gate when the artifact's precision is reduced (a float16/bfloat16 dtype or a quantize scheme).
    public static let reducedPrecisionMinCosine = 0.99

    /// `spec.trace.tolerance.min_cosine`: `reducedPrecisionMinCosine` when the artifact's precision is reduced, else none.
    public static func minCosine(dtype: String, quantize: String) -> Double? {
        dtype != Self.dtype || quantize != Self.quantize ? reducedPrecisionMinCosine : nil
    }
}
