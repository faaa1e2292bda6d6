import Foundation
import JSONSchema

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

    /// The record file's name inside a bundle.
    public static let fileName = "record.json"

    /// Reads `<bundle>/record.json`; nil when absent or unreadable (the bundle is then rebuilt).
    public static func read(bundle: URL) -> RecordSummary? {
        guard let data = FileManager.default.contents(atPath: bundle.appendingPathComponent(fileName).path),
              let v = try? JSONValue(parsing: data), case .object(let o) = v
        else { return nil }
        func member(_ k: String, _ o: [(String, JSONValue)]) -> JSONValue? { o.first { $0.0 == k }?.1 }
        func strings(_ v: JSONValue?) -> [String: String] {
            guard case .object(let o)? = v else { return [:] }
            var out: [String: String] = [:]
            for (k, x) in o { if case .string(let s) = x { out[k] = s } }
            return out
        }
        guard case .string(let fp)? = member("fingerprint", o) else { return nil }
        var manifest: JSONValue = .null
        var files: [String: String] = [:]
        if case .object(let fo)? = member("fingerprint_inputs", o) {
            manifest = member("manifest", fo) ?? .null
            files = strings(member("files", fo))
        }
        var sha: String?
        if case .string(let s)? = member("model_sha256", o) { sha = s }
        var summary = RecordSummary(fingerprint: fp, manifest: manifest, inputFiles: files, versions: strings(member("versions", o)), modelSHA256: sha)
        // Cheap completeness checks (no hashing, so a no-op plan stays fast): every file present, model.pt the size
        // the record states.
        let fm = FileManager.default
        var expected = bundleFiles
        if case .array(let artifacts)? = member("artifacts", o) {
            for a in artifacts { if case .object(let ao) = a, case .string(let f)? = member("file", ao) { expected.append(f) } }
        }
        if let missing = expected.first(where: { !fm.fileExists(atPath: bundle.appendingPathComponent($0).path) }) {
            summary.incomplete = "\(missing) is missing from the bundle"
        } else if case .int(let bytes)? = member("model_bytes", o),
                  let size = (try? fm.attributesOfItem(atPath: bundle.appendingPathComponent("model.pt").path))?[.size] as? Int, size != bytes {
            summary.incomplete = "model.pt has \(size) bytes, the record says \(bytes)"
        }
        return summary
    }
}
