// YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution), matched by hand on UTF-8 bytes: the
// loader resolves every plain scalar, so this avoids regular expressions and intermediate strings.

/// The core schema's tags, as libyaml reports them after expanding `!!`.
enum CoreTag {
    static let prefix = "tag:yaml.org,2002:"
    static let str = "tag:yaml.org,2002:str"
    static let int = "tag:yaml.org,2002:int"
    static let float = "tag:yaml.org,2002:float"
    static let bool = "tag:yaml.org,2002:bool"
    static let null = "tag:yaml.org,2002:null"
    static let seq = "tag:yaml.org,2002:seq"
    static let map = "tag:yaml.org,2002:map"
    static let nonSpecific = "!"

    static func isCoreOrNonSpecific(_ tag: String) -> Bool {
        switch tag {
        case str, int, float, bool, null, seq, map, nonSpecific: return true
        default: return false
        }
    }

    /// `!!name` for tags in the yaml.org namespace, the full tag otherwise: how a user wrote it, most likely.
    static func display(_ tag: String) -> String {
        tag.hasPrefix(prefix) ? "!!" + tag.dropFirst(prefix.count) : tag
    }
}

enum CoreSchema {
    typealias Bytes = UnsafeBufferPointer<UInt8>

    /// Resolves an untagged plain scalar.
    static func resolvePlain(_ text: String) -> ScalarValue {
        var text = text
        return text.withUTF8 { bytes in
            if bytes.isEmpty { return .null }
            // Cheap first-byte filter: most plain scalars are words that cannot be null, bool or a number.
            switch bytes[0] {
            case UInt8(ascii: "~"), UInt8(ascii: "n"), UInt8(ascii: "N"):
                if isNull(bytes) { return .null }
            case UInt8(ascii: "t"), UInt8(ascii: "T"), UInt8(ascii: "f"), UInt8(ascii: "F"):
                if let b = bool(bytes) { return .bool(b) }
            case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "+"), UInt8(ascii: "."):
                if let number = number(bytes) { return number }
            default:
                break
            }
            return .string(String(decoding: bytes, as: UTF8.self))
        }
    }

    /// Resolves a scalar against an explicit core tag; nil when the text is not a valid value of that type.
    static func resolve(_ text: String, tag: String) -> ScalarValue? {
        var copy = text
        return copy.withUTF8 { bytes -> ScalarValue? in
            switch tag {
            case CoreTag.str: return .string(text)
            case CoreTag.null: return bytes.isEmpty || isNull(bytes) ? .null : nil
            case CoreTag.bool: return bool(bytes).map(ScalarValue.bool)
            case CoreTag.int: return bytes.isEmpty ? nil : integer(bytes)
            case CoreTag.float:
                guard !bytes.isEmpty, let n = number(bytes) else { return nil }
                if case .int(let i) = n { return .double(Double(i)) }
                return n
            default: return nil
            }
        }
    }

    static func isNull(_ b: Bytes) -> Bool {
        switch b.count {
        case 1: return b[0] == UInt8(ascii: "~")
        case 4: return equals(b, "null") || equals(b, "Null") || equals(b, "NULL")
        default: return false
        }
    }

    static func bool(_ b: Bytes) -> Bool? {
        switch b.count {
        case 4: if equals(b, "true") || equals(b, "True") || equals(b, "TRUE") { return true }
        case 5: if equals(b, "false") || equals(b, "False") || equals(b, "FALSE") { return false }
        default: break
        }
        return nil
    }

    /// int or float per the core schema, else nil.
    static func number(_ b: Bytes) -> ScalarValue? {
        if let i = integer(b) { return i }
        return float(b).map(ScalarValue.double)
    }

    /// `[-+]?[0-9]+`, `0o[0-7]+`, `0x[0-9a-fA-F]+`. Values beyond `Int` become `.double`.
    static func integer(_ b: Bytes) -> ScalarValue? {
        let n = b.count
        if n > 2, b[0] == UInt8(ascii: "0"), b[1] == UInt8(ascii: "o") || b[1] == UInt8(ascii: "x") {
            let radix = b[1] == UInt8(ascii: "o") ? 8 : 16
            var value = 0
            var overflow = false
            var approx = 0.0
            for c in b[2...] {
                guard let d = digit(c), d < radix else { return nil }
                approx = approx * Double(radix) + Double(d)
                if !overflow {
                    let (m, o1) = value.multipliedReportingOverflow(by: radix)
                    let (s, o2) = m.addingReportingOverflow(d)
                    if o1 || o2 { overflow = true } else { value = s }
                }
            }
            return overflow ? .double(approx) : .int(value)
        }
        var i = 0
        var negative = false
        if n > 0, b[0] == UInt8(ascii: "-") || b[0] == UInt8(ascii: "+") {
            negative = b[0] == UInt8(ascii: "-")
            i = 1
        }
        guard i < n else { return nil }
        var value = 0
        var overflow = false
        while i < n {
            let c = b[i]
            guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") else { return nil }
            let d = Int(c &- UInt8(ascii: "0"))
            if !overflow {
                // Accumulate negatively so that Int.min parses.
                let (m, o1) = value.multipliedReportingOverflow(by: 10)
                let (s, o2) = negative ? m.subtractingReportingOverflow(d) : m.addingReportingOverflow(d)
                if o1 || o2 { overflow = true } else { value = s }
            }
            i += 1
        }
        if overflow {
            return Double(String(decoding: b, as: UTF8.self)).map(ScalarValue.double)
        }
        return .int(value)
    }

    /// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`, `[-+]?\.(inf|Inf|INF)`, `\.(nan|NaN|NAN)`.
    static func float(_ b: Bytes) -> Double? {
        let n = b.count
        var i = 0
        var negative = false
        if n > 0, b[0] == UInt8(ascii: "-") || b[0] == UInt8(ascii: "+") {
            negative = b[0] == UInt8(ascii: "-")
            i = 1
        }
        if n - i == 4, b[i] == UInt8(ascii: ".") {
            let rest = Bytes(rebasing: b[(i + 1)...])
            if equals(rest, "inf") || equals(rest, "Inf") || equals(rest, "INF") {
                return negative ? -.infinity : .infinity
            }
            if i == 0, equals(rest, "nan") || equals(rest, "NaN") || equals(rest, "NAN") { return .nan }
        }
        func digits() -> Int {
            let start = i
            while i < n, b[i] >= UInt8(ascii: "0"), b[i] <= UInt8(ascii: "9") { i += 1 }
            return i - start
        }
        let intDigits = digits()
        if i < n, b[i] == UInt8(ascii: ".") {
            i += 1
            let fraction = digits()
            if intDigits == 0 && fraction == 0 { return nil }
        } else if intDigits == 0 {
            return nil
        }
        if i < n, b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") {
            i += 1
            if i < n, b[i] == UInt8(ascii: "-") || b[i] == UInt8(ascii: "+") { i += 1 }
            if digits() == 0 { return nil }
        }
        guard i == n else { return nil }
        return parseDouble(b)
    }

    /// Converts text already known to match the float pattern; Swift's parser accepts every such form (`1.`, `.5`,
    /// `+1e3`, `1.e5`), and overflowing exponents give ±infinity.
    private static func parseDouble(_ b: Bytes) -> Double? {
        Double(String(decoding: b, as: UTF8.self))
    }

    private static func digit(_ c: UInt8) -> Int? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return Int(c - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return Int(c - UInt8(ascii: "a")) + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return Int(c - UInt8(ascii: "A")) + 10
        default: return nil
        }
    }

    private static func equals(_ b: Bytes, _ literal: StaticString) -> Bool {
        guard b.count == literal.utf8CodeUnitCount else { return false }
        let p = literal.utf8Start
        for i in 0..<b.count where b[i] != p[i] { return false }
        return true
    }
}
