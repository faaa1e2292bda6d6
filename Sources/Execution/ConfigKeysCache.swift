import Bundles
import Foundation
import JSON

/// The keys each model class's config class declares (the worker's `config_keys` answer), remembered in tsexport's
/// cache folder (`config-keys.json`) under a key over the interpreter, its transformers version and the class name,
/// so that a plan whose classes were asked about before starts no Python.
public struct ConfigKeysCache: Sendable {
    /// One answer: the config class's name and its declared keys.
    public struct Answer: Sendable, Equatable {
        public var configClass: String
        public var keys: Set<String>
    }

    /// The cache file.
    public var file: URL

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        file = RuntimeCache.folder(environment: environment).appendingPathComponent("config-keys.json")
    }

    /// The content key of one class under one runtime.
    public static func key(python: String, transformers: String, className: String) -> String {
        Digest.sha256("\(python)\u{0}\(transformers)\u{0}\(className)")
    }

    private func readAll() -> [(String, JSONValue)] {
        guard let data = FileManager.default.contents(atPath: file.path), case .object(let o)? = try? JSONValue(parsing: data) else { return [] }
        return o
    }

    /// The remembered answer for a key; `.some(nil)` for a class with no config class of its own (an Auto* class).
    public func lookup(_ key: String) -> Answer?? {
        guard let entry = readAll().first(where: { $0.0 == key })?.1 else { return nil }
        guard let name = entry["config_class"]?.stringValue, case .array(let keys)? = entry["keys"] else { return .some(nil) }
        return .some(Answer(configClass: name, keys: Set(keys.compactMap(\.stringValue))))
    }

    /// Remembers a worker's `config_keys` answer.
    public func store(_ key: String, answer: JSONValue) {
        var all = readAll().filter { $0.0 != key }
        all.append((key, .object([("config_class", answer["config_class"] ?? .null), ("keys", answer["keys"] ?? .null)])))
        try? FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        let tmp = file.appendingPathExtension("tmp-\(getpid())")
        if (try? Data(JSONValue.object(all).serialized(pretty: true).utf8).write(to: tmp)) != nil {
            _ = rename(tmp.path, file.path)
        }
    }

    /// The declared keys of each class in `classNames` under interpreter `python`: from the cache where the runtime's
    /// transformers version is known (`RuntimeCache`) and the class was asked about, else from one worker started for
    /// all the others. nil values for Auto* classes and names that are not model classes. Throws when the worker cannot start or answer.
    public func answers(classNames: [String], python: String, runner: ProcessRunner = SystemProcessRunner()) throws -> [String: Answer?] {
        var out: [String: Answer?] = [:]
        var missing: [String] = []
        if let transformers = RuntimeCache().info(for: python)?.versions["transformers"] {
            for c in Set(classNames) {
                if let hit = lookup(Self.key(python: python, transformers: transformers, className: c)) { out[c] = hit } else { missing.append(c) }
            }
        } else {
            missing = Array(Set(classNames))
        }
        guard !missing.isEmpty else { return out }
        // apply's environment, so that with TSEXPORT_WARM one warm process (keyed by the environment) serves plan's
        // worker and apply's; this worker computes nothing, so the OpenMP wait policy does not matter to it.
        let worker = try WorkerClient(python: python, runner: runner, environment: WorkerClient.applyEnvironment())
        defer { worker.shutdown() }
        RuntimeCache().store(python: python, hello: worker.hello)
        let transformers = worker.hello.versions["transformers"] ?? "none"
        for c in missing.sorted() {
            let data: JSONValue
            do {
                data = try worker.request("config_keys", [("class", .string(c))])
            } catch is WorkerFailure {
                out[c] = .some(nil)  // not a model class: the export reports it where it loads the class
                continue
            }
            store(Self.key(python: python, transformers: transformers, className: c), answer: data)
            if let name = data["config_class"]?.stringValue, case .array(let keys)? = data["keys"] {
                out[c] = Answer(configClass: name, keys: Set(keys.compactMap(\.stringValue)))
            } else {
                out[c] = .some(nil)
            }
        }
        return out
    }
}
