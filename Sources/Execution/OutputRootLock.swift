import Bundles
import CSystem
import Foundation
import Manifest

/// An advisory lock on the output root, so two applies never write one root at once. It is a `flock` on the root
/// folder itself, so the kernel releases it when the holder dies and nothing is left in the root; while held, the
/// holder's pid and start time are in `.tsexport/lock.json` for the error message of whoever waits.
public final class OutputRootLock {
    private let fd: Int32
    private let infoFile: URL
    private let store: BundleStore

    /// Who holds a lock.
    public struct Holder: Sendable, Equatable {
        /// The holder's pid.
        public var pid: Int32
        /// When it took the lock (ISO 8601).
        public var since: String
    }

    /// The lock is held elsewhere.
    public struct Busy: Error, CustomStringConvertible {
        /// The output root.
        public var root: String
        /// The holder, when known.
        public var holder: Holder?
        /// How long we waited.
        public var waited: Double
        public var description: String {
            let who = holder.map { "tsexport pid \($0.pid), running since \($0.since)" } ?? "another process"
            return "the output root \(root) is locked by \(who)" + (waited > 0 ? " (waited \(String(format: "%.0f", waited)) s; raise --lock-timeout to wait longer)" : "; use --lock-timeout SECONDS to wait for it")
        }
    }

    /// Takes the lock, waiting up to `timeout` seconds (0: fail at once).
    public init(root: URL, timeout: Double) throws {
        store = BundleStore(root: root)
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        fd = open(root.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw CocoaError(.fileReadNoPermission, userInfo: [NSFilePathErrorKey: root.path]) }
        infoFile = store.stateDir.appendingPathComponent("lock.json")
        let start = Date()
        while tsx_flock_exclusive(fd, 1) != 0 {
            let waited = Date().timeIntervalSince(start)
            if waited >= timeout {
                close(fd)
                throw Busy(root: root.path, holder: Self.readHolder(infoFile), waited: waited)
            }
            usleep(100_000)
        }
        try? FileManager.default.createDirectory(at: store.stateDir, withIntermediateDirectories: true)
        let info = "{\"pid\": \(getpid()), \"since\": \"\(ISO8601DateFormatter().string(from: Date()))\"}\n"
        try? Data(info.utf8).write(to: infoFile)
    }

    static func readHolder(_ file: URL) -> Holder? {
        guard let data = FileManager.default.contents(atPath: file.path),
              let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let pid = o["pid"] as? Int, let since = o["since"] as? String
        else { return nil }
        return Holder(pid: Int32(pid), since: since)
    }

    /// Removes staging folders that a killed run left behind (only safe while holding the lock).
    public func removeLeftoverStaging() -> [String] {
        let items = (try? FileManager.default.contentsOfDirectory(atPath: store.stagingRoot.path)) ?? []
        for item in items { try? FileManager.default.removeItem(at: store.stagingRoot.appendingPathComponent(item)) }
        return items
    }

    /// Releases the lock and removes what it left in the root.
    public func release() {
        try? FileManager.default.removeItem(at: infoFile)
        store.tidy()
        close(fd)
    }
}
