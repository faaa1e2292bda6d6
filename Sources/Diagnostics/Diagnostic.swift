import Foundation

/// A place in a source file, 1-based as compilers and editors print it.
public struct SourceLocation: Hashable, Codable, Sendable, Comparable {
    /// The file as the user named it (relative paths stay relative, so messages match what they typed).
    public var file: String
    /// 1-based line.
    public var line: Int
    /// 1-based column.
    public var column: Int

    /// Creates a location.
    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    /// Orders by file, then line, then column, so diagnostics print in reading order.
    public static func < (a: SourceLocation, b: SourceLocation) -> Bool {
        (a.file, a.line, a.column) < (b.file, b.line, b.column)
    }
}

/// How bad a diagnostic is.
public enum Severity: String, Codable, Sendable {
    case error, warning, note
}

/// One problem found in the user's input, with where it is and, where known, which manifest field it is about.
///
/// A `Diagnostic` is also an `Error`, so a stage that can only report one problem may simply throw it.
public struct Diagnostic: Error, Hashable, Codable, Sendable {
    /// A second position that helps understand the first (the first of two duplicate keys).
    public struct Note: Hashable, Codable, Sendable {
        /// What the second position shows.
        public var message: String
        /// Where it is.
        public var location: SourceLocation?
        /// Creates a note.
        public init(message: String, location: SourceLocation?) {
            self.message = message
            self.location = location
        }
    }

    /// Error, warning or note.
    public var severity: Severity
    /// One sentence for a user.
    public var message: String
    /// Where, when the problem has a place in a file.
    public var location: SourceLocation?
    /// The manifest field it is about, as a path like `spec.inputs.tensors[1].values`.
    public var field: String?
    /// Further positions.
    public var notes: [Note]

    /// Creates a diagnostic.
    public init(
        _ severity: Severity, _ message: String, at location: SourceLocation? = nil,
        field: String? = nil, notes: [Note] = []
    ) {
        self.severity = severity
        self.message = message
        self.location = location
        self.field = field
        self.notes = notes
    }

    /// An error diagnostic.
    public static func error(_ message: String, at location: SourceLocation? = nil, field: String? = nil, notes: [Note] = []) -> Diagnostic {
        Diagnostic(.error, message, at: location, field: field, notes: notes)
    }

    /// A warning diagnostic.
    public static func warning(_ message: String, at location: SourceLocation? = nil, field: String? = nil) -> Diagnostic {
        Diagnostic(.warning, message, at: location, field: field)
    }
}

extension Array where Element == Diagnostic {
    /// Whether any of them is an error (warnings alone do not fail a command).
    public var hasErrors: Bool { contains { $0.severity == .error } }
}
