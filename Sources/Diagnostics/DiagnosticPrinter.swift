import Foundation

/// Renders diagnostics as compilers print them (`file:line:column: error: message`) or as JSON for machines.
public struct DiagnosticPrinter: Sendable {
    /// Whether to use ANSI colour.
    public var color: Bool

    /// Creates a printer.
    public init(color: Bool) { self.color = color }

    /// Colour only on a terminal, and never when `NO_COLOR` is set (https://no-color.org).
    public static func wantsColor(fileDescriptor: Int32, environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        if let v = environment["NO_COLOR"], !v.isEmpty { return false }
        if environment["TERM"] == "dumb" { return false }
        return isatty(fileDescriptor) == 1
    }

    /// One diagnostic and its notes, each on its own line.
    public func render(_ d: Diagnostic) -> String {
        var lines = [line(d.severity, d.message, d.location)]
        for note in d.notes { lines.append(line(.note, note.message, note.location)) }
        return lines.joined(separator: "\n")
    }

    /// All diagnostics, in order, one per line (notes follow their diagnostic).
    public func render(_ ds: [Diagnostic]) -> String {
        ds.map(render).joined(separator: "\n")
    }

    private func line(_ severity: Severity, _ message: String, _ location: SourceLocation?) -> String {
        var prefix = ""
        if let l = location { prefix = "\(l.file):\(l.line):\(l.column): " }
        let label: String
        switch (severity, color) {
        case (.error, true): label = "\u{1B}[1;31merror:\u{1B}[0m"
        case (.warning, true): label = "\u{1B}[1;35mwarning:\u{1B}[0m"
        case (.note, true): label = "\u{1B}[1;36mnote:\u{1B}[0m"
        case (let s, false): label = "\(s.rawValue):"
        }
        if color && !prefix.isEmpty { prefix = "\u{1B}[1m\(prefix)\u{1B}[0m" }
        return "\(prefix)\(label) \(message)"
    }

    /// The diagnostics as a JSON array: file, line, column, severity, message, field, notes.
    public static func json(_ ds: [Diagnostic]) -> [[String: Any]] {
        ds.map { d in
            var o: [String: Any] = ["severity": d.severity.rawValue, "message": d.message]
            o["file"] = d.location?.file ?? NSNull()
            o["line"] = d.location?.line ?? NSNull()
            o["column"] = d.location?.column ?? NSNull()
            o["field"] = d.field ?? NSNull()
            o["notes"] = d.notes.map { n -> [String: Any] in
                ["message": n.message, "file": n.location?.file ?? NSNull(), "line": n.location?.line ?? NSNull(),
                 "column": n.location?.column ?? NSNull()]
            }
            return o
        }
    }
}
