import XCTest
import YAML

/// Loads `text` with default limits and returns the single document's root.
private func root(_ text: String, limits: LoaderLimits = .init(), file: StaticString = #filePath,
                  line: UInt = #line) throws -> Node {
    let docs = try YAMLLoader(limits: limits).load(text)
    XCTAssertEqual(docs.count, 1, "expected one document", file: file, line: line)
    return try XCTUnwrap(docs.first?.root, file: file, line: line)
}

/// Asserts that loading fails with `kind` and returns the error for further checks.
@discardableResult
private func loadError(_ text: String, limits: LoaderLimits = .init(), file: StaticString = #filePath,
                       line: UInt = #line) -> YAMLError? {
    do {
        let docs = try YAMLLoader(limits: limits).load(text)
        XCTFail("expected an error, loaded \(docs.count) document(s)", file: file, line: line)
        return nil
    } catch {
        return error
    }
}

private func m(_ line: Int, _ column: Int) -> Mark { Mark(line: line, column: column) }

final class PositionTests: XCTestCase {
    func testPositionsOfScalarsSequencesAndMappings() throws {
        let text = """
        name: demo
        items:
          - a
          - "b"
          - {x: 1, y: [2, 3]}
        block: |
          text
        """
        let r = try root(text)
        XCTAssertEqual(r.mark, m(1, 1))
        let entries = try XCTUnwrap(r.mapping)
        XCTAssertEqual(entries.map { $0.key.stringValue }, ["name", "items", "block"])
        XCTAssertEqual(entries[0].key.mark, m(1, 1))
        XCTAssertEqual(entries[0].value.mark, m(1, 7))
        XCTAssertEqual(entries[1].key.mark, m(2, 1))
        let items = try XCTUnwrap(entries[1].value.sequence)
        XCTAssertEqual(entries[1].value.mark, m(3, 3))
        XCTAssertEqual(items[0].mark, m(3, 5))
        XCTAssertEqual(items[1].mark, m(4, 5), "a quoted scalar starts at its quote")
        XCTAssertEqual(items[1].scalar?.style, .doubleQuoted)
        XCTAssertEqual(items[2].mark, m(5, 5), "a flow mapping starts at its brace")
        let flow = try XCTUnwrap(items[2].mapping)
        XCTAssertEqual(flow[0].key.mark, m(5, 6))
        XCTAssertEqual(flow[0].value.mark, m(5, 9))
        XCTAssertEqual(flow[1].value.mark, m(5, 15))
        XCTAssertEqual(flow[1].value.sequence?[1].mark, m(5, 19))
        XCTAssertEqual(entries[2].value.mark, m(6, 8))
        XCTAssertEqual(entries[2].value.scalar?.style, .literal)
        XCTAssertEqual(entries[2].value.stringValue, "text")
    }

    func testSyntaxErrorKeepsLibyamlPositionAndContext() {
        let error = loadError("a: 1\n b: 2\nc")
        XCTAssertEqual(error?.kind, .syntax)
        XCTAssertEqual(error?.mark, m(2, 3))
        XCTAssertEqual(error?.message, "mapping values are not allowed in this context")
        let other = loadError("key: value\n- item\n")
        XCTAssertEqual(other?.kind, .syntax)
        XCTAssertEqual(other?.message, "while parsing a block mapping, did not find expected key")
        XCTAssertEqual(other?.mark, m(2, 1))
        XCTAssertEqual(other?.note, .init(message: "a block mapping started here", mark: m(1, 1)))
        let unclosed = loadError("a: [1, 2\n")
        XCTAssertEqual(unclosed?.kind, .syntax)
        XCTAssertNotNil(unclosed?.mark)
    }

    func testMarkOrderingAndDescription() {
        XCTAssertLessThan(m(1, 9), m(2, 1))
        XCTAssertLessThan(m(2, 1), m(2, 2))
        XCTAssertEqual(m(3, 4).description, "3:4")
        let error = YAMLError(kind: .duplicateKey, message: "duplicate key 'a'", mark: m(2, 1),
                              note: .init(message: "first defined here", mark: m(1, 1)))
        XCTAssertEqual(error.description, "2:1: duplicate key 'a' (1:1: note: first defined here)")
    }
}

final class ResolutionTests: XCTestCase {
    private func value(_ scalar: String, file: StaticString = #filePath, line: UInt = #line) throws -> ScalarValue? {
        try root("v: \(scalar)", file: file, line: line).mappingValue(forKey: "v")?.scalarValue
    }

