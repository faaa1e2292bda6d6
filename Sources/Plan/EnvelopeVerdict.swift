import Foundation
import JSON

/// One verified point: the sizes it had (every axis, traced sizes filled in) and how the artifact did.
public struct PointResult: Sendable, Hashable {
    public var name: String
    public var sizes: [String: Int]
    public var passed: Bool
    /// Why it failed: the artifact's error or the errors beyond tolerance.
    public var why: String?
    /// The point's shape as a user reads it: `[2, 16]`, or with every axis named.
    public var shapeText: String

    public init(name: String, sizes: [String: Int], passed: Bool, why: String?, shapeText: String) {
        self.name = name
        self.sizes = sizes
        self.passed = passed
        self.why = why
        self.shapeText = shapeText
    }
}

/// A verified box: axis → [min, max].
public struct VerifiedEnvelope: Sendable, Hashable {
    public var ranges: [(String, Int, Int)]

    public init(ranges: [(String, Int, Int)]) { self.ranges = ranges }

    public static func == (a: Self, b: Self) -> Bool { a.ranges.map { "\($0)" } == b.ranges.map { "\($0)" } }
    public func hash(into h: inout Hasher) { h.combine(ranges.map { "\($0)" }) }

    public func contains(_ sizes: [String: Int]) -> Bool {
        ranges.allSatisfy { name, lo, hi in sizes[name].map { $0 >= lo && $0 <= hi } ?? true }
    }

    var volume: Double { ranges.reduce(1.0) { $0 * Double($1.2 - $1.1 + 1) } }

    /// `batch [1, 4], sequence [1, 32]`.
    public var text: String { ranges.isEmpty ? "the traced shape" : ranges.map { "\($0.0) [\($0.1), \($0.2)]" }.joined(separator: ", ") }

    /// The record's form.
    public var json: JSONValue { .object(ranges.map { ($0.0, .array([.int($0.1), .int($0.2)])) }) }
}

/// What verification over the envelope decided.
public enum EnvelopeDecision: Sendable {
    /// Every point inside the planned envelope matched.
    case verified(VerifiedEnvelope)
    /// Default axes were narrowed to the largest box around the traced shape that held; the warnings say why.
    case narrowed(VerifiedEnvelope, warnings: [(field: String, message: String)])
    /// A declared range (a promise) failed: nothing is written.
    case broken(field: String, message: String)
}

/// The contract's envelope rules applied to the verified points.
public enum EnvelopeVerdict {
    /// Decides the envelope from the points. `hint` is the setting that helps, when the caller knows one.
    public static func decide(plan: EnvelopePlan, traced: [String: Int], results: [PointResult], hint: String?) -> EnvelopeDecision {
        let axes = plan.axes.map { a in (a, a.max ?? traced[a.name] ?? a.min) }
        let full = VerifiedEnvelope(ranges: axes.map { ($0.0.name, $0.0.min, $0.1) })
        let failures = results.filter { !$0.passed }
        if failures.isEmpty { return .verified(full) }
        // Candidate boxes: each axis from {min, traced} to {traced, max}, the values the grid verified.
        var boxes: [[(String, Int, Int)]] = [[]]
        for (a, hi) in axes {
            let t = traced[a.name] ?? hi
            let los = Array(Set([a.min, t])).filter { $0 <= t }, his = Array(Set([t, hi])).filter { $0 >= t }
            boxes = boxes.flatMap { b in los.flatMap { lo in his.map { h in b + [(a.name, lo, h)] } } }
        }
        let holding = boxes.map(VerifiedEnvelope.init).filter { box in results.allSatisfy { !box.contains($0.sizes) || $0.passed } }
        let declared = Set(plan.axes.filter(\.declared).map(\.name))
        let keepsPromise = holding.filter { box in
            box.ranges.allSatisfy { name, lo, hi in !declared.contains(name) || full.ranges.contains { $0 == (name, lo, hi) } }
        }
        let best = { (list: [VerifiedEnvelope]) in list.max { $0.volume < $1.volume } }
        let first = failures[0]
        // The axes on which the failing point leaves the traced shape.
        let off = plan.axes.filter { a in first.sizes[a.name] != traced[a.name] }.map(\.name)
        let dimension = off.isEmpty ? "the traced shape" : off.joined(separator: " and ")
        if let box = best(keepsPromise) {
            var warnings: [(String, String)] = []
            for (name, lo, hi) in box.ranges {
                guard let planned = full.ranges.first(where: { $0.0 == name }), planned.1 != lo || planned.2 != hi else { continue }
                let failing = failures.first { f in f.sizes[name].map { $0 < lo || $0 > hi } ?? false } ?? first
                let axis = plan.axes.first { $0.name == name }
                warnings.append((axis?.field ?? "spec.trace.envelope",
                                 "the artifact does not match the eager model at \(failing.shapeText) (\(failing.why ?? "mismatch")); "
                                 + "the envelope's \(name) is narrowed from [\(planned.1), \(planned.2)] to [\(lo), \(hi)], which verified, and the artifact refuses other sizes"
                                 + (hint.map { "; \($0)" } ?? "")))
            }
            return .narrowed(box, warnings: warnings)
        }
        let field = plan.axes.first { off.contains($0.name) && $0.declared }?.field ?? "spec.trace.envelope"
        var message = "the artifact does not match the eager model at \(first.shapeText), inside the declared envelope (\(dimension)): \(first.why ?? "mismatch")"
        if let held = best(holding), held.ranges.contains(where: { $0.1 != $0.2 }) || !held.ranges.isEmpty {
            message += "; the largest envelope that verified is \(held.text)"
        }
        if let hint { message += "; \(hint)" }
        return .broken(field: field, message: message)
    }
}
