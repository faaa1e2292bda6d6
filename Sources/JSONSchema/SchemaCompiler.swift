import Foundation
import JSON

/// A schema location: a loaded document and a JSON pointer into it.
struct SchemaLocation: Hashable {
    var document: Int
    var pointer: String
}

/// Indexes schema documents (`$id`, `$anchor`, `$dynamicAnchor`) and compiles schema objects into `SchemaNode`s,
/// resolving every `$ref`/`$dynamicRef` to a node index up front. Used once per `JSONSchemaValidator.init`.
struct SchemaCompiler {
    /// Base URI given to a root schema without `$id`.
    static let defaultBaseURI = "urn:tsexport:jsonschema:root"

    private var documents: [JSONValue] = []
    /// Resource URI (no fragment) → its root location.
    private var resourceRoots: [String: SchemaLocation] = [:]
    /// "uri#name" → location, for `$anchor` and `$dynamicAnchor`.
    private var anchors: [String: SchemaLocation] = [:]
    /// Resource URI → `$dynamicAnchor` name → location.
    private var dynamicAnchors: [String: [String: SchemaLocation]] = [:]
    /// Base URI (= resource URI) at each schema location reached by the keyword-aware walk.
    private var baseAt: [SchemaLocation: String] = [:]
    /// Documents that can be loaded on demand, by absolute URI.
    private var available: [String: JSONValue]

    private var nodes: [SchemaNode] = []
    private var nodeAt: [SchemaLocation: Int] = [:]
    private var resourceIndex: [String: Int] = [:]
    private var resources: [ResourceInfo] = []
    private var resourcesWithAnchorsCompiled = 0
    private var usesUnevaluated = false

    /// URIs of caller-supplied registry documents not loaded yet (all are indexed if a `$ref` misses, in case one
    /// declares the wanted URI as its `$id` rather than being registered under it).
    private var unloadedRegistryURIs: [String]

    init(registry: [String: JSONValue]) {
        var available = Metaschemas.documents
        var uris: [String] = []
        for (uri, doc) in registry.sorted(by: { $0.key < $1.key }) {
            let key = URIReference(uri).textWithoutFragment
            available[key] = doc
            uris.append(key)
        }
        self.available = available
        self.unloadedRegistryURIs = uris
    }

    // MARK: Entry point

    mutating func compile(root schema: JSONValue) throws -> CompiledProgram {
        let rootDoc = load(schema, uri: SchemaCompiler.defaultBaseURI)
        let rootIndex = try compileNode(at: SchemaLocation(document: rootDoc, pointer: ""))
        try compilePendingDynamicAnchors()
        return CompiledProgram(nodes: nodes, resources: resources, root: nodes[rootIndex], tracksAnnotations: usesUnevaluated)
    }

    // MARK: Indexing

    @discardableResult
    private mutating func load(_ document: JSONValue, uri: String) -> Int {
        let doc = documents.count
        documents.append(document)
        let loc = SchemaLocation(document: doc, pointer: "")
        if resourceRoots[uri] == nil { resourceRoots[uri] = loc }
        walk(document, at: loc, base: uri)
        return doc
    }

    /// Keyword-aware walk: only descends into keywords whose values are schemas, so an `$id` inside `enum`/`const`
    /// or a property that happens to be named `$ref` is never mistaken for an identifier.
    private mutating func walk(_ value: JSONValue, at loc: SchemaLocation, base inheritedBase: String) {
        guard case .object = value else {
            if case .bool = value { baseAt[loc] = inheritedBase }
            return
        }
        var base = inheritedBase
        if case .string(let id)? = value["$id"] {
            base = URIReference(id).resolved(against: URIReference(inheritedBase)).textWithoutFragment
            if resourceRoots[base] == nil { resourceRoots[base] = loc }
        }
        if baseAt[loc] != nil { return }   // already indexed (e.g. walked again on demand)
        baseAt[loc] = base
        if case .string(let name)? = value["$anchor"] { anchors[base + "#" + name] = loc }
        if case .string(let name)? = value["$dynamicAnchor"] {
            if anchors[base + "#" + name] == nil { anchors[base + "#" + name] = loc }
            dynamicAnchors[base, default: [:]][name] = loc
        }
        for key in SchemaCompiler.singleSchemaKeywords {
            if let sub = value[key] { walk(sub, at: child(loc, key), base: base) }
        }
        for key in SchemaCompiler.schemaMapKeywords {
            if case .object(let members)? = value[key] {
                let parent = child(loc, key)
                for (name, sub) in members { walk(sub, at: child(parent, name), base: base) }
            }
        }
        for key in SchemaCompiler.schemaArrayKeywords {
            if case .array(let items)? = value[key] {
                let parent = child(loc, key)
                for (i, sub) in items.enumerated() { walk(sub, at: child(parent, String(i)), base: base) }
            }
        }
    }

