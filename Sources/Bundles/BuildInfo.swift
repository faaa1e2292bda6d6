import Foundation
import JSON

/// A deploy's files as installed: what drift is checked against.
public struct DeployedFiles: Sendable, Hashable {
    /// `triton` or `torchserve`.
    public var kind: String
    /// The destination, relative to the output root (a Triton model folder, a `.mar` file).
    public var path: String
    /// Every file written, paths relative to the output root.
    public var files: [ContentEntry]

    /// Creates one.
    public init(kind: String, path: String, files: [ContentEntry]) {
        self.kind = kind
        self.path = path
        self.files = files
    }
}

/// What a bundle's `build.json` says: its content (files and digest), the deploys' files, and how, when and where
/// it was built. `record.json` says what the artifact is; this file is not part of the content digest.
public struct BuildInfo: Sendable {
    /// The content digest (`BundleContent.digest`).
    public var contentDigest: String
    /// The content files, in the fixed order.
    public var files: [ContentEntry]
    /// The deploys' files.
    public var deployments: [DeployedFiles]

    /// The format name written in the file.
    public static let format = "tsexport-build/1"

    /// Reads `<bundle>/build.json`; nil when absent or not this format.
    public static func read(bundle: URL) -> BuildInfo? {
        guard let data = FileManager.default.contents(atPath: bundle.appendingPathComponent(BundleContent.buildFile).path),
              let v = try? JSONValue(parsing: data), v["format"]?.stringValue == format,
              let digest = v["content_digest"]?.stringValue
        else { return nil }
        let files = (v["files"]?.arrayValue ?? []).compactMap(ContentEntry.init(json:))
        let deploys = (v["deployments"]?.arrayValue ?? []).compactMap { d -> DeployedFiles? in
            guard let kind = d["kind"]?.stringValue, let path = d["path"]?.stringValue else { return nil }
            return DeployedFiles(kind: kind, path: path, files: (d["files"]?.arrayValue ?? []).compactMap(ContentEntry.init(json:)))
        }
        return BuildInfo(contentDigest: digest, files: files, deployments: deploys)
    }

    /// The file's JSON: format, content, deploys, then the build facts given (timings, times, paths, host).
    public static func json(content: [ContentEntry], deployments: [(DeployedFiles, [(String, JSONValue)])], facts: [(String, JSONValue)]) -> JSONValue {
        let deploys: [JSONValue] = deployments.map { d, extra in
            .object([("kind", .string(d.kind)), ("path", .string(d.path)), ("files", .array(d.files.map(\.json)))] + extra)
        }
        return .object([
            ("format", .string(format)), ("content_digest", .string(BundleContent.digest(content))),
            ("files", .array(content.map(\.json))), ("deployments", .array(deploys)),
        ] + facts)
    }

    /// Replaces the files of the given deploys (matched by path) in a bundle's build.json, written atomically.
    public static func replaceDeployments(_ deploys: [DeployedFiles], bundle: URL) throws {
        let url = bundle.appendingPathComponent(BundleContent.buildFile)
        guard let data = FileManager.default.contents(atPath: url.path), case .object(var fields)? = try? JSONValue(parsing: data),
              let i = fields.firstIndex(where: { $0.0 == "deployments" }) else {
            throw BundleError("\(url.path) is missing or unreadable")
        }
        let items: [JSONValue] = (fields[i].1.arrayValue ?? []).map { d in
            guard let path = d["path"]?.stringValue, let new = deploys.first(where: { $0.path == path }),
                  case .object(var o) = d, let j = o.firstIndex(where: { $0.0 == "files" }) else { return d }
            o[j].1 = .array(new.files.map(\.json))
            return .object(o)
        }
        fields[i].1 = .array(items)
        try AtomicFile.write(Data((JSONValue.object(fields).serialized(pretty: true) + "\n").utf8), to: url)
    }

    /// What differs between the recorded content and the files on disk, one phrase per file (`model.pt changed`,
    /// `record.json missing`, `extra.bin added`), hashing through the cache.
    public static func drift(bundle: URL, recorded: [ContentEntry], cache: FileDigestCache) -> [String] {
        var out: [String] = []
        let known = Set(recorded.map(\.path))
        for e in recorded {
            guard let d = cache.digest(path: bundle.appendingPathComponent(e.path).path) else {
                out.append("\(e.path) missing")
                continue
            }
            if d.sha256 != e.sha256 || d.size != e.size { out.append("\(e.path) changed") }
        }
        for f in BundleContent.files(in: bundle) where !known.contains(f) { out.append("\(f) added") }
        return out
    }

    /// What differs in a deploy's files: `deploy triton: config.pbtxt changed`, `deploy torchserve: .mar missing`.
    public static func drift(deploy: DeployedFiles, root: URL, cache: FileDigestCache) -> [String] {
        var out: [String] = []
        for e in deploy.files {
            let name: String
            if deploy.kind == "torchserve" { name = ".mar" } else if e.path.hasPrefix(deploy.path + "/") {
                name = String(e.path.dropFirst(deploy.path.count + 1))
            } else { name = e.path }
            guard let d = cache.digest(path: root.appendingPathComponent(e.path).path) else {
                out.append("deploy \(deploy.kind): \(name) missing")
                continue
            }
            if d.sha256 != e.sha256 || d.size != e.size { out.append("deploy \(deploy.kind): \(name) changed") }
        }
        // A deploy folder (a Triton model folder) holds only what was written there.
        let prefix = deploy.path + "/"
        if deploy.files.contains(where: { $0.path.hasPrefix(prefix) }) {
            let known = Set(deploy.files.map(\.path))
            for f in BundleContent.files(in: root.appendingPathComponent(deploy.path)) where !known.contains(prefix + f) {
                out.append("deploy \(deploy.kind): \(f) added")
            }
        }
        return out
    }
}
