import Foundation

/// A JSON value with object keys kept in insertion order.
///
/// Integers and floating-point numbers stay distinct (`1` parses as `.int(1)`, `1.0` as `.double(1.0)`) so that
/// messages and round-trips can show what the user wrote, while equality follows JSON Schema: numbers compare by
/// mathematical value (`1 == 1.0`), `true` never equals `1`, and object key order does not matter.
public enum JSONValue: Sendable {
    /// JSON `null`.
    case null
    /// JSON `true` / `false`; never equal to a number.
    case bool(Bool)
    /// A JSON number written without fraction or exponent that fits in `Int`.
    case int(Int)
    /// Any other JSON number (with a fraction or exponent, or too large for `Int`).
    case double(Double)
    /// A JSON string.
    case string(String)
    /// A JSON array.
    case array([JSONValue])
    /// A JSON object as key/value pairs in insertion order (keys are unique when produced by the parser).
    case object([(String, JSONValue)])
}

extension JSONValue {
    /// The value stored under `key` when this is an object (first match), otherwise `nil`.
    /// Lets callers walk documents without pattern matching on `.object`.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let pairs) = self else { return nil }
        for (k, v) in pairs where k == key { return v }
        return nil
    }

    /// The element at `index` when this is an array and the index is in range, otherwise `nil`.
    /// Convenience for walking instance paths made of `PathComponent.index`.
    public subscript(index: Int) -> JSONValue? {
        guard case .array(let items) = self, items.indices.contains(index) else { return nil }
        return items[index]
    }

    /// The JSON Schema type name of this value: "null", "boolean", "integer", "number", "string", "array" or "object".
    /// Integral doubles (e.g. `1.0`) report "integer", as JSON Schema requires.
    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "boolean"
        case .int: return "integer"
        case .double(let d): return JSONValue.isIntegral(d) ? "integer" : "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }

    /// The numeric value as `Double` for `.int`/`.double`, otherwise `nil`.
    public var numberValue: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }

    public static func isIntegral(_ d: Double) -> Bool { d.isFinite && d.rounded(.towardZero) == d }
}

// MARK: - Equality and hashing (JSON Schema semantics)

extension JSONValue: Equatable {
    /// JSON Schema equality: numbers by mathematical value (`1 == 1.0`), booleans never equal numbers,
    /// arrays element-wise, objects as unordered key sets with equal values.
    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case (.bool(let a), .bool(let b)): return a == b
        case (.int(let a), .int(let b)): return a == b
        case (.double(let a), .double(let b)): return a == b
        case (.int(let a), .double(let b)), (.double(let b), .int(let a)): return intEqualsDouble(a, b)
        // Code-point equality, as JSON requires (Swift `==` would equate canonically equivalent strings).
        case (.string(let a), .string(let b)): return a.utf8.elementsEqual(b.utf8)
        case (.array(let a), .array(let b)): return a == b
        case (.object(let a), .object(let b)):
            guard a.count == b.count else { return false }
            if a.count <= 8 {
                outer: for (k, v) in a {
                    for (k2, v2) in b where k2.utf8.elementsEqual(k.utf8) {
                        if v == v2 { continue outer } else { return false }
                    }
                    return false
                }
                return true
            }
            var index: [String: JSONValue] = [:]
            index.reserveCapacity(b.count)
            for (k, v) in b { index[k] = v }
            for (k, v) in a {
                guard let other = index[k], other == v else { return false }
            }
            return true
        default: return false
        }
    }

    private static func intEqualsDouble(_ i: Int, _ d: Double) -> Bool {
        guard d.isFinite, d.rounded(.towardZero) == d else { return false }
        guard d >= -9.223372036854775808e18, d < 9.223372036854775808e18 else { return false }
        return Int(d) == i
    }
}

extension JSONValue: Hashable {
    /// Hashing consistent with JSON Schema equality (`1` and `1.0` hash alike; object key order is ignored).
    public func hash(into hasher: inout Hasher) {
        switch self {
        case .null: hasher.combine(0)
        case .bool(let b): hasher.combine(1); hasher.combine(b)
        case .int(let i): hasher.combine(2); hasher.combine(Double(i))
        case .double(let d): hasher.combine(2); hasher.combine(d)
        case .string(let s): hasher.combine(3); hasher.combine(s)
        case .array(let items):
            hasher.combine(4); hasher.combine(items.count)
            for item in items { hasher.combine(item) }
        case .object(let pairs):
            hasher.combine(5); hasher.combine(pairs.count)
            // Order-independent: combine a commutative sum of per-pair hashes.
            var sum = 0
            for (k, v) in pairs {
                var h = Hasher()
                h.combine(k); h.combine(v)
                sum = sum &+ h.finalize()
            }
            hasher.combine(sum)
        }
    }
}

