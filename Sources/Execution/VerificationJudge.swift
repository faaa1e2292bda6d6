import Foundation
import JSON
import Plan

/// The envelope as judged: what the record states and what deploys and the guard need.
struct JudgedEnvelope {
    /// The record's `envelope` object.
    var record: JSONValue
    /// New guard ranges when a default envelope was narrowed (nil: the guard written at export stands).
    var resealRanges: JSONValue?
    /// The envelope that verified, whose ranges the deploys' batch settings follow (`DeployBatchRule`).
    var verified: VerifiedEnvelope
    /// The record's `aoti` object when model.pt2 was built and verified.
    var aoti: JSONValue?
    /// The record's `generation_check` when cached generation artifacts were verified.
    var generation: JSONValue?
}

/// Joins the export's cases with the fresh process's results and applies the contract: the traced shape must
/// match; check shapes under strict must match; a declared envelope is a promise; a default one narrows; strict
/// tracer warnings must be covered by a match at every point.
struct VerificationJudge {
    let entry: PlanEntry
    let data: JSONValue
    let verdict: JSONValue
    var warnings: [(field: String?, message: String)] = []
    /// The warnings the record keeps beside the worker's own (`warnings` in record.json: code, field, message).
    var recordWarnings: [JSONValue] = []
    /// The record's `quality` object, once judged.
    var quality: JSONValue?
    /// The record's `library` object (sentence-transformers), once judged.
    var library: JSONValue?

    /// The planner's rules for this entry.
    let policy: VerificationPolicy

    init(entry: PlanEntry, data: JSONValue, verdict: JSONValue) throws {
        guard let policy = entry.policy else {
            throw WorkerFailure(stage: "verify", code: "verify_failed", message: "the plan states no verification policy for \(entry.name)", field: nil, detail: nil)
        }
        self.entry = entry
        self.data = data
        self.verdict = verdict
        self.policy = policy
    }

    var cases: [JSONValue] {
        let exported = Dictionary((data["cases"]?.arrayValue ?? []).compactMap { c in c["case"]?.stringValue.map { ($0, c) } }, uniquingKeysWith: { a, _ in a })
        return (verdict["cases"]?.arrayValue ?? []).map { v in
            guard let name = v["case"]?.stringValue, let e = exported[name], var o = v.objectValue else { return v }
            if o.first(where: { $0.0 == "sizes" }) == nil, let sizes = e["sizes"] { o.append(("sizes", sizes)) }
            return .object(o)
        }
    }

    /// The traced case's size on each axis.
    var tracedSizes: [String: Int] {
        let traced = (data["cases"]?.arrayValue ?? []).first { $0["case"]?.stringValue == "traced" }
        var out: [String: Int] = [:]
        for (k, v) in traced?["sizes"]?.objectValue ?? [] { if let i = v.intValue { out[k] = i } }
        return out
    }

    static func why(_ c: JSONValue, tolerance: JSONValue?) -> String {
        c["error"]?.stringValue
            ?? "max abs error \(c["max_abs_error"]?.doubleValue ?? .nan), max rel error \(c["max_rel_error"]?.doubleValue ?? .nan) (atol \(tolerance?["atol"]?.doubleValue ?? .nan), rtol \(tolerance?["rtol"]?.doubleValue ?? .nan))"
    }

    static func shapeText(_ sizes: [String: Int], axes: [AxisPlan], fallback: JSONValue?) -> String {
        if axes.isEmpty { return CanonicalJSON.text(fallback ?? .null) }
        return axes.map { "\($0.name) \(sizes[$0.name].map(String.init) ?? "?")" }.joined(separator: ", ")
    }

