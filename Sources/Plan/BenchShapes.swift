import Bundles
import Foundation
import JSON

/// What `tsexport bench` measures and how it judges the answer: the shapes from the record or `--lengths`, the
/// manifest's folder for a relative `pretrained`, the whole request per bundle, and which shapes failed.
extension BenchRequests {
    /// What the caller looks up on disk for bench: whether a file or folder exists, and a file's sha256.
    public struct Disk: Sendable {
        /// Whether a file exists at the path.
        public var fileExists: @Sendable (String) -> Bool
        /// Whether a folder exists at the path.
        public var directoryExists: @Sendable (String) -> Bool
        /// The `sha256:<hex>` of a file (nil when unreadable).
        public var sha256: @Sendable (String) -> String?

        public init(fileExists: @escaping @Sendable (String) -> Bool, directoryExists: @escaping @Sendable (String) -> Bool,
                    sha256: @escaping @Sendable (String) -> String?) {
            self.fileExists = fileExists
            self.directoryExists = directoryExists
            self.sha256 = sha256
        }
    }

    /// What one bench run asks of every bundle.
    public struct Settings: Equatable, Sendable {
        /// `--lengths`: sequence lengths at the traced batch size (nil: the recorded shapes).
        public var lengths: [Int]?
        public var runs: Int
        public var warmup: Int
        public var threads: Int?
        /// Write bench.html into the bundle.
        public var report: Bool
        /// `--manifest-dir`.
        public var manifestDir: String?
        public var allowRemoteCode: Bool
        public var allowPickle: Bool

        public init(lengths: [Int]?, runs: Int, warmup: Int, threads: Int?, report: Bool, manifestDir: String?,
                    allowRemoteCode: Bool, allowPickle: Bool) {
            self.lengths = lengths
            self.runs = runs
            self.warmup = warmup
            self.threads = threads
            self.report = report
            self.manifestDir = manifestDir
            self.allowRemoteCode = allowRemoteCode
            self.allowPickle = allowPickle
        }
    }

    /// The bench report's file name inside the bundle.
    public static let reportFile = BundleContent.reportFile

    /// `8,16,32` → [8, 16, 32]; nil when a part is not a positive integer.
    public static func parseLengths(_ text: String) -> [Int]? {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        let values = parts.compactMap { Int($0) }
        guard !parts.isEmpty, values.count == parts.count, values.allSatisfy({ $0 > 0 }) else { return nil }
        return values
    }

    /// The shapes to measure: `[traced batch, L]` for each length, else the recorded cases' shapes (traced first),
    /// else the traced shape from `input_signature[0].shape[:2]`; nil when the record gives none of these.
    public static func shapes(record: JSONValue, lengths: [Int]?) -> [[Int]]? {
        var recorded: [[Int]] = []
        for c in record["cases"]?.arrayValue ?? [] {
            guard let s = c["shape"]?.arrayValue?.compactMap(\.intValue), s.count == 2, !recorded.contains(s) else { continue }
            recorded.append(s)
        }
        guard let lengths else {
            if !recorded.isEmpty { return recorded }
            guard let dims = record["input_signature"]?[0]?["shape"]?.arrayValue, dims.count >= 2,
                  let b = dims[0].intValue, let l = dims[1].intValue, b >= 1, l >= 1 else { return nil }
            return [[b, l]]
        }
        let batch = recorded.first?.first ?? record["input_signature"]?[0]?["shape"]?[0]?.intValue ?? 1
        var out: [[Int]] = []
        for l in lengths where !out.contains([batch, l]) { out.append([batch, l]) }
        return out
    }

    /// Why a record gives nothing to measure.
    public static let noShapeMessage = "the record gives no shape to measure (no cases, no input_signature[0].shape of two or more sizes); pass --lengths"

