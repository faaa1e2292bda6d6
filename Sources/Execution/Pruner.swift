import Bundles
import Foundation
import Plan

/// What a prune did: the paths actually removed, the paths kept on purpose, and the removals that failed.
public struct PruneResult: Sendable, Equatable {
    /// One orphan's paths that were removed.
    public struct Removal: Sendable, Equatable {
        /// The orphan's name, bundle folder (absolute) and reason, as planned.
        public var name: String, bundle: String, reason: String
        /// The paths removed (absolute), in the orphan's order.
        public var paths: [String]
    }

    /// Per orphan with anything removed, what was removed.
    public var removed: [Removal] = []
    /// One line per path kept on purpose (files tsexport did not write are in it, another manifest owns it now).
    public var kept: [String] = []
    /// One line per path that should have gone but did not (refused as unsafe, or the rename failed).
    public var failed: [String] = []

    /// Nothing done yet.
    public init() {}
}

/// Removes orphaned bundles and deploys; only the holder of the output root's lock calls it, with the state read
/// under that lock and orphans planned from that state.
///
/// Every path is checked again here, because the state file and build.json are untrusted input: it must be a safe
/// relative path under the output root (no `..`, not absolute, not in `.tsexport`), with no symbolic link on the way,
/// owned in the state by the orphan's own manifest document and by no other entry; and what tsexport wrote there must
/// be listed (build.json or the state's deploy files), each listed file a safe path inside it. A folder that also holds
/// files tsexport did not write keeps them (only the listed files go). Each path is moved into `.tsexport/staging` by
/// rename; then the state is written (an owner stays while any of its paths remains on disk); then the moved files are
/// deleted. A run killed at any moment leaves either the state naming the path (the next `--prune` finishes the job)
/// or neither, and staging that the next locked run removes.
public struct Pruner {
    let store: BundleStore

    /// A pruner for an output root.
    public init(root: URL) { store = BundleStore(root: root) }

    /// Removes each `remove` orphan's paths and updates `state`, writing it after each orphan.
    public func prune(_ orphans: [PlanOrphan], state: inout OutputState) -> PruneResult {
        var result = PruneResult()
        let root = store.root
        for o in orphans where o.action == .remove {
            guard let bundleRel = OutputState.relative(o.bundle, root: root), OutputState.isSafeRelative(bundleRel),
                  var owner = state.bundles[bundleRel] else {
                result.failed.append("\(o.name): refused \(o.bundle): not a bundle the output root's state names")
                continue
            }
            guard owner.name == o.name, owner.manifestFile == o.manifestFile, owner.documentIndex == o.documentIndex else {
                result.kept.append("\(o.name): kept \(o.bundle): the output root's state now names another manifest for it")
                continue
            }
            let build = Self.noSymlink(bundleRel, root: root) ? BuildInfo.read(bundle: root.appendingPathComponent(bundleRel)) : nil
            let trash = store.stagingRoot.appendingPathComponent("prune-\(UUID().uuidString.prefix(8).lowercased())")
            var removed: [String] = []
            var emptied: [URL] = []
            for path in o.paths {
                guard let rel = OutputState.relative(path, root: root), OutputState.isSafeRelative(rel),
                      rel == bundleRel || owner.deploys.contains(rel), Self.noSymlink(rel, root: root) else {
                    result.failed.append("\(o.name): refused \(path): not a path tsexport installed under the output root")
                    continue
                }
                if let other = state.bundles.first(where: { k, v in k != bundleRel && (Self.overlaps(k, rel) || v.deploys.contains { Self.overlaps($0, rel) }) }) {
                    result.kept.append("\(o.name): kept \(path): the output root's state says \(other.value.name) owns it")
                    continue
                }
                guard let recorded = Self.recorded(rel, bundle: bundleRel, build: build, owner: owner) else {
                    result.failed.append("\(o.name): refused \(path): no safe list of the files tsexport wrote there")
                    continue
                }
                let url = URL(fileURLWithPath: path)
                var st = stat()
                guard lstat(path, &st) == 0 else { continue }
                let isDir = (st.st_mode & S_IFMT) == S_IFDIR
                let foreign = isDir ? Self.foreign(in: url, recorded: recorded) : []
                if !isDir, !recorded.contains("") || (st.st_mode & S_IFMT) != S_IFREG {
                    result.failed.append("\(o.name): refused \(path): not the file tsexport wrote")
                    continue
                }
                do {
                    try FileManager.default.createDirectory(at: trash, withIntermediateDirectories: true)
                    if foreign.isEmpty {
                        let target = trash.appendingPathComponent("\(removed.count)")
                        guard rename(path, target.path) == 0 else { throw BundleError(String(cString: strerror(errno))) }
                        removed.append(path)
                    } else {
                        var n = 0
                        for f in recorded.sorted() where !f.isEmpty && Self.noSymlink(rel + "/" + f, root: root) {
                            n += 1
                            if rename(url.appendingPathComponent(f).path, trash.appendingPathComponent("\(removed.count)-\(n)").path) == 0 {
                                // The folders between the path and the file, deepest first.
                                var parts = f.split(separator: "/").dropLast()
                                while !parts.isEmpty {
                                    emptied.append(url.appendingPathComponent(parts.joined(separator: "/")))
                                    parts = parts.dropLast()
                                }
                            }
                        }
                        result.kept.append("\(o.name): kept \(path) with files tsexport did not write: \(foreign.prefix(3).joined(separator: ", "))")
                    }
                } catch {
                    result.failed.append("\(o.name): could not remove \(path): \(error)")
                }
            }
            // The owner stays while any of its paths remains, so that nothing it installed is forgotten; a deploy that
            // another entry now owns, or that is gone, is no longer its.
            owner.deploys = owner.deploys.filter { d in
                let path = root.appendingPathComponent(d).path
                var st = stat()
                return !removed.contains(path) && lstat(path, &st) == 0
                    && !state.bundles.contains { k, v in k != bundleRel && (k == d || v.deploys.contains(d)) }
            }
            var st = stat()
            if lstat(root.appendingPathComponent(bundleRel).path, &st) != 0 && owner.deploys.isEmpty {
                state.bundles[bundleRel] = nil
            } else {
                state.bundles[bundleRel] = owner
            }
            do { try state.write(root: root) } catch { result.failed.append("\(o.name): the state could not be written: \(error)") }
            try? FileManager.default.removeItem(at: trash)
            // A folder that kept files tsexport did not write loses only the folders its removed files leave empty.
            for dir in emptied.sorted(by: { $0.path.count > $1.path.count }) { rmdir(dir.path) }
            if !removed.isEmpty { result.removed.append(.init(name: o.name, bundle: o.bundle, reason: o.reason, paths: removed)) }
        }
        return result
    }