    mutating func judge() throws -> JudgedEnvelope {
        let plan = entry.envelope ?? EnvelopePlan(axes: [], tensors: [], points: [], padMasks: false)
        let tolerance: JSONValue? = policy.tolerance
        let strict = policy.strict
        let all = cases
        func sizes(_ c: JSONValue) -> [String: Int] {
            var out: [String: Int] = [:]
            for (k, v) in c["sizes"]?.objectValue ?? [] { if let i = v.intValue { out[k] = i } }
            return out
        }
        let traced = all.first { $0["case"]?.stringValue == "traced" }.map(sizes) ?? [:]
        var results: [PointResult] = []
        var rejected: [(name: String, sizes: [String: Int], why: String)] = []
        for c in all {
            let name = c["case"]?.stringValue ?? "?"
            let passed = c["passed"] == .bool(true)
            let shape = CanonicalJSON.text(c["shape"] ?? .null)
            if let why = c["rejected_by_model"]?.stringValue {
                // The eager model itself refuses the input there: not a point the artifact can pass or fail.
                rejected.append((name, sizes(c), why))
                continue
            }
            if name == "traced" || name.hasSuffix(".traced") {
                if !passed {
                    throw WorkerFailure(stage: "verify", code: "verify_failed",
                                        message: "the saved artifact does not match the eager model at the traced shape \(shape): \(Self.why(c, tolerance: tolerance))", field: "spec.trace.tolerance", detail: nil)
                }
                if name != "traced" { continue }
            } else if name.contains(".") {
                // A split artifact's case (encoder.*, decoder_step.*): those artifacts are fixed-shape.
                if !passed {
                    throw WorkerFailure(stage: "verify", code: "verify_failed", message: "the \(name.split(separator: ".")[0]) artifact differs from the eager model at \(shape): \(Self.why(c, tolerance: tolerance))", field: "spec.trace.split", detail: nil)
                }
                continue
            }
            let point = plan.points.first { $0.name == name }
            if let point, point.role == EnvelopePoint.Role.check, !passed, strict {
                throw WorkerFailure(stage: "verify", code: "verify_failed", message: "the artifact differs from the eager model at check shape \(shape): \(Self.why(c, tolerance: tolerance)); with strict: true this fails the export (set strict: false to keep an artifact valid only where it verified)", field: "spec.trace.check_shapes[\(point.checkIndex ?? 0)]", detail: nil)
            }
            let s = sizes(c)
            results.append(PointResult(name: name, sizes: s, passed: passed, why: passed ? nil : Self.why(c, tolerance: tolerance),
                                       shapeText: Self.shapeText(s, axes: plan.axes, fallback: c["shape"])))
        }
        let hasMask = plan.tensors.contains { $0.name.hasSuffix("attention_mask") }
        let batchFails = results.contains { !$0.passed && $0.sizes["batch"] != traced["batch"] }
        let hint = batchFails && !hasMask
            ? "add an attention_mask input tensor (spec.inputs.tensors): without one the trace keeps the traced batch size in its position and mask arithmetic"
            : nil
        let decision = EnvelopeVerdict.decide(plan: plan, traced: traced, results: results, hint: hint)
        let tracerWarnings = data["tracer_warnings"]?.arrayValue ?? []
        let box: VerifiedEnvelope
        var narrowed = false
        switch decision {
        case .broken(let field, let message):
            throw WorkerFailure(stage: "verify", code: "envelope_failed", message: message + "; nothing was written", field: field, detail: nil)
        case .verified(let b):
            box = b
        case .narrowed(let b, let w):
            if strict && !tracerWarnings.isEmpty {
                let first = tracerWarnings.first?.stringValue ?? ""
                throw WorkerFailure(stage: "verify", code: "strict_violation", message: "the tracer warned \(tracerWarnings.count) time\(tracerWarnings.count == 1 ? "" : "s") (the first: \(first)) and the artifact does not match the eager model at every envelope point (\(w.first?.message ?? "")); strict: true refuses it: declare an envelope that verifies, or set strict: false to keep the narrowed envelope \(b.text)", field: "spec.trace.strict", detail: nil)
            }
            box = b
            narrowed = true
            warnings += w.map { (Optional($0.field), $0.message) }
        }
        if policy.split?.warnTracedShapeOnly == true {
            warnings.append(("spec.trace.check_shapes", SplitBounds.tracedShapeOnlyWarning))
            recordWarnings.append(.object([("code", "unchecked_split"), ("field", "spec.trace.check_shapes"),
                                           ("message", .string(SplitBounds.tracedShapeOnlyWarning))]))
        }
        if !strict, let first = tracerWarnings.first?.stringValue {
            warnings.append(("spec.trace.strict", "the tracer warned \(tracerWarnings.count) time\(tracerWarnings.count == 1 ? "" : "s") (recorded in record.json); the first: \(first)"))
        }
        let inside = results.filter { (r: PointResult) in box.contains(r.sizes) }
        let covered = inside.allSatisfy { (r: PointResult) in r.passed }
        let warningVerdict: JSONValue = tracerWarnings.isEmpty ? .null : .string(
            covered ? "covered: the artifact matched the eager model at all \(inside.count) points of the recorded envelope"
                    : "not covered: some points of the recorded envelope did not match")
        let ranges = JSONValue.object(box.ranges.map { ($0.0, .array([.int($0.1), .int($0.2)])) })
        let axesRecord: [JSONValue] = plan.axes.map { (a: AxisPlan) -> JSONValue in
            let hi: JSONValue = a.max.map(JSONValue.int) ?? .int(traced[a.name] ?? a.min)
            return .object([("name", .string(a.name)), ("declared", .bool(a.declared)), ("planned", .array([.int(a.min), hi]))])
        }
        let tensorsRecord: [JSONValue] = plan.tensors.map { (t: TensorAxes) -> JSONValue in
            .object([("name", .string(t.name)), ("axes", .array(t.axes.map { $0.map(JSONValue.string) ?? .null }))])
        }
        let pointsRecord: [JSONValue] = results.map { (r: PointResult) -> JSONValue in
            let sizes: [(String, JSONValue)] = r.sizes.sorted { $0.key < $1.key }.map { ($0.key, JSONValue.int($0.value)) }
            return .object([
                ("case", .string(r.name)), ("sizes", .object(sizes)), ("passed", .bool(r.passed)),
                ("inside", .bool(box.contains(r.sizes))), ("error", r.why.map(JSONValue.string) ?? .null),
            ])
        }
        let rejectedRecord: [JSONValue] = rejected.map { r in
            .object([("case", .string(r.name)), ("sizes", .object(r.sizes.sorted { $0.key < $1.key }.map { ($0.key, .int($0.value)) })),
                     ("passed", .null), ("inside", .bool(box.contains(r.sizes))), ("verdict", .string("not an input the model accepts")),
                     ("rejected_by_model", .string(r.why))])
        }
        if let first = rejected.first {
            let what = rejected.count == 1 ? "1 envelope point is not an input the model accepts" : "\(rejected.count) envelope points are not inputs the model accepts"
            warnings.append(("spec.trace.envelope", "\(what), so the artifact is not judged there (the record lists \(rejected.count == 1 ? "it" : "them")); the first: \(first.why)"))
        }
        let record = JSONValue.object([
            ("axes", .array(axesRecord)), ("tensors", .array(tensorsRecord)), ("verified", ranges),
            ("narrowed", .bool(narrowed)), ("points", .array(pointsRecord + rejectedRecord)),
            ("tracer_warnings_verdict", warningVerdict), ("enforced", data["guarded"] ?? .bool(false)),
        ])
        quality = try judgeQuality(box: box, results: results, all: all, tolerance: tolerance)
        library = try judgeLibrary(box: box)
        let aoti = try judgeAOTI(box: box, results: results, tolerance: tolerance)
        let generation = try judgeGeneration(tolerance: tolerance)
        return JudgedEnvelope(record: record, resealRanges: narrowed ? .some(ranges) : nil, verified: box, aoti: aoti, generation: generation)
    }

