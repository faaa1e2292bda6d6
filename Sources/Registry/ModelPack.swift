import Bundles
import Foundation
import JSON

/// A bundle as a CNCF ModelPack artifact (model-spec v1): an OCI image manifest with
/// `artifactType: application/vnd.cncf.model.manifest.v1+json`, a `application/vnd.cncf.model.config.v1+json` config
/// filled from `record.json`, and one raw layer per bundle file (its sha256 is the layer digest) named by
/// `org.cncf.model.filepath`. `build.json` (how and when a bundle was built) is not content and is never a layer.
/// The same bundle files give the same manifest bytes.
public enum ModelPack {
    public static let artifactType = "application/vnd.cncf.model.manifest.v1+json"
    public static let configMediaType = "application/vnd.cncf.model.config.v1+json"
    public static let weightMediaType = "application/vnd.cncf.model.weight.v1.raw"
    public static let weightConfigMediaType = "application/vnd.cncf.model.weight.config.v1.raw"
    public static let manifestMediaType = "application/vnd.oci.image.manifest.v1+json"
    public static let filepathAnnotation = "org.cncf.model.filepath"
    public static let titleAnnotation = "org.opencontainers.image.title"
    /// The prefix of tsexport's own annotations.
    public static let annotationPrefix = "dev.tsexport."
    /// Files of a bundle folder that are not its content (how it was built; the report `tsexport bench` writes):
    /// `BundleContent.notContent`, never layers.
    public static let excludedFiles: Set<String> = BundleContent.notContent
    /// Extensions of weight files (the programs and tensors); every other file is a weight config.
    static let weightExtensions: Set<String> = ["pt", "pt2", "safetensors", "bin"]

    /// One bundle file as a layer.
    public struct Layer: Sendable {
        public var path: String
        public var file: URL
        public var descriptor: Descriptor
    }

    /// A bundle ready to push: the config blob, the layers and the manifest bytes.
    public struct Artifact: Sendable {
        public var config: Data
        public var configDescriptor: Descriptor
        public var layers: [Layer]
        public var manifest: Data
        public var fingerprint: String
        public var manifestDigest: String { "sha256:" + Digest.sha256(manifest) }
    }

    /// Reads a bundle folder into an artifact: one layer per content file (`BundleContent`), hashed streamed or
    /// through `cache`.
    public static func artifact(bundle: URL, cache: FileDigestCache? = nil) throws -> Artifact {
        let recordURL = bundle.appendingPathComponent(RecordSummary.fileName)
        guard let recordData = FileManager.default.contents(atPath: recordURL.path),
              let record = try? JSONValue(parsing: recordData), let fingerprint = record["fingerprint"]?.stringValue else {
            throw RegistryError("\(bundle.path) is not a bundle: no readable record.json with a fingerprint")
        }
        try refuseLinks(in: bundle)
        let layers = try BundleContent.entries(of: bundle, cache: cache).map { e in
            Layer(path: e.path, file: bundle.appendingPathComponent(e.path), descriptor: Descriptor(
                mediaType: weightExtensions.contains((e.path as NSString).pathExtension) ? weightMediaType : weightConfigMediaType,
                digest: "sha256:" + e.sha256, size: e.size))
        }
        let config = Data(CanonicalJSON.text(configJSON(record: record, diffIds: layers.map(\.descriptor.digest))).utf8)
        let configDescriptor = Descriptor(mediaType: configMediaType, digest: "sha256:" + Digest.sha256(config), size: config.count)
        var annotations: [(String, JSONValue)] = [
            (annotationPrefix + "fingerprint", .string(fingerprint)),
            (annotationPrefix + "format", .string(record["format"]?.stringValue ?? "")),
            (annotationPrefix + "versions", .string(CanonicalJSON.text(record["versions"] ?? .object([])))),
            (annotationPrefix + "envelope", .string(CanonicalJSON.text(record["envelope"]?["verified"] ?? .object([])))),
        ]
        if let name = record["name"]?.stringValue { annotations.append((titleAnnotation, .string(name))) }
        let manifest: JSONValue = .object([
            ("schemaVersion", .int(2)),
            ("mediaType", .string(manifestMediaType)),
            ("artifactType", .string(artifactType)),
            ("config", descriptorJSON(configDescriptor, annotations: nil)),
            ("layers", .array(layers.map { descriptorJSON($0.descriptor, annotations: [
                (filepathAnnotation, .string($0.path)), (titleAnnotation, .string($0.path)),
            ]) })),
            ("annotations", .object(annotations)),
        ])
        return Artifact(config: config, configDescriptor: configDescriptor, layers: layers,
                        manifest: Data(CanonicalJSON.text(manifest).utf8), fingerprint: fingerprint)
    }

    /// The model-spec config: `descriptor` (name, family), `config` (format, precision, quantization), `modelfs`
    /// (the raw layers' digests are their DiffIDs).
    static func configJSON(record: JSONValue, diffIds: [String]) -> JSONValue {
        var descriptor: [(String, JSONValue)] = []
        if let name = record["name"]?.stringValue { descriptor.append(("name", .string(name))) }
        if let cls = record["model_class"]?.stringValue { descriptor.append(("family", .string(family(modelClass: cls)))) }
        var config: [(String, JSONValue)] = [("format", .string(record["aoti"] != nil ? "aoti" : "torchscript"))]
        if let dtype = record["dtype"]?.stringValue { config.append(("precision", .string(dtype))) }
        if let q = record["target"]?["quantize"]?.stringValue, q != "none" { config.append(("quantization", .string(q))) }
        return .object([
            ("descriptor", .object(descriptor)),
            ("config", .object(config)),
            ("modelfs", .object([("type", .string("layers")), ("diffIds", .array(diffIds.map { .string($0) }))])),
        ])
    }

    /// `LlamaForCausalLM` → `llama`, `BertModel` → `bert`.
    static func family(modelClass: String) -> String {
        var s = modelClass
        if let r = s.range(of: "For") { s = String(s[..<r.lowerBound]) }
        if s.hasSuffix("Model"), s.count > 5 { s.removeLast(5) }
        return s.lowercased()
    }

    static func descriptorJSON(_ d: Descriptor, annotations: [(String, JSONValue)]?) -> JSONValue {
        var o: [(String, JSONValue)] = [("mediaType", .string(d.mediaType)), ("digest", .string(d.digest)), ("size", .int(d.size))]
        if let annotations { o.append(("annotations", .object(annotations))) }
        return .object(o)
    }

    /// A bundle holds only regular files and folders: a symbolic link or any other kind of file is refused.
    static func refuseLinks(in bundle: URL) throws {
        let fm = FileManager.default
        guard let e = fm.enumerator(atPath: bundle.path) else { throw RegistryError("cannot read \(bundle.path)") }
        while let rel = e.nextObject() as? String {
            let type = e.fileAttributes?[.type] as? FileAttributeType
            guard type == .typeDirectory || type == .typeRegular else {
                throw RegistryError("\(bundle.path)/\(rel) is not a regular file; a bundle holds only files")
            }
        }
    }

    /// Whether a layer's `org.cncf.model.filepath` stays inside the folder it is written to.
    public static func isSafePath(_ p: String) -> Bool {
        guard !p.isEmpty, !p.hasPrefix("/"), !p.contains("\\"), p.utf8.count <= 1024,
              !p.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else { return false }
        let parts = p.split(separator: "/", omittingEmptySubsequences: false)
        return !parts.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." })
    }
}
