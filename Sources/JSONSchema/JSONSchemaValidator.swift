/// A compiled JSON Schema (draft 2020-12) that validates instances and reports every violation with a
/// CLI-friendly message.
///
/// Compile once (`init`), then call `validate` for each document: `$ref`s are resolved and regexes compiled up front,
/// so validation does no parsing, lookups by URI, or regex compilation. The value is immutable and `Sendable`.
/// `format`, `content*` and the meta-data keywords are annotations only (never fail); `$schema` and `$vocabulary`
/// are ignored (the full 2020-12 vocabulary set is always in effect).
import JSON

public struct JSONSchemaValidator: Sendable {
    private let program: CompiledProgram

    /// Compiles a schema once (resolves $id/$anchor/$ref/$defs, precompiles regexes); throws on an invalid schema or
    /// unresolved $ref.
    ///
    /// - Parameters:
    ///   - schema: The root schema (object or boolean). Without `$id` it gets an internal base URI.
    ///   - registry: Extra documents by absolute URI (for remote refs/metaschemas), loaded when a `$ref` first points
    ///     at them. The official draft 2020-12 metaschema and vocabulary metaschemas
    ///     (`https://json-schema.org/draft/2020-12/schema`, `…/meta/core`, …) are always available.
    /// - Throws: `SchemaCompileError`.
    public init(schema: JSONValue, registry: [String: JSONValue] = [:]) throws {
        var compiler = SchemaCompiler(registry: registry)
        program = try compiler.compile(root: schema)
    }

    /// Validates `instance` and returns every violation found (empty = valid), in evaluation order.
    ///
    /// All violations are collected, not just the first; inside `anyOf`/`oneOf` only the best-matching alternative's
    /// errors (or one merged violation) are reported. Violations with the same instance path, keyword and message
    /// (e.g. the same `required` reached through two `allOf` branches) are reported once.
    public func validate(_ instance: JSONValue) -> [SchemaViolation] {
        let evaluator = Evaluator(program: program)
        var ctx = EvaluationContext(collect: true)
        var ann = Annotations()
        if evaluator.evaluate(program.root, instance, &ctx, &ann) && ctx.issues.isEmpty { return [] }
        var seen = Set<DedupKey>()
        var result: [SchemaViolation] = []
        result.reserveCapacity(ctx.issues.count)
        for issue in ctx.issues {
            let v = issue.violation
            if seen.insert(DedupKey(path: v.instancePath, keyword: v.keyword, message: v.message)).inserted {
                result.append(v)
            }
        }
        return result
    }

    /// Whether `instance` is valid. Faster than `validate(_:).isEmpty`: stops at the first failure, builds no messages.
    public func isValid(_ instance: JSONValue) -> Bool {
        let evaluator = Evaluator(program: program)
        var ctx = EvaluationContext(collect: false)
        var ann = Annotations()
        return evaluator.evaluate(program.root, instance, &ctx, &ann)
    }

    /// The keywords this validator implements, as checked by the conformance test.
    ///
    /// "boolean schemas" stands for `true`/`false` as schemas. Each entry is claimed only because the matching
    /// JSON-Schema-Test-Suite (draft 2020-12) file passes in full.
    public static let supportedKeywords: [String] = [
        "boolean schemas",
        "type", "enum", "const",
        "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
        "maxLength", "minLength", "pattern",
        "maxItems", "minItems", "uniqueItems", "maxContains", "minContains",
        "maxProperties", "minProperties", "required", "dependentRequired",
        "properties", "patternProperties", "additionalProperties", "propertyNames", "dependentSchemas",
        "prefixItems", "items", "contains",
        "allOf", "anyOf", "oneOf", "not", "if", "then", "else",
        "$ref", "$defs", "$id", "$anchor", "$dynamicRef", "$dynamicAnchor", "$comment",
        "unevaluatedProperties", "unevaluatedItems",
        "format", "default", "title", "description", "examples", "deprecated", "readOnly", "writeOnly",
        "contentEncoding", "contentMediaType", "contentSchema",
    ]
}

private struct DedupKey: Hashable {
    var path: [PathComponent]
    var keyword: String
    var message: String
}
