import Bundles
import Foundation
import JSON
import Manifest

/// How apply judges one entry's verification, decided once by the planner from the manifest with every default
/// resolved; `plan --json` shows it as the entry's `policy`, and `VerificationJudge` reads it.
public struct VerificationPolicy: Codable, Hashable, Sendable {
    /// The file verified and recorded as the artifact: model.pt, or model.pt2 with `formats: [aoti]` alone.
    public var artifact: String
    /// `spec.trace.strict`: a check shape must match, and tracer warnings must be covered by a match at every point.
    public var strict: Bool
    /// The tolerance against the eager model at the artifact's own precision (the dtype's default unless written).
    public var atol: Double
    public var rtol: Double
    /// The quality gate: the least cosine per output row to the float32 eager model (nil: no gate).
    public var minCosine: Double?
    /// The dtype of the eager model that was traced.
    public var dtype: String
    /// Whether the traced model is int8-quantized (`spec.target.quantize`).
    public var quantized: Bool
    /// The cosine the quantized layers are chosen to keep on the traced inputs (nil: no quantization).
    public var selectMinCosine: Double?
    /// Whether precision is reduced, so each case is also compared with the float32 eager model.
    public var reducedPrecision: Bool
    /// library sentence-transformers: the cosine sentence_embedding must keep to the library's encode() (nil: none).
    public var encodeMinCosine: Double?
    /// Whether the artifact is model.pt traced by torch.jit.trace and wrapped in the envelope guard, which the
    /// `guard` request rewrites when a default envelope narrows.
    public var guarded: Bool
    /// The `guard` request sent when a default envelope narrows (nil: not guarded); its `ranges` are the verified
    /// envelope's, null until verification.
    public var guardRequest: JSONValue?

    /// The policy of a manifest whose bundle is staged at `staging`.
    public init(_ m: Manifest, staging: URL) {
        artifact = m.output.formats.contains("torchscript") ? BundleLayout.modelFile : BundleLayout.aotiFile
        strict = m.trace.strict
        atol = m.trace.atol
        rtol = m.trace.rtol
        minCosine = m.trace.minCosine
        dtype = m.model.dtype
        quantized = m.target.quantize != ManifestDefaults.quantize
        selectMinCosine = quantized ? WorkerRequests.selectionCosine(gate: m.trace.minCosine) : nil
        reducedPrecision = m.reducedPrecision
        encodeMinCosine = WorkerRequests.encodeGate(m)
        guarded = artifact == BundleLayout.modelFile && WorkerRequests.traceAPI(hardware: m.target.hardware) == "torch.jit.trace"
        guardRequest = guarded ? .some(WorkerRequests.guardRequest(bundle: staging, ranges: .null)) : .none
    }

    /// The tolerance object of the `verify_bundle` request and the record.
    public var tolerance: JSONValue { WorkerRequests.tolerance(atol: atol, rtol: rtol, minCosine: minCosine) }
}

extension WorkerRequests {
    /// The `guard` request: rewrite the guard of the model.pt in `bundle` to refuse shapes outside `ranges`
    /// (axis name → [min, max]).
    public static func guardRequest(bundle: URL, ranges: JSONValue) -> JSONValue {
        .object([("op", "guard"), ("dir", .string(bundle.path)), ("ranges", ranges)])
    }
}
