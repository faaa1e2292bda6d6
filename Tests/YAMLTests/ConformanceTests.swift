import Foundation
import XCTest
import YAML

/// Runs the yaml-test-suite (data branch, shipped in `Tests/Conformance/yaml-test-suite/`) through the loader.
///
/// - A case with `in.json` passes when it loads and its documents, as JSON values, equal the expected stream
///   (numbers compared numerically, object keys unordered). A YAML key that is not a string is written as its
///   source text, which is the suite's own convention (`23: x` → `"23"`; an empty null key → `""`); a key that is
///   a sequence or mapping cannot be JSON and fails the comparison (no such case has an `in.json`).
/// - A case with `error` passes when loading throws.
/// - A case with neither (valid YAML that JSON cannot express, e.g. complex keys) passes when it loads.
///
/// Loading uses `.ignoreUnknown` tags and generous depth and alias limits, so that only syntax and the loader's
/// deliberate policies (unique keys, no recursive aliases) can fail a case. The pass rate that matters is among the
/// cases libyaml itself accepts; every failure must be in `knownExceptions`, so a new regression fails the test.
final class ConformanceTests: XCTestCase {
    /// Known failures, with why. Keep sorted; remove an entry when it starts passing (the test prints stale ones).
    static let knownExceptions: [String: String] = [
        // --- libyaml 0.2.5 accepts the case, but the result is wrong (libyaml bugs) or refused by our policy. ---
        "652Z": "libyaml bug: reads `{ ?foo: bar }` as an explicit key `foo` instead of the plain scalar `?foo`",
        "HM87/01": "libyaml bug: reads `[?x]` as a single-pair mapping instead of the plain scalar `?x`",
        "JEF9/02": "libyaml bug: keep-chomped block scalar drops a trailing whitespace-only line",
        "L24T/01": "libyaml bug: keep-chomped literal drops a trailing line of spaces",
        "Y2GN": "libyaml bug: stops an anchor name at ':' (`&an:chor`), leaving ':chor' in the value",
        "S98Z": "libyaml accepts leading empty lines more indented than a block scalar's content (spec error)",
        "X38W": "policy: the two keys `[a, b]` and `*a` are equal, and the loader refuses duplicate keys",

        // --- libyaml 0.2.5 rejects valid YAML 1.2 (counted outside the pass rate; listed so changes show). ---
        // Empty (omitted) keys, `: value`:
        "2JQS": "libyaml rejects empty keys (Block Mapping with Missing Keys)",
        "6M2F": "libyaml rejects an empty key after an explicit key (Aliases in Explicit Block Mapping)",
        "CFD4": "libyaml rejects an empty implicit key in a single-pair flow sequence",
        "FRK4": "libyaml rejects completely empty flow nodes (Spec Example 7.3)",
        "M2N8/00": "libyaml rejects `- ? : x` (Question mark edge cases)",
        "NHX8": "libyaml rejects `:` as an empty key with empty value (Empty Lines at End of Document)",
        "NKF9": "libyaml rejects empty keys in block and flow mappings",
        "S3PD": "libyaml rejects an empty key (Spec Example 8.18)",
        "SM9W/01": "libyaml rejects the single-character stream `:`",
        "UKK6/00": "libyaml rejects `- :` (Syntax character edge cases)",
        // Flow mappings whose key and `:` (or value) are on different lines, or adjacent values:
        "4ABK": "libyaml rejects `{a:b}`-style adjacent values in flow mappings (Flow Mapping Separate Values)",
        "4MUZ/00": "libyaml rejects a flow mapping colon on the line after the key",
        "4MUZ/01": "libyaml rejects a flow mapping colon on the line after the key",
        "4MUZ/02": "libyaml rejects a flow mapping colon on the line after the key",
        "58MP": "libyaml rejects `{x: :x}` (Flow mapping edge cases)",
        "5MUD": "libyaml rejects a colon and adjacent value on the next line",
        "5T43": "libyaml rejects a colon at the beginning of an adjacent flow scalar",
        "9SA2": "libyaml rejects a multi-line double-quoted flow mapping key",
        "DBG4": "libyaml rejects plain scalars starting with ':' in flow (Spec Example 7.10)",
        "HM87/00": "libyaml rejects `[:x]` (Scalars in flow start with syntax char)",
        "K3WX": "libyaml rejects a colon and adjacent value after a comment on the next line",
        "NJ66": "libyaml rejects a multi-line plain flow mapping key",
        "UT92": "libyaml rejects a multi-line flow mapping key (Spec Example 9.4)",
        "VJP3/01": "libyaml rejects a flow mapping key on its own line (Flow collections over many lines)",
        // Tabs used as separation or in block scalars:
        "6BCT": "libyaml rejects tabs as separation spaces (Spec Example 6.3)",
        "6CA3": "libyaml rejects a tab-indented top-level flow collection",
        "96NN/00": "libyaml rejects leading tab content in literals",
        "96NN/01": "libyaml rejects leading tab content in literals",
        "A2M4": "libyaml rejects tabs after an indentation indicator (Spec Example 6.2)",
        "DK95/00": "libyaml rejects a tab before a flow/plain scalar that looks like indentation",
        "DK95/03": "libyaml rejects a tab before a plain scalar that looks like indentation",
        "DK95/04": "libyaml rejects a tab-led continuation of a plain scalar",
        "Q5MG": "libyaml rejects a tab at the beginning of a line followed by a flow mapping",
        "R4YG": "libyaml rejects tab content in an indented block scalar (Spec Example 8.2)",
        "Y79Y/001": "libyaml rejects a tab in block scalar content",
        "Y79Y/010": "libyaml rejects a tab before a sequence item's content",
        // Anchors (YAML 1.2 allows ':' and any non-space character in anchor names):
        "2SXE": "libyaml rejects anchors with ':' in the name",
        "8XYN": "libyaml rejects an anchor with a non-ASCII character",
        "W5VH": "libyaml rejects the allowed punctuation characters in an alias name",
        // Directives and documents:
        "2LFX": "libyaml rejects reserved (unknown) directives (Spec Example 6.13, 1.3 form)",
        "6LVF": "libyaml rejects reserved (unknown) directives (Spec Example 6.13)",
        "MUS6/05": "libyaml rejects an unknown directive",
        "MUS6/06": "libyaml rejects an unknown directive",
        "W4TN": "libyaml rejects `%` at the start of a line inside a document (Spec Example 9.5)",
        "BEC7": "libyaml rejects `%YAML 1.3` (incompatible version) instead of warning",
        "7Z25": "libyaml rejects a bare document after a document end marker",
        "M7A3": "libyaml rejects a bare document after `...` (Spec Example 9.3)",
        "HWV9": "libyaml rejects a stream that is only `...`",
        "QT73": "libyaml rejects a comment followed by `...`",
        "DK3J": "libyaml rejects a zero-indented block scalar line that looks like a comment",
        "FP8R": "libyaml rejects a zero-indented block scalar at the top level",
    ]

