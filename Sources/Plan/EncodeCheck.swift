import Foundation
import JSON

/// The sentence-transformers gate on `encode()`: model.pt's sentence_embedding must keep a cosine to the library's
/// `encode()` on real text at every counted point. Apply counts the points inside the envelope it verified; `verify`
/// counts the points the record marks `inside`. Both judge with `EncodeCheck.judge`.
public enum EncodeCheck {
    /// One compared point of the worker's `encode_check.points`.
    public struct Point: Equatable, Sendable {
        /// The worker's point as it answered it.
        public var raw: JSONValue
        /// Its case name (`traced`, `check0`, ...).
        public var name: String?
        /// Its least cosine to encode() (NaN when the worker gave none).
        public var cosine: Double
        /// Whether the caller counts it (inside the envelope).
        public var inside: Bool
        /// The worker skipped it (no comparison made).
        public var skipped: Bool
        /// Counted, compared and below the gate (a NaN cosine is below).
        public var fails: Bool

        /// Counted: inside and compared.
        public var counted: Bool { inside && !skipped }
    }

    /// The points judged, in the worker's order.
    public struct Judgement: Equatable, Sendable {
        /// Every point with whether it counts and fails.
        public var points: [Point]
        /// The gate held to.
        public var minCosine: Double

        /// The counted points.
        public var counted: [Point] { points.filter(\.counted) }
        /// The counted points below the gate.
        public var failures: [Point] { points.filter(\.fails) }
        /// The least cosine over the counted points (nil when none has one).
        public var least: Double? { counted.map(\.cosine).filter { !$0.isNaN }.min() }
    }

    /// Judges the worker's `encode_check.points` against `minCosine`; `inside` says which points count.
    public static func judge(points: [JSONValue], minCosine: Double, inside: (Point) -> Bool) -> Judgement {
        let judged = points.map { p -> Point in
            var point = Point(raw: p, name: p["case"]?.stringValue, cosine: p["min_cosine"]?.doubleValue ?? .nan,
                              inside: false, skipped: p["skipped"] != nil, fails: false)
            point.inside = inside(point)
            point.fails = point.counted && !(point.cosine >= minCosine)
            return point
        }
        return Judgement(points: judged, minCosine: minCosine)
    }

    /// A point's named sizes (`sizes`), for a caller that asks whether its envelope contains them.
    public static func sizes(_ p: Point) -> [String: Int] {
        var sizes: [String: Int] = [:]
        for (k, v) in p.raw["sizes"]?.objectValue ?? [] { if let i = v.intValue { sizes[k] = i } }
        return sizes
    }

    /// Apply's count: the traced point and every point inside the verified envelope.
    public static func insideVerified(_ box: VerifiedEnvelope) -> (Point) -> Bool {
        { p in p.name == "traced" || box.contains(sizes(p)) }
    }

    /// `verify`'s count: the cases the record's `library.encode_check.points` marks `inside`.
    public static func insideRecorded(_ record: JSONValue) -> (Point) -> Bool {
        let recorded = record["library"]?["encode_check"]?["points"]?.arrayValue ?? []
        let inside = Set(recorded.filter { $0["inside"] == .bool(true) }.compactMap { $0["case"]?.stringValue })
        return { p in inside.contains(p.name ?? "") }
    }
}