    /// What tsexport wrote at `rel`, relative to it (`""` for a file deploy itself): build.json's files for the bundle,
    /// the state's or build.json's files for a deploy. Nil when it is not listed or a listed path is not safe.
    static func recorded(_ rel: String, bundle: String, build: BuildInfo?, owner: OutputState.Owner) -> Set<String>? {
        if rel == bundle {
            guard let files = build?.files.map(\.path), files.allSatisfy(OutputState.isSafeRelative) else { return nil }
            return Set(files).union(BundleContent.notContent)
        }
        guard let files = owner.deployFiles[rel] ?? build?.deployments.first(where: { $0.path == rel })?.files else { return nil }
        var out: Set<String> = []
        for f in files {
            if f.path == rel { out.insert(""); continue }
            guard f.path.hasPrefix(rel + "/"), OutputState.isSafeRelative(f.path) else { return nil }
            out.insert(String(f.path.dropFirst(rel.count + 1)))
        }
        return out
    }

    /// Whether one relative path is the other or lies inside it.
    static func overlaps(_ a: String, _ b: String) -> Bool { a == b || a.hasPrefix(b + "/") || b.hasPrefix(a + "/") }

    /// What a folder holds that is not in `recorded` (relative paths): files, links and anything else, and folders
    /// that hold no recorded file; the temporary files of a bundle's atomic writes are not counted.
    static func foreign(in dir: URL, recorded: Set<String>) -> [String] {
        var out: [String] = []
        guard let e = FileManager.default.enumerator(atPath: dir.path) else { return [] }
        while let rel = e.nextObject() as? String {
            if (e.fileAttributes?[.type] as? FileAttributeType) == .typeDirectory {
                if !recorded.contains(where: { $0.hasPrefix(rel + "/") }) { out.append(rel + "/") }
            } else if !recorded.contains(rel) && !BundleContent.isNotContent(rel) {
                out.append(rel)
            }
        }
        return out.sorted()
    }

    /// Whether no component of `rel` below the root is a symbolic link.
    static func noSymlink(_ rel: String, root: URL) -> Bool {
        var url = root
        for part in rel.split(separator: "/") {
            url.appendPathComponent(String(part))
            var st = stat()
            if lstat(url.path, &st) == 0, (st.st_mode & S_IFMT) == S_IFLNK { return false }
        }
        return true
    }
}
