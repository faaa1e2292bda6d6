import Foundation

/// Canonical JSON: object keys sorted, no whitespace, integers as integers — so reformatting a manifest (comments,
/// key order, quoting style that resolves to the same value) never changes its fingerprint.
public enum CanonicalJSON {
    /// The canonical text of a value.
    public static func text(_ v: JSONValue) -> String {
        var out = ""
        write(v, into: &out)
        return out
    }

    static func write(_ v: JSONValue, into out: inout String) {
        switch v {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .double(let d):
            if d.rounded() == d && abs(d) < 9e15 { out += String(Int(d)) } else { out += "\(d)" }
        case .string(let s): out += quote(s)
        case .array(let a):
            out += "["
            for (i, x) in a.enumerated() {
                if i > 0 { out += "," }
                write(x, into: &out)
            }
            out += "]"
        case .object(let o):
            out += "{"
            for (i, (k, x)) in o.sorted(by: { $0.0 < $1.0 }).enumerated() {
                if i > 0 { out += "," }
                out += quote(k) + ":"
                write(x, into: &out)
            }
            out += "}"
        }
    }

    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }
}

