import Bundles
import Foundation
import Manifest
import Plan

/// Which manifest owns each bundle of a plan, as `.tsexport/state.json` records it, and the orphans a prune may
/// remove once the lock is held.
public enum OutputOwners {
    /// Which manifest file and document made each planned bundle, and the deploys it installs, by bundle folder
    /// relative to the output root.
    public static func owners(_ plan: Plan, manifests: [String: Manifest], root: URL) -> [String: OutputState.Owner] {
        var out: [String: OutputState.Owner] = [:]
        for e in plan.entries {
            guard let m = manifests[e.name], let rel = OutputState.relative(e.bundle, root: root) else { continue }
            let deploys = m.output.deploy.compactMap { Planner.deployDestination($0, name: m.name, root: root).flatMap { OutputState.relative($0.path, root: root) } }
            out[rel] = OutputState.Owner(name: m.name, manifestFile: URL(fileURLWithPath: e.file).standardizedFileURL.path,
                                         documentIndex: e.documentIndex, deploys: deploys)
        }
        return out
    }

    /// Records the owners of the given bundles in `state`, each with the files its deploys wrote (from its build.json).
    public static func claim(_ state: inout OutputState, bundles: [String], owners: [String: OutputState.Owner], root: URL) {
        for bundle in bundles {
            guard let rel = OutputState.relative(bundle, root: root), var owner = owners[rel] else { continue }
            for d in BuildInfo.read(bundle: URL(fileURLWithPath: bundle))?.deployments ?? [] where owner.deploys.contains(d.path) {
                owner.deployFiles[d.path] = d.files
            }
            state.claim(rel, owner)
        }
    }

    /// The orphans to remove: those planned again from the state as it is under the lock, keeping only the paths the
    /// shown plan named too, so a bundle another manifest made fresh since the plan is not touched.
    public static func confirmed(shown: [PlanOrphan], again: [PlanOrphan]) -> [PlanOrphan] {
        let paths = Set(shown.filter { $0.action == .remove }.flatMap(\.paths))
        return again.filter { $0.action == .remove }.map { o -> PlanOrphan in
            var o = o
            o.paths = o.paths.filter(paths.contains)
            return o
        }
    }
}
