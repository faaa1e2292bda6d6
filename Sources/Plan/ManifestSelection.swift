import Bundles
import Diagnostics
import Foundation
import Manifest

/// Which manifests a command works on: names, label selectors, a shard, and which of them to rebuild.
public struct ManifestSelection: Sendable, Equatable {
    /// `metadata.name`s to pick; empty picks all.
    public var names: [String] = []
    /// `key=value` label selectors; all must match.
    public var selectors: [String] = []
    /// Rebuild every selected manifest.
    public var force = false
    /// Manifests to rebuild even when up to date.
    public var replace: [String] = []
    /// `i/n`, 1-based.
    public var shard: String?
    /// Remove orphaned bundles.
    public var prune = false

    public init(names: [String] = [], selectors: [String] = [], force: Bool = false, replace: [String] = [], shard: String? = nil, prune: Bool = false) {
        self.names = names
        self.selectors = selectors
        self.force = force
        self.replace = replace
        self.shard = shard
        self.prune = prune
    }

    /// Parses `i/n`; nil when absent; a diagnostic when malformed.
    public func parsedShard() -> Result<(Int, Int)?, Diagnostic> {
        guard let s = shard else { return .success(nil) }
        let parts = s.split(separator: "/").map { Int($0) }
        guard parts.count == 2, let i = parts[0], let n = parts[1], n >= 1, (1...n).contains(i) else {
            return .failure(.error("--shard '\(s)' is not i/n with 1 ≤ i ≤ n"))
        }
        return .success((i, n))
    }

    /// Which shard (0-based) a manifest name falls in: a stable hash of the name, so adding a manifest never moves
    /// the others.
    public static func shardIndex(of name: String, count: Int) -> Int {
        let hex = Digest.sha256(name).prefix(12)
        return Int(UInt64(hex, radix: 16)! % UInt64(count))
    }

    /// Applies names and selectors; unknown names and malformed selectors are errors.
    public func select(_ manifests: [Manifest]) -> ([Manifest], [Diagnostic]) {
        var ds: [Diagnostic] = []
        var pairs: [(String, String)] = []
        for s in selectors {
            let parts = s.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2, !parts[0].isEmpty { pairs.append((parts[0], parts[1])) } else {
                ds.append(.error("--selector '\(s)' is not key=value"))
            }
        }
        let known = Set(manifests.map(\.name))
        for n in names + replace where !known.contains(n) {
            ds.append(.error("no manifest is named '\(n)'" + (Suggest.closest(to: n, among: Array(known)).map { "; did you mean '\($0)'?" } ?? "")))
        }
        var shardSpec: (Int, Int)?
        switch parsedShard() {
        case .success(let v): shardSpec = v
        case .failure(let d): ds.append(d)
        }
        let picked = manifests.filter { m in
            (names.isEmpty || names.contains(m.name)) && pairs.allSatisfy { m.labels[$0.0] == $0.1 }
                && (shardSpec.map { Self.shardIndex(of: m.name, count: $0.1) == $0.0 - 1 } ?? true)
        }
        return (picked, ds)
    }

    /// The orphan planner's scope for manifest paths resolved against `workingDirectory`.
    public func orphanScope(paths: [String], workingDirectory: String) -> OrphanPlanner.Scope {
        let cwd = URL(fileURLWithPath: workingDirectory)
        let absolute = paths.map { ($0.hasPrefix("/") ? URL(fileURLWithPath: $0) : cwd.appendingPathComponent($0)).standardizedFileURL.path }
        var filters: [String] = []
        if !names.isEmpty { filters.append("--name") }
        if !selectors.isEmpty { filters.append("--selector") }
        var shardSpec: (Int, Int)?
        if case .success(let s) = parsedShard() { shardSpec = s }
        return OrphanPlanner.Scope(paths: absolute, filtered: filters.isEmpty ? nil : filters.joined(separator: " and "), shard: shardSpec, prune: prune)
    }
}
