#if canImport(FoundationEssentials)
import FoundationEssentials  // `Data`, without the rest of Foundation
#else
import Foundation
#endif

/// Loads YAML streams into positioned `Node` trees, safely: size, depth, alias expansion and tags are limited, keys
/// must be unique, and every failure is a `YAMLError` with a position — hostile input cannot crash or stall it.
///
/// Built on libyaml's event API with an explicit stack; nothing in loading (or in dropping the result) recurses.
public struct YAMLLoader: Sendable {
    /// The limits applied to every load.
    public var limits: LoaderLimits

    /// Creates a loader with the given limits (by default the ones safe for manifests).
    public init(limits: LoaderLimits = .init()) {
        self.limits = limits
    }

    /// Loads every document of a UTF-8 (or BOM-marked UTF-16) byte stream; an empty stream gives `[]`.
    public func load(_ bytes: [UInt8]) throws(YAMLError) -> [Document] {
        try checkSize(bytes.count)
        if bytes.isEmpty { return [] }
        let limits = self.limits
        let result = bytes.withUnsafeBufferPointer { buffer in
            Result { () throws(YAMLError) -> [Document] in
                var builder = TreeBuilder(limits: limits, parser: try EventParser(input: buffer))
                return try builder.run()
            }
        }
        return try result.get()
    }

    /// Loads every document of a byte stream held in `Data` (e.g. a file's contents).
    public func load(_ data: Data) throws(YAMLError) -> [Document] {
        try checkSize(data.count)
        return try load([UInt8](data))
    }

    /// Loads every document of a string.
    public func load(_ text: String) throws(YAMLError) -> [Document] {
        try checkSize(text.utf8.count)
        return try load(Array(text.utf8))
    }

    /// Runs libyaml's parser alone over `bytes` (no tree, no limits other than size, no tag or key policy) and
    /// returns its first error, or nil when libyaml accepts the stream. Lets tools and tests tell syntax problems
    /// from policy ones.
    public static func syntaxError(in bytes: [UInt8]) -> YAMLError? {
        if bytes.isEmpty { return nil }
        return bytes.withUnsafeBufferPointer { buffer -> YAMLError? in
            do throws(YAMLError) {
                let parser = try EventParser(input: buffer)
                while true {
                    if case .streamEnd = try parser.next() { return nil }
                }
            } catch {
                return error
            }
        }
    }

    private func checkSize(_ count: Int) throws(YAMLError) {
        guard count <= limits.maxBytes else {
            throw YAMLError(
                kind: .tooLarge,
                message: "input is \(count) bytes, more than the limit of \(limits.maxBytes) bytes")
        }
    }
}

/// Turns the event stream into documents with an explicit stack of open collections.
struct TreeBuilder {
    /// An open sequence or mapping.
    struct Frame {
        var isMapping: Bool
        var isFlow: Bool
        var mark: Mark
        var tag: String?
        var anchor: String?
        var weight = 1
        var items: [Node] = []
        var entries: [MappingEntry] = []
        var pendingKey: Node?
        var keys: [KeyIdentity: Mark] = [:]
        var complexKeys: [(node: Node, mark: Mark)] = []
        /// For a flow collection inside a block one: its first line and the indentation its other lines need.
        var indentation: (line: Int, spaces: Int)?
    }

    /// How keys are compared: scalars by resolved value (plus a non-core tag), collections structurally.
    enum KeyIdentity: Hashable {
        case scalar(ScalarValue, tag: String?)
        case complex(hash: Int)
    }

    let limits: LoaderLimits
    let parser: EventParser
    var stack: [Frame] = []
    var anchors: [String: Node] = [:]
    var aliasExpansion = 0
    var documents: [Document] = []
    var documentMark = Mark(line: 1, column: 1)
    var root: Node?
    var previousDocumentEndedImplicitly = false
    var source: SourceText

    init(limits: LoaderLimits, parser: EventParser) {
        self.limits = limits
        self.parser = parser
        source = SourceText(parser.input)
    }

