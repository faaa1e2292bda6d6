import Foundation
import JSON

/// The bundle's file names.
public enum BundleLayout {
    /// The TorchScript program (always).
    public static let modelFile = "model.pt"
    /// The AOTInductor package (`formats: [aoti]`, alone or beside torchscript).
    public static let aotiFile = "model.pt2"
}

/// One axis of a verified envelope: the sizes the artifact was verified to serve.
public struct VerifiedAxis: Codable, Hashable, Sendable {
    /// The axis name (`batch`, `sequence`, ...).
    public var name: String
    /// The least verified size.
    public var min: Int
    /// The largest verified size.
    public var max: Int
    /// Whether the manifest declared this axis's range (else tsexport's default rule chose it).
    public var declared: Bool

    /// Creates an axis.
    public init(name: String, min: Int, max: Int, declared: Bool = true) {
        self.name = name
        self.min = min
        self.max = max
        self.declared = declared
    }

    /// The verified envelope a record states (`envelope.verified`, in the order of `envelope.axes`).
    public static func read(record: JSONValue) -> [VerifiedAxis] {
        let verified = record["envelope"]?["verified"]
        return (record["envelope"]?["axes"]?.arrayValue ?? []).compactMap { axis in
            guard let name = axis["name"]?.stringValue, let range = verified?[name]?.arrayValue, range.count == 2,
                  let lo = range[0].intValue, let hi = range[1].intValue else { return nil }
            return VerifiedAxis(name: name, min: lo, max: hi, declared: axis["declared"]?.boolValue ?? true)
        }
    }

    /// `batch 1–2 × sequence 1–16`.
    public static func summary(_ axes: [VerifiedAxis]) -> String {
        axes.map { $0.min == $0.max ? "\($0.name) \($0.min)" : "\($0.name) \($0.min)–\($0.max)" }.joined(separator: " × ")
    }
}

/// The parts of a bundle's `record.json` that planning needs: the bundles are the state, there is no central file.
public struct RecordSummary: Sendable {
    /// The fingerprint the bundle was built with.
    public var fingerprint: String
    /// The manifest document (normalised) it was built from.
    public var manifest: JSONValue
    /// Content hashes of the input files, by path.
    public var inputFiles: [String: String]
    /// Versions it was built with (tsexport, worker, python, torch, transformers).
    public var versions: [String: String]
    /// The sha256 of model.pt it records.
    public var modelSHA256: String?
    /// The envelope the bundle was verified over, axis by axis in the record's order (empty for bundles from before
    /// the envelope).
    public var verifiedEnvelope: [VerifiedAxis] = []
    /// The seconds AOTInductor took to compile model.pt2 in the last build (nil without model.pt2).
    public var aotiCompileSeconds: Double?
    /// Why the bundle on disk is not complete (a file missing, model.pt of another size than recorded); nil when it is.
    public var incomplete: String?
    /// What `build.json` says (content digest, files, deploys' files); nil when the bundle has none.
    public var build: BuildInfo?
    /// The deploys the record lists: kind, destination relative to the output root, and the request settings
    /// (`max_batch_size`, `variable_dims`, `format`, `version`) they were made with.
    public var deploys: [(kind: String, path: String, settings: JSONValue)] = []

    /// Creates a summary.
    public init(fingerprint: String, manifest: JSONValue, inputFiles: [String: String], versions: [String: String], modelSHA256: String?) {
        self.fingerprint = fingerprint
        self.manifest = manifest
        self.inputFiles = inputFiles
        self.versions = versions
        self.modelSHA256 = modelSHA256
    }

    /// The files every complete bundle holds.
    public static let bundleFiles = ["model.pt", "record.json", "sample_inputs.safetensors", "reference_outputs.safetensors"]

    /// The files a complete bundle holds besides model.pt2: model.pt only when TorchScript is among its formats.
    public static func files(torchscript: Bool) -> [String] {
        torchscript ? bundleFiles : bundleFiles.filter { $0 != BundleLayout.modelFile }
    }

    /// The record file's name inside a bundle.
    public static let fileName = "record.json"

