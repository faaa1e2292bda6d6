/// A position in a YAML source, 1-based in both coordinates, as compilers and editors print it.
///
/// libyaml counts from zero; the loader adds one to each coordinate so that every `Mark` the module hands out can be
/// printed as `file:line:column` without further arithmetic.
public struct Mark: Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
    /// The 1-based line number.
    public var line: Int
    /// The 1-based column, counted in Unicode scalars (what libyaml counts), not bytes.
    public var column: Int

    /// Creates a mark from 1-based coordinates.
    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    /// Orders marks by line, then column, so diagnostics can be sorted in source order.
    public static func < (lhs: Mark, rhs: Mark) -> Bool {
        (lhs.line, lhs.column) < (rhs.line, rhs.column)
    }

    /// `line:column`, the form used in compiler-style diagnostics.
    public var description: String { "\(line):\(column)" }
}

/// How a scalar was written. Only plain scalars are resolved by the core schema; every other style is a string.
public enum ScalarStyle: Hashable, Sendable {
    /// Unquoted text, e.g. `8` or `hello`.
    case plain
    /// `'text'`.
    case singleQuoted
    /// `"text"`.
    case doubleQuoted
    /// A `|` block scalar.
    case literal
    /// A `>` block scalar.
    case folded
}

/// The typed value of a scalar, resolved per the YAML 1.2 core schema
/// (https://yaml.org/spec/1.2.2/#1032-tag-resolution): only plain scalars are resolved; any quoted/block scalar is a
/// string. An explicit core tag (`!!str`, `!!int`, ...) overrides resolution.
///
/// Decimal, octal and hexadecimal integers that do not fit in `Int` become `.double` (an error-free, possibly
/// lossy fallback) rather than strings, so that a number never silently changes type to text.
public enum ScalarValue: Hashable, Sendable {
    /// `~`, `null`, `Null`, `NULL` or empty (plain), or anything tagged `!!null`.
    case null
    /// `true`/`True`/`TRUE`/`false`/`False`/`FALSE` only; YAML 1.1 words such as `yes` or `on` stay strings.
    case bool(Bool)
    /// `[-+]?[0-9]+`, `0o[0-7]+` or `0x[0-9a-fA-F]+` that fits in `Int`.
    case int(Int)
    /// A core-schema float (including `.inf`, `-.inf`, `.nan`), or an integer too large for `Int`.
    case double(Double)
    /// Everything else, and every quoted or block scalar.
    case string(String)
}

/// A scalar as written (text and style) together with its resolved value.
public struct Scalar: Hashable, Sendable {
    /// The scalar's content after YAML processing (escapes, folding), without quotes.
    public var text: String
    /// How the scalar was written.
    public var style: ScalarStyle
    /// The resolved value (core schema, or the explicit core tag).
    public var value: ScalarValue

    /// Creates a scalar; the loader is the usual source of these.
    public init(text: String, style: ScalarStyle, value: ScalarValue) {
        self.text = text
        self.style = style
        self.value = value
    }
}

/// One `key: value` pair of a mapping. Mappings are arrays of entries, so source order is preserved.
public struct MappingEntry: Sendable {
    /// The key node (usually a scalar, but YAML allows any node).
    public var key: Node
    /// The value node.
    public var value: Node

    /// Creates an entry.
    public init(key: Node, value: Node) {
        self.key = key
        self.value = value
    }
}

/// A node of the YAML tree, with the position it came from so that every later check can point at the source.
///
/// `Node` is an immutable reference type so that an alias (`*a`) can share the anchored node instead of copying it:
/// an alias costs one reference, however large the subtree. Consequently a node reached through an alias carries
/// the anchored node's mark (where `&a` was defined). Deinitialisation is iterative, so dropping even a very deep
/// tree cannot overflow the stack.
public final class Node: @unchecked Sendable {
    // @unchecked: `content` is only mutated in `deinit` (and on nodes proven uniquely referenced), never while shared.

