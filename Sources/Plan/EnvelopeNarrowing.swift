import Foundation
import JSON

extension VerifiedEnvelope {
    /// The box from its record form `{axis: [min, max]}` (nil when the value is not of that form).
    public init?(json: JSONValue) {
        guard let object = json.objectValue else { return nil }
        var ranges: [(String, Int, Int)] = []
        for (axis, range) in object {
            guard let pair = range.arrayValue, pair.count == 2, let lo = pair[0].intValue, let hi = pair[1].intValue else { return nil }
            ranges.append((axis, lo, hi))
        }
        self.init(ranges: ranges)
    }
}

extension EnvelopePlan {
    /// The plan narrowed to a verified box: each axis of the box gets the box's range, and only the points inside it
    /// stay (a point's unset size is the traced size, from `traced` or the axis). `model.pt2` has no guard, so when
    /// verification narrows a default envelope of a `formats: [aoti]` artifact it is compiled again from this plan:
    /// its dynamic dims are then the verified ranges, and it is verified again at these points.
    public func narrowed(to box: VerifiedEnvelope, traced: [String: Int]) -> EnvelopePlan {
        let ranges = Dictionary(box.ranges.map { ($0.0, ($0.1, $0.2)) }, uniquingKeysWith: { a, _ in a })
        var plan = self
        plan.axes = axes.map { a in
            guard let (lo, hi) = ranges[a.name] else { return a }
            var narrowed = a
            narrowed.min = lo
            narrowed.max = hi
            return narrowed
        }
        plan.points = points.filter { p in
            p.role == .traced || axes.allSatisfy { a in
                guard let (lo, hi) = ranges[a.name], let size = (p.sizes[a.name] ?? nil) ?? traced[a.name] ?? a.traced else { return true }
                return size >= lo && size <= hi
            }
        }
        return plan
    }
}
