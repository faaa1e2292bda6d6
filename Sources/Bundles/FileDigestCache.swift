import Foundation
import JSON

#if canImport(Glibc)
import Glibc
#endif

/// What `stat` says about a file that could change its bytes: device, inode, size, mtime and ctime (nanoseconds).
public struct FileStamp: Hashable, Sendable {
    public var device: UInt64
    public var inode: UInt64
    public var size: Int
    public var mtimeNs: Int64
    public var ctimeNs: Int64

    /// The stamp of a regular file (symbolic links not followed); nil when it is missing or not a regular file.
    public static func of(_ path: String) -> FileStamp? {
        var st = stat()
        guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        return FileStamp(
            device: UInt64(st.st_dev), inode: UInt64(st.st_ino), size: Int(st.st_size),
            mtimeNs: Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec),
            ctimeNs: Int64(st.st_ctim.tv_sec) * 1_000_000_000 + Int64(st.st_ctim.tv_nsec))
    }
}

/// File digests remembered by (device, inode, size, mtime, ctime), as git's index does: a file whose stamp is
/// unchanged is not read again. Stored in `<root>/.tsexport/digests.json`. A file changed within the clock's
/// granularity of being hashed could keep its stamp, so a digest taken less than two seconds after the file's last
/// change is used once but not remembered.
public final class FileDigestCache: @unchecked Sendable {
    struct Entry { var stamp: FileStamp; var sha256: String }
    private var entries: [String: Entry] = [:]
    private var used: Set<String> = []
    private var dirty = false
    private let lock = NSLock()
    /// The cache file.
    public let file: URL
    /// How many files were read and hashed (not answered from the cache).
    public private(set) var hashed = 0

    /// The cache of an output root; starts empty when the file is absent or unreadable.
    public init(root: URL) {
        file = BundleStore(root: root).stateDir.appendingPathComponent("digests.json")
        guard let data = FileManager.default.contents(atPath: file.path), let v = try? JSONValue(parsing: data),
              v["format"]?.stringValue == "tsexport-digests/1" else { return }
        for (path, e) in v["files"]?.objectValue ?? [] {
            guard let a = e.arrayValue, a.count == 6, let sha = a[5].stringValue,
                  let dev = a[0].stringValue.flatMap({ UInt64($0) }), let ino = a[1].stringValue.flatMap({ UInt64($0) }),
                  let size = a[2].intValue, let m = a[3].stringValue.flatMap({ Int64($0) }), let c = a[4].stringValue.flatMap({ Int64($0) })
            else { continue }
            entries[path] = Entry(stamp: FileStamp(device: dev, inode: ino, size: size, mtimeNs: m, ctimeNs: c), sha256: sha)
        }
    }

    /// The sha256 and size of a regular file, from the cache when its stamp is unchanged; nil when it is missing.
    public func digest(path: String) -> (sha256: String, size: Int)? {
        guard let stamp = FileStamp.of(path) else { return nil }
        lock.lock()
        if let e = entries[path], e.stamp == stamp {
            used.insert(path)
            lock.unlock()
            return (e.sha256, stamp.size)
        }
        lock.unlock()
        guard let sha = try? Digest.sha256(file: path), FileStamp.of(path) == stamp else { return nil }
        let now = Int64(Date().timeIntervalSince1970 * 1_000_000_000)
        lock.lock()
        hashed += 1
        if now - max(stamp.mtimeNs, stamp.ctimeNs) > 2_000_000_000 {
            entries[path] = Entry(stamp: stamp, sha256: sha)
            used.insert(path)
            dirty = true
        }
        lock.unlock()
        return (sha, stamp.size)
    }

    /// Writes the cache (atomically: a temporary file renamed over it) when something new was learned, keeping only
    /// the files asked about this time and those under folders that still exist. Only when `.tsexport` exists: a plan
    /// never creates folders in the output root.
    public func save() {
        lock.lock()
        defer { lock.unlock() }
        guard dirty, FileManager.default.fileExists(atPath: file.deletingLastPathComponent().path) else { return }
        let kept = entries.filter { used.contains($0.key) || FileManager.default.fileExists(atPath: $0.key) }
        let files = JSONValue.object(kept.sorted { $0.key < $1.key }.map { path, e in
            (path, .array([.string(String(e.stamp.device)), .string(String(e.stamp.inode)), .int(e.stamp.size),
                           .string(String(e.stamp.mtimeNs)), .string(String(e.stamp.ctimeNs)), .string(e.sha256)]))
        })
        let text = JSONValue.object([("format", .string("tsexport-digests/1")), ("files", files)]).serialized(pretty: false)
        try? AtomicFile.write(Data(text.utf8), to: file)
        dirty = false
    }
}

/// Whole-file writes that a reader never sees half done: a temporary file in the same folder, flushed, renamed.
public enum AtomicFile {
    public static func write(_ data: Data, to url: URL) throws {
        let tmp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(getpid()).\(UUID().uuidString.prefix(8)).tmp")
        guard FileManager.default.createFile(atPath: tmp.path, contents: data) else {
            throw BundleError("cannot write \(tmp.path)")
        }
        let fd = open(tmp.path, O_RDONLY)
        if fd >= 0 { fsync(fd); close(fd) }
        guard rename(tmp.path, url.path) == 0 else {
            let why = String(cString: strerror(errno))
            unlink(tmp.path)
            throw BundleError("cannot replace \(url.path): \(why)")
        }
        BundleStore.fsyncParent(url)
    }
}