    /// What a node holds: a scalar, an ordered list of nodes, or an ordered list of key/value entries.
    public enum Content: Sendable {
        /// A scalar.
        case scalar(Scalar)
        /// A sequence, in source order.
        case sequence([Node])
        /// A mapping, in source order; keys are unique by resolved value (the loader rejects duplicates).
        case mapping([MappingEntry])
    }

    /// Where the node starts: its first character, or its first property (`&anchor`, `!tag`) when it has one.
    /// For a block mapping this is its first key; for a block sequence its first `-`.
    public let mark: Mark
    /// The explicit tag as resolved by libyaml (e.g. `tag:yaml.org,2002:str` for `!!str`, `!` for the non-specific
    /// tag), or nil when the node has none.
    public let tag: String?
    /// The node's anchor name (without `&`), or nil.
    public let anchor: String?
    /// The node's content.
    public private(set) var content: Content
    /// Number of nodes in the fully expanded subtree (aliases counted at their full size); the alias budget's unit.
    let weight: Int

    /// Creates a node. The loader builds nodes itself; this exists for tests and for callers that synthesize trees.
    public init(mark: Mark, tag: String? = nil, anchor: String? = nil, content: Content) {
        self.mark = mark
        self.tag = tag
        self.anchor = anchor
        self.content = content
        switch content {
        case .scalar: weight = 1
        case .sequence(let items): weight = items.reduce(1) { saturatingAdd($0, $1.weight) }
        case .mapping(let entries):
            weight = entries.reduce(1) { saturatingAdd(saturatingAdd($0, $1.key.weight), $1.value.weight) }
        }
    }

    init(mark: Mark, tag: String?, anchor: String?, content: Content, weight: Int) {
        self.mark = mark
        self.tag = tag
        self.anchor = anchor
        self.content = content
        self.weight = weight
    }

    deinit {
        // Dismantle iteratively: children that only we hold are emptied before they are released, so releasing a
        // node never recurses into its grandchildren.
        var pending: [Node] = []
        Node.detachChildren(of: &content, into: &pending)
        while var node = pending.popLast() {
            if isKnownUniquelyReferenced(&node) {
                Node.detachChildren(of: &node.content, into: &pending)
            }
        }
    }

    private static func detachChildren(of content: inout Content, into pending: inout [Node]) {
        switch content {
        case .scalar:
            return
        case .sequence(let items):
            if items.isEmpty { return }
            content = .sequence([])
            pending.append(contentsOf: items)
        case .mapping(let entries):
            if entries.isEmpty { return }
            content = .mapping([])
            pending.reserveCapacity(pending.count + 2 * entries.count)
            for entry in entries {
                pending.append(entry.key)
                pending.append(entry.value)
            }
        }
    }
}

extension Node {
    /// The scalar, if this node is one.
    public var scalar: Scalar? {
        if case .scalar(let s) = content { return s }
        return nil
    }

    /// The resolved scalar value, if this node is a scalar.
    public var scalarValue: ScalarValue? { scalar?.value }

    /// The string value, if this node is a scalar that resolved to a string (quoted, block, or plain non-typed text).
    public var stringValue: String? {
        if case .scalar(let s) = content, case .string(let text) = s.value { return text }
        return nil
    }

    /// True for a null scalar (`~`, `null`, empty, `!!null`), the usual "absent" value in manifests.
    public var isNull: Bool {
        if case .scalar(let s) = content, case .null = s.value { return true }
        return false
    }

    /// The items, if this node is a sequence.
    public var sequence: [Node]? {
        if case .sequence(let items) = content { return items }
        return nil
    }

    /// The entries in source order, if this node is a mapping.
    public var mapping: [MappingEntry]? {
        if case .mapping(let entries) = content { return entries }
        return nil
    }