    static let singleSchemaKeywords = ["additionalProperties", "unevaluatedProperties", "items", "contains",
                                       "propertyNames", "not", "if", "then", "else", "unevaluatedItems", "contentSchema"]
    static let schemaMapKeywords = ["properties", "patternProperties", "$defs", "definitions", "dependentSchemas"]
    static let schemaArrayKeywords = ["allOf", "anyOf", "oneOf", "prefixItems"]

    private func child(_ loc: SchemaLocation, _ token: String) -> SchemaLocation {
        SchemaLocation(document: loc.document, pointer: JSONPointer.child(loc.pointer, token))
    }

    /// Base URI at a location; for locations the walk did not reach (a `$ref` into an unknown keyword), the base of
    /// the nearest indexed ancestor, after indexing the target subtree with it.
    private mutating func base(at loc: SchemaLocation, value: JSONValue) -> String {
        if let b = baseAt[loc] { return b }
        var pointer = loc.pointer
        var inherited = SchemaCompiler.defaultBaseURI
        while let slash = pointer.lastIndex(of: "/") {
            pointer = String(pointer[..<slash])
            if let b = baseAt[SchemaLocation(document: loc.document, pointer: pointer)] { inherited = b; break }
        }
        walk(value, at: loc, base: inherited)
        return baseAt[loc] ?? inherited
    }

    // MARK: Reference resolution

    private mutating func resolve(_ reference: String, base: String, from loc: SchemaLocation) throws -> (SchemaLocation, fragment: String) {
        let uri = URIReference(reference).resolved(against: URIReference(base))
        let documentURI = uri.textWithoutFragment
        let fragment = percentDecoded(uri.fragment ?? "")
        var root = resourceRoots[documentURI]
        if root == nil, let doc = available[documentURI] {
            available[documentURI] = nil
            load(doc, uri: documentURI)
            root = resourceRoots[documentURI]
        }
        if root == nil {
            for uri in unloadedRegistryURIs {
                if let doc = available[uri] { available[uri] = nil; load(doc, uri: uri) }
            }
            unloadedRegistryURIs = []
            root = resourceRoots[documentURI]
        }
        guard let root else { throw unresolved(reference, loc) }
        if fragment.isEmpty { return (root, fragment) }
        if fragment.hasPrefix("/") {
            let target = SchemaLocation(document: root.document, pointer: root.pointer + fragment)
            guard let tokens = JSONPointer.tokens(target.pointer),
                  JSONPointer.resolve(tokens, in: documents[target.document]) != nil else { throw unresolved(reference, loc) }
            return (target, fragment)
        }
        guard let target = anchors[documentURI + "#" + fragment] else { throw unresolved(reference, loc) }
        return (target, fragment)
    }

    private func unresolved(_ reference: String, _ loc: SchemaLocation) -> SchemaCompileError {
        SchemaCompileError(message: "unresolved $ref '\(reference)'", location: describe(loc))
    }

    private func describe(_ loc: SchemaLocation) -> String {
        (baseAt[loc] ?? "") + "#" + loc.pointer
    }

    // MARK: Compilation

    private mutating func resourceID(_ uri: String) -> Int {
        if let i = resourceIndex[uri] { return i }
        let i = resources.count
        resources.append(ResourceInfo(uri: uri))
        resourceIndex[uri] = i
        return i
    }

    /// Compiles the dynamic anchors of every resource that has compiled nodes, until no new resources appear.
    private mutating func compilePendingDynamicAnchors() throws {
        while resourcesWithAnchorsCompiled < resources.count {
            let r = resourcesWithAnchorsCompiled
            resourcesWithAnchorsCompiled += 1
            let uri = resources[r].uri
            for (name, loc) in dynamicAnchors[uri] ?? [:] {
                let idx = try compileNode(at: loc)
                resources[r].dynamicAnchors[name] = idx
            }
        }
    }

    private mutating func compileNode(at loc: SchemaLocation) throws -> Int {
        if let existing = nodeAt[loc] { return existing }
        guard let tokens = JSONPointer.tokens(loc.pointer),
              let value = JSONPointer.resolve(tokens, in: documents[loc.document]) else {
            throw SchemaCompileError(message: "no schema at this location", location: describe(loc))
        }
        let base = base(at: loc, value: value)
        let node = SchemaNode(index: nodes.count, resource: resourceID(base), location: base + "#" + loc.pointer)
        nodes.append(node)
        nodeAt[loc] = node.index
        try fill(node, from: value, at: loc, base: base)
        return node.index
    }

