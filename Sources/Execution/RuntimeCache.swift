import Foundation
import JSON
import Plan

/// Remembers, per interpreter, the Python/torch/transformers versions a worker reported, so that `plan` and a no-op
/// `apply` can see a changed version without starting Python. An entry is trusted only while the files it was read
/// from (the interpreter and the packages' `__init__.py`/`version.py`, as the worker names them in `package_files`)
/// keep their size and modification time.
public struct RuntimeCache: Sendable {
    /// The cache file.
    public var file: URL

    /// tsexport's cache folder: `TSEXPORT_CACHE_DIR`, else `XDG_CACHE_HOME/tsexport`, else `~/.cache/tsexport`. The
    /// managed runtimes and this file live there.
    public static func folder(environment: [String: String]) -> URL {
        if let x = environment["TSEXPORT_CACHE_DIR"], !x.isEmpty { return URL(fileURLWithPath: x) }
        if let x = environment["XDG_CACHE_HOME"], !x.isEmpty { return URL(fileURLWithPath: x).appendingPathComponent("tsexport") }
        return URL(fileURLWithPath: environment["HOME"] ?? NSTemporaryDirectory()).appendingPathComponent(".cache/tsexport")
    }

    /// The cache file in tsexport's cache folder.
    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        file = Self.folder(environment: environment).appendingPathComponent("runtime-versions.json")
    }

    static func stamp(_ path: String) -> String? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return "\(st.st_size):\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)"
    }

    private func readAll() -> [(String, JSONValue)] {
        guard let data = FileManager.default.contents(atPath: file.path), case .object(let o)? = try? JSONValue(parsing: data) else { return [] }
        return o
    }

    /// What a runtime reported, remembered.
    public struct Info: Sendable {
        /// python, torch, transformers.
        public var versions: [String: String]
        /// Hardware targets it lacks, with the reason and what to install.
        public var unavailableTargets: [String: String]
    }

    /// What was recorded for an interpreter, if its files are unchanged since.
    public func info(for python: String) -> Info? {
        guard let entry = readAll().first(where: { $0.0 == python })?.1,
              case .object(let stamps)? = entry["stamps"], case .object(let versions)? = entry["versions"]
        else { return nil }
        for (path, recorded) in stamps where Self.stamp(path) != recorded.stringValue { return nil }
        var out = Info(versions: [:], unavailableTargets: [:])
        for (k, v) in versions { if let s = v.stringValue { out.versions[k] = s } }
        if case .object(let targets)? = entry["unavailable_targets"] {
            for (k, v) in targets { if let s = v.stringValue { out.unavailableTargets[k] = s } }
        }
        return out.versions.isEmpty ? nil : out
    }

    /// Records what a worker said about itself (only when it named the files to watch).
    public func store(python: String, hello: WorkerHello) {
        guard case .array(let files)? = hello.raw["package_files"], !files.isEmpty, hello.missing.isEmpty else { return }
        var stamps: [(String, JSONValue)] = []
        for path in [python] + files.compactMap(\.stringValue) {
            guard let s = Self.stamp(path) else { return }
            stamps.append((path, .string(s)))
        }
        let versions = JSONValue.object(hello.versions.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })
        let unavailable = JSONValue.object(hello.targets.compactMap { k, v in v.map { (k, JSONValue.string($0)) } }.sorted { $0.0 < $1.0 })
        var all = readAll().filter { $0.0 != python }
        all.append((python, .object([("stamps", .object(stamps)), ("versions", versions), ("unavailable_targets", unavailable)])))
        try? FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        let tmp = file.appendingPathExtension("tmp-\(getpid())")
        if (try? Data(JSONValue.object(all).serialized(pretty: true).utf8).write(to: tmp)) != nil {
            _ = rename(tmp.path, file.path)
        }
    }
}
