import Bundles
import Foundation

/// Renders a plan for people (text) and machines (JSON).
public enum PlanRenderer {
    /// Text, one block per manifest: action, reasons, then each step with what it reads and writes.
    public static func text(_ plan: Plan, color: Bool = false, relativeTo base: String? = nil) -> String {
        func c(_ code: String, _ s: String) -> String { color ? "\u{1B}[\(code)m\(s)\u{1B}[0m" : s }
        func shown(_ path: String) -> String {
            guard let base, path.hasPrefix(base + "/") else { return path }
            return String(path.dropFirst(base.count + 1))
        }
        var lines: [String] = []
        for e in plan.entries {
            let action: String
            switch e.action {
            case .create: action = c("32", "+ create")
            case .rebuild: action = c("33", "~ rebuild")
            case .upToDate: action = c("2", "= up to date")
            case .redeploy: action = c("33", "~ redeploy")
            }
            lines.append("\(action) \(c("1", e.name))  (\(e.file):\(e.line)) → \(shown(e.bundle))")
            if let axes = e.verifiedEnvelope, !axes.isEmpty {
                let defaulted = axes.filter { !$0.declared }.map(\.name)
                let how = defaulted.isEmpty ? "" : "; \(defaulted.joined(separator: " and ")) by the default rule: widen with spec.trace.envelope"
                lines.append("    serves \(VerifiedAxis.summary(axes)) (verified\(how))")
            }
            for r in e.reasons { lines.append("    because \(r.summary)") }
            if let cache = e.cache {
                lines.append("    cache: " + (cache.status == .cached ? c("32", "cached") + " at \(cache.reference)" : c("33", "build") + " (\(cache.reason ?? "not in the cache"))"))
            }
            for b in e.blockers { lines.append("    " + c("31", "blocked: ") + b) }
            for s in e.steps {
                lines.append("    \(s.kind.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0)) \(s.description)")
                for i in s.inputs { lines.append("              reads  \(shown(i))") }
                for o in s.outputs { lines.append("              writes \(shown(o))") }
            }
        }
        let create = plan.entries.filter { $0.action == .create }.count
        let rebuild = plan.entries.filter { $0.action == .rebuild }.count
        let same = plan.entries.filter { $0.action == .upToDate }.count
        let redeploy = plan.entries.filter { $0.action == .redeploy }.count
        for o in plan.orphans {
            lines.append((o.action == .remove ? c("31", "- remove") : c("35", "! orphaned")) + " \(c("1", o.name))  (\(shown(o.manifestFile)), document \(o.documentIndex + 1): \(o.reason)) → \(shown(o.bundle))")
            for p in o.paths { lines.append("              \(o.action == .remove ? "removes" : "would remove") \(shown(p))") }
            for k in o.kept { lines.append("              keeps  \(shown(k)) (another manifest declares it)") }
        }
        for n in plan.notes { lines.append("note: \(n)") }
        var summary = "Plan: \(create) to create, \(rebuild) to rebuild, "
        if redeploy > 0 { summary += "\(redeploy) to redeploy, " }
        summary += "\(same) up to date"
        let cached = plan.entries.filter { $0.cache?.status == .cached }.count
        if plan.entries.contains(where: { $0.cache != nil }) { summary += " (\(cached) from the cache)" }
        let orphaned = plan.orphans.filter { $0.action == .orphaned }.count, remove = plan.orphans.count - orphaned
        if orphaned > 0 { summary += ", \(orphaned) orphaned (apply --prune removes them)" }
        if remove > 0 { summary += ", \(remove) to remove" }
        lines.append(summary + ".")
        return lines.joined(separator: "\n")
    }

    /// Pretty, key-sorted JSON.
    public static func json(_ plan: Plan) -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? enc.encode(plan)) ?? Data(), as: UTF8.self)
    }
}