    mutating func run() throws(YAMLError) -> [Document] {
        while true {
            switch try parser.next() {
            case .streamStart:
                break
            case .streamEnd:
                return documents
            case .documentStart(let mark, let end, let hasDirectives):
                try checkDirectives(hasDirectives, at: mark, end: end)
                documentMark = mark
                root = nil
                anchors.removeAll(keepingCapacity: true)  // anchors are scoped to their document
            case .documentEnd(let implicit):
                let node = root ?? Node(mark: documentMark, tag: nil, anchor: nil,
                                        content: .scalar(Scalar(text: "", style: .plain, value: .null)), weight: 1)
                documents.append(Document(root: node, mark: documentMark, index: documents.count))
                root = nil
                previousDocumentEndedImplicitly = implicit
            case .alias(let name, let mark, let end):
                try alias(name, at: mark)
                try checkAfterNode(end: end)
            case .scalar(let text, let style, let tag, let anchor, let mark, let end):
                try checkScalar(text, style: style, hasProperties: tag != nil || anchor != nil, mark: mark, end: end)
                let value = try resolve(text, style: style, tag: tag, at: mark)
                let node = Node(mark: mark, tag: tag, anchor: anchor,
                                content: .scalar(Scalar(text: text, style: style, value: value)), weight: 1)
                try complete(node, at: mark)
                try checkAfterNode(end: end)
            case .sequenceStart(let tag, let anchor, let mark, let flow):
                try open(isMapping: false, isFlow: flow, tag: tag, anchor: anchor, at: mark)
            case .mappingStart(let tag, let anchor, let mark, let flow):
                try open(isMapping: true, isFlow: flow, tag: tag, anchor: anchor, at: mark)
            case .sequenceEnd(let end), .mappingEnd(let end):
                let frame = stack.removeLast()
                try checkClose(frame, end: end)
                let content: Node.Content = frame.isMapping ? .mapping(frame.entries) : .sequence(frame.items)
                let node = Node(mark: frame.mark, tag: frame.tag, anchor: frame.anchor, content: content,
                                weight: frame.weight)
                try complete(node, at: frame.mark)
                try checkAfterNode(end: end)
            }
        }
    }

    private mutating func open(isMapping: Bool, isFlow: Bool, tag: String?, anchor: String?,
                               at mark: Mark) throws(YAMLError) {
        if stack.count + 1 > limits.maxDepth {
            throw YAMLError(kind: .tooDeep,
                            message: "nesting is deeper than the limit of \(limits.maxDepth) sequences and mappings",
                            mark: mark)
        }
        if let tag {
            let expected = isMapping ? CoreTag.map : CoreTag.seq
            if tag != expected && tag != CoreTag.nonSpecific {
                if CoreTag.isCoreOrNonSpecific(tag) {
                    let kind = isMapping ? "mapping" : "sequence"
                    throw YAMLError(kind: .invalidTaggedValue,
                                    message: "tag '\(CoreTag.display(tag))' cannot be applied to a \(kind)", mark: mark)
                }
                try checkUnknownTag(tag, at: mark)
            }
        }
        var frame = Frame(isMapping: isMapping, isFlow: isFlow, mark: mark, tag: tag, anchor: anchor)
        if isFlow { frame.indentation = flowIndentation(startLine: mark.line) }
        stack.append(frame)
    }

    private mutating func alias(_ name: String, at mark: Mark) throws(YAMLError) {
        guard limits.allowAliases else {
            throw YAMLError(kind: .aliasRefused, message: "aliases are not allowed here ('*\(name)')", mark: mark)
        }
        guard let node = anchors[name] else {
            if let open = stack.last(where: { $0.anchor == name }) {
                throw YAMLError(kind: .unknownAlias, message: "alias '*\(name)' refers to a node that contains it",
                                mark: mark, note: .init(message: "anchor defined here", mark: open.mark))
            }
            throw YAMLError(kind: .unknownAlias, message: "unknown alias '*\(name)'", mark: mark)
        }
        aliasExpansion = saturatingAdd(aliasExpansion, node.weight)
        if aliasExpansion > limits.maxAliasExpansion {
            throw YAMLError(
                kind: .aliasBudget,
                message: "alias '*\(name)' expands the document past the limit of "
                    + "\(limits.maxAliasExpansion) aliased nodes",
                mark: mark, note: .init(message: "anchor defined here", mark: node.mark))
        }
        try complete(node, at: mark, registerAnchor: false)
    }

