import Foundation
import JSON
import Manifest

/// One dimension that an envelope can vary: `batch`, `sequence`, `decoder_sequence` or `<tensor>.<index>`.
public struct AxisPlan: Codable, Hashable, Sendable {
    /// The axis name the worker request and the record use.
    public var name: String
    /// The smallest size served.
    public var min: Int
    /// The largest size served; nil means "the traced size", which only tracing knows (text without pad_to).
    public var max: Int?
    /// The traced size when the manifest states it.
    public var traced: Int?
    /// Whether the manifest declared this range (a promise) or tsexport chose it (the default rule).
    public var declared: Bool

    public init(name: String, min: Int, max: Int?, traced: Int?, declared: Bool) {
        self.name = name
        self.min = min
        self.max = max
        self.traced = traced
        self.declared = declared
    }

    /// `[1, 8]`, `[1, traced]`.
    public var rangeText: String { "[\(min), \(max.map(String.init) ?? "traced")]" }

    /// The manifest field that declares this axis.
    public var field: String {
        switch name {
        case _ where !name.contains("."): return "spec.trace.envelope.\(name)"
        default: return "spec.trace.envelope.dims.\(name)"
        }
    }
}

/// One shape the artifact is compared with the eager model at: a size per axis (nil: the traced size).
public struct EnvelopePoint: Codable, Hashable, Sendable {
    /// Why it is checked.
    public enum Role: String, Codable, Hashable, Sendable { case traced, corner, interior, check }
    /// The case name in the sample and reference files (`traced`, `p1`, …, `check0`, …).
    public var name: String
    public var role: Role
    /// For `check` points: the index into `spec.trace.check_shapes`.
    public var checkIndex: Int?
    /// Axis name → size (nil: the traced size).
    public var sizes: [String: Int?]

    public init(name: String, role: Role, checkIndex: Int?, sizes: [String: Int?]) {
        self.name = name
        self.role = role
        self.checkIndex = checkIndex
        self.sizes = sizes
    }

    /// The request form: `{"case", "sizes": {axis: size or null}}`, axes in plan order.
    func json(axes: [AxisPlan]) -> JSONValue {
        .object([
            ("case", .string(name)),
            ("sizes", .object(axes.map { a in (a.name, (sizes[a.name] ?? nil).map(JSONValue.int) ?? .null) })),
        ])
    }
}

/// Which axis governs each dimension of each input tensor (nil: fixed at the traced size).
public struct TensorAxes: Codable, Hashable, Sendable {
    public var name: String
    public var axes: [String?]

    public init(name: String, axes: [String?]) {
        self.name = name
        self.axes = axes
    }
}

/// The resolved serving envelope of one manifest and the points apply verifies it at.
public struct EnvelopePlan: Codable, Hashable, Sendable {
    /// The axes, in order: batch, sequence, decoder_sequence, the other named axes, then `dims` entries.
    public var axes: [AxisPlan]
    /// Per input tensor, in manifest order, the axis of each dimension.
    public var tensors: [TensorAxes]
    /// Every point: the traced shape, the grid of each axis' min, traced size and max, seeded interior points and
    /// the check shapes.
    public var points: [EnvelopePoint]
    /// Whether tensors whose name ends in `attention_mask` get padding (zeros at the end of some rows) at points.
    public var padMasks: Bool

    public init(axes: [AxisPlan], tensors: [TensorAxes], points: [EnvelopePoint], padMasks: Bool) {
        self.axes = axes
        self.tensors = tensors
        self.points = points
        self.padMasks = padMasks
    }

    /// Whether every axis was declared.
    public var fullyDeclared: Bool { axes.allSatisfy(\.declared) }

    /// The request's `envelope` object.
    public var json: JSONValue {
        .object([
            ("axes", .array(axes.map { a in
                .object([("name", .string(a.name)), ("min", .int(a.min)), ("max", a.max.map(JSONValue.int) ?? .null)])
            })),
            ("tensors", .array(tensors.map { t in
                .object([("name", .string(t.name)), ("axes", .array(t.axes.map { $0.map(JSONValue.string) ?? .null }))])
            })),
            ("points", .array(points.map { $0.json(axes: axes) })),
            ("pad_masks", .bool(padMasks)),
        ])
    }

    /// One line for `plan`: `batch [1, 4] (declared), sequence [1, 14] (default); 9 points`.
    public var summary: String {
        let parts = axes.map { "\($0.name) \($0.rangeText) (\($0.declared ? "declared" : "default"))" }
        return (parts.isEmpty ? "fixed at the traced shape" : parts.joined(separator: ", ")) + "; \(points.count) point\(points.count == 1 ? "" : "s")"
    }
}

/// The envelope rules of the contract, as pure functions of the manifest.
public enum EnvelopePlanner {
    /// How many seeded interior points are checked besides the grid.
    public static let interiorPoints = 2