    /// The quality gate (tolerance.min_cosine) at the traced shape and every point inside the verified envelope,
    /// for model.pt and model.pt2: a case below it fails the apply with both comparisons.
    func judgeQuality(box: VerifiedEnvelope, results: [PointResult], all: [JSONValue], tolerance: JSONValue?) throws -> JSONValue {
        let (dtype, quantized, reduced, gate) = (policy.dtype, policy.quantized, policy.reducedPrecision, policy.minCosine)
        let sizes = Dictionary(results.map { ($0.name, $0.sizes) }, uniquingKeysWith: { a, _ in a })
        let inside = { (name: String) -> Bool in name == "traced" || (sizes[name].map(box.contains) ?? false) }
        let described = QualityGate.tracedModel(dtype: dtype, quantized: quantized)
        let plan = entry.envelope
        let judged = { (c: JSONValue) -> Bool in c["rejected_by_model"] == nil && inside(c["case"]?.stringValue ?? "") }
        // formats: [aoti] alone: the bundle's cases are model.pt2's (the verdict answers them as both)
        let aotiOnly = verdict["artifact"]?.stringValue == "model.pt2"
        let sets: [(String, [JSONValue])] = [(aotiOnly ? "model.pt2" : "model.pt", all.filter(judged))]
            + (aotiOnly ? [] : [("model.pt2", (verdict["aoti"]?["cases"]?.arrayValue ?? []).filter(judged))])
        for (artifact, cases) in sets {
            for c in cases {
                guard let why = QualityGate.failure(c, gate: gate, dtype: described) else { continue }
                let name = c["case"]?.stringValue ?? "?"
                let shape = sizes[name].map { Self.shapeText($0, axes: plan?.axes ?? [], fallback: c["shape"]) } ?? CanonicalJSON.text(c["shape"] ?? .null)
                let help = quantized
                    ? "the layers quantized were chosen to keep cosine \(policy.selectMinCosine.map(QualityGate.format) ?? "?") on the traced inputs; lower spec.trace.tolerance.min_cosine if this loss is acceptable, or set quantize: none"
                    : "use a wider dtype (float32), or lower spec.trace.tolerance.min_cosine if this loss is acceptable"
                throw WorkerFailure(stage: "verify", code: "quality_failed",
                                    message: "\(artifact) loses quality at \(name == "traced" ? "the traced shape " : "")\(shape): \(why); \(help); nothing was written",
                                    field: quantized ? "spec.target.quantize" : reduced ? "spec.model.dtype" : "spec.trace.tolerance.min_cosine", detail: nil)
            }
        }
        return QualityGate.record(cases: sets[0].1, gate: gate, reduced: reduced)
    }

