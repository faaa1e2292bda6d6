import Foundation
import JSON

/// One file of a bundle (or of a deploy): its path relative to the bundle folder, its sha256 and its size.
public struct ContentEntry: Sendable, Hashable {
    /// The path relative to the bundle folder, `/`-separated.
    public var path: String
    /// Hex sha256 of the file's bytes.
    public var sha256: String
    /// Size in bytes.
    public var size: Int

    /// Creates an entry.
    public init(path: String, sha256: String, size: Int) {
        self.path = path
        self.sha256 = sha256
        self.size = size
    }

    /// `{"path", "sha256", "size"}`.
    public var json: JSONValue { .object([("path", .string(path)), ("sha256", .string(sha256)), ("size", .int(size))]) }

    /// Reads `{"path", "sha256", "size"}`; nil when a field is missing.
    public init?(json: JSONValue) {
        guard let p = json["path"]?.stringValue, let s = json["sha256"]?.stringValue, let n = json["size"]?.intValue else { return nil }
        self.init(path: p, sha256: s, size: n)
    }
}

/// A bundle's content: every regular file in the bundle folder except `build.json` and `bench.html`, in byte order of their relative
/// paths, and the content digest over them. The digest is what identifies a bundle wherever it is built or copied:
/// `sha256:` + the SHA-256 of one line per file, `<sha256> <size> <path>\n`, in that order.
public enum BundleContent {
    /// The file beside the content that says how, when and where the bundle was built; not part of the content.
    public static let buildFile = "build.json"
    /// The report `tsexport bench` writes into a bundle: timings of one run on one machine, not part of the content.
    public static let reportFile = "bench.html"
    /// Top-level files that are about the bundle rather than part of it.
    public static let notContent: Set<String> = [buildFile, reportFile]

    /// Whether a path in a bundle (relative to it) is not content: `build.json`, `bench.html`, and the temporary files
    /// their atomic writes hold for a moment at the top level (`.build.json.*.tmp`, `.bench-*.html.tmp`).
    public static func isNotContent(_ rel: String) -> Bool {
        if notContent.contains(rel) { return true }
        guard !rel.contains("/"), rel.hasSuffix(".tmp") else { return false }
        return rel.hasPrefix(".\(buildFile).") || (rel.hasPrefix(".bench-") && rel.hasSuffix(".html.tmp"))
    }

    /// The relative paths of the bundle's content files, sorted by their UTF-8 bytes (hidden files included, so
    /// nothing slips past the digest; what `isNotContent` names excluded).
    public static func files(in bundle: URL) -> [String] {
        var out: [String] = []
        guard let e = FileManager.default.enumerator(atPath: bundle.path) else { return [] }
        while let rel = e.nextObject() as? String {
            if (e.fileAttributes?[.type] as? FileAttributeType) == .typeRegular, !isNotContent(rel) { out.append(rel) }
        }
        return out.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
    }

    /// The entries of a bundle's content files, in the fixed order; files are hashed through `cache` when given.
    /// `known`: digests the caller has just computed of files it has not changed since, by relative path (apply
    /// hashes the artifact once, for the record and for the content).
    public static func entries(of bundle: URL, cache: FileDigestCache? = nil, known: [String: String] = [:]) throws -> [ContentEntry] {
        try files(in: bundle).map { rel in
            let path = bundle.appendingPathComponent(rel).path
            if let cache, let d = cache.digest(path: path) { return ContentEntry(path: rel, sha256: d.sha256, size: d.size) }
            if let sha = known[rel] {
                return ContentEntry(path: rel, sha256: sha, size: (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0)
            }
            let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            return ContentEntry(path: rel, sha256: try Digest.sha256(file: path), size: size)
        }
    }

    /// The content digest of entries, taken in the fixed order whatever order they are given in.
    public static func digest(_ entries: [ContentEntry]) -> String {
        let sorted = entries.sorted { Array($0.path.utf8).lexicographicallyPrecedes(Array($1.path.utf8)) }
        return "sha256:" + Digest.sha256(sorted.map { "\($0.sha256) \($0.size) \($0.path)\n" }.joined())
    }

    /// The content digest of a bundle folder.
    public static func digest(of bundle: URL, cache: FileDigestCache? = nil) throws -> String {
        digest(try entries(of: bundle, cache: cache))
    }
}
