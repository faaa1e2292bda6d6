import Foundation
import JSON

/// JSON Schema type names as a bit set, so `type` checks are a single AND.
struct TypeMask: OptionSet, Sendable {
    let rawValue: UInt8
    static let null = TypeMask(rawValue: 1)
    static let boolean = TypeMask(rawValue: 2)
    static let integer = TypeMask(rawValue: 4)
    static let number = TypeMask(rawValue: 8)
    static let string = TypeMask(rawValue: 16)
    static let array = TypeMask(rawValue: 32)
    static let object = TypeMask(rawValue: 64)

    static func named(_ name: String) -> TypeMask? {
        switch name {
        case "null": return .null
        case "boolean": return .boolean
        case "integer": return .integer
        case "number": return .number
        case "string": return .string
        case "array": return .array
        case "object": return .object
        default: return nil
        }
    }

    func admits(_ value: JSONValue) -> Bool {
        switch value {
        case .null: return contains(.null)
        case .bool: return contains(.boolean)
        case .int: return !isDisjoint(with: [.integer, .number])
        case .double(let d): return contains(.number) || (contains(.integer) && JSONValue.isIntegral(d))
        case .string: return contains(.string)
        case .array: return contains(.array)
        case .object: return contains(.object)
        }
    }
}

/// A `pattern`/`patternProperties` regex compiled once. ECMA-262 `\d`/`\w` are ASCII-only, so they are
/// rewritten to explicit ASCII classes before handing the pattern to ICU (NSRegularExpression).
final class CompiledPattern: @unchecked Sendable {
    let source: String
    private let regex: NSRegularExpression

    init(_ source: String) throws {
        self.source = source
        self.regex = try NSRegularExpression(pattern: CompiledPattern.translate(source), options: [])
    }

    /// Unanchored search, as ECMA-262 `RegExp.prototype.test` does.
    func matches(_ s: String) -> Bool {
        regex.firstMatch(in: s, options: [], range: NSRange(location: 0, length: s.utf16.count)) != nil
    }

    /// Rewrites ECMA-262 shorthand classes whose ICU meaning differs (ICU `\d`/`\w` are Unicode-aware).
    static func translate(_ pattern: String) -> String {
        guard pattern.utf8.contains(UInt8(ascii: "\\")) else { return pattern }
        var out = ""
        var inClass = false
        var it = pattern.makeIterator()
        while let c = it.next() {
            if c == "\\" {
                guard let n = it.next() else { out.append(c); break }
                switch n {
                case "d": out += inClass ? "0-9" : "[0-9]"
                case "w": out += inClass ? "a-zA-Z0-9_" : "[a-zA-Z0-9_]"
                case "D" where !inClass: out += "[^0-9]"
                case "W" where !inClass: out += "[^a-zA-Z0-9_]"
                default: out.append(c); out.append(n)
                }
                continue
            }
            if c == "[" && !inClass { inClass = true } else if c == "]" && inClass { inClass = false }
            out.append(c)
        }
        return out
    }
}

/// One compiled keyword check of a schema object. Order within a node is fixed at compile time
/// (assertions, then applicators, then `unevaluated*` last since they depend on sibling annotations).
enum Check {
    case type(TypeMask, names: [String])
    case enumeration([JSONValue])
    case const(JSONValue)
    case pattern(CompiledPattern)
    case minLength(Int)
    case maxLength(Int)
    case minimum(JSONValue)
    case maximum(JSONValue)
    case exclusiveMinimum(JSONValue)
    case exclusiveMaximum(JSONValue)
    case multipleOf(JSONValue)
    case minItems(Int)
    case maxItems(Int)
    case uniqueItems
    case minProperties(Int)
    case maxProperties(Int)
    case required([String])
    case dependentRequired([(String, [String])])
    case properties(PropertyApplicators)
    case propertyNames(SchemaNode)
    case dependentSchemas([(String, SchemaNode)])
    case items(prefix: [SchemaNode], rest: SchemaNode?)
    case contains(SchemaNode, min: Int, max: Int?)
    case allOf([SchemaNode])
    case anyOf([SchemaNode])
    case oneOf([SchemaNode])
    case not(SchemaNode)
    case conditional(if: SchemaNode, then: SchemaNode?, else: SchemaNode?)
    case ref(Int)
    case dynamicRef(Int, anchor: String?)
    case unevaluatedProperties(SchemaNode)
    case unevaluatedItems(SchemaNode)
}

/// `properties`, `patternProperties` and `additionalProperties` of one schema object, evaluated in one pass over
/// the instance's members (each member: one dictionary lookup plus the pattern tests).
struct PropertyApplicators {
    var properties: [String: SchemaNode] = [:]
    var propertyOrder: [String] = []
    var patterns: [(CompiledPattern, SchemaNode)] = []
    var additional: SchemaNode?
}

/// A compiled schema (object or boolean). Built once by `SchemaCompiler`; immutable afterwards, so sharing it
/// across threads is safe even though it is a class (needed for cheap references and cyclic `$ref`s by index).
final class SchemaNode: @unchecked Sendable {
    let index: Int
    /// Index into `CompiledProgram.resources` of the schema resource (nearest `$id` or document) holding this node.
    let resource: Int
    /// Absolute location (`uri#pointer`), for compile errors and debugging.
    let location: String
    /// `true`/`false` for boolean schemas; `nil` for schema objects.
    var boolean: Bool?
    var checks: [Check] = []
    /// Keys of this node's `properties`, in schema order (for "did you mean" hints).
    var propertyKeys: [String] = []

    init(index: Int, resource: Int, location: String) {
        self.index = index
        self.resource = resource
        self.location = location
    }

    var isFalse: Bool { boolean == false }
}

/// Per-resource data needed at evaluation time.
struct ResourceInfo {
    var uri: String
    /// `$dynamicAnchor` name → node index, for `$dynamicRef` resolution through the dynamic scope.
    var dynamicAnchors: [String: Int] = [:]
}

/// Everything `JSONSchemaValidator` needs to evaluate: the node table (for `$ref` by index) and resources.
final class CompiledProgram: @unchecked Sendable {
    let nodes: [SchemaNode]
    let resources: [ResourceInfo]
    let root: SchemaNode
    /// Whether any node uses `unevaluatedProperties`/`unevaluatedItems`; if not, annotation bookkeeping is skipped.
    let tracksAnnotations: Bool

    init(nodes: [SchemaNode], resources: [ResourceInfo], root: SchemaNode, tracksAnnotations: Bool) {
        self.nodes = nodes
        self.resources = resources
        self.root = root
        self.tracksAnnotations = tracksAnnotations
    }
}
