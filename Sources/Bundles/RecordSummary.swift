import Foundation
import JSON

/// The bundle's file names.
public enum BundleLayout {
    /// The TorchScript program (always).
    public static let modelFile = "model.pt"
    /// The AOTInductor package (`formats: [aoti]`, alone or beside torchscript).
    public static let aotiFile = "model.pt2"
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
    /// The seconds AOTInductor took to compile model.pt2 in the last build (nil without model.pt2).
    public var aotiCompileSeconds: Double?
    /// Why the bundle on disk is not complete (a file missing, model.pt of another size than recorded); nil when it is.
    public var incomplete: String?

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
        var summary = RecordSummary(
            fingerprint: fp, manifest: inputs?["manifest"] ?? .null, inputFiles: strings(inputs?["files"]),
            versions: strings(record["versions"]), modelSHA256: record["model_sha256"]?.stringValue)
        // tsexport's own policy inputs (`policy.*`) are fingerprinted beside the versions; the record keeps them there
        for (k, v) in strings(inputs?["versions"]) where k.hasPrefix("policy.") { summary.versions[k] = v }
        // Cheap completeness checks (no hashing, so a no-op plan stays fast): every file present, model.pt the size
        // the record states.
        let fm = FileManager.default
        summary.aotiCompileSeconds = record["aoti"]?["compile_seconds"]?.doubleValue
        // record.json says which artifact the bundle has: `artifact` is model.pt2 when formats was [aoti] alone
        var expected = files(torchscript: record["artifact"]?.stringValue != BundleLayout.aotiFile)
        expected += (record["artifacts"]?.arrayValue ?? []).compactMap { $0["file"]?.stringValue }
        if let aoti = record["aoti"]?["file"]?.stringValue { expected.append(aoti) }
        if let missing = expected.first(where: { !fm.fileExists(atPath: bundle.appendingPathComponent($0).path) }) {
            summary.incomplete = "\(missing) is missing from the bundle"
        } else if let bytes = record["model_bytes"]?.intValue,
                  let size = (try? fm.attributesOfItem(atPath: bundle.appendingPathComponent("model.pt").path))?[.size] as? Int, size != bytes {
            summary.incomplete = "model.pt has \(size) bytes, the record says \(bytes)"
        }
        return summary
    }
}
