import Foundation
import JSON
import Manifest

/// Everything that decides a manifest's artifact, gathered so that two runs can be compared part by part.
public struct FingerprintInputs: Sendable {
    /// The manifest document, normalised: YAML formatting and comments are already gone; labels are dropped because
    /// they select manifests but do not change the artifact.
    public var manifest: JSONValue
    /// Content hashes of local input files (weights, config, tokenizer), keyed `<field>/<relative path>`.
    public var files: [String: String]
    /// Versions that decide the artifact: tsexport's worker always, Python, torch and transformers when known.
    public var versions: [String: String]

    /// Creates fingerprint inputs.
    public init(manifest: JSONValue, files: [String: String], versions: [String: String]) {
        self.manifest = manifest
        self.files = files
        self.versions = versions
    }

    /// The fingerprint: SHA-256 of the canonical JSON of all three.
    public var fingerprint: String {
        let files = JSONValue.object(self.files.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })
        let versions = JSONValue.object(self.versions.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })
        return "sha256:" + Digest.sha256(CanonicalJSON.text(.object([("files", files), ("manifest", manifest), ("versions", versions)])))
    }

    /// The record's `fingerprint_inputs` object.
    public var json: JSONValue {
        .object([
            ("manifest", manifest),
            ("files", .object(files.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })),
            ("versions", .object(versions.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })),
        ])
    }

    /// The manifest without `metadata.labels`.
    public static func normalise(_ document: JSONValue) -> JSONValue {
        guard case .object(let o) = document else { return document }
        return .object(o.map { k, v in
            guard k == "metadata", case .object(let m) = v else { return (k, v) }
            return (k, .object(m.filter { $0.0 != "labels" }))
        })
    }
}

/// Hashes the local files a manifest reads. It reads files but starts no process.
public struct InputHasher: Sendable {
    /// Creates a hasher.
    public init() {}

    /// `<field>/<relative path>` → sha256 for every regular file in the manifest's local pretrained and tokenizer
    /// folders (hidden files skipped); through `cache` when given, so unchanged files are not read again.
    public func hashes(for m: Manifest, cache: FileDigestCache? = nil) -> [String: String] {
        var out: [String: String] = [:]
        for (field, source) in [("spec.model.pretrained", m.model.pretrained), ("spec.inputs.tokenizer", m.inputs.tokenizer)] {
            guard case .local(let dir)? = source else { continue }
            for rel in Self.files(in: dir) {
                if let cache {
                    if let h = cache.digest(path: dir + "/" + rel)?.sha256 { out["\(field)/\(rel)"] = h }
                } else if let h = try? Digest.sha256(file: dir + "/" + rel) { out["\(field)/\(rel)"] = h }
            }
        }
        return out
    }

    static func files(in dir: String) -> [String] {
        var out: [String] = []
        guard let e = FileManager.default.enumerator(atPath: dir) else { return [] }
        while let rel = e.nextObject() as? String {
            if (rel as NSString).lastPathComponent.hasPrefix(".") {
                if (e.fileAttributes?[.type] as? FileAttributeType) == .typeDirectory { e.skipDescendants() }
                continue
            }
            if (e.fileAttributes?[.type] as? FileAttributeType) == .typeRegular { out.append(rel) }
        }
        return out.sorted()
    }
}
