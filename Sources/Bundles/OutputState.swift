import Foundation
import JSON

/// Which manifest made each bundle in an output root, so that a bundle whose manifest is gone can be found:
/// `<root>/.tsexport/state.json`, written atomically by the holder of the output root's lock.
public struct OutputState: Sendable, Equatable {
    /// One bundle tsexport installed, and the deploys it installed that are not removed yet.
    public struct Owner: Sendable, Equatable {
        /// metadata.name of the manifest.
        public var name: String
        /// The manifest file, absolute. On disk it is written relative to the output root (see `manifestKey`).
        public var manifestFile: String
        /// 0-based index of the document in the file.
        public var documentIndex: Int
        /// The deploy destinations it installed, relative to the output root: those its manifest declares, and those
        /// it no longer declares until they are removed.
        public var deploys: [String]
        /// The files each deploy wrote (by destination; paths relative to the output root), so that a deploy can be
        /// removed when its bundle (whose build.json lists them too) is gone.
        public var deployFiles: [String: [ContentEntry]]

        /// Creates an owner.
        public init(name: String, manifestFile: String, documentIndex: Int, deploys: [String], deployFiles: [String: [ContentEntry]] = [:]) {
            self.name = name
            self.manifestFile = manifestFile
            self.documentIndex = documentIndex
            self.deploys = deploys
            self.deployFiles = deployFiles
        }

        /// Whether this is the same manifest document (name, file and index), whatever its deploys.
        public func sameDocument(_ other: Owner) -> Bool {
            name == other.name && manifestFile == other.manifestFile && documentIndex == other.documentIndex
        }
    }

    /// Owners by bundle folder, relative to the output root.
    public var bundles: [String: Owner] = [:]

    /// The format name written in the file.
    public static let format = "tsexport-state/1"

    /// Creates an empty state.
    public init() {}

    /// The state file of an output root.
    public static func file(root: URL) -> URL { BundleStore(root: root).stateDir.appendingPathComponent("state.json") }

    /// Reads the state of an output root; empty when there is none. The file is untrusted like any input: its paths
    /// are checked where they are used (`isSafeRelative`).
    public static func read(root: URL) -> OutputState {
        var s = OutputState()
        guard let data = FileManager.default.contents(atPath: file(root: root).path), let v = try? JSONValue(parsing: data),
              v["format"]?.stringValue == format else { return s }
        for (bundle, o) in v["bundles"]?.objectValue ?? [] {
            guard let name = o["name"]?.stringValue, let file = o["manifest_file"]?.stringValue else { continue }
            var files: [String: [ContentEntry]] = [:]
            for (dest, list) in o["deploy_files"]?.objectValue ?? [] { files[dest] = (list.arrayValue ?? []).compactMap(ContentEntry.init(json:)) }
            s.bundles[bundle] = Owner(name: name, manifestFile: manifestPath(key: file, root: root), documentIndex: o["document_index"]?.intValue ?? 0,
                                      deploys: (o["deploys"]?.arrayValue ?? []).compactMap(\.stringValue), deployFiles: files)
        }
        return s
    }

    /// Writes the state (a temporary file renamed over the old one). Only the lock's holder calls this.
    public func write(root: URL) throws {
        let bundles = JSONValue.object(self.bundles.sorted { $0.key < $1.key }.map { k, o in
            var fields: [(String, JSONValue)] = [("name", .string(o.name)), ("manifest_file", .string(Self.manifestKey(file: o.manifestFile, root: root))),
                                                 ("document_index", .int(o.documentIndex)), ("deploys", .array(o.deploys.map(JSONValue.string)))]
            let files = o.deployFiles.filter { o.deploys.contains($0.key) }.sorted { $0.key < $1.key }
            if !files.isEmpty { fields.append(("deploy_files", .object(files.map { ($0.key, .array($0.value.map(\.json))) }))) }
            return (k, .object(fields))
        })
        let text = JSONValue.object([("format", .string(Self.format)), ("bundles", bundles)]).serialized(pretty: true) + "\n"
        try FileManager.default.createDirectory(at: BundleStore(root: root).stateDir, withIntermediateDirectories: true)
        try AtomicFile.write(Data(text.utf8), to: Self.file(root: root))
    }

    /// Records `owner` for a bundle: the deploys the previous owner installed that the new one does not declare stay
    /// owned (with their files) until they are removed, so that an orphaned deploy is never forgotten.
    public mutating func claim(_ bundle: String, _ owner: Owner) {
        var owner = owner
        if let old = bundles[bundle] {
            for d in old.deploys where !owner.deploys.contains(d) {
                owner.deploys.append(d)
                if owner.deployFiles[d] == nil, let f = old.deployFiles[d] { owner.deployFiles[d] = f }
            }
        }
        bundles[bundle] = owner
    }

    /// How a manifest file is keyed on disk: relative to the output root (with `..` when it lies outside), so that a
    /// checkout moved with its output root keeps its owners.
    public static func manifestKey(file: String, root: URL) -> String {
        let a = root.standardizedFileURL.pathComponents, b = URL(fileURLWithPath: file).standardizedFileURL.pathComponents
        var common = 0
        while common < a.count, common < b.count, a[common] == b[common] { common += 1 }
        let up = Array(repeating: "..", count: a.count - common)
        return (up + b[common...]).joined(separator: "/")
    }

    /// The absolute manifest file for a key (`manifestKey`); an absolute key is kept as it is.
    public static func manifestPath(key: String, root: URL) -> String {
        key.hasPrefix("/") ? URL(fileURLWithPath: key).standardizedFileURL.path : root.appendingPathComponent(key).standardizedFileURL.path
    }

    /// Whether a path read from a state or build file may name something under the output root: relative, not empty,
    /// no `.`, `..` or empty component, and not inside the root's `.tsexport` folder.
    public static func isSafeRelative(_ rel: String) -> Bool {
        guard !rel.isEmpty, !rel.hasPrefix("/"), !rel.contains("\0") else { return false }
        let parts = rel.split(separator: "/", omittingEmptySubsequences: false)
        return !parts.contains { $0.isEmpty || $0 == "." || $0 == ".." } && parts.first != ".tsexport"
    }

    /// A path relative to the root, or nil when it is not under it.
    public static func relative(_ path: String, root: URL) -> String? {
        let base = root.standardizedFileURL.path
        let p = URL(fileURLWithPath: path).standardizedFileURL.path
        guard p.hasPrefix(base + "/") else { return nil }
        return String(p.dropFirst(base.count + 1))
    }
}
