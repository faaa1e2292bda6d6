import Diagnostics
import JSONSchema
import YAML

/// Renders an instance path the way users read manifest fields: `spec.inputs.tensors[1].values`.
public func fieldPath(_ components: [PathComponent]) -> String {
    var out = ""
    for c in components {
        switch c {
        case .key(let k):
            if !out.isEmpty { out += "." }
            out += k
        case .index(let i):
            out += "[\(i)]"
        }
    }
    return out
}

/// Where each field of one manifest document was written: the value's position and, for mapping entries, the key's.
///
/// Every later stage (semantic checks, the worker's errors, plan reasons) names fields by path; this table turns a
/// path back into `file:line:column`, falling back to the nearest enclosing field that was written.
public struct FieldLocations: Sendable {
    /// What is known about one written node.
    public struct Entry: Sendable {
        /// Where the value starts.
        public var value: Mark
        /// Where its key starts, for mapping values.
        public var key: Mark?
        /// Whether the scalar was quoted (a quoted "8" is a string), for type hints.
        public var quoted: Bool
        /// The scalar's text as written, for hints.
        public var text: String?
    }

    /// The file these positions are in, as the user named it.
    public var file: String
    var entries: [String: Entry] = [:]

    /// Creates an empty table for a file.
    public init(file: String) { self.file = file }

    /// The entry written at exactly this path.
    public func entry(_ path: String) -> Entry? { entries[path] }

    /// The value's location, or the nearest written ancestor's.
    public func location(of path: String) -> SourceLocation {
        var p = path
        while true {
            if let e = entries[p] { return loc(e.value) }
            guard let parent = FieldLocations.parent(of: p) else { return SourceLocation(file: file, line: 1, column: 1) }
            p = parent
        }
    }

    /// The key's location (where a field was named), falling back to its value's or an ancestor's.
    public func keyLocation(of path: String) -> SourceLocation {
        if let e = entries[path], let k = e.key { return loc(k) }
        return location(of: path)
    }

    func loc(_ m: Mark) -> SourceLocation { SourceLocation(file: file, line: m.line, column: m.column) }

    /// `a.b[2].c` → `a.b[2]` → `a.b` → `a` → nil.
    static func parent(of path: String) -> String? {
        guard !path.isEmpty else { return nil }
        if path.hasSuffix("]"), let open = path.lastIndex(of: "[") { return String(path[..<open]) }
        if let dot = path.lastIndex(of: ".") { return String(path[..<dot]) }
        return ""
    }
}