    func testQuotedIsStringPlainIsTyped() throws {
        XCTAssertEqual(try value("\"8\""), .string("8"))
        XCTAssertEqual(try value("'8'"), .string("8"))
        XCTAssertEqual(try value("8"), .int(8))
        XCTAssertEqual(try value("|\n  8\n"), .string("8\n"))
        XCTAssertEqual(try value("\"true\""), .string("true"))
        XCTAssertEqual(try value("'null'"), .string("null"))
    }

    func testIntegers() throws {
        XCTAssertEqual(try value("010"), .int(10))
        XCTAssertEqual(try value("-0"), .int(0))
        XCTAssertEqual(try value("+12"), .int(12))
        XCTAssertEqual(try value("-9223372036854775808"), .int(Int.min))
        XCTAssertEqual(try value("9223372036854775807"), .int(Int.max))
        XCTAssertEqual(try value("0x1F"), .int(31))
        XCTAssertEqual(try value("0xff"), .int(255))
        XCTAssertEqual(try value("0o17"), .int(15))
        XCTAssertEqual(try value("0o18"), .string("0o18"))
        XCTAssertEqual(try value("0x"), .string("0x"))
        XCTAssertEqual(try value("-0x1F"), .string("-0x1F"), "the core schema has no signed hex")
        XCTAssertEqual(try value("0b101"), .string("0b101"))
        XCTAssertEqual(try value("1_000"), .string("1_000"))
        XCTAssertEqual(try value("1:30"), .string("1:30"))
    }

    func testIntegersTooLargeForIntBecomeDoubles() throws {
        XCTAssertEqual(try value("9223372036854775808"), .double(9_223_372_036_854_775_808))
        XCTAssertEqual(try value("-100000000000000000000"), .double(-1e20))
        XCTAssertEqual(try value("0x10000000000000000"), .double(18_446_744_073_709_551_616))
    }

    func testFloats() throws {
        XCTAssertEqual(try value("1.5"), .double(1.5))
        XCTAssertEqual(try value("1."), .double(1))
        XCTAssertEqual(try value(".5"), .double(0.5))
        XCTAssertEqual(try value("-.5"), .double(-0.5))
        XCTAssertEqual(try value("+1e3"), .double(1000))
        XCTAssertEqual(try value("1.5E-2"), .double(0.015))
        XCTAssertEqual(try value("2e10"), .double(2e10))
        XCTAssertEqual(try value(".inf"), .double(.infinity))
        XCTAssertEqual(try value("-.Inf"), .double(-.infinity))
        XCTAssertEqual(try value("+.INF"), .double(.infinity))
        guard case .double(let nan)? = try value(".NaN") else { return XCTFail("expected .nan") }
        XCTAssertTrue(nan.isNaN)
        XCTAssertEqual(try value("-.nan"), .string("-.nan"))
        XCTAssertEqual(try value("."), .string("."))
        XCTAssertEqual(try value("1e"), .string("1e"))
        XCTAssertEqual(try value("1.2.3"), .string("1.2.3"))
        XCTAssertEqual(try value(".infinity"), .string(".infinity"))
    }

    func testBooleansAndNulls() throws {
        XCTAssertEqual(try value("true"), .bool(true))
        XCTAssertEqual(try value("True"), .bool(true))
        XCTAssertEqual(try value("FALSE"), .bool(false))
        XCTAssertEqual(try value("tRUE"), .string("tRUE"))
        for word in ["yes", "no", "on", "off", "y", "n", "Yes", "NO", "On"] {
            XCTAssertEqual(try value(word), .string(word), "\(word) is a string in YAML 1.2")
        }
        for word in ["~", "null", "Null", "NULL", ""] {
            XCTAssertEqual(try value(word), .null, "'\(word)' is null")
        }
        XCTAssertEqual(try value("nULL"), .string("nULL"))
        XCTAssertTrue(try root("v:").mappingValue(forKey: "v")?.isNull ?? false)
    }

