import Foundation
import JSON
import XCTest
@testable import JSON

final class JSONValueTests: XCTestCase {

    private func parse(_ text: String) throws -> JSONValue { try JSONValue(parsing: Data(text.utf8)) }

    func testNumbersKeepIntegerAndDoubleApart() throws {
        XCTAssertEqual(try parse("[1, 1.0, 1e0, -0, 2.5]"), .array([.int(1), .double(1), .double(1), .int(0), .double(2.5)]))
        guard case .array(let items) = try parse("[1, 1.0, 1e2]") else { return XCTFail("not an array") }
        guard case .int(1) = items[0] else { return XCTFail("1 must parse as .int, got \(items[0])") }
        guard case .double(1.0) = items[1] else { return XCTFail("1.0 must parse as .double, got \(items[1])") }
        guard case .double(100) = items[2] else { return XCTFail("1e2 must parse as .double, got \(items[2])") }
        // Too large for Int: falls back to Double.
        guard case .double(let big) = try parse("123456789012345678901234567890") else { return XCTFail("big int") }
        XCTAssertEqual(big, 1.2345678901234568e29)
    }

    func testBooleansAreNotNumbers() throws {
        guard case .bool(true) = try parse("true") else { return XCTFail("true must parse as .bool") }
        guard case .bool(false) = try parse("false") else { return XCTFail("false must parse as .bool") }
        XCTAssertNotEqual(try parse("true"), try parse("1"))
        XCTAssertNotEqual(try parse("false"), try parse("0"))
        XCTAssertNotEqual(JSONValue.bool(true), JSONValue.int(1))
        XCTAssertNotEqual(JSONValue.bool(false), JSONValue.double(0))
    }

    func testJSONSchemaEquality() throws {
        XCTAssertEqual(JSONValue.int(1), JSONValue.double(1.0))
        XCTAssertNotEqual(JSONValue.int(1), JSONValue.double(1.5))
        XCTAssertEqual(try parse(#"{"a": 1, "b": [1, {"c": null}]}"#), try parse(#"{"b": [1.0, {"c": null}], "a": 1.0}"#))
        XCTAssertNotEqual(try parse(#"{"a": 1}"#), try parse(#"{"a": 1, "b": 2}"#))
        XCTAssertNotEqual(try parse("[1, 2]"), try parse("[2, 1]"))
        XCTAssertNotEqual(JSONValue.string("\u{e9}"), JSONValue.string("e\u{301}"), "strings compare by code points")
        // Hashing agrees with equality.
        let set: Set<JSONValue> = [.int(1), .double(1.0), try parse(#"{"x": 1, "y": 2}"#), try parse(#"{"y": 2, "x": 1}"#)]
        XCTAssertEqual(set.count, 2)
    }

    func testObjectsKeepKeyOrderAndSubscript() throws {
        let value = try parse(#"{"zeta": 1, "alpha": {"inner": [true, null]}, "mid": "x"}"#)
        guard case .object(let pairs) = value else { return XCTFail("not an object") }
        XCTAssertEqual(pairs.map(\.0), ["zeta", "alpha", "mid"])
        XCTAssertEqual(value["mid"], .string("x"))
        XCTAssertNil(value["missing"])
        XCTAssertNil(JSONValue.int(3)["x"])
        XCTAssertEqual(value["alpha"]?["inner"]?[0], .bool(true))
        // A repeated key keeps its first position; the last value wins.
        XCTAssertEqual(try parse(#"{"a": 1, "b": 2, "a": 3}"#).serialized(pretty: false), #"{"a":3,"b":2}"#)
    }

    func testStringsAndEscapes() throws {
        XCTAssertEqual(try parse(#""a\"b\\c\/d\n\t\u00e9\ud83d\ude00""#), .string("a\"b\\c/d\n\té😀"))
        XCTAssertEqual(try parse("\"héllo 😀\""), .string("héllo 😀"))
    }

    func testSerializationIsDeterministicAndRoundTrips() throws {
        let text = #"{"b": [1, 1.0, 2.5, -3, true, null, "q\"\n"], "a": {}, "c": []}"#
        let value = try parse(text)
        XCTAssertEqual(value.serialized(pretty: false), #"{"b":[1,1.0,2.5,-3,true,null,"q\"\n"],"a":{},"c":[]}"#)
        XCTAssertEqual(value.serialized(pretty: true), """
        {
          "b": [
            1,
            1.0,
            2.5,
            -3,
            true,
            null,
            "q\\"\\n"
          ],
          "a": {},
          "c": []
        }
        """)
        let again = try parse(value.serialized(pretty: true))
        XCTAssertEqual(again, value)
        XCTAssertEqual(again.serialized(pretty: false), value.serialized(pretty: false))
        XCTAssertEqual(JSONValue.string("\u{1}").serialized(pretty: false), #""\u0001""#)
    }

    func testInvalidJSONReportsOffset() {
        for (text, offset) in [("{\"a\": }", 6), ("[1, 2", 5), ("01", 1), ("{\"a\" 1}", 5), ("[1] x", 4), ("\"abc", 4), ("tru", 0)] {
            XCTAssertThrowsError(try parse(text), text) { error in
                guard let e = error as? JSONParseError else { return XCTFail("wrong error type \(error)") }
                XCTAssertEqual(e.offset, offset, "\(text): \(e)")
            }
        }
    }

    func testLiterals() {
        let v: JSONValue = ["name": "x", "n": 1, "f": 1.5, "ok": true, "none": nil, "list": [1, "a"]]
        XCTAssertEqual(v["name"], .string("x"))
        XCTAssertEqual(v["n"], .int(1))
        XCTAssertEqual(v["none"], .null)
        XCTAssertEqual(v.serialized(pretty: false), #"{"name":"x","n":1,"f":1.5,"ok":true,"none":null,"list":[1,"a"]}"#)
    }
}
