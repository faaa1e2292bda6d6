import Foundation
import JSON

/// The quality gate (`tolerance.min_cosine`): the least cosine per output row allowed between the artifact and the
/// float32 eager model. The worker measures; this decides, for apply (`VerificationJudge`) and `tsexport verify`.
///
/// Each verified case carries two comparisons: `min_cosine` (and max abs/rel error) against the eager model that
/// was traced, at the same precision — what atol/rtol judge — and, when precision is reduced, `float32` against the
/// float32 eager model. The gate reads the float32 comparison when there is one, else the same-precision one.
public enum QualityGate {
    /// The cosine the gate reads for a case, and which reference it came from.
    public static func measured(_ c: JSONValue) -> (cosine: Double, reference: String)? {
        if let f = c["float32"]?["min_cosine"]?.doubleValue { return (f, "float32") }
        if let s = c["min_cosine"]?.doubleValue { return (s, "traced") }
        return nil
    }

    /// How messages name the eager model an artifact was traced from: its dtype, or `int8-quantized float32`.
    public static func tracedModel(dtype: String, quantized: Bool) -> String {
        quantized ? "int8-quantized \(dtype)" : dtype
    }

    /// Why a case fails the gate (nil: it passes, or there is no gate or nothing to measure). `dtype` names the
    /// traced model (`tracedModel`).
    public static func failure(_ c: JSONValue, gate: Double?, dtype: String) -> String? {
        guard let gate, let (cosine, reference) = measured(c), cosine < gate else { return nil }
        return "cosine to the \(reference == "float32" ? "float32" : dtype) eager model \(format(cosine)) is below min_cosine \(format(gate))"
            + "; against the \(dtype) eager model it traced: " + fidelity(c)
    }

    /// The same-precision comparison in words: max abs/rel error and cosine.
    public static func fidelity(_ c: JSONValue) -> String {
        func n(_ key: String) -> String { c[key]?.doubleValue.map { String(format: "%.3g", $0) } ?? "?" }
        return "max abs error \(n("max_abs_error")), max rel error \(n("max_rel_error")), cosine \(c["min_cosine"]?.doubleValue.map(format) ?? "?")"
    }

    /// Up to 8 significant digits (0.99, 0.99992901, 1).
    public static func format(_ d: Double) -> String { String(format: "%.8g", d) }

    /// The record's `quality` object: the gate, its reference, and the worst figures over the given cases.
    public static func record(cases: [JSONValue], gate: Double?, reduced: Bool) -> JSONValue {
        let float32 = cases.compactMap { $0["float32"]?["min_cosine"]?.doubleValue }
        let traced = cases.compactMap { $0["min_cosine"]?.doubleValue }
        let worstAbs = cases.compactMap { $0["float32"]?["max_abs_error"]?.doubleValue }.max()
        return .object([
            ("min_cosine", gate.map(JSONValue.double) ?? .null),
            ("reference", .string(reduced ? "float32 eager model" : "the eager model it traced (float32)")),
            ("row", .string("one example of the batch: all of an output's values for it")),
            ("worst_cosine_to_float32", float32.min().map(JSONValue.double) ?? .null),
            ("worst_abs_error_to_float32", worstAbs.map(JSONValue.double) ?? .null),
            ("worst_cosine_to_traced_model", traced.min().map(JSONValue.double) ?? .null),
            ("points", .int(cases.count)),
        ])
    }
}