    private mutating func sub(_ loc: SchemaLocation, _ tokens: String...) throws -> SchemaNode {
        var l = loc
        for t in tokens { l = child(l, t) }
        return nodes[try compileNode(at: l)]
    }

    private func invalid(_ message: String, _ loc: SchemaLocation) -> SchemaCompileError {
        SchemaCompileError(message: message, location: describe(loc))
    }

    private func nonNegativeInt(_ value: JSONValue, _ keyword: String, _ loc: SchemaLocation) throws -> Int {
        switch value {
        case .int(let i) where i >= 0: return i
        case .double(let d) where JSONValue.isIntegral(d) && d >= 0 && d < 9e18: return Int(d)
        default: throw invalid("'\(keyword)' must be a non-negative integer", loc)
        }
    }

    private func number(_ value: JSONValue, _ keyword: String, _ loc: SchemaLocation) throws -> JSONValue {
        switch value {
        case .int, .double: return value
        default: throw invalid("'\(keyword)' must be a number", loc)
        }
    }

    private func stringArray(_ value: JSONValue, _ keyword: String, _ loc: SchemaLocation) throws -> [String] {
        guard case .array(let items) = value else { throw invalid("'\(keyword)' must be an array of strings", loc) }
        return try items.map {
            guard case .string(let s) = $0 else { throw invalid("'\(keyword)' must be an array of strings", loc) }
            return s
        }
    }