    /// The record of a bundle with what build.json adds for tools that rebuild the eager model (`manifest_file`,
    /// `manifest_dir`, `manifest_sha256`: where it was built from); record keys win. Nil when record.json is unreadable.
    public static func recordWithBuild(bundle: URL) -> JSONValue? {
        guard let data = FileManager.default.contents(atPath: bundle.appendingPathComponent(fileName).path),
              case .object(var fields)? = try? JSONValue(parsing: data) else { return nil }
        if let b = FileManager.default.contents(atPath: bundle.appendingPathComponent(BundleContent.buildFile).path),
           let build = try? JSONValue(parsing: b) {
            for key in ["manifest_file", "manifest_dir", "manifest_sha256"] where !fields.contains(where: { $0.0 == key }) {
                if let v = build[key] { fields.append((key, v)) }
            }
        }
        return .object(fields)
    }

    /// Reads `<bundle>/record.json`; nil when absent or unreadable (the bundle is then rebuilt).
    public static func read(bundle: URL) -> RecordSummary? {
        guard let data = FileManager.default.contents(atPath: bundle.appendingPathComponent(fileName).path),
              let record = try? JSONValue(parsing: data), let fp = record["fingerprint"]?.stringValue
        else { return nil }
        func strings(_ v: JSONValue?) -> [String: String] {
            var out: [String: String] = [:]
            for (k, x) in v?.objectValue ?? [] { if let s = x.stringValue { out[k] = s } }
            return out
        }
        let inputs = record["fingerprint_inputs"]
        let deploys = (record["deployments"]?.arrayValue ?? []).compactMap { d -> (kind: String, path: String, settings: JSONValue)? in
            guard let k = d["kind"]?.stringValue, let p = d["path"]?.stringValue, let s = d["settings"] else { return nil }
            return (k, p, s)
        }
        var summary = RecordSummary(
            fingerprint: fp, manifest: inputs?["manifest"] ?? .null, inputFiles: strings(inputs?["files"]),
            versions: strings(record["versions"]), modelSHA256: record["model_sha256"]?.stringValue)
        summary.verifiedEnvelope = VerifiedAxis.read(record: record)
        summary.deploys = deploys
        summary.build = BuildInfo.read(bundle: bundle)
        // tsexport's own policy inputs (`policy.*`) are fingerprinted beside the versions; the record keeps them there
        for (k, v) in strings(inputs?["versions"]) where k.hasPrefix("policy.") { summary.versions[k] = v }
        // Cheap completeness checks (no hashing, so a no-op plan stays fast): every file present, model.pt the size
        // the record states.
        let fm = FileManager.default
        // Timings are build facts: build.json's `aoti_seconds`, not the record.
        summary.aotiCompileSeconds = FileManager.default.contents(atPath: bundle.appendingPathComponent(BundleContent.buildFile).path)
            .flatMap { try? JSONValue(parsing: $0) }?["aoti_seconds"]?["compile_seconds"]?.doubleValue
        // record.json says which artifact the bundle has: `artifact` is model.pt2 when formats was [aoti] alone
        var expected = files(torchscript: record["artifact"]?.stringValue != BundleLayout.aotiFile)
        expected += (record["artifacts"]?.arrayValue ?? []).compactMap { $0["file"]?.stringValue }
        if let aoti = record["aoti"]?["file"]?.stringValue { expected.append(aoti) }
        if let missing = expected.first(where: { !fm.fileExists(atPath: bundle.appendingPathComponent($0).path) }) {
            summary.incomplete = "\(missing) is missing from the bundle"
        } else if let bytes = record["model_bytes"]?.intValue,
                  let size = (try? fm.attributesOfItem(atPath: bundle.appendingPathComponent("model.pt").path))?[.size] as? Int, size != bytes {
            summary.incomplete = "model.pt has \(size) bytes, the record says \(bytes)"
        } else if summary.build == nil {
            summary.incomplete = "\(BundleContent.buildFile) is missing from the bundle"
        }
        return summary
    }
}