    /// Hands a finished node to its parent (or makes it the document root) and registers its anchor.
    private mutating func complete(_ node: Node, at mark: Mark, registerAnchor: Bool = true) throws(YAMLError) {
        if registerAnchor, let anchor = node.anchor { anchors[anchor] = node }
        let top = stack.count - 1
        guard top >= 0 else {
            root = node
            return
        }
        stack[top].weight = saturatingAdd(stack[top].weight, node.weight)
        if !stack[top].isMapping {
            stack[top].items.append(node)
        } else if let key = stack[top].pendingKey {
            stack[top].entries.append(MappingEntry(key: key, value: node))
            stack[top].pendingKey = nil
        } else {
            try checkDuplicate(node, at: mark, in: top)
            stack[top].pendingKey = node
        }
    }

    private mutating func checkDuplicate(_ key: Node, at mark: Mark, in top: Int) throws(YAMLError) {
        let first: Mark?
        if case .scalar(let s) = key.content {
            let identity = KeyIdentity.scalar(s.value, tag: key.identityTag)
            first = stack[top].keys[identity]
            if first == nil { stack[top].keys[identity] = mark }
        } else {
            let identity = KeyIdentity.complex(hash: key.structuralHash())
            if stack[top].keys[identity] != nil,
               let match = stack[top].complexKeys.first(where: { $0.node.isStructurallyEqual(to: key) }) {
                first = match.mark
            } else {
                first = nil
                stack[top].keys[identity] = mark
                stack[top].complexKeys.append((key, mark))
            }
        }
        if let first {
            throw YAMLError(kind: .duplicateKey, message: "duplicate key \(Self.describeKey(key))", mark: mark,
                            note: .init(message: "first defined here", mark: first))
        }
    }

    private static func describeKey(_ key: Node) -> String {
        guard case .scalar(let s) = key.content else { return "(a \(key.kindName))" }
        let text = s.text.count > 60 ? String(s.text.prefix(57)) + "..." : s.text
        return "'\(text)'"
    }

    private func resolve(_ text: String, style: ScalarStyle, tag: String?,
                         at mark: Mark) throws(YAMLError) -> ScalarValue {
        guard let tag else {
            return style == .plain ? CoreSchema.resolvePlain(text) : .string(text)
        }
        switch tag {
        case CoreTag.nonSpecific:
            return .string(text)
        case CoreTag.str, CoreTag.int, CoreTag.float, CoreTag.bool, CoreTag.null:
            guard let value = CoreSchema.resolve(text, tag: tag) else {
                throw YAMLError(kind: .invalidTaggedValue,
                                message: "'\(text)' is not a valid \(CoreTag.display(tag)) value", mark: mark)
            }
            return value
        case CoreTag.seq, CoreTag.map:
            throw YAMLError(kind: .invalidTaggedValue,
                            message: "tag '\(CoreTag.display(tag))' cannot be applied to a scalar", mark: mark)
        default:
            try checkUnknownTag(tag, at: mark)
            return .string(text)
        }
    }

    private func checkUnknownTag(_ tag: String, at mark: Mark) throws(YAMLError) {
        if limits.tagPolicy == .coreOnly {
            throw YAMLError(
                kind: .unsafeTag,
                message: "tag '\(CoreTag.display(tag))' is not allowed; only the YAML core schema tags "
                    + "(!!str, !!int, !!float, !!bool, !!null, !!seq, !!map) are",
                mark: mark)
        }
    }
}