    private mutating func fill(_ node: SchemaNode, from value: JSONValue, at loc: SchemaLocation, base: String) throws {
        switch value {
        case .bool(let b):
            node.boolean = b
            return
        case .object:
            break
        default:
            throw invalid("a schema must be an object or a boolean", loc)
        }
        var checks: [Check] = []

        // Assertions.
        if let t = value["type"] {
            var names: [String] = []
            switch t {
            case .string(let s): names = [s]
            case .array: names = try stringArray(t, "type", loc)
            default: throw invalid("'type' must be a string or an array of strings", loc)
            }
            var mask = TypeMask()
            for n in names {
                guard let m = TypeMask.named(n) else { throw invalid("unknown type '\(n)'", loc) }
                mask.insert(m)
            }
            checks.append(.type(mask, names: names))
        }
        if let c = value["const"] { checks.append(.const(c)) }
        if let e = value["enum"] {
            guard case .array(let options) = e else { throw invalid("'enum' must be an array", loc) }
            checks.append(.enumeration(options))
        }
        if let r = value["required"] { checks.append(.required(try stringArray(r, "required", loc))) }
        if case .object(let deps)? = value["dependentRequired"] {
            checks.append(.dependentRequired(try deps.map { ($0.0, try stringArray($0.1, "dependentRequired", loc)) }))
        }
        if let v = value["minProperties"] { checks.append(.minProperties(try nonNegativeInt(v, "minProperties", loc))) }
        if let v = value["maxProperties"] { checks.append(.maxProperties(try nonNegativeInt(v, "maxProperties", loc))) }
        if let v = value["minLength"] { checks.append(.minLength(try nonNegativeInt(v, "minLength", loc))) }
        if let v = value["maxLength"] { checks.append(.maxLength(try nonNegativeInt(v, "maxLength", loc))) }
        if let p = value["pattern"] {
            guard case .string(let s) = p else { throw invalid("'pattern' must be a string", loc) }
            checks.append(.pattern(try pattern(s, loc)))
        }
        if let v = value["minimum"] { checks.append(.minimum(try number(v, "minimum", loc))) }
        if let v = value["exclusiveMinimum"] { checks.append(.exclusiveMinimum(try number(v, "exclusiveMinimum", loc))) }
        if let v = value["maximum"] { checks.append(.maximum(try number(v, "maximum", loc))) }
        if let v = value["exclusiveMaximum"] { checks.append(.exclusiveMaximum(try number(v, "exclusiveMaximum", loc))) }
        if let v = value["multipleOf"] {
            let n = try number(v, "multipleOf", loc)
            guard let d = n.numberValue, d > 0 else { throw invalid("'multipleOf' must be greater than 0", loc) }
            checks.append(.multipleOf(n))
        }
        if let v = value["minItems"] { checks.append(.minItems(try nonNegativeInt(v, "minItems", loc))) }
        if let v = value["maxItems"] { checks.append(.maxItems(try nonNegativeInt(v, "maxItems", loc))) }
        if case .bool(true)? = value["uniqueItems"] { checks.append(.uniqueItems) }

        // Object applicators.
        var props = PropertyApplicators()
        var hasProps = false
        if let p = value["properties"] {
            guard case .object(let members) = p else { throw invalid("'properties' must be an object", loc) }
            hasProps = true
            for (name, _) in members {
                props.properties[name] = try sub(loc, "properties", name)
                props.propertyOrder.append(name)
            }
            node.propertyKeys = props.propertyOrder
        }
        if let p = value["patternProperties"] {
            guard case .object(let members) = p else { throw invalid("'patternProperties' must be an object", loc) }
            hasProps = true
            for (source, _) in members {
                props.patterns.append((try pattern(source, loc), try sub(loc, "patternProperties", source)))
            }
        }
        if value["additionalProperties"] != nil {
            hasProps = true
            props.additional = try sub(loc, "additionalProperties")
        }
        if hasProps { checks.append(.properties(props)) }
        if value["propertyNames"] != nil { checks.append(.propertyNames(try sub(loc, "propertyNames"))) }
        if let d = value["dependentSchemas"] {
            guard case .object(let members) = d else { throw invalid("'dependentSchemas' must be an object", loc) }
            checks.append(.dependentSchemas(try members.map { ($0.0, try sub(loc, "dependentSchemas", $0.0)) }))
        }

        // Array applicators.
        var prefix: [SchemaNode] = []
        if let p = value["prefixItems"] {
            guard case .array(let items) = p else { throw invalid("'prefixItems' must be an array", loc) }
            for i in items.indices { prefix.append(try sub(loc, "prefixItems", String(i))) }
        }
        let rest: SchemaNode? = value["items"] != nil ? try sub(loc, "items") : nil
        if !prefix.isEmpty || rest != nil { checks.append(.items(prefix: prefix, rest: rest)) }
        if value["contains"] != nil {
            let minC = try value["minContains"].map { try nonNegativeInt($0, "minContains", loc) } ?? 1
            let maxC = try value["maxContains"].map { try nonNegativeInt($0, "maxContains", loc) }
            checks.append(.contains(try sub(loc, "contains"), min: minC, max: maxC))
        }

        // In-place applicators.
        for keyword in ["allOf", "anyOf", "oneOf"] {
            guard let v = value[keyword] else { continue }
            guard case .array(let items) = v, !items.isEmpty else { throw invalid("'\(keyword)' must be a non-empty array", loc) }
            let subs = try items.indices.map { try sub(loc, keyword, String($0)) }
            switch keyword {
            case "allOf": checks.append(.allOf(subs))
            case "anyOf": checks.append(.anyOf(subs))
            default: checks.append(.oneOf(subs))
            }
        }
        if value["not"] != nil { checks.append(.not(try sub(loc, "not"))) }
        if value["if"] != nil {
            let thenNode = value["then"] != nil ? try sub(loc, "then") : nil
            let elseNode = value["else"] != nil ? try sub(loc, "else") : nil
            checks.append(.conditional(if: try sub(loc, "if"), then: thenNode, else: elseNode))
        }
        if let r = value["$ref"] {
            guard case .string(let reference) = r else { throw invalid("'$ref' must be a string", loc) }
            let (target, _) = try resolve(reference, base: base, from: loc)
            checks.append(.ref(try compileNode(at: target)))
        }
        if let r = value["$dynamicRef"] {
            guard case .string(let reference) = r else { throw invalid("'$dynamicRef' must be a string", loc) }
            let (target, fragment) = try resolve(reference, base: base, from: loc)
            let index = try compileNode(at: target)
            // Dynamic only when the fragment is an anchor name and the initial target declares that same
            // $dynamicAnchor (the "bookending" rule); otherwise it behaves exactly like $ref.
            var anchor: String? = nil
            if !fragment.isEmpty, !fragment.hasPrefix("/"),
               let targetValue = JSONPointer.tokens(target.pointer).flatMap({ JSONPointer.resolve($0, in: documents[target.document]) }),
               case .string(let declared)? = targetValue["$dynamicAnchor"], declared == fragment {
                anchor = fragment
            }
            checks.append(anchor == nil ? .ref(index) : .dynamicRef(index, anchor: anchor))
        }

        // Unevaluated, last: they need annotations from everything above.
        if value["unevaluatedItems"] != nil {
            usesUnevaluated = true
            checks.append(.unevaluatedItems(try sub(loc, "unevaluatedItems")))
        }
        if value["unevaluatedProperties"] != nil {
            usesUnevaluated = true
            checks.append(.unevaluatedProperties(try sub(loc, "unevaluatedProperties")))
        }
        node.checks = checks
    }

    private var patternCache: [String: CompiledPattern] = [:]

    private mutating func pattern(_ source: String, _ loc: SchemaLocation) throws -> CompiledPattern {
        if let p = patternCache[source] { return p }
        do {
            let p = try CompiledPattern(source)
            patternCache[source] = p
            return p
        } catch {
            throw invalid("invalid regular expression '\(source)'", loc)
        }
    }
}