    func testExplicitCoreTagsOverrideResolution() throws {
        XCTAssertEqual(try value("!!str 8"), .string("8"))
        XCTAssertEqual(try value("!!str true"), .string("true"))
        XCTAssertEqual(try value("!!int \"8\""), .int(8))
        XCTAssertEqual(try value("!!float 1"), .double(1))
        XCTAssertEqual(try value("!!bool 'true'"), .bool(true))
        XCTAssertEqual(try value("!!null ''"), .null)
        XCTAssertEqual(try value("! 12"), .string("12"), "the non-specific tag makes a string")
        let node = try root("v: !!str 8").mappingValue(forKey: "v")
        XCTAssertEqual(node?.tag, "tag:yaml.org,2002:str")
        XCTAssertEqual(node?.mark, m(1, 4), "a node with properties starts at its first property")
        let bad = loadError("a: 1\nv: !!int eight")
        XCTAssertEqual(bad?.kind, .invalidTaggedValue)
        XCTAssertEqual(bad?.mark, m(2, 4))
        XCTAssertEqual(bad?.message, "'eight' is not a valid !!int value")
        XCTAssertEqual(loadError("v: !!map [1]")?.kind, .invalidTaggedValue)
        XCTAssertEqual(loadError("v: !!seq x")?.kind, .invalidTaggedValue)
        XCTAssertEqual(try root("v: !!seq [1]").mappingValue(forKey: "v")?.sequence?.count, 1)
    }

    func testUnknownTagsAreRefusedUnderCoreOnly() throws {
        let python = loadError("cmd: !!python/object:os.system [\"rm -rf /\"]\n")
        XCTAssertEqual(python?.kind, .unsafeTag)
        XCTAssertEqual(python?.mark, m(1, 6))
        XCTAssertTrue(python?.message.contains("!!python/object:os.system") ?? false, python?.message ?? "")
        let custom = loadError("a: 1\nb:\n  - !custom x\n")
        XCTAssertEqual(custom?.kind, .unsafeTag)
        XCTAssertEqual(custom?.mark, m(3, 5))
        XCTAssertEqual(loadError("!!set {a: null}")?.kind, .unsafeTag)

        let kept = try root("v: !custom 12", limits: .init(tagPolicy: .ignoreUnknown)).mappingValue(forKey: "v")
        XCTAssertEqual(kept?.tag, "!custom")
        XCTAssertEqual(kept?.scalarValue, .string("12"))
    }
}

final class DocumentTests: XCTestCase {
    func testEmptyInputsGiveNoDocuments() throws {
        XCTAssertEqual(try YAMLLoader().load("").count, 0)
        XCTAssertEqual(try YAMLLoader().load([UInt8]()).count, 0)
        XCTAssertEqual(try YAMLLoader().load("# only a comment\n\n").count, 0)
    }

    func testEmptyDocumentHasNullRoot() throws {
        let docs = try YAMLLoader().load("---\n")
        XCTAssertEqual(docs.count, 1)
        XCTAssertTrue(docs[0].root.isNull)
    }

    func testMultipleDocuments() throws {
        let docs = try YAMLLoader().load("a: 1\n---\nb: 2\n...\n--- 3\n")
        XCTAssertEqual(docs.count, 3)
        XCTAssertEqual(docs.map(\.index), [0, 1, 2])
        XCTAssertEqual(docs[0].root.mappingValue(forKey: "a")?.scalarValue, .int(1))
        XCTAssertEqual(docs[1].mark, m(2, 1))
        XCTAssertEqual(docs[1].root.mappingValue(forKey: "b")?.scalarValue, .int(2))
        XCTAssertEqual(docs[2].root.scalarValue, .int(3))
        XCTAssertEqual(docs[2].root.mark, m(5, 5))
    }

    func testLoadsFromDataAndBytes() throws {
        let text = "k: [1, two]\n"
        let fromData = try YAMLLoader().load(Data(text.utf8))
        let fromBytes = try YAMLLoader().load(Array(text.utf8))
        XCTAssertTrue(fromData[0].root.isStructurallyEqual(to: fromBytes[0].root))
        XCTAssertEqual(fromBytes[0].root.mappingValue(forKey: "k")?.sequence?.map(\.scalarValue),
                       [.int(1), .string("two")])
    }

    func testMappingOrderIsPreserved() throws {
        let r = try root("z: 1\na: 2\nm: 3\n")
        XCTAssertEqual(r.mapping?.compactMap { $0.key.stringValue }, ["z", "a", "m"])
        XCTAssertEqual(r.kindName, "mapping")
        XCTAssertNil(r.mappingValue(forKey: "missing"))
    }

    func testInvalidEncodingIsACleanError() {
        let invalid = YAMLLoader()
        let inputs: [[UInt8]] = [
            [0x61, 0x3A, 0x20, 0xFF, 0x0A], [0x61, 0x3A, 0x20, 0x00, 0x0A], [0xC3], [0x0A, 0x61, 0x01],
        ]
        for bytes in inputs {
            XCTAssertThrowsError(try invalid.load(bytes)) { error in
                XCTAssertEqual((error as? YAMLError)?.kind, .invalidEncoding, "\(bytes): \(error)")
                XCTAssertNotNil((error as? YAMLError)?.mark)
            }
        }
        do {
            _ = try invalid.load([0x61, 0x3A, 0x0A, 0x62, 0x3A, 0x20, 0xFF])
            XCTFail("expected an error")
        } catch {
            XCTAssertEqual(error.mark, m(2, 4))
        }
    }
}

