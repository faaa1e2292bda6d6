import JSON

extension JSONValue {
    /// The value at a path of keys and indices (as found in `SchemaViolation.instancePath`), or `nil` if absent.
    public func value(at path: [PathComponent]) -> JSONValue? {
        var current = self
        for component in path {
            switch component {
            case .key(let k): guard let next = current[k] else { return nil }; current = next
            case .index(let i): guard let next = current[i] else { return nil }; current = next
            }
        }
        return current
    }
}

/// One path component into an instance: an object key or an array index.
public enum PathComponent: Hashable, Sendable, CustomStringConvertible {
    /// A member of an object, by key.
    case key(String)
    /// An element of an array, by zero-based index.
    case index(Int)

    /// `key` or `[3]`, for composing readable paths such as `spec.models[2].name`.
    public var description: String {
        switch self {
        case .key(let k): return k
        case .index(let i): return "[\(i)]"
        }
    }
}

extension Array where Element == PathComponent {
    /// The path as an RFC 6901 JSON pointer ("" for the root, e.g. "/spec/models/2/name"), for machine-readable output.
    public var jsonPointer: String {
        var s = ""
        for c in self {
            switch c {
            case .key(let k): s += "/" + JSONPointer.escape(k)
            case .index(let i): s += "/\(i)"
            }
        }
        return s
    }

    /// The path in dotted form ("" for the root, e.g. "spec.models[2].name"), for human-readable messages.
    public var dottedPath: String {
        var s = ""
        for c in self {
            switch c {
            case .key(let k): s += s.isEmpty ? k : "." + k
            case .index(let i): s += "[\(i)]"
            }
        }
        return s
    }
}

/// One violation: where in the instance, which keyword failed (its schema location as a JSON pointer string,
/// e.g. "/properties/spec/properties/model/required"), and a human message.
///
/// `schemaPath` is the evaluation path through the schema (it includes `$ref`, `allOf/0`, … segments as they were
/// followed), like the "keywordLocation" of the JSON Schema output format.
public struct SchemaViolation: Equatable, Sendable, CustomStringConvertible {
    /// Where in the instance the problem is. For `required`, `additionalProperties`, `unevaluatedProperties`,
    /// `propertyNames` and `dependentRequired` this is the object holding (or missing) the key; see `offendingKey`.
    public var instancePath: [PathComponent]
    /// The keyword that failed: "required", "additionalProperties", "type", "enum", …
    public var keyword: String
    /// JSON pointer of the failing keyword within the schema, following the evaluation path.
    public var schemaPath: String
    /// A message for CLI users, e.g. `missing required field 'class'`.
    public var message: String
    /// For additionalProperties / unevaluated keys: the offending property name, so callers can point at the KEY node
    /// and suggest a close known key. Also set for `propertyNames` failures and `false` property schemas.
    public var offendingKey: String?
    /// For additionalProperties: the property names the schema does allow at that object (from `properties`),
    /// used for "did you mean" hints.
    public var allowedKeys: [String]

    /// Memberwise initializer, so callers and tests can build expected violations.
    public init(instancePath: [PathComponent], keyword: String, schemaPath: String, message: String,
                offendingKey: String? = nil, allowedKeys: [String] = []) {
        self.instancePath = instancePath
        self.keyword = keyword
        self.schemaPath = schemaPath
        self.message = message
        self.offendingKey = offendingKey
        self.allowedKeys = allowedKeys
    }

    /// "spec.model: missing required field 'class'" (root-level violations print "<root>: …"), for logs and tests.
    public var description: String {
        let path = instancePath.dottedPath
        return "\(path.isEmpty ? "<root>" : path): \(message)"
    }
}

/// Why a schema could not be compiled: an unresolved `$ref`, a keyword with a value of the wrong shape,
/// or a `pattern` that is not a valid regular expression.
public struct SchemaCompileError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What is wrong, e.g. "unresolved $ref 'definitions.json#/foo'".
    public var message: String
    /// The schema location (absolute URI with JSON pointer fragment) where it was found.
    public var location: String

    /// Memberwise initializer.
    public init(message: String, location: String) {
        self.message = message
        self.location = location
    }

    /// "invalid schema at <location>: <message>".
    public var description: String { "invalid schema at \(location): \(message)" }
}
