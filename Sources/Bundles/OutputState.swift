import Foundation
import JSON

/// Which manifest made each bundle in an output root, so that a bundle whose manifest is gone can be found:
/// `<root>/.tsexport/state.json`, written atomically by the holder of the output root's lock.
public struct OutputState: Sendable, Equatable {
    /// One bundle tsexport installed.
    public struct Owner: Sendable, Equatable {
        /// metadata.name of the manifest.
        public var name: String
        /// The manifest file (absolute).
        public var manifestFile: String
        /// 0-based index of the document in the file.
        public var documentIndex: Int
        /// The deploy destinations it installed, relative to the output root.
        public var deploys: [String]

        /// Creates an owner.
        public init(name: String, manifestFile: String, documentIndex: Int, deploys: [String]) {
            self.name = name
            self.manifestFile = manifestFile
            self.documentIndex = documentIndex
            self.deploys = deploys
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

    /// Reads the state of an output root; empty when there is none.
    public static func read(root: URL) -> OutputState {
        var s = OutputState()
        guard let data = FileManager.default.contents(atPath: file(root: root).path), let v = try? JSONValue(parsing: data),
              v["format"]?.stringValue == format else { return s }
        for (bundle, o) in v["bundles"]?.objectValue ?? [] {
            guard let name = o["name"]?.stringValue, let file = o["manifest_file"]?.stringValue else { continue }
            s.bundles[bundle] = Owner(name: name, manifestFile: file, documentIndex: o["document_index"]?.intValue ?? 0,
                                      deploys: (o["deploys"]?.arrayValue ?? []).compactMap(\.stringValue))
        }
        return s
    }

    /// Writes the state (a temporary file renamed over the old one). Only the lock's holder calls this.
    public func write(root: URL) throws {
        let bundles = JSONValue.object(self.bundles.sorted { $0.key < $1.key }.map { k, o in
            (k, .object([("name", .string(o.name)), ("manifest_file", .string(o.manifestFile)),
                         ("document_index", .int(o.documentIndex)), ("deploys", .array(o.deploys.map(JSONValue.string)))]))
        })
        let text = JSONValue.object([("format", .string(Self.format)), ("bundles", bundles)]).serialized(pretty: true) + "\n"
        try FileManager.default.createDirectory(at: BundleStore(root: root).stateDir, withIntermediateDirectories: true)
        try AtomicFile.write(Data(text.utf8), to: Self.file(root: root))
    }

    /// A path relative to the root, or nil when it is not under it.
    public static func relative(_ path: String, root: URL) -> String? {
        let base = root.standardizedFileURL.path
        let p = URL(fileURLWithPath: path).standardizedFileURL.path
        guard p.hasPrefix(base + "/") else { return nil }
        return String(p.dropFirst(base.count + 1))
    }
}