    struct Case {
        var id: String
        var yaml: [UInt8]
        var json: [UInt8]?
        var isError: Bool
    }

    func testYAMLTestSuite() throws {
        let suite = try Self.suiteDirectory()
        let cases = try Self.cases(in: suite)
        XCTAssertGreaterThan(cases.count, 300, "the suite looks incomplete at \(suite.path)")

        let loader = YAMLLoader(limits: .init(maxBytes: 1 << 20, maxDepth: 1_000, maxAliasExpansion: 1_000_000,
                                              allowAliases: true, tagPolicy: .ignoreUnknown))
        var accepted = 0, acceptedPasses = 0, passes = 0
        var failures: [(id: String, reason: String, libyamlAccepts: Bool)] = []
        for c in cases {
            let libyamlAccepts = YAMLLoader.syntaxError(in: c.yaml) == nil
            if libyamlAccepts { accepted += 1 }
            let failure = Self.check(c, loader: loader)
            if let failure {
                failures.append((c.id, failure, libyamlAccepts))
            } else {
                passes += 1
                if libyamlAccepts { acceptedPasses += 1 }
            }
        }

        let rate = accepted == 0 ? 0 : Double(acceptedPasses) / Double(accepted) * 100
        var report = """
            yaml-test-suite: \(cases.count) cases, \(passes) pass overall; libyaml 0.2.5 accepts \(accepted), \
            of which \(acceptedPasses) pass (\(String(format: "%.1f", rate))%)
            exceptions (\(failures.count)):

            """
        for f in failures {
            let known = Self.knownExceptions[f.id] != nil ? "known" : "NEW"
            report += "  \(f.id) [\(known), libyaml \(f.libyamlAccepts ? "accepts" : "rejects")]: \(f.reason)\n"
        }
        let failed = Set(failures.map(\.id))
        let stale = Self.knownExceptions.keys.filter { !failed.contains($0) }.sorted()
        if !stale.isEmpty { report += "allow-listed but now passing (remove them): \(stale.joined(separator: ", "))\n" }
        print(report)

        XCTAssertGreaterThanOrEqual(rate, 95, "pass rate among libyaml-accepted cases")
        let new = failures.filter { Self.knownExceptions[$0.id] == nil }
        XCTAssertTrue(new.isEmpty, "new conformance failures:\n"
                      + new.map { "  \($0.id): \($0.reason)" }.joined(separator: "\n"))
    }