final class KeyTests: XCTestCase {
    func testDuplicateKeyPointsAtBothKeys() {
        let error = loadError("name: a\nother: b\nname: c\n")
        XCTAssertEqual(error?.kind, .duplicateKey)
        XCTAssertEqual(error?.message, "duplicate key 'name'")
        XCTAssertEqual(error?.mark, m(3, 1))
        XCTAssertEqual(error?.note, .init(message: "first defined here", mark: m(1, 1)))
    }

    func testDuplicateKeysCompareByResolvedValue() {
        let ints = loadError("top:\n  1: a\n  01: b\n")
        XCTAssertEqual(ints?.kind, .duplicateKey)
        XCTAssertEqual(ints?.mark, m(3, 3))
        XCTAssertEqual(ints?.note?.mark, m(2, 3))
        XCTAssertEqual(loadError("{a: 1, 'a': 2}")?.mark, m(1, 8))
        XCTAssertEqual(loadError("? [1, {b: 2}]\n: x\n? [1, {b: 2}]\n: y\n")?.kind, .duplicateKey)
        XCTAssertEqual(loadError("~: 1\nnull: 2\n")?.kind, .duplicateKey)
    }

    func testDistinctKeysAreNotDuplicates() throws {
        // A string "1" and an int 1 differ; so do sequences that differ anywhere.
        XCTAssertEqual(try root("\"1\": a\n1: b\n").mapping?.count, 2)
        XCTAssertEqual(try root("? [1, 2]\n: x\n? [1, 3]\n: y\n").mapping?.count, 2)
        XCTAssertEqual(try root("a: {x: 1}\nb: {x: 1}\n").mapping?.count, 2)
    }
}

final class AliasTests: XCTestCase {
    func testAliasesWithinBudgetShareTheNode() throws {
        let r = try root("base: &b {x: 1, y: [1, 2]}\ncopy: *b\nlist: [*b, *b]\n")
        let base = try XCTUnwrap(r.mappingValue(forKey: "base"))
        let copy = try XCTUnwrap(r.mappingValue(forKey: "copy"))
        XCTAssertTrue(base === copy, "an alias shares the anchored node")
        XCTAssertEqual(base.anchor, "b")
        XCTAssertEqual(r.mappingValue(forKey: "list")?.sequence?.count, 2)
    }

    func testAliasesRefusedWhenDisallowed() {
        let error = loadError("a: &x 1\nb: *x\n", limits: .init(allowAliases: false))
        XCTAssertEqual(error?.kind, .aliasRefused)
        XCTAssertEqual(error?.mark, m(2, 4))
    }

    func testUnknownAndRecursiveAliases() {
        let unknown = loadError("a: *nope\n")
        XCTAssertEqual(unknown?.kind, .unknownAlias)
        XCTAssertEqual(unknown?.mark, m(1, 4))
        let recursive = loadError("a: &r [1, *r]\n")
        XCTAssertEqual(recursive?.kind, .unknownAlias)
        XCTAssertEqual(recursive?.mark, m(1, 11))
        // Anchors are scoped to their document.
        XCTAssertEqual(loadError("a: &x 1\n---\nb: *x\n")?.kind, .unknownAlias)
    }

    func testAliasBudgetCountsExpandedNodes() throws {
        // *l costs 4 nodes (the sequence and its 3 items); 3 uses = 12.
        let text = "l: &l [1, 2, 3]\nu: [*l, *l, *l]\n"
        XCTAssertNoThrow(try YAMLLoader(limits: .init(maxAliasExpansion: 12)).load(text))
        let error = loadError(text, limits: .init(maxAliasExpansion: 11))
        XCTAssertEqual(error?.kind, .aliasBudget)
        XCTAssertEqual(error?.mark, m(2, 13))
        XCTAssertEqual(error?.note?.mark, m(1, 4))
    }

    func testAnchorRedefinitionUsesTheLatest() throws {
        let r = try root("a: &x 1\nb: &x 2\nc: *x\n")
        XCTAssertEqual(r.mappingValue(forKey: "c")?.scalarValue, .int(2))
    }
}

