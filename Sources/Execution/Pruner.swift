import Bundles
import Foundation
import Plan

/// Removes orphaned bundles and their deploys; only the holder of the output root's lock calls it.
///
/// Per orphan: every path is first checked (under the output root, outside `.tsexport`, no symbolic link on the
/// way, one that the state says tsexport installed) and moved into `.tsexport/staging` by rename; then the state
/// file drops the bundle (one atomic rename); then the moved files are deleted. A run killed at any moment leaves
/// either the state naming the bundle (the next `--prune` finishes the job) or neither, and staging that the next
/// locked run removes. A folder that holds files tsexport did not write (not in build.json) keeps them: only the
/// recorded files are removed from it.
public struct Pruner {
    let store: BundleStore

    /// A pruner for an output root.
    public init(root: URL) { store = BundleStore(root: root) }

    /// Removes each orphan (its `paths`) and drops it from `state`, writing the state after each one. Returns one
    /// line per path that was kept or could not be removed.
    public func prune(_ orphans: [PlanOrphan], state: inout OutputState) -> [String] {
        var notes: [String] = []
        let root = store.root
        for o in orphans where o.action == .remove {
            guard let bundleRel = OutputState.relative(o.bundle, root: root), let owner = state.bundles[bundleRel] else { continue }
            let build = BuildInfo.read(bundle: URL(fileURLWithPath: o.bundle))
            var moved: [URL] = []
            let trash = store.stagingRoot.appendingPathComponent("prune-\(UUID().uuidString.prefix(8).lowercased())")
            for path in o.paths {
                guard let rel = OutputState.relative(path, root: root), rel == bundleRel || owner.deploys.contains(rel),
                      !rel.hasPrefix(".tsexport/"), Self.noSymlink(rel, root: root) else {
                    notes.append("\(o.name): kept \(path): not a path tsexport installed under the output root")
                    continue
                }
                // What tsexport wrote there, relative to the path: build.json's files for a bundle or a deploy.
                let recorded: Set<String>?
                if rel == bundleRel {
                    recorded = build.map { Set($0.files.map(\.path)).union(BundleContent.notContent) }
                } else if let d = build?.deployments.first(where: { $0.path == rel }) {
                    recorded = Set(d.files.map { $0.path == rel ? "" : String($0.path.dropFirst(rel.count + 1)) })
                } else {
                    recorded = nil
                }
                let url = URL(fileURLWithPath: path)
                let isDir = (try? url.resourceValues(forKeys: [.isDirectoryKey]).isDirectory) ?? false
                let foreign = isDir ? BundleContent.files(in: url).filter { !(recorded?.contains($0) ?? false) && !BundleContent.notContent.contains($0) } : []
                if recorded == nil && isDir {
                    notes.append("\(o.name): kept \(path): its build.json does not list what tsexport wrote there")
                    continue
                }
                do {
                    try FileManager.default.createDirectory(at: trash, withIntermediateDirectories: true)
                    if foreign.isEmpty {
                        let target = trash.appendingPathComponent("\(moved.count)")
                        guard rename(path, target.path) == 0 else { throw BundleError(String(cString: strerror(errno))) }
                        moved.append(target)
                    } else {
                        for f in recorded ?? [] where !f.isEmpty {
                            let target = trash.appendingPathComponent("\(moved.count)")
                            if rename(url.appendingPathComponent(f).path, target.path) == 0 { moved.append(target) }
                        }
                        notes.append("\(o.name): kept \(path) with files tsexport did not write: \(foreign.prefix(3).joined(separator: ", "))")
                    }
                } catch {
                    notes.append("\(o.name): could not remove \(path): \(error)")
                }
            }
            state.bundles[bundleRel] = nil
            do { try state.write(root: root) } catch { notes.append("\(o.name): the state could not be written: \(error)") }
            try? FileManager.default.removeItem(at: trash)
            // Empty folders the orphan's paths leave behind (a Triton model folder's version folder) stay only when
            // they hold something else.
            for path in o.paths { Self.removeEmptyFolders(URL(fileURLWithPath: path)) }
        }
        return notes
    }

    /// Whether no component of `rel` below the root is a symbolic link.
    static func noSymlink(_ rel: String, root: URL) -> Bool {
        var url = root
        for part in rel.split(separator: "/") {
            url.appendPathComponent(String(part))
            if (try? FileManager.default.destinationOfSymbolicLink(atPath: url.path)) != nil { return false }
        }
        return true
    }

    static func removeEmptyFolders(_ dir: URL) {
        guard let e = FileManager.default.enumerator(atPath: dir.path) else { return }
        var dirs: [String] = []
        while let rel = e.nextObject() as? String {
            if (e.fileAttributes?[.type] as? FileAttributeType) == .typeDirectory { dirs.append(rel) }
        }
        for d in dirs.sorted(by: { $0.count > $1.count }) { rmdir(dir.appendingPathComponent(d).path) }
        rmdir(dir.path)
    }
}