    /// nil when the case passes, else why not.
    static func check(_ c: Case, loader: YAMLLoader) -> String? {
        let documents: [Document]
        do {
            documents = try loader.load(c.yaml)
        } catch {
            return c.isError ? nil : "rejected valid input: \(error.kind): \(error)"
        }
        if c.isError { return "accepted invalid input" }
        guard let jsonBytes = c.json else { return nil }
        let expected: [JSON]
        do {
            expected = try JSON.parseStream(jsonBytes)
        } catch {
            return "could not read in.json: \(error)"
        }
        let actual: [JSON]
        do {
            actual = try documents.map { try JSON(node: $0.root) }
        } catch {
            return "not JSON-representable: \(error)"
        }
        if actual != expected {
            return "value differs: got \(actual.map(\.description)) expected \(expected.map(\.description))"
        }
        return nil
    }

    /// The suite shipped with the repository: Tests/Conformance/yaml-test-suite (LICENSE and SOURCE beside it).
    static func suiteDirectory() throws -> URL {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Conformance/yaml-test-suite")
        guard FileManager.default.fileExists(atPath: dir.appendingPathComponent("SOURCE").path) else {
            throw SuiteError.notFound("the yaml-test-suite is missing from \(dir.path)")
        }
        return dir
    }

    enum SuiteError: Error { case notFound(String) }

    /// One case per folder with `in.yaml`; folders without one hold numbered variants (`ID/00`, `ID/01`, ...).
    static func cases(in suite: URL) throws -> [Case] {
        let fm = FileManager.default
        func load(_ dir: URL, id: String) -> Case? {
            guard let yaml = fm.contents(atPath: dir.appendingPathComponent("in.yaml").path) else { return nil }
            return Case(id: id, yaml: [UInt8](yaml),
                        json: fm.contents(atPath: dir.appendingPathComponent("in.json").path).map { [UInt8]($0) },
                        isError: fm.fileExists(atPath: dir.appendingPathComponent("error").path))
        }
        var result: [Case] = []
        // Only the ID folders: `name/` and `tags/` are indexes, LICENSE and SOURCE are files.
        for id in try fm.contentsOfDirectory(atPath: suite.path).sorted()
        where id.count == 4 && id.allSatisfy({ $0.isUppercase || $0.isNumber }) {
            let dir = suite.appendingPathComponent(id)
            if let c = load(dir, id: id) {
                result.append(c)
                continue
            }
            for sub in try fm.contentsOfDirectory(atPath: dir.path).sorted() {
                if let c = load(dir.appendingPathComponent(sub), id: "\(id)/\(sub)") { result.append(c) }
            }
        }
        return result
    }
}