/// The checks the loader adds where libyaml 0.2.5 accepts what the YAML 1.2 spec rejects.
final class SpecCheckTests: XCTestCase {
    func testCommentsNeedWhitespaceBeforeThem() {
        XCTAssertEqual(loadError("key: \"value\"# comment\n")?.mark, m(1, 13))
        XCTAssertEqual(loadError("[ a, b, c, ]#invalid\n")?.mark, m(1, 13))
        XCTAssertEqual(loadError("[ a, b,#invalid\n c ]\n")?.mark, m(1, 8))
        XCTAssertEqual(loadError("block: >#comment\n  text\n")?.mark, m(1, 9))
        XCTAssertEqual(loadError("%YAML 1.2#x\n---\na\n")?.mark, m(1, 10))
        XCTAssertEqual(loadError("a: 'x'#c")?.message, "a comment must be separated from other tokens by whitespace")
        // With whitespace, and inside scalars, '#' is fine.
        XCTAssertEqual(try root("a: \"v\" # c\nb: [x, y] # c\nc: a#b\nd: |-2 # c\n  t\n").mapping?.count, 4)
        XCTAssertEqual(try root("u: http://x/#frag\n").mappingValue(forKey: "u")?.stringValue, "http://x/#frag")
    }

    func testDirectivesAfterADocumentNeedAnEndMarker() throws {
        XCTAssertEqual(loadError("a: 1\n%YAML 1.2\n---\nb: 2\n")?.mark, m(2, 1))
        XCTAssertEqual(try YAMLLoader().load("a: 1\n...\n%YAML 1.2\n---\nb: 2\n").count, 2)
        XCTAssertEqual(try YAMLLoader().load("%YAML 1.2\n---\nb: 2\n").count, 1)
    }

    func testLoneDashIsNotAFlowScalar() throws {
        XCTAssertEqual(loadError("[-]")?.kind, .syntax)
        XCTAssertEqual(loadError("- [a, -]")?.mark, m(1, 7))
        XCTAssertEqual(try root("[-a, '-', a-]").sequence?.map(\.stringValue), ["-a", "-", "a-"])
    }

    func testFlowContinuationLinesMustBeIndented() throws {
        let flow = loadError("flow: [a,\nb]\n")
        XCTAssertEqual(flow?.kind, .syntax)
        XCTAssertEqual(flow?.mark, m(2, 1))
        XCTAssertEqual(flow?.note?.mark, m(1, 1))
        XCTAssertEqual(loadError("quoted: \"a\nb\"\n")?.mark, m(2, 1))
        XCTAssertEqual(loadError("- x\n- \"a\n\tb\"\n")?.mark, m(3, 1), "a tab is not indentation")
        XCTAssertEqual(loadError("top:\n  inner: [a,\n  b]\n")?.mark, m(3, 3))
        // Indented continuations, blank and comment lines, and top-level flow nodes are fine.
        XCTAssertEqual(try root("flow: [a,\n b]\n").mappingValue(forKey: "flow")?.sequence?.count, 2)
        XCTAssertEqual(try root("q: \"a\n\n  b\"\n").mappingValue(forKey: "q")?.stringValue, "a\nb")
        XCTAssertEqual(try root("f: [a, # c\n# comment\n  b]\n").mappingValue(forKey: "f")?.sequence?.count, 2)
        XCTAssertEqual(try root("[a,\nb]\n").sequence?.count, 2)
        // Deliberately lenient (as libyaml and most tools): a closing bracket at the block's own indentation.
        XCTAssertEqual(try root("deps: [\n  a,\n  b,\n]\n").mappingValue(forKey: "deps")?.sequence?.count, 2)
        XCTAssertEqual(try root("m: {\n  a: 1\n}\n").mappingValue(forKey: "m")?.mapping?.count, 1)
    }

    func testByteOrderMarks() throws {
        let utf8 = try YAMLLoader().load([0xEF, 0xBB, 0xBF] + Array("a: [1,\n 2]\nb: \"x\" #".utf8))
        XCTAssertEqual(utf8[0].root.mappingValue(forKey: "b")?.mark, m(3, 4))
        let utf16: [UInt8] = [0xFF, 0xFE] + Array("a: \"x\"\nb: [1,\n 2]\n".utf8).flatMap { [$0, 0] }
        let docs = try YAMLLoader().load(utf16)
        XCTAssertEqual(docs[0].root.mappingValue(forKey: "a")?.stringValue, "x")
        XCTAssertEqual(docs[0].root.mappingValue(forKey: "b")?.mark, m(2, 4))
    }
}