// MARK: - Literals

/// Lets tests and callers write `nil` for `.null`.
extension JSONValue: ExpressibleByNilLiteral {
    /// Creates `.null`.
    public init(nilLiteral: ()) { self = .null }
}

/// Lets tests and callers write `true`/`false` for `.bool`.
extension JSONValue: ExpressibleByBooleanLiteral {
    /// Creates `.bool(value)`.
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}

/// Lets tests and callers write integer literals for `.int`.
extension JSONValue: ExpressibleByIntegerLiteral {
    /// Creates `.int(value)`.
    public init(integerLiteral value: Int) { self = .int(value) }
}

/// Lets tests and callers write floating-point literals for `.double`.
extension JSONValue: ExpressibleByFloatLiteral {
    /// Creates `.double(value)`.
    public init(floatLiteral value: Double) { self = .double(value) }
}

/// Lets tests and callers write string literals for `.string`.
extension JSONValue: ExpressibleByStringLiteral {
    /// Creates `.string(value)`.
    public init(stringLiteral value: String) { self = .string(value) }
}

/// Lets tests and callers write array literals for `.array`.
extension JSONValue: ExpressibleByArrayLiteral {
    /// Creates `.array(elements)`.
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
}

/// Lets tests and callers write dictionary literals for `.object`, keeping the written key order.
extension JSONValue: ExpressibleByDictionaryLiteral {
    /// Creates `.object` with the pairs in written order.
    public init(dictionaryLiteral elements: (String, JSONValue)...) { self = .object(elements) }
}

// MARK: - Parsing and serialization

extension JSONValue {
    /// Parses JSON text (UTF-8). Keeps object key order (a repeated key keeps its first position, last value wins),
    /// reads `1` as `.int`, `1.0`/`1e0` as `.double`, and `true` as `.bool` — distinctions JSONSerialization loses.
    /// Throws `JSONParseError` with the byte offset of the problem.
    public init(parsing data: Data) throws {
        self = try data.withUnsafeBytes { raw in
            var parser = JSONParser(bytes: raw.bindMemory(to: UInt8.self))
            return try parser.parseDocument()
        }
    }

    /// Parses JSON text from a string; see `init(parsing: Data)`.
    public init(parsing text: String) throws {
        try self.init(parsing: Data(text.utf8))
    }

    /// Deterministic JSON text: keys in stored order, integers without fraction, doubles in shortest round-trip
    /// form (integral doubles keep a `.0` so they re-parse as `.double`), non-finite doubles as `null`.
    /// `pretty` uses two-space indentation and one member per line.
    public func serialized(pretty: Bool = false) -> String {
        var out = ""
        write(to: &out, pretty: pretty, indent: 0)
        return out
    }

    private func write(to out: inout String, pretty: Bool, indent: Int) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .double(let d): out += JSONValue.format(d)
        case .string(let s): JSONValue.writeString(s, to: &out)
        case .array(let items):
            if items.isEmpty { out += "[]"; return }
            out += "["
            for (n, item) in items.enumerated() {
                if n > 0 { out += "," }
                if pretty { out += "\n"; out += String(repeating: "  ", count: indent + 1) }
                item.write(to: &out, pretty: pretty, indent: indent + 1)
            }
            if pretty { out += "\n"; out += String(repeating: "  ", count: indent) }
            out += "]"
        case .object(let pairs):
            if pairs.isEmpty { out += "{}"; return }
            out += "{"
            for (n, (k, v)) in pairs.enumerated() {
                if n > 0 { out += "," }
                if pretty { out += "\n"; out += String(repeating: "  ", count: indent + 1) }
                JSONValue.writeString(k, to: &out)
                out += pretty ? ": " : ":"
                v.write(to: &out, pretty: pretty, indent: indent + 1)
            }
            if pretty { out += "\n"; out += String(repeating: "  ", count: indent) }
            out += "}"
        }
    }

    public static func format(_ d: Double) -> String {
        guard d.isFinite else { return "null" }
        return d.description   // shortest round-trip: "1.0", "0.1", "1e+20"
    }

    static func writeString(_ s: String, to out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }
}
