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
    /// Whether a default envelope that narrows in verification is exported, compiled and verified again for the
    /// verified box: model.pt2 has no guard and accepts exactly the dims it was compiled for (`formats` has `aoti`).
    public var recompileWhenNarrowed: Bool
    /// The batch settings rule of each deploy the worker makes (triton, torchserve), by deploy index.
    public var deploys: [DeployBatchRule]
    /// The bounds of a `spec.trace.split` export (nil without split), which the export request carries.
    public var split: SplitBounds?

    /// The policy of a manifest planned with `envelope`, whose bundle is staged at `staging`.
    public init(_ m: Manifest, envelope: EnvelopePlan, staging: URL) {
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
        guarded = WorkerRequests.guarded(m)
        guardRequest = guarded ? .some(WorkerRequests.guardRequest(bundle: staging, ranges: .null)) : .none
        recompileWhenNarrowed = m.output.formats.contains("aoti")
        deploys = DeployBatchRule.rules(m, envelope: envelope)
        split = m.trace.split.map { _ in SplitBounds(m) }
    }

    /// The batch settings rule of the deploy at `index` in `spec.output.deploy`.
    public func deployRule(index: Int) -> DeployBatchRule? { deploys.first { $0.index == index } }

    /// The tolerance object of the `verify_bundle` request and the record.
    public var tolerance: JSONValue { WorkerRequests.tolerance(atol: atol, rtol: rtol, minCosine: minCosine) }
}

/// The bounds a split export (`spec.trace.split`) is held to, from the tolerance; the worker applies them.
public struct SplitBounds: Codable, Hashable, Sendable {
    /// The largest max abs logit difference a cached step may show against the uncached model (full.pt), and a
    /// traced split part against its eager module at its own example.
    public var driftLimit: Double
    /// The padding check of the uncached decoder step: the padded buffer's logits may differ from the unpadded
    /// prefix's by at most `paddingAbsolute + paddingRelative × max |logit|`.
    public var paddingAbsolute: Double
    public var paddingRelative: Double
    /// Whether a split part (fixed-shape, so no envelope can cover it) is refused when the tracer warned: `strict`.
    public var refuseTracerWarnings: Bool
    /// Whether apply warns that the uncached encoder and decoder step are checked at the traced batch size only:
    /// a split without `cache`, `strict: false` and no `check_shapes`.
    public var warnTracedShapeOnly: Bool

    public init(driftLimit: Double, paddingAbsolute: Double, paddingRelative: Double, refuseTracerWarnings: Bool,
                warnTracedShapeOnly: Bool = false) {
        self.driftLimit = driftLimit
        self.paddingAbsolute = paddingAbsolute
        self.paddingRelative = paddingRelative
        self.refuseTracerWarnings = refuseTracerWarnings
        self.warnTracedShapeOnly = warnTracedShapeOnly
    }

    /// The bounds of a manifest's split, from its tolerance, `strict` and `check_shapes`.
    public init(_ m: Manifest) {
        driftLimit = Self.driftLimit(atol: m.trace.atol)
        paddingAbsolute = driftLimit
        paddingRelative = max(1e-2, 10 * m.trace.rtol)
        refuseTracerWarnings = m.trace.strict
        let cached = m.trace.split.map { $0.cache || $0.kind == "decoder-only" } ?? false
        warnTracedShapeOnly = !cached && !m.trace.strict && m.trace.checkShapes.isEmpty
    }

    /// The warning apply gives when `warnTracedShapeOnly`, at `spec.trace.check_shapes`.
    public static let tracedShapeOnlyWarning = "the encoder and decoder step are checked at the traced batch size only (and with a padded source); add check_shapes to prove other batch sizes and source lengths"

    /// The one drift rule: the tolerance's atol widened a hundredfold (long logit sums reassociate), at least 1e-3.
    public static func driftLimit(atol: Double) -> Double { max(1e-3, 100 * atol) }

    /// The request object `job.trace.split` carries beside the split's kind and length.
    public var json: [(String, JSONValue)] {
        [("drift_limit", .double(driftLimit)),
         ("padding_bound", .object([("absolute", .double(paddingAbsolute)), ("relative", .double(paddingRelative))])),
         ("refuse_tracer_warnings", .bool(refuseTracerWarnings))]
    }
}

extension WorkerRequests {
    /// Whether the artifact is wrapped in the envelope guard: model.pt traced by torch.jit.trace (Neuron traces and
    /// model.pt2 are not).
    public static func guarded(_ m: Manifest) -> Bool {
        m.output.formats.contains("torchscript") && traceAPI(hardware: m.target.hardware) == "torch.jit.trace"
    }

    /// `job.trace.split`: null, or the split's kind, length, cache and its bounds.
    public static func split(_ m: Manifest) -> JSONValue {
        guard let s = m.trace.split else { return .null }
        return .object([("kind", .string(s.kind)), ("max_length", .int(s.maxLength)), ("cache", .bool(s.cache || s.kind == "decoder-only"))]
                       + SplitBounds(m).json)
    }

    /// The `guard` request: rewrite the guard of the model.pt in `bundle` to refuse shapes outside `ranges`
    /// (axis name → [min, max]).
    public static func guardRequest(bundle: URL, ranges: JSONValue) -> JSONValue {
        .object([("op", "guard"), ("dir", .string(bundle.path)), ("ranges", ranges)])
    }
}
