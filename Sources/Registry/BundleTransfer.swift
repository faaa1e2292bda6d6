import Bundles
import Foundation
import JSON

/// What a push did.
public struct PushResult: Sendable {
    /// The manifest's digest.
    public var digest: String
    /// The tags that now point at it.
    public var tags: [String]
    /// Per blob: "exists", "mounted" or "uploaded".
    public var blobs: [String: String]
}

/// What a pull wrote.
public struct PullResult: Sendable {
    /// The manifest's digest.
    public var digest: String
    /// The record's fingerprint.
    public var fingerprint: String
    /// The files written, relative to the bundle, in layer order.
    public var files: [String]
    /// The content as checked: each file's path, sha256 (its layer digest) and size.
    public var content: [ContentEntry]
    /// The content digest (`BundleContent.digest`).
    public var contentDigest: String { BundleContent.digest(content) }
}

/// Pushes a bundle folder as a ModelPack artifact and pulls one back into a bundle folder.
public struct BundleTransfer: Sendable {
    public let client: RegistryClient

    public init(client: RegistryClient) { self.client = client }

    /// Pushes every blob, then the manifest by digest, then the tags (last, so a failure anywhere before leaves
    /// every existing tag where it was).
    public func push(bundle: URL, to repository: Reference, tags: [String], mountFrom: Reference? = nil) throws -> PushResult {
        let artifact = try ModelPack.artifact(bundle: bundle)
        return try push(artifact, to: repository, tags: tags, mountFrom: mountFrom)
    }

    public func push(_ artifact: ModelPack.Artifact, to repository: Reference, tags: [String], mountFrom: Reference? = nil) throws -> PushResult {
        for t in tags where !Reference.isTag(t) { throw RegistryError("\"\(t)\" is not a valid tag") }
        var blobs: [String: String] = [:]
        for layer in artifact.layers {
            blobs[layer.path] = try client.pushBlob(repository, file: layer.file, descriptor: layer.descriptor, mountFrom: mountFrom)
        }
        try client.pushBlob(repository, data: artifact.config, descriptor: artifact.configDescriptor)
        let digest = artifact.manifestDigest
        var byDigest = repository
        byDigest.tag = nil
        byDigest.digest = digest
        try client.putManifest(artifact.manifest, mediaType: ModelPack.manifestMediaType, at: byDigest)
        for t in tags { try client.putManifest(artifact.manifest, mediaType: ModelPack.manifestMediaType, at: repository.tagged(t)) }
        return PushResult(digest: digest, tags: tags, blobs: blobs)
    }

    /// Fetches a ModelPack artifact and installs it as the bundle folder `dir`: `fetch` into a staging folder,
    /// `build.json` written there (the content as checked, where it was pulled from), the bundle's completeness
    /// checked, then one atomic move (or exchange with an existing bundle). On any failure the staging folder is
    /// removed and `dir` is as it was.
    public func pull(_ ref: Reference, into dir: URL, expectFingerprint: String? = nil) throws -> PullResult {
        let dir = dir.standardizedFileURL
        let fm = FileManager.default
        var isDir: ObjCBool = false
        if fm.fileExists(atPath: dir.path, isDirectory: &isDir) {
            let contents = (try? fm.contentsOfDirectory(atPath: dir.path)) ?? []
            guard isDir.boolValue, contents.isEmpty || contents.contains(RecordSummary.fileName) else {
                throw RegistryError("\(dir.path) exists and is not a bundle; pull replaces only a bundle or an empty folder")
            }
        }
        let store = BundleStore(root: dir.deletingLastPathComponent())
        let staging = try store.makeStaging(name: "\(dir.lastPathComponent).pull")
        do {
            let result = try fetch(ref, into: staging, expectFingerprint: expectFingerprint)
            let build = BuildInfo.json(content: result.content, deployments: [], facts: [
                ("pulled", Self.pulledFact(ref, result)), ("bundle", .string(dir.path)),
            ])
            try Data((build.serialized(pretty: true) + "\n").utf8).write(to: staging.appendingPathComponent(BundleContent.buildFile))
            if let why = RecordSummary.read(bundle: staging)?.incomplete { throw RegistryError("\(ref): \(why)") }
            try store.install(staging, at: dir)
            return result
        } catch {
            store.discard(staging)
            throw error
        }
    }

