import Bundles
import Foundation
import Manifest

/// Finds the bundles in an output root whose manifest is gone, from the root's state (which manifest file and
/// document made each bundle) and the manifests loaded now. Pure: what exists on disk is asked through `exists`.
public struct OrphanPlanner {
    /// Which manifests were given: the paths (absolute files and folders) and any subset filter.
    public struct Scope {
        /// Manifest files and folders as given, absolute.
        public var paths: [String]
        /// `--name` / `--selector` given: a subset by name or label, which cannot tell an orphan from a manifest left out.
        public var filtered: String?
        /// `--shard i/n` (1-based i): only orphans whose name falls in this shard.
        public var shard: (Int, Int)?
        /// `--prune`.
        public var prune: Bool

        /// Whether a manifest file is one that loading `paths` reads (`ManifestLoader.coverage`).
        public let covers: (String) -> Bool

        /// Creates a scope; what it covers is exactly the loader's expansion of `paths`.
        public init(paths: [String], filtered: String? = nil, shard: (Int, Int)? = nil, prune: Bool = false) {
            self.paths = paths
            self.filtered = filtered
            self.shard = shard
            self.prune = prune
            covers = ManifestLoader.coverage(paths: paths)
        }
    }

    let shardIndex: (String, Int) -> Int

    /// Creates a planner; `shardIndex` is the selection's rule for which shard a name falls in.
    public init(shardIndex: @escaping (String, Int) -> Int) { self.shardIndex = shardIndex }

    /// The orphans, and notes on what could not be judged: bundles whose manifest document is gone (with the deploys
    /// no other manifest declares), and deploys a live manifest no longer declares.
    public func plan(state: OutputState, loaded: [Manifest], root: URL, scope: Scope, exists: (String) -> Bool) -> ([PlanOrphan], [String]) {
        let root = root.standardizedFileURL
        func rel(_ url: URL) -> String? { OutputState.relative(url.path, root: root) }
        let claimedBundles = Set(loaded.compactMap { rel(Planner.bundleURL($0, root: root)) })
        var declaredDeploys = Set(loaded.flatMap { m in m.output.deploy.compactMap { Planner.deployDestination($0, name: m.name, root: root).flatMap(rel) } })
        var candidates: [(String, OutputState.Owner)] = []
        var liveCandidates: [(String, OutputState.Owner)] = []
        var outOfScope = 0
        for (bundle, owner) in state.bundles.sorted(by: { $0.key < $1.key }) {
            if !scope.covers(owner.manifestFile) {
                if !claimedBundles.contains(bundle) { outOfScope += 1 }
                declaredDeploys.formUnion(owner.deploys)  // another manifest's: its deploys stay
            } else if claimedBundles.contains(bundle) {
                liveCandidates.append((bundle, owner))
            } else {
                candidates.append((bundle, owner))
            }
        }
        liveCandidates.removeAll { _, owner in owner.deploys.allSatisfy(declaredDeploys.contains) }
        var notes: [String] = []
        if let filter = scope.filtered, !(candidates.isEmpty && liveCandidates.isEmpty) {
            notes.append("\(candidates.count + liveCandidates.count) bundle(s) made by the given manifest paths are not checked for orphans: \(filter) selects a subset; plan without it to see them")
            return ([], notes)
        }
        var orphans: [PlanOrphan] = []
        var skippedByShard = 0
        let action: PlanOrphan.Action = scope.prune ? .remove : .orphaned
        for (bundle, owner) in candidates + liveCandidates {
            if let (i, n) = scope.shard, shardIndex(owner.name, n) != i - 1 {
                skippedByShard += 1
                continue
            }
            let bundleURL = root.appendingPathComponent(bundle)
            let live = claimedBundles.contains(bundle)
            let reason: String
            if live {
                let dropped = owner.deploys.filter { !declaredDeploys.contains($0) }
                reason = "its manifest no longer declares the deploy to \(dropped.joined(separator: ", "))"
            } else if !exists(owner.manifestFile) {
                reason = "the manifest file is gone"
            } else if let moved = loaded.first(where: { URL(fileURLWithPath: $0.file).standardizedFileURL.path == owner.manifestFile && $0.name == owner.name }) {
                reason = "its manifest now writes \(OutputPaths.normalise(moved.output.dir))"
            } else {
                reason = "no document in the file is named \(owner.name) any more"
            }
            var o = PlanOrphan(name: owner.name, action: action, manifestFile: owner.manifestFile,
                               documentIndex: owner.documentIndex, reason: reason, bundle: bundleURL.path, paths: [])
            if !live, exists(bundleURL.path) { o.paths.append(bundleURL.path) }
            for d in owner.deploys {
                let path = root.appendingPathComponent(d).path
                if declaredDeploys.contains(d) { if !live { o.kept.append(path) } } else if exists(path) { o.paths.append(path) }
            }
            orphans.append(o)
        }
        if let (i, n) = scope.shard, skippedByShard > 0 {
            notes.append("\(skippedByShard) orphan(s) fall in other shards than \(i)/\(n) and are left to those")
        }
        if outOfScope > 0 {
            notes.append("\(outOfScope) bundle(s) in the output root were made by manifests outside the given paths; they are not judged")
        }
        return (orphans, notes)
    }
}
