/// Formatting helpers for violation messages aimed at CLI users.
import JSON

enum Messages {
    static let maxShown = 60

    /// "integer 8", "string \"8\"", "boolean true", "null", "array", "object" — the got-value in type messages.
    static func describe(_ value: JSONValue) -> String {
        switch value {
        case .null: return "null"
        case .bool(let b): return "boolean \(b)"
        case .int(let i): return "integer \(i)"
        case .double(let d): return "number \(JSONValue.format(d))"
        case .string(let s): return "string \"\(truncate(s))\""
        case .array(let items): return items.isEmpty ? "empty array" : "array"
        case .object(let pairs): return pairs.isEmpty ? "empty object" : "object"
        }
    }

    /// A value as shown inside messages: strings in single quotes, everything else as compact JSON.
    static func show(_ value: JSONValue) -> String {
        if case .string(let s) = value { return "'\(truncate(s))'" }
        return truncate(value.serialized())
    }

    /// An allowed value in a list ("cpu, cuda, 3, null"): strings bare, everything else as compact JSON.
    static func option(_ value: JSONValue) -> String {
        if case .string(let s) = value { return truncate(s) }
        return truncate(value.serialized())
    }

    /// "a", "a or b", "a, b or c".
    static func list(_ items: [String], conjunction: String) -> String {
        switch items.count {
        case 0: return "nothing"
        case 1: return items[0]
        default: return items.dropLast().joined(separator: ", ") + " \(conjunction) " + items.last!
        }
    }

    /// "1 item", "3 items".
    static func count(_ n: Int, _ noun: String) -> String {
        "\(n) \(noun)\(n == 1 ? "" : "s")"
    }

    static func truncate(_ s: String) -> String {
        guard s.count > maxShown else { return s }
        return String(s.prefix(maxShown - 1)) + "…"
    }
}