    /// build.json's `pulled`: the reference, the manifest digest and the time.
    public static func pulledFact(_ ref: Reference, _ result: PullResult) -> JSONValue {
        .object([("reference", .string(ref.description)), ("digest", .string(result.digest)),
                 ("at", .string(ISO8601DateFormatter().string(from: Date())))])
    }

    /// Fetches a ModelPack artifact into `staging` (an empty folder): the manifest (its bytes checked against the
    /// digest asked for), every layer streamed and checked against its digest and size, each path checked to stay
    /// inside the bundle, record.json's fingerprint compared with the manifest's annotation and with
    /// `expectFingerprint`. Throws on the first problem, naming the digest; the caller removes `staging`.
    public func fetch(_ ref: Reference, into staging: URL, expectFingerprint: String? = nil) throws -> PullResult {
        let fm = FileManager.default
        guard let (data, descriptor) = try client.getManifest(ref) else { throw RegistryError("\(ref) not found") }
        let manifest: JSONValue
        do { manifest = try JSONValue(parsing: data) } catch { throw RegistryError("manifest \(ref) (\(descriptor.digest)) is not JSON") }
        guard manifest["artifactType"]?.stringValue == ModelPack.artifactType
                || manifest["config"]?["mediaType"]?.stringValue == ModelPack.configMediaType else {
            throw RegistryError("\(ref) (\(descriptor.digest)) is not a ModelPack model artifact (artifactType \(manifest["artifactType"]?.stringValue ?? "none"))")
        }
        let manifestFingerprint = manifest["annotations"]?[ModelPack.annotationPrefix + "fingerprint"]?.stringValue
        var layers: [(String, Descriptor)] = []
        var seen: Set<String> = []
        for l in manifest["layers"]?.arrayValue ?? [] {
            guard let mt = l["mediaType"]?.stringValue, let dg = l["digest"]?.stringValue, let size = l["size"]?.intValue, size >= 0 else {
                throw RegistryError("manifest \(ref): a layer lacks mediaType, digest or size")
            }
            guard mt.hasSuffix(".raw") else { throw RegistryError("manifest \(ref): layer \(dg) has media type \(mt); tsexport reads raw layers only") }
            guard let path = l["annotations"]?[ModelPack.filepathAnnotation]?.stringValue else {
                throw RegistryError("manifest \(ref): layer \(dg) has no \(ModelPack.filepathAnnotation)")
            }
            guard ModelPack.isSafePath(path), !ModelPack.excludedFiles.contains(path) else {
                throw RegistryError("manifest \(ref): layer \(dg) has the unsafe path \"\(path)\" (absolute, .., or outside the bundle)")
            }
            guard seen.insert(path).inserted else { throw RegistryError("manifest \(ref): two layers write \(path)") }
            layers.append((path, Descriptor(mediaType: mt, digest: dg, size: size)))
        }
        guard seen.contains(RecordSummary.fileName) else { throw RegistryError("\(ref) (\(descriptor.digest)) has no record.json layer") }
        for (path, d) in layers {
            let target = staging.appendingPathComponent(path)
            try fm.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
            try client.pullBlob(ref, d, to: target)
        }
        guard let summary = RecordSummary.read(bundle: staging) else { throw RegistryError("\(ref): record.json is not a readable record") }
        if let m = manifestFingerprint, m != summary.fingerprint {
            throw RegistryError("\(ref) (\(descriptor.digest)): record.json has fingerprint \(summary.fingerprint), the manifest says \(m)")
        }
        if let e = expectFingerprint, e != summary.fingerprint {
            throw RegistryError("\(ref) (\(descriptor.digest)): record.json has fingerprint \(summary.fingerprint), expected \(e)")
        }
        let content = layers.map { ContentEntry(path: $0.0, sha256: String($0.1.digest.dropFirst("sha256:".count)), size: $0.1.size) }
        return PullResult(digest: descriptor.digest, fingerprint: summary.fingerprint, files: layers.map(\.0), content: content)
    }
}
