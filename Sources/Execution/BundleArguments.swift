import Bundles
import Foundation
import JSON
import Manifest
import Plan

/// The bundle folders named to `verify` and `bench`, read before any Python starts: each folder's record (with
/// build.json), or why it is not a bundle.
public enum BundleArguments {
    /// One bundle folder and its parsed record.
    public struct Bundle {
        /// As the user wrote it.
        public var dir: String
        /// Absolute.
        public var url: URL
        /// record.json.
        public var record: JSONValue
    }

    /// Every folder's record, and a line (`DIR: error: ...`) for each that is not a bundle. A manifest file named
    /// instead gets the bundles it makes.
    public static func read(_ dirs: [String], cwd: URL) -> (bundles: [Bundle], problems: [String]) {
        var bundles: [Bundle] = []
        var problems: [String] = []
        for dir in dirs {
            let url = (dir.hasPrefix("/") ? URL(fileURLWithPath: dir) : cwd.appendingPathComponent(dir)).standardizedFileURL
            guard let record = RecordSummary.recordWithBuild(bundle: url) else {
                if let made = bundlesMadeBy(manifest: url, cwd: cwd) {
                    problems.append("\(dir): error: this is a manifest, not a bundle; \(made)")
                } else {
                    problems.append("\(dir): error: not a tsexport bundle: \(RecordSummary.fileName) is missing or unreadable")
                }
                continue
            }
            bundles.append(Bundle(dir: dir, url: url, record: record))
        }
        return (bundles, problems)
    }

    /// For a manifest file named where a bundle was expected: the bundle(s) it makes under `cwd` as output root
    /// (`it makes the bundle build/x ...`); nil when the path is not a readable manifest file.
    public static func bundlesMadeBy(manifest url: URL, cwd: URL) -> String? {
        var isDirectory: ObjCBool = false
        guard ["yaml", "yml"].contains(url.pathExtension.lowercased()),
              FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), !isDirectory.boolValue else { return nil }
        // Only to name the bundles: the manifest's permissions are not the question here.
        let options = ValidationOptions(outputRoot: cwd, allowRemoteCode: true, allowPickle: true)
        let manifests = ManifestLoader(options: options).validate(paths: [url.path]).manifests
        guard !manifests.isEmpty else { return "it has no valid manifest (see tsexport validate \(url.path))" }
        let bundles = manifests.map { m -> String in
            let b = Planner.bundleURL(m, root: cwd).path
            return b.hasPrefix(cwd.path + "/") ? String(b.dropFirst(cwd.path.count + 1)) : b
        }
        let names = bundles.joined(separator: " ")
        return "it makes \(bundles.count == 1 ? "the bundle" : "the bundles") \(names) (with the current directory as output root); name \(bundles.count == 1 ? "that folder" : "those folders") instead"
    }
}