    /// The value for the string key `key` in a mapping (keys that resolved to other types never match), or nil when
    /// this is not a mapping or has no such key. Linear in the mapping's size; manifests' mappings are small.
    public func mappingValue(forKey key: String) -> Node? {
        mappingEntry(forKey: key)?.value
    }

    /// The entry (key node included, for its position) for the string key `key`, or nil.
    public func mappingEntry(forKey key: String) -> MappingEntry? {
        guard case .mapping(let entries) = content else { return nil }
        for entry in entries {
            if case .scalar(let s) = entry.key.content, case .string(let text) = s.value, text == key {
                return entry
            }
        }
        return nil
    }

    /// "scalar", "sequence" or "mapping" (or "null" for a null scalar), for messages like "expected a mapping, found a
    /// sequence".
    public var kindName: String {
        switch content {
        case .scalar(let s): if case .null = s.value { return "null" } else { return "scalar" }
        case .sequence: return "sequence"
        case .mapping: return "mapping"
        }
    }

    /// Structural equality, ignoring positions, anchors and scalar style: scalars compare by resolved value (plus
    /// any tag outside the core schema), collections item by item in order. Iterative, so safe on any depth.
    /// This is the equality the loader uses to detect duplicate keys.
    public func isStructurallyEqual(to other: Node) -> Bool {
        var pairs: [(Node, Node)] = [(self, other)]
        while let (a, b) = pairs.popLast() {
            if a === b { continue }
            switch (a.content, b.content) {
            case (.scalar(let x), .scalar(let y)):
                guard x.value == y.value, a.identityTag == b.identityTag else { return false }
            case (.sequence(let xs), .sequence(let ys)):
                guard xs.count == ys.count, a.identityTag == b.identityTag else { return false }
                for i in xs.indices { pairs.append((xs[i], ys[i])) }
            case (.mapping(let xs), .mapping(let ys)):
                guard xs.count == ys.count, a.identityTag == b.identityTag else { return false }
                for i in xs.indices {
                    pairs.append((xs[i].key, ys[i].key))
                    pairs.append((xs[i].value, ys[i].value))
                }
            default:
                return false
            }
        }
        return true
    }

    /// A hash consistent with `isStructurallyEqual(to:)`. Iterative.
    func structuralHash() -> Int {
        var hasher = Hasher()
        var pending: [Node] = [self]
        while let node = pending.popLast() {
            hasher.combine(node.identityTag)
            switch node.content {
            case .scalar(let s):
                hasher.combine(0)
                hasher.combine(s.value)
            case .sequence(let items):
                hasher.combine(1)
                hasher.combine(items.count)
                pending.append(contentsOf: items.reversed())
            case .mapping(let entries):
                hasher.combine(2)
                hasher.combine(entries.count)
                for entry in entries.reversed() {
                    pending.append(entry.value)
                    pending.append(entry.key)
                }
            }
        }
        return hasher.finalize()
    }

    /// The tag that takes part in identity: core-schema tags are already reflected in the value (or the kind), so
    /// only tags outside the core schema (kept under `.ignoreUnknown`) distinguish otherwise equal nodes.
    var identityTag: String? {
        guard let tag, !CoreTag.isCoreOrNonSpecific(tag) else { return nil }
        return tag
    }
}

/// `a + b`, clamped at `Int.max`: node weights must not wrap even when a caller lifts the alias budget.
@inline(__always)
func saturatingAdd(_ a: Int, _ b: Int) -> Int {
    let (sum, overflow) = a.addingReportingOverflow(b)
    return overflow ? .max : sum
}

/// One YAML document of a stream.
public struct Document: Sendable {
    /// The document's root node; an empty document (`---` and nothing else) has a null scalar root.
    public var root: Node
    /// Where the document starts (its `---`, or its first token when the start is implicit).
    public var mark: Mark
    /// The 0-based index of the document in its stream.
    public var index: Int

    /// Creates a document.
    public init(root: Node, mark: Mark, index: Int) {
        self.root = root
        self.mark = mark
        self.index = index
    }
}
