import JSON
import YAML

/// Turns a YAML node tree into a JSON value for the schema validator, recording every node's position by field path.
///
/// Recursion depth is bounded by the loader's nesting limit (64 by default), so hostile input cannot overflow the stack.
struct NodeConverter {
    var locations: FieldLocations

    init(file: String) { locations = FieldLocations(file: file) }

    mutating func convert(_ root: Node) -> JSONValue {
        convert(root, path: "", keyMark: nil)
    }

    private mutating func convert(_ node: Node, path: String, keyMark: Mark?) -> JSONValue {
        switch node.content {
        case .scalar(let s):
            let quoted = s.style != .plain
            locations.entries[path] = .init(value: node.mark, key: keyMark, quoted: quoted, text: s.text)
            switch s.value {
            case .null: return .null
            case .bool(let b): return .bool(b)
            case .int(let i): return .int(i)
            case .double(let d): return .double(d)
            case .string(let t): return .string(t)
            }
        case .sequence(let items):
            locations.entries[path] = .init(value: node.mark, key: keyMark, quoted: false, text: nil)
            var out: [JSONValue] = []
            out.reserveCapacity(items.count)
            for (i, item) in items.enumerated() {
                out.append(convert(item, path: "\(path)[\(i)]", keyMark: nil))
            }
            return .array(out)
        case .mapping(let entries):
            locations.entries[path] = .init(value: node.mark, key: keyMark, quoted: false, text: nil)
            var out: [(String, JSONValue)] = []
            out.reserveCapacity(entries.count)
            for e in entries {
                let k = Self.keyString(e.key)
                let childPath = path.isEmpty ? k : "\(path).\(k)"
                out.append((k, convert(e.value, path: childPath, keyMark: e.key.mark)))
            }
            return .object(out)
        }
    }

    /// A mapping key as the string JSON needs: scalars by their text, anything else by a placeholder that no schema
    /// property matches (so it is reported as an unknown field at its position).
    static func keyString(_ key: Node) -> String {
        if case .scalar(let s) = key.content { return s.text }
        return "<complex key>"
    }
}