    /// library sentence-transformers: model.pt's sentence_embedding must keep the planned cosine to the library's
    /// encode() on real text at the traced shape and at every point inside the verified envelope. The comparison
    /// comes from the verifying process (`verify_bundle`'s `encode_check`), which loaded model.pt from disk.
    func judgeLibrary(box: VerifiedEnvelope) throws -> JSONValue? {
        guard let library = data["library"], library != .null, var o = library.objectValue else { return nil }
        guard let gate = policy.encodeMinCosine else { return library }
        guard let check = verdict["encode_check"], check != .null else {
            throw WorkerFailure(stage: "verify", code: "verify_failed",
                                message: "the verifying worker returned no comparison of model.pt with sentence-transformers' encode(); nothing was written",
                                field: "spec.model.library", detail: nil)
        }
        let judged = EncodeCheck.judge(points: check["points"]?.arrayValue ?? [], minCosine: gate, inside: EncodeCheck.insideVerified(box))
        if let p = judged.failures.first {
            throw WorkerFailure(stage: "verify", code: "verify_failed",
                                message: "model.pt's sentence_embedding differs from sentence-transformers' encode() on real text at \(CanonicalJSON.text(p.raw["shape"] ?? .null)): cosine \(p.cosine) < \(gate); nothing was written",
                                field: "spec.model.library", detail: nil)
        }
        let points: [JSONValue] = judged.points.map { p in .object((p.raw.objectValue ?? []) + [("inside", .bool(p.inside))]) }
        var c = check.objectValue ?? []
        c = c.map { k, v in k == "points" ? (k, .array(points)) : (k, v) }
        c.append(("passed", .bool(true)))
        o.removeAll { $0.0 == "encode_check" }
        o.append(("encode_check", .object(c)))
        return .object(o)
    }

