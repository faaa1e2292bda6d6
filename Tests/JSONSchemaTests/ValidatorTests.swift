import Foundation
import JSON
import XCTest
@testable import JSONSchema

final class ValidatorTests: XCTestCase {

    private func json(_ text: String) throws -> JSONValue { try JSONValue(parsing: Data(text.utf8)) }

    private func validator(_ schema: String) throws -> JSONSchemaValidator {
        try JSONSchemaValidator(schema: try json(schema))
    }

    /// A manifest-like schema used by several tests.
    private let manifestSchema = #"""
    {
      "$schema": "https://json-schema.org/draft/2020-12/schema",
      "type": "object",
      "required": ["kind", "spec"],
      "additionalProperties": false,
      "properties": {
        "kind": {"const": "Export"},
        "spec": {
          "type": "object",
          "required": ["model"],
          "additionalProperties": false,
          "properties": {
            "model": {"$ref": "#/$defs/model"},
            "device": {"enum": ["cpu", "cuda", "inf1", "inf2"]},
            "batch": {"type": "integer", "minimum": 1},
            "name": {"type": "string", "pattern": "^[a-z0-9]+$"},
            "targets": {"type": "array", "minItems": 1, "items": {"type": "string"}}
          }
        }
      },
      "$defs": {
        "model": {
          "type": "object",
          "required": ["class"],
          "additionalProperties": false,
          "properties": {"class": {"type": "string"}, "checkpoint": {"type": "string"}}
        }
      }
    }
    """#

    func testValidInstanceHasNoViolations() throws {
        let v = try validator(manifestSchema)
        let doc = try json(#"{"kind": "Export", "spec": {"model": {"class": "M"}, "device": "cuda", "batch": 8, "name": "abc", "targets": ["x"]}}"#)
        XCTAssertEqual(v.validate(doc), [])
        XCTAssertTrue(v.isValid(doc))
    }

    func testCollectsAllViolationsWithPathsAndMessages() throws {
        let v = try validator(manifestSchema)
        let doc = try json(#"""
        {"kind": "Export", "spec": {"model": {"clas": "M"}, "device": "gpu", "batch": "8", "name": "ABC", "targets": []}}
        """#)
        let violations = v.validate(doc)
        XCTAssertFalse(v.isValid(doc))
        let summary = violations.map { "\($0.instancePath.jsonPointer) \($0.keyword) \($0.schemaPath): \($0.message)" }
        XCTAssertEqual(summary, [
            "/spec/model required /properties/spec/properties/model/$ref/required: missing required field 'class'",
            "/spec/model additionalProperties /properties/spec/properties/model/$ref/additionalProperties: unknown field 'clas'",
            "/spec/device enum /properties/spec/properties/device/enum: value 'gpu' is not one of: cpu, cuda, inf1, inf2",
            "/spec/batch type /properties/spec/properties/batch/type: expected integer, got string \"8\"",
            "/spec/name pattern /properties/spec/properties/name/pattern: must match pattern ^[a-z0-9]+$",
            "/spec/targets minItems /properties/spec/properties/targets/minItems: must have at least 1 item",
        ])
        let unknown = violations[1]
        XCTAssertEqual(unknown.instancePath, [.key("spec"), .key("model")])
        XCTAssertEqual(unknown.offendingKey, "clas")
        XCTAssertEqual(unknown.allowedKeys, ["class", "checkpoint"])
        XCTAssertNil(violations[0].offendingKey)
        XCTAssertEqual(violations[0].description, "spec.model: missing required field 'class'")
    }

    func testRootLevelMessages() throws {
        let v = try validator(manifestSchema)
        let violations = v.validate(try json(#"{"kind": "Bundle", "extra": 1}"#))
        XCTAssertEqual(violations.map(\.message), [
            "missing required field 'spec'",
            "value 'Bundle' must be 'Export'",
            "unknown field 'extra'",
        ])
        XCTAssertEqual(violations[2].instancePath, [])
        XCTAssertEqual(violations[2].schemaPath, "/additionalProperties")
        XCTAssertEqual(violations[2].allowedKeys, ["kind", "spec"])
        XCTAssertEqual(v.validate(.string("x")).map(\.message), ["expected object, got string \"x\""])
        XCTAssertEqual(v.validate(.array([])).map(\.description), ["<root>: expected object, got empty array"])
    }

    func testNumericAndSizeMessages() throws {
        let v = try validator(#"""
        {"properties": {
          "a": {"minimum": 1}, "b": {"maximum": 2.5}, "c": {"exclusiveMinimum": 0}, "d": {"exclusiveMaximum": 10},
          "e": {"multipleOf": 4}, "f": {"minLength": 3}, "g": {"maxLength": 2}, "h": {"maxItems": 1},
          "i": {"uniqueItems": true}, "j": {"minProperties": 2}, "k": {"contains": {"type": "integer"}},
          "l": {"not": {"type": "null"}}, "m": {"type": ["string", "null"]}, "n": {"type": "integer"}
        }}
        """#)
        let doc = try json(#"""
        {"a": 0, "b": 3, "c": 0, "d": 10, "e": 6, "f": "ab", "g": "abc", "h": [1, 2], "i": [1, 2, 1.0],
         "j": {"x": 1}, "k": ["a"], "l": null, "m": 1.5, "n": true}
        """#)
        XCTAssertEqual(v.validate(doc).map { "\($0.instancePath.dottedPath): \($0.message)" }, [
            "a: must be >= 1",
            "b: must be <= 2.5",
            "c: must be > 0",
            "d: must be < 10",
            "e: must be a multiple of 4",
            "f: must be at least 3 characters long",
            "g: must be at most 2 characters long",
            "h: must have at most 1 item",
            "i: must not contain duplicate items (items 0 and 2 are equal)",
            "j: must have at least 2 fields",
            "k: must contain at least 1 item matching the 'contains' schema",
            "l: must not match the schema in 'not'",
            "m: expected string or null, got number 1.5",
            "n: expected integer, got boolean true",
        ])
    }

    func testIntegerTypeAcceptsIntegralDoublesOnly() throws {
        let v = try validator(#"{"type": "integer"}"#)
        XCTAssertTrue(v.isValid(.int(3)))
        XCTAssertTrue(v.isValid(.double(3.0)))
        XCTAssertFalse(v.isValid(.double(3.5)))
        XCTAssertFalse(v.isValid(.bool(true)))
        XCTAssertEqual(v.validate(.double(3.5)).first?.message, "expected integer, got number 3.5")
        let number = try validator(#"{"type": "number"}"#)
        XCTAssertTrue(number.isValid(.int(3)))
        XCTAssertFalse(number.isValid(.bool(false)))
        let enumOne = try validator(#"{"enum": [1]}"#)
        XCTAssertTrue(enumOne.isValid(.double(1.0)))
        XCTAssertFalse(enumOne.isValid(.bool(true)))
    }

    func testLengthCountsCodePoints() throws {
        let v = try validator(#"{"minLength": 2, "maxLength": 2}"#)
        XCTAssertTrue(v.isValid(.string("😀😀")))          // 2 code points, 4 UTF-16 units
        XCTAssertFalse(v.isValid(.string("😀")))
        XCTAssertTrue(v.isValid(.string("e\u{301}")))      // 2 code points, 1 Character
        XCTAssertEqual(v.validate(.string("abc")).map(\.message), ["must be at most 2 characters long"])
    }

    func testOneOfReportsTheBranchWhoseDiscriminatorMatches() throws {
        let v = try validator(#"""
        {"oneOf": [
          {"type": "object", "required": ["kind", "path"], "properties": {"kind": {"const": "file"}, "path": {"type": "string"}}},
          {"type": "object", "required": ["kind", "url"], "properties": {"kind": {"const": "http"}, "url": {"type": "string", "pattern": "^https?://"}}}
        ]}
        """#)
        XCTAssertEqual(v.validate(try json(#"{"kind": "http", "url": "ftp://x"}"#)).map(\.description),
                       ["url: must match pattern ^https?://"])
        XCTAssertEqual(v.validate(try json(#"{"kind": "http"}"#)).map(\.description),
                       ["<root>: missing required field 'url'"])
        // A discriminator typo: one violation listing every allowed value.
        let typo = v.validate(try json(#"{"kind": "htp"}"#))
        XCTAssertEqual(typo.map(\.description), ["kind: value 'htp' is not one of: file, http"])
        XCTAssertEqual(typo.first?.keyword, "enum")
        XCTAssertEqual(typo.first?.schemaPath, "/oneOf")
        // Wrong type for every branch: one merged type violation.
        XCTAssertEqual(v.validate(.int(3)).map(\.description), ["<root>: expected object, got integer 3"])
        let overlap = try validator(#"{"oneOf": [{"type": "integer"}, {"minimum": 0}]}"#)
        XCTAssertEqual(overlap.validate(.int(3)).map(\.keyword), ["oneOf"])
    }

    func testAnyOfMergesTypeAlternatives() throws {
        let v = try validator(#"{"properties": {"x": {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}}}"#)
        let violations = v.validate(try json(#"{"x": [1]}"#))
        XCTAssertEqual(violations.map(\.description), ["x: expected string, integer or null, got array"])
        XCTAssertEqual(violations.first?.schemaPath, "/properties/x/anyOf")
        XCTAssertTrue(v.isValid(try json(#"{"x": null}"#)))
    }

    func testAnyOfPrefersTheDeepestBranch() throws {
        let v = try validator(#"""
        {"anyOf": [
          {"type": "string"},
          {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "integer"}}}}}
        ]}
        """#)
        XCTAssertEqual(v.validate(try json(#"{"a": {"b": "x"}}"#)).map(\.description),
                       [#"a.b: expected integer, got string "x""#])
    }

    func testPropertyNamesDependentRequiredAndConditionals() throws {
        let v = try validator(#"""
        {"propertyNames": {"pattern": "^[a-z]+$"},
         "dependentRequired": {"cert": ["key"]},
         "if": {"properties": {"device": {"const": "cuda"}}, "required": ["device"]},
         "then": {"required": ["gpus"]}}
        """#)
        let violations = v.validate(try json(#"{"Bad": 1, "cert": "c", "device": "cuda"}"#))
        XCTAssertEqual(violations.map(\.description), [
            "<root>: field 'key' is required when 'cert' is present",
            "<root>: invalid field name 'Bad': must match pattern ^[a-z]+$",
            "<root>: missing required field 'gpus'",
        ])
        XCTAssertEqual(violations[0].schemaPath, "/dependentRequired/cert")
        XCTAssertEqual(violations[1].offendingKey, "Bad")
        XCTAssertEqual(violations[1].keyword, "pattern")
        XCTAssertEqual(violations[1].schemaPath, "/propertyNames/pattern")
        XCTAssertEqual(violations[2].schemaPath, "/then/required")
    }

    func testUnevaluatedPropertiesReportsUnknownKeysWithHints() throws {
        let v = try validator(#"""
        {"allOf": [{"properties": {"name": {"type": "string"}}}, {"$ref": "#/$defs/extra"}],
         "unevaluatedProperties": false,
         "$defs": {"extra": {"properties": {"size": {"type": "integer"}}}}}
        """#)
        XCTAssertTrue(v.isValid(try json(#"{"name": "a", "size": 1}"#)))
        let violations = v.validate(try json(#"{"name": "a", "sise": 1}"#))
        XCTAssertEqual(violations.map(\.description), ["<root>: unknown field 'sise'"])
        XCTAssertEqual(violations.first?.keyword, "unevaluatedProperties")
        XCTAssertEqual(violations.first?.offendingKey, "sise")
        XCTAssertEqual(violations.first?.allowedKeys, ["name", "size"])
    }

    func testItemsAndPrefixItems() throws {
        let v = try validator(#"{"prefixItems": [{"type": "string"}], "items": false}"#)
        XCTAssertEqual(v.validate(try json(#"["a", 1, 2]"#)).map(\.message), ["must have at most 1 item"])
        let each = try validator(#"{"items": {"type": "integer"}}"#)
        XCTAssertEqual(each.validate(try json(#"[1, "x", 2, null]"#)).map(\.description),
                       [#"[1]: expected integer, got string "x""#, "[3]: expected integer, got null"])
    }

    func testFalseSchemasAndDeduplication() throws {
        let v = try validator(#"{"properties": {"legacy": false}, "allOf": [{"required": ["a"]}, {"required": ["a"]}]}"#)
        let violations = v.validate(try json(#"{"legacy": 1}"#))
        XCTAssertEqual(violations.map(\.message), ["field 'legacy' is not allowed", "missing required field 'a'"])
        XCTAssertEqual(violations[0].offendingKey, "legacy")
        XCTAssertEqual(try JSONSchemaValidator(schema: .bool(false)).validate(.null).map(\.message), ["no value is allowed here"])
        XCTAssertTrue(try JSONSchemaValidator(schema: .bool(true)).isValid(.null))
    }

    func testCompileErrors() throws {
        XCTAssertThrowsError(try validator(##"{"$ref": "#/$defs/missing"}"##)) { error in
            XCTAssertTrue("\(error)".contains("unresolved $ref '#/$defs/missing'"), "\(error)")
        }
        XCTAssertThrowsError(try validator(#"{"$ref": "other.json"}"#))
        XCTAssertThrowsError(try validator(#"{"pattern": "(["}"#))
        XCTAssertThrowsError(try validator(#"{"type": "strin"}"#))
        XCTAssertThrowsError(try validator(#"{"minLength": -1}"#))
        XCTAssertThrowsError(try validator(#"{"properties": {"a": 3}}"#))
    }

    func testRegistryAndMetaschema() throws {
        let remote = try json(#"{"$defs": {"port": {"type": "integer", "maximum": 65535}}}"#)
        let v = try JSONSchemaValidator(schema: try json(#"{"$ref": "https://example.com/common.json#/$defs/port"}"#),
                                        registry: ["https://example.com/common.json": remote])
        XCTAssertTrue(v.isValid(.int(80)))
        XCTAssertEqual(v.validate(.int(70000)).map(\.message), ["must be <= 65535"])

        // The built-in 2020-12 metaschema validates schemas.
        let meta = try JSONSchemaValidator(schema: try json(#"{"$ref": "https://json-schema.org/draft/2020-12/schema"}"#))
        XCTAssertTrue(meta.isValid(try json(manifestSchema)))
        XCTAssertFalse(meta.isValid(try json(#"{"type": 5}"#)))
        XCTAssertFalse(meta.validate(try json(#"{"properties": {"a": {"minLength": -1}}}"#)).isEmpty)
    }

    func testConcurrentUse() throws {
        let v = try validator(manifestSchema)
        let bad = try json(#"{"kind": "Export", "spec": {"model": {}, "device": "gpu"}}"#)
        let expected = v.validate(bad)
        XCTAssertEqual(expected.count, 2)
        DispatchQueue.concurrentPerform(iterations: 32) { _ in
            XCTAssertEqual(v.validate(bad), expected)
        }
    }
}

final class ValidatorEdgeCaseTests: XCTestCase {

    private func json(_ text: String) throws -> JSONValue { try JSONValue(parsing: Data(text.utf8)) }

    func testRefCycleWithoutProgressIsReportedNotCrashing() throws {
        let v = try JSONSchemaValidator(schema: try json(##"""
        {"$defs": {"a": {"allOf": [{"$ref": "#/$defs/b"}]}, "b": {"anyOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"}
        """##))
        XCTAssertFalse(v.isValid(.int(1)))
        XCTAssertEqual(v.validate(.int(1)).count, 1)
        // Recursion that does move through the instance is fine.
        let tree = try JSONSchemaValidator(schema: try json(##"""
        {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}, "additionalProperties": false}
        """##))
        var doc: JSONValue = ["children": []]
        for _ in 0..<100 { doc = ["children": [doc]] }
        XCTAssertTrue(tree.isValid(doc))
    }

    func testRegistryDocumentFoundByItsOwnId() throws {
        let remote = try json(#"{"$id": "https://example.com/schemas/name.json", "type": "string", "minLength": 1}"#)
        let v = try JSONSchemaValidator(schema: try json(#"{"$ref": "https://example.com/schemas/name.json"}"#),
                                        registry: ["file:///elsewhere/name.json": remote])
        XCTAssertTrue(v.isValid("x"))
        XCTAssertEqual(v.validate("").map(\.message), ["must be at least 1 character long"])
    }

    func testDynamicRefExtension() throws {
        // A generic list whose item type is supplied by the referencing schema through $dynamicAnchor.
        let v = try JSONSchemaValidator(schema: try json(##"""
        {"$id": "https://example.com/strings", "$ref": "list", "$defs": {
           "item": {"$dynamicAnchor": "item", "type": "string"},
           "list": {"$id": "list", "type": "array", "items": {"$dynamicRef": "#item"},
                    "$defs": {"default": {"$dynamicAnchor": "item"}}}}}
        """##))
        XCTAssertTrue(v.isValid(["a", "b"]))
        XCTAssertEqual(v.validate(["a", 1]).map(\.description), ["[1]: expected string, got integer 1"])
        XCTAssertEqual(v.validate(["a", 1]).first?.schemaPath, "/$ref/items/$dynamicRef/type")
    }
}
