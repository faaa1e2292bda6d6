/// The value a manifest field takes when it is left out: `DocumentValidator.decode` fills them in, and `tsexport init`
/// names them in the comments of the manifests it scaffolds. The tolerances and the quality gate, which depend on the
/// dtype, are `Manifest.defaultTolerance` and `Manifest.defaultMinCosine`.
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
}
