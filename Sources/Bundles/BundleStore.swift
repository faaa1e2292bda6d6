import CSystem
import Foundation
import Manifest

/// Staging folders and the final move into place. Staging lives in `<root>/.tsexport/staging`, on the same file
/// system as the bundles, so the final step is a rename.
public struct BundleStore: Sendable {
    /// The output root.
    public var root: URL

    /// Creates a store for an output root.
    public init(root: URL) { self.root = root.standardizedFileURL }

    /// `<root>/.tsexport`.
    public var stateDir: URL { root.appendingPathComponent(OutputPaths.reservedFolder) }
    /// `<root>/.tsexport/staging`.
    public var stagingRoot: URL { stateDir.appendingPathComponent("staging") }

    /// The staging folder of a manifest (or of one of its deploys): one fixed path per name, so the plan can name
    /// it; only the holder of the output root's lock uses it.
    public func stagingURL(name: String) -> URL { stagingRoot.appendingPathComponent("\(name).staging") }

    /// A new, empty staging folder at `stagingURL(name:)` (a leftover one is removed first).
    public func makeStaging(name: String) throws -> URL { try makeStaging(at: stagingURL(name: name)) }

    /// A new, empty staging folder at a path the plan named (a leftover one is removed first).
    public func makeStaging(at dir: URL) throws -> URL {
        try? FileManager.default.removeItem(at: dir)
        // Another slot's `tidy()` may remove the (momentarily empty) staging root between the two mkdirs: retry.
        for attempt in 0..<5 {
            do {
                try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
                return dir
            } catch where attempt < 4 {
                continue
            }
        }
        return dir
    }

    /// Removes a staging folder and, when nothing else is there, the folders tsexport made for it.
    public func discard(_ staging: URL) {
        try? FileManager.default.removeItem(at: staging)
        tidy()
    }

    /// Removes `.tsexport/staging` and `.tsexport` when empty, so a failed apply leaves the root as it was.
    public func tidy() {
        // rmdir only removes empty folders, so a parallel export's fresh staging folder is never swept away.
        for d in [stagingRoot, stateDir] { rmdir(d.path) }
    }

    static func fsyncParent(_ url: URL) {
        let parent = open(url.deletingLastPathComponent().path, O_RDONLY)
        if parent >= 0 { fsync(parent); close(parent) }
    }

    /// Flushes every file in a folder and the folder itself to disk.
    public static func fsyncTree(_ dir: URL) {
        let fm = FileManager.default
        if let e = fm.enumerator(atPath: dir.path) {
            while let rel = e.nextObject() as? String {
                let fd = open(dir.appendingPathComponent(rel).path, O_RDONLY)
                if fd >= 0 { fsync(fd); close(fd) }
            }
        }
        let fd = open(dir.path, O_RDONLY)
        if fd >= 0 { fsync(fd); close(fd) }
    }

    /// Moves one staged file over `destination` with a rename (atomic on one file system).
    public func installFile(_ file: URL, at destination: URL) throws {
        let fm = FileManager.default
        try fm.createDirectory(at: destination.deletingLastPathComponent(), withIntermediateDirectories: true)
        Self.fsyncTree(file.deletingLastPathComponent())
        guard rename(file.path, destination.path) == 0 else {
            throw BundleError("cannot move \(file.lastPathComponent) into \(destination.deletingLastPathComponent().path): \(String(cString: strerror(errno)))")
        }
        Self.fsyncParent(destination)
    }

    /// Moves a complete staging folder to `destination`. An existing bundle is swapped with the new one in one
    /// atomic step (renameat2 RENAME_EXCHANGE), so at every moment the destination holds the old complete bundle or
    /// the new complete one; where the file system cannot exchange, the old one is moved aside first.
    public func install(_ staging: URL, at destination: URL) throws {
        let fm = FileManager.default
        Self.fsyncTree(staging)
        try fm.createDirectory(at: destination.deletingLastPathComponent(), withIntermediateDirectories: true)
        if fm.fileExists(atPath: destination.path), tsx_exchange_paths(staging.path, destination.path) == 0 {
            Self.fsyncParent(destination)
            try? fm.removeItem(at: staging)  // now holds the old bundle
            tidy()
            return
        }
        var old: URL?
        if fm.fileExists(atPath: destination.path) {
            let aside = stagingRoot.appendingPathComponent("\(destination.lastPathComponent).old.\(UUID().uuidString.prefix(8).lowercased())")
            try fm.moveItem(at: destination, to: aside)
            old = aside
        }
        do {
            try fm.moveItem(at: staging, to: destination)
        } catch {
            if let old { try? fm.moveItem(at: old, to: destination) }
            throw error
        }
        Self.fsyncParent(destination)
        if let old { try? fm.removeItem(at: old) }
        tidy()
    }
}

/// A bundle that cannot be read or written, in one sentence.
public struct BundleError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
