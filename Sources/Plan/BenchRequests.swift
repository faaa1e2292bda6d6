import Foundation
import JSON
import Manifest

/// The worker's `bench` request (protocol 2): every key present, the eager model decided here from the bundle's
/// record, with the builder of the export's `job.model`.
public enum BenchRequests {
    /// What the worker is told about the eager side: the export job's `model` object to rebuild, or why it cannot be.
    public enum EagerDecision: Equatable, CustomStringConvertible {
        /// `eager: {"model": <model>}`, `eager_missing: null`.
        case model(JSONValue)
        /// `eager: null`, `eager_missing: <reason>` (a sentence for the user).
        case missing(String)

        /// The request's `eager` value.
        public var eager: JSONValue {
            if case .model(let m) = self { return .object([("model", m)]) }
            return .null
        }

        /// The request's `eager_missing` value.
        public var eagerMissing: JSONValue {
            if case .missing(let reason) = self { return .string(reason) }
            return .null
        }

        public var description: String {
            switch self {
            case .model(let m): return "model(\(m.serialized(pretty: false)))"
            case .missing(let r): return "missing(\(r))"
            }
        }
    }

    /// The eager model the export loaded, from the record, or why it cannot be rebuilt. `manifestDir` is the
    /// manifest's folder as `manifestDirectory` found it (nil: unknown); `directoryExists` is the only look at the
    /// disk, made by the caller (whether a local pretrained folder is still there); `home` expands a leading `~`.
    ///
    /// - The model is `fingerprint_inputs.manifest.spec.model` (an object with a string `class`).
    /// - A string `pretrained` is local when the record hashed files under `spec.model.pretrained/` or it starts
    ///   with `/`, `./`, `../` or `~`; a local one is expanded, joined to the manifest's folder when relative, and
    ///   must be a folder on disk; anything else is a hub id, sent as is.
    /// - `trust_remote_code` / `allow_pickle` need `--allow-remote-code` / `--allow-pickle`.
    /// - `attn_implementation` is the record's, else the manifest model's, else `eager`; it leaves `config`.
    public static func eagerDecision(
        record: JSONValue, manifestDir: String?, allowRemoteCode: Bool, allowPickle: Bool,
        directoryExists: (String) -> Bool,
        expandTilde: (String) -> String = { ($0 as NSString).expandingTildeInPath }
    ) -> EagerDecision {
        guard let model = record["fingerprint_inputs"]?["manifest"]?["spec"]?["model"], model.objectValue != nil,
              let className = model["class"]?.stringValue
        else { return .missing("the record has no manifest model (fingerprint_inputs.manifest.spec.model)") }

        var pretrained: JSONValue = .null
        var local = false
        if let given = model["pretrained"]?.stringValue {
            pretrained = .string(given)
            if pretrainedWasLocal(record: record, given) {
                local = true
                var path = given.hasPrefix("~") ? expandTilde(given) : given
                let wasAbsolute = path.hasPrefix("/")
                if !wasAbsolute {
                    guard let manifestDir else {
                        let file = record["manifest_file"]?.stringValue
                        let why = file.map { "manifest_file \(quoted($0)) is relative to the folder the apply ran in" }
                            ?? "the record has no manifest_file"
                        return .missing("spec.model.pretrained \(quoted(given)) is relative to the manifest's folder, which the record does not give (\(why)); pass --manifest-dir")
                    }
                    path = normalized(manifestDir + "/" + path)
                }
                guard directoryExists(path) else {
                    let against = wasAbsolute ? "" : ", resolved against \(manifestDir ?? "")"
                    return .missing("the pretrained folder \(path) (spec.model.pretrained \(quoted(given))\(against)) does not exist; it may have moved since the export")
                }
                pretrained = .string(path)
            }
        }
        if model["trust_remote_code"] == .bool(true), !allowRemoteCode {
            return .missing("the model sets trust_remote_code: true; rebuilding it needs --allow-remote-code")
        }
        if model["allow_pickle"] == .bool(true), !allowPickle {
            return .missing("the model sets allow_pickle: true; rebuilding it needs --allow-pickle")
        }
        func nonEmpty(_ v: JSONValue?) -> String? { v?.stringValue.flatMap { $0.isEmpty ? nil : $0 } }
        // The record keeps the manifest as written: a field left out takes the default the loader fills in.
        let attention = nonEmpty(record["attn_implementation"]) ?? nonEmpty(model["attn_implementation"]) ?? ManifestDefaults.attnImplementation
        let config = (model["config"]?.objectValue ?? []).filter { $0.0 != "attn_implementation" }
        return .model(WorkerRequests.model(EagerModel(
            className: className, pretrained: pretrained.stringValue, pretrainedIsLocal: local,
            revision: model["revision"]?.stringValue, config: config,
            torchscript: model["torchscript"]?.boolValue ?? ManifestDefaults.torchscript,
            seed: model["seed"]?.intValue ?? ManifestDefaults.seed,
            dtype: model["dtype"]?.stringValue ?? ManifestDefaults.dtype,
            attnImplementation: attention,
            trustRemoteCode: model["trust_remote_code"]?.boolValue ?? false,
            allowPickle: model["allow_pickle"]?.boolValue ?? false,
            library: model["library"]?.stringValue ?? ManifestDefaults.library,
            forward: model["forward"]?.objectValue ?? [])))
    }

    /// The whole `bench` request for one bundle (without `id` and `op`).
    public static func requestFields(
        bundle: URL, shapes: [[Int]], runs: Int, warmup: Int, threads: Int?, report: URL?, eager: EagerDecision
    ) -> [(String, JSONValue)] {
        [
            ("dir", .string(bundle.path)),
            ("shapes", .array(shapes.map { .array($0.map(JSONValue.int)) })),
            ("runs", .int(runs)), ("warmup", .int(warmup)),
            ("threads", threads.map(JSONValue.int) ?? .null),
            ("report", report.map { .string($0.path) } ?? .null),
            ("eager", eager.eager), ("eager_missing", eager.eagerMissing),
        ]
    }

    /// Whether the export hashed a local `pretrained` folder, or the value reads as a path.
    static func pretrainedWasLocal(record: JSONValue, _ value: String) -> Bool {
        let files = record["fingerprint_inputs"]?["files"]?.objectValue ?? []
        if files.contains(where: { $0.0.hasPrefix("spec.model.pretrained/") }) { return true }
        return ["/", "./", "../", "~"].contains { value.hasPrefix($0) }
    }

    /// Python's repr of a string, as the user saw these messages before: single quotes unless the text has one.
    static func quoted(_ s: String) -> String {
        if s.contains("'") && !s.contains("\"") { return "\"\(s)\"" }
        return "'" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
    }

    /// `os.path.normpath`: `.` and empty parts dropped, `..` taken back (never above `/`).
    static func normalized(_ path: String) -> String {
        let absolute = path.hasPrefix("/")
        var parts: [Substring] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
            if part == "..", let last = parts.last, last != ".." { parts.removeLast(); continue }
            if part == "..", absolute { continue }
            parts.append(part)
        }
        let joined = parts.joined(separator: "/")
        return absolute ? "/" + joined : (joined.isEmpty ? "." : joined)
    }
}