    /// Cached generation: the greedy loop over the artifacts alone must give generate()'s tokens on every recorded
    /// prompt, and the cached step must not drift from the uncached model.
    func judgeGeneration(tolerance: JSONValue?) throws -> JSONValue? {
        guard let g = verdict["generation"] else { return nil }
        guard let limit = policy.split?.driftLimit else {
            throw WorkerFailure(stage: "verify", code: "verify_failed", message: "cached generation was verified but the plan states no split bounds", field: "spec.trace.split", detail: nil)
        }
        for p in g["prompts"]?.arrayValue ?? [] where p["equal"] != .bool(true) {
            throw WorkerFailure(stage: "verify", code: "verify_failed",
                                message: "the greedy loop over the cached artifacts gives \(CanonicalJSON.text(p["tokens"] ?? .null)) where generate() gives \(CanonicalJSON.text(p["expected"] ?? .null)) for the prompt \(CanonicalJSON.text(p["prompt"] ?? .null)) (max drift of the cached step from the uncached model \(p["max_drift"]?.doubleValue ?? .nan))",
                                field: "spec.trace.split", detail: nil)
        }
        if g["passed"] != .bool(true) {
            throw WorkerFailure(stage: "verify", code: "verify_failed", message: "the cached generation artifacts were not verified on any prompt", field: "spec.trace.split", detail: nil)
        }
        if let drift = g["max_drift"]?.doubleValue, drift > limit {
            throw WorkerFailure(stage: "verify", code: "verify_failed",
                                message: "the cached step drifts from the uncached model: max abs logit error \(drift) (limit \(limit)); the cache does not reproduce the model",
                                field: "spec.trace.split.cache", detail: nil)
        }
        var o = g.objectValue ?? []
        o.append(("drift_limit", .double(limit)))
        return .object(o)
    }

    /// model.pt2 (formats: aoti) must match the eager model at every point of the verified envelope, like model.pt.
    func judgeAOTI(box: VerifiedEnvelope, results: [PointResult], tolerance: JSONValue?) throws -> JSONValue? {
        guard let built = data["aoti"], built != .null else { return nil }
        guard let verified = verdict["aoti"] else {
            throw WorkerFailure(stage: "verify", code: "verify_failed", message: "model.pt2 was built but not verified", field: "spec.output.formats", detail: nil)
        }
        let sizes = Dictionary(results.map { ($0.name, $0.sizes) }, uniquingKeysWith: { a, _ in a })
        var cases: [JSONValue] = []
        for c in verified["cases"]?.arrayValue ?? [] {
            let name = c["case"]?.stringValue ?? "?"
            let inside = sizes[name].map(box.contains) ?? (name == "traced")
            if inside && c["passed"] != .bool(true) && c["rejected_by_model"] == nil {
                let shape = sizes[name].map { Self.shapeText($0, axes: entry.envelope?.axes ?? [], fallback: c["shape"]) } ?? CanonicalJSON.text(c["shape"] ?? .null)
                throw WorkerFailure(stage: "verify", code: "verify_failed",
                                    message: "model.pt2 (AOTInductor) does not match the eager model at \(shape), inside the envelope: \(Self.why(c, tolerance: tolerance))",
                                    field: "spec.output.formats", detail: nil)
            }
            var o = c.objectValue ?? []
            o.append(("inside", .bool(inside)))
            cases.append(.object(o))
        }
        var record = built.objectValue ?? []
        record.removeAll { $0.0 == "path" }
        record.insert(("file", .string("model.pt2")), at: 0)
        record.append(("sha256", verified["sha256"] ?? .null))
        record.append(("cases", .array(cases)))
        record.append(("input_checks", .string("model.pt2 checks input shapes against its dynamic dims only when AOTI_RUNTIME_CHECK_INPUTS=1 is set in the loading process")))
        return .object(record)
    }

    /// The record's `parity` object: the tolerance, every case, and a verdict that says what was verified.
    func parity(envelope: JudgedEnvelope) -> JSONValue {
        let box = envelope.record["verified"]?.objectValue ?? []
        let text = box.isEmpty ? "the traced shape" : box.map { "\($0.0) \(CanonicalJSON.text($0.1))" }.joined(separator: ", ")
        let narrowed = envelope.record["narrowed"] == .bool(true)
        return .object([
            ("tolerance", policy.tolerance), ("cases", .array(cases)),
            ("verdict", .string((narrowed ? "valid in the narrowed envelope " : "valid across the envelope ") + text)),
        ])
    }
}