/// A JSON value for comparison: numbers as doubles, objects unordered.
enum JSON: Equatable, CustomStringConvertible {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSON])
    case object([String: JSON])

    struct Unrepresentable: Error, CustomStringConvertible { var description: String }

    /// The loaded node as JSON; non-string scalar keys become their source text (the suite's convention).
    init(node: Node) throws {
        switch node.content {
        case .scalar(let s):
            switch s.value {
            case .null: self = .null
            case .bool(let b): self = .bool(b)
            case .int(let i): self = .number(Double(i))
            case .double(let d): self = .number(d)
            case .string(let text): self = .string(text)
            }
        case .sequence(let items):
            self = .array(try items.map(JSON.init(node:)))
        case .mapping(let entries):
            var object: [String: JSON] = [:]
            for entry in entries {
                guard let key = entry.key.scalar else {
                    throw Unrepresentable(description: "a \(entry.key.kindName) key at \(entry.key.mark)")
                }
                let name: String
                if case .string(let text) = key.value { name = text } else { name = key.text }
                object[name] = try JSON(node: entry.value)
            }
            self = .object(object)
        }
    }

    var description: String {
        switch self {
        case .null: return "null"
        case .bool(let b): return "\(b)"
        case .number(let d): return "\(d)"
        case .string(let s): return "\"\(s)\""
        case .array(let items): return "[" + items.map(\.description).joined(separator: ", ") + "]"
        case .object(let o):
            return "{" + o.sorted { $0.key < $1.key }.map { "\"\($0.key)\": \($0.value)" }.joined(separator: ", ") + "}"
        }
    }

    struct SyntaxError: Error, CustomStringConvertible { var description: String }

    /// Parses zero or more JSON values written one after another (the suite's multi-document `in.json`).
    static func parseStream(_ bytes: [UInt8]) throws -> [JSON] {
        var parser = Parser(bytes: bytes)
        var values: [JSON] = []
        parser.skipSpace()
        while parser.index < bytes.count {
            values.append(try parser.value())
            parser.skipSpace()
        }
        return values
    }

    /// A small recursive-descent JSON reader; fine for the suite's small, trusted files.
    private struct Parser {
        let bytes: [UInt8]
        var index = 0

        mutating func skipSpace() {
            while index < bytes.count, [0x20, 0x0A, 0x0D, 0x09].contains(bytes[index]) { index += 1 }
        }

        mutating func value() throws -> JSON {
            skipSpace()
            guard index < bytes.count else { throw SyntaxError(description: "unexpected end") }
            switch bytes[index] {
            case UInt8(ascii: "{"):
                index += 1
                var object: [String: JSON] = [:]
                skipSpace()
                if peek(UInt8(ascii: "}")) { return .object(object) }
                repeat {
                    skipSpace()
                    guard case .string(let key) = try value() else { throw SyntaxError(description: "key at \(index)") }
                    skipSpace()
                    try expect(UInt8(ascii: ":"))
                    object[key] = try value()
                    skipSpace()
                } while peek(UInt8(ascii: ","))
                try expect(UInt8(ascii: "}"))
                return .object(object)
            case UInt8(ascii: "["):
                index += 1
                var items: [JSON] = []
                skipSpace()
                if peek(UInt8(ascii: "]")) { return .array(items) }
                repeat {
                    items.append(try value())
                    skipSpace()
                } while peek(UInt8(ascii: ","))
                try expect(UInt8(ascii: "]"))
                return .array(items)
            case UInt8(ascii: "\""):
                return .string(try string())
            case UInt8(ascii: "t"): try literal("true"); return .bool(true)
            case UInt8(ascii: "f"): try literal("false"); return .bool(false)
            case UInt8(ascii: "n"): try literal("null"); return .null
            default:
                let start = index
                while index < bytes.count, "+-0123456789.eE".utf8.contains(bytes[index]) { index += 1 }
                guard let d = Double(String(decoding: bytes[start..<index], as: UTF8.self)) else {
                    throw SyntaxError(description: "bad value at \(start)")
                }
                return .number(d)
            }
        }

        mutating func peek(_ byte: UInt8) -> Bool {
            if index < bytes.count, bytes[index] == byte { index += 1; return true }
            return false
        }

        mutating func expect(_ byte: UInt8) throws {
            guard peek(byte) else {
                throw SyntaxError(description: "expected \(Character(Unicode.Scalar(byte))) at \(index)")
            }
        }

        mutating func literal(_ word: String) throws {
            for b in word.utf8 { try expect(b) }
        }

        mutating func string() throws -> String {
            try expect(UInt8(ascii: "\""))
            var scalars = String.UnicodeScalarView()
            var raw: [UInt8] = []
            func flush() {
                scalars.append(contentsOf: String(decoding: raw, as: UTF8.self).unicodeScalars)
                raw.removeAll()
            }
            while index < bytes.count {
                let b = bytes[index]
                index += 1
                if b == UInt8(ascii: "\"") { flush(); return String(scalars) }
                guard b == UInt8(ascii: "\\") else { raw.append(b); continue }
                flush()
                guard index < bytes.count else { break }
                let e = bytes[index]
                index += 1
                switch e {
                case UInt8(ascii: "n"): scalars.append("\n")
                case UInt8(ascii: "t"): scalars.append("\t")
                case UInt8(ascii: "r"): scalars.append("\r")
                case UInt8(ascii: "b"): scalars.append("\u{08}")
                case UInt8(ascii: "f"): scalars.append("\u{0C}")
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if (0xD800..<0xDC00).contains(code), peek(UInt8(ascii: "\\")), peek(UInt8(ascii: "u")) {
                        let low = try hex4()
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    }
                    scalars.append(Unicode.Scalar(code) ?? "\u{FFFD}")
                default: scalars.append(Unicode.Scalar(e))
                }
            }
            throw SyntaxError(description: "unterminated string")
        }

        mutating func hex4() throws -> UInt32 {
            guard index + 4 <= bytes.count,
                  let v = UInt32(String(decoding: bytes[index..<index + 4], as: UTF8.self), radix: 16) else {
                throw SyntaxError(description: "bad \\u escape at \(index)")
            }
            index += 4
            return v
        }
    }
}