    /// Resolves the envelope: declared ranges as written; batch, sequence and decoder_sequence left out get the
    /// smallest range from 1 holding the traced size and every check shape; another named axis left out stays fixed
    /// at its traced size. Each tensor dimension's axis comes from `AxisNames` (its `axes`, else its name).
    public static func plan(_ m: Manifest) -> EnvelopePlan {
        let e = m.trace.envelope
        let traced = StaticShapes(m)
        let ranged = { (axis: String) -> Bool in
            AxisNames.builtIn.contains(axis) || axis.contains(".") || e.range(of: axis) != nil
        }
        let tensors: [TensorAxes] = m.inputs.tensors.enumerated().map { i, t in
            TensorAxes(name: t.name, axes: traced.axes[i].map { $0.flatMap { ranged($0) ? $0 : nil } })
        }
        let used = traced.used.filter(ranged)
        let checks = m.trace.checkShapes.filter { $0.count == 2 }
        var axes: [AxisPlan] = []
        for name in ["batch", "sequence", "decoder_sequence"] where used.contains(name) {
            let declared: SizeRange? = e.range(of: name)
            let tracedSize: Int? = traced.sizes[name]
            if let d = declared {
                axes.append(AxisPlan(name: name, min: d.min, max: d.max, traced: tracedSize, declared: true))
                continue
            }
            // The default: from 1 to the largest of the traced size and the check shapes.
            var hi = tracedSize
            let fromChecks: [Int] = name == "batch" ? checks.map { $0[0] } : name == "sequence" ? checks.map { $0[1] } : []
            if let t = tracedSize { hi = ([t] + fromChecks).max() } else if !fromChecks.isEmpty && name == "batch" { hi = fromChecks.max() }
            // An unknown traced length with larger check shapes still ends at the traced size: only tracing knows it.
            axes.append(AxisPlan(name: name, min: 1, max: hi, traced: tracedSize, declared: false))
        }
        for name in used where !AxisNames.builtIn.contains(name) && !name.contains(".") {
            guard let r = e.range(of: name) else { continue }
            axes.append(AxisPlan(name: name, min: r.min, max: r.max, traced: traced.sizes[name], declared: true))
        }
        for name in used where name.contains(".") {
            let parts = name.split(separator: ".")
            guard let r = e.dims[String(parts[0])]?[Int(parts[1]) ?? -1] else { continue }
            let i = m.inputs.tensors.firstIndex { $0.name == parts[0] } ?? 0
            let t = traced.shapes[i].flatMap { Int(parts[1]).flatMap($0.indices.contains) == true ? $0[Int(parts[1])!] : nil }
            axes.append(AxisPlan(name: name, min: r.min, max: r.max, traced: t, declared: true))
        }
        let hasMask = m.inputs.tensors.contains { $0.name.hasSuffix("attention_mask") }
        return EnvelopePlan(axes: axes, tensors: tensors, points: points(axes: axes, checks: checks, seed: m.model.seed), padMasks: hasMask)
    }

    /// The traced point, then the grid {min, traced, max} of every axis (duplicates of known sizes removed), then
    /// seeded interior points, then the check shapes.
    static func points(axes: [AxisPlan], checks: [[Int]], seed: Int) -> [EnvelopePoint] {
        var out: [EnvelopePoint] = []
        var seen = Set<[String: Int?]>()
        func add(_ role: EnvelopePoint.Role, _ sizes: [String: Int?], check: Int? = nil) {
            // A size equal to the traced one is written as nil ("the traced size") so duplicates collapse.
            var s: [String: Int?] = [:]
            for a in axes {
                let v = sizes[a.name] ?? nil
                s[a.name] = (v != nil && v == a.traced) ? nil : v
            }
            if seen.contains(s) {
                // A check shape that is already a point is checked there: the point takes the check's role.
                if role == .check, let i = out.firstIndex(where: { $0.sizes == s && $0.role != .traced && $0.role != .check }) {
                    out[i].role = .check
                    out[i].checkIndex = check
                }
                if role != .check || out.contains(where: { $0.sizes == s }) { return }
            }
            seen.insert(s)
            let name = role == .traced ? "traced" : role == .check ? "check\(check ?? 0)" : "p\(out.count)"
            out.append(EnvelopePoint(name: name, role: role, checkIndex: check, sizes: s))
        }
        add(.traced, [:])
        var grid: [[String: Int?]] = [[:]]
        for a in axes {
            let values: [Int?] = [a.min, nil, a.max]
            grid = grid.flatMap { g in values.map { v in var x = g; x[a.name] = v; return x } }
        }
        for g in grid { add(.corner, g) }
        var rng = SplitMix64(seed: UInt64(truncatingIfNeeded: seed) &+ 0x9E37_79B9)
        for _ in 0..<interiorPoints {
            var p: [String: Int?] = [:]
            for a in axes {
                if let hi = a.max, hi > a.min { p[a.name] = a.min + Int(rng.next() % UInt64(hi - a.min + 1)) } else { p[a.name] = nil }
            }
            add(.interior, p)
        }
        for (i, c) in checks.enumerated() {
            var p: [String: Int?] = [:]
            for a in axes {
                if a.name == "batch" { p[a.name] = c[0] } else if a.name == "sequence" { p[a.name] = c[1] }
            }
            add(.check, p, check: i)
        }
        return out
    }
}

/// A small deterministic generator (SplitMix64), so the interior points are the same on every machine.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