    /// The whole `bench` request for one bundle (without `id` and `op`), or why there is nothing to measure.
    public static func request(record: JSONValue, bundle: URL, settings: Settings, cwd: URL, disk: Disk) -> Result<[(String, JSONValue)], BenchRefusal> {
        guard let shapes = shapes(record: record, lengths: settings.lengths) else { return .failure(BenchRefusal(message: noShapeMessage)) }
        let eager = eagerDecision(
            record: record, manifestDir: manifestDirectory(record: record, bundle: bundle, flag: settings.manifestDir, cwd: cwd, disk: disk),
            allowRemoteCode: settings.allowRemoteCode, allowPickle: settings.allowPickle, directoryExists: disk.directoryExists)
        return .success(requestFields(
            bundle: bundle, shapes: shapes, runs: settings.runs, warmup: settings.warmup, threads: settings.threads,
            report: settings.report ? bundle.appendingPathComponent(reportFile) : nil, eager: eager))
    }

    /// The folder of the manifest a bundle was built from, for a relative `spec.model.pretrained`: `--manifest-dir`;
    /// the record's absolute `manifest_dir`; the folder of an absolute `manifest_file`; else `manifest_file` (relative
    /// to the folder apply ran in) tried against the current directory and against the output root inferred from
    /// the bundle's path and `spec.output.dir`, preferring a file whose sha256 is the recorded `manifest_sha256`.
    public static func manifestDirectory(record: JSONValue, bundle: URL, flag: String?, cwd: URL, disk: Disk) -> String? {
        if let flag { return absolute(flag, cwd: cwd).path }
        if let d = record["manifest_dir"]?.stringValue, d.hasPrefix("/") { return d }
        guard let file = record["manifest_file"]?.stringValue, !file.isEmpty else { return nil }
        if file.hasPrefix("/") { return URL(fileURLWithPath: file).deletingLastPathComponent().path }
        var roots = [cwd.standardizedFileURL]
        if let root = outputRoot(record: record, bundle: bundle) { roots.append(root) }
        let recordedSHA = record["manifest_sha256"]?.stringValue
        var fallback: String?
        for root in roots {
            let candidate = root.appendingPathComponent(file).standardizedFileURL
            guard disk.fileExists(candidate.path) else { continue }
            let dir = candidate.deletingLastPathComponent().path
            if let recordedSHA, disk.sha256(candidate.path) == recordedSHA { return dir }
            fallback = fallback ?? dir
        }
        return fallback
    }

    /// The output root a bundle was installed under: its path minus `spec.output.dir` (default `build/<name>`).
    public static func outputRoot(record: JSONValue, bundle: URL) -> URL? {
        let manifest = record["fingerprint_inputs"]?["manifest"]
        guard let relative = manifest?["spec"]?["output"]?["dir"]?.stringValue
                ?? manifest?["metadata"]?["name"]?.stringValue.map({ "build/\($0)" }) else { return nil }
        let tail = relative.split(separator: "/").map(String.init).filter { $0 != "." && !$0.isEmpty }
        let parts = bundle.standardizedFileURL.pathComponents
        guard !tail.isEmpty, parts.count > tail.count, Array(parts.suffix(tail.count)) == tail else { return nil }
        return URL(fileURLWithPath: NSString.path(withComponents: Array(parts.dropLast(tail.count))))
    }

    static func absolute(_ path: String, cwd: URL) -> URL {
        (path.hasPrefix("/") ? URL(fileURLWithPath: path) : cwd.appendingPathComponent(path)).standardizedFileURL
    }

    /// The shapes at which the artifact (model.pt or model.pt2) failed, as the worker's shape values: any fails the
    /// command.
    public static func failedShapes(_ result: JSONValue) -> [JSONValue] {
        (result["shapes"]?.arrayValue ?? []).filter { row in
            ["artifact", "aoti"].contains { row[$0]?["error"]?.stringValue != nil }
        }.map { $0["shape"] ?? .null }
    }
}

/// A bundle bench cannot measure, with the sentence for the user.
public struct BenchRefusal: Error, Equatable, Sendable {
    public var message: String

    public init(message: String) { self.message = message }
}
