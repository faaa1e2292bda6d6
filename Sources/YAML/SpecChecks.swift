// Checks that close gaps where libyaml 0.2.5 accepts text the YAML 1.2 spec rejects (each one is a yaml-test-suite
// error case that libyaml lets through). They only ever add errors, look at the raw text only around positions
// libyaml reports, and are skipped for UTF-16 input (no byte mapping).
//
// Deliberately NOT enforced: a closing `]`/`}` on a line less indented than the enclosing block collection
// (`key: [\n  a,\n]`). The spec forbids it but libyaml, PyYAML and most YAML tools accept it and people write it.

extension TreeBuilder {
    private func syntax(_ message: String, at mark: Mark, note: YAMLError.Note? = nil) -> YAMLError {
        YAMLError(kind: .syntax, message: message, mark: mark, note: note)
    }

    private static let hash = UInt8(ascii: "#")

    /// A document with directives must be separated from a previous document by an explicit `...` (spec 9.2), and
    /// a comment after `%YAML 1.2` needs whitespace before it (`%TAG` prefixes may contain `#`, so only `%YAML`).
    mutating func checkDirectives(_ hasDirectives: Bool, at mark: Mark, end: Mark) throws(YAMLError) {
        guard hasDirectives else { return }
        if !documents.isEmpty, previousDocumentEndedImplicitly {
            throw syntax("directives after a document need a document end marker '...' before them", at: mark)
        }
        guard mark.line < end.line else { return }
        for line in mark.line..<end.line {
            guard var offset = source.offset(of: Mark(line: line, column: 1)) else { return }
            guard "%YAML".utf8.allSatisfy({ byte in
                defer { offset += 1 }
                return source.byte(at: offset) == byte
            }) else { continue }
            var previous = UInt8(ascii: "L")
            while let b = source.byte(at: offset), b != UInt8(ascii: "\n"), b != UInt8(ascii: "\r") {
                if b == Self.hash, previous != UInt8(ascii: " "), previous != UInt8(ascii: "\t") {
                    throw syntax("a comment must be separated from other tokens by whitespace",
                                 at: source.mark(atOffset: offset))
                }
                previous = b
                offset += 1
            }
        }
    }

    /// The indentation the continuation lines of a flow node need when it sits in a block collection: more than the
    /// collection's own (spec 7: flow content is indented by at least n+1). Nil when there is no block parent, or
    /// the parent's position is unreliable (its properties may stand on an earlier line).
    func flowIndentation(startLine: Int) -> (line: Int, spaces: Int)? {
        guard let top = stack.last, !top.isFlow, top.tag == nil, top.anchor == nil else { return nil }
        return (startLine, top.mark.column)
    }

    mutating func checkScalar(_ text: String, style: ScalarStyle, hasProperties: Bool, mark: Mark,
                              end: Mark) throws(YAMLError) {
        switch style {
        case .plain:
            // `[-]`, `[-, -]`: a lone `-` is an indicator, not a plain scalar, in flow context.
            if text == "-", stack.last?.isFlow == true {
                throw syntax("'-' cannot be a plain scalar inside a flow collection; quote it", at: mark)
            }
        case .singleQuoted, .doubleQuoted:
            if end.line > mark.line, let indentation = flowIndentation(startLine: mark.line) {
                try checkContinuationLines(after: indentation.line, through: end.line, spaces: indentation.spaces,
                                           isCollection: false)
            }
            try checkNoCommentRightAfter(end)
        case .literal, .folded:
            // `>#comment`: the header's comment needs whitespace before it.
            guard !hasProperties, var offset = source.offset(of: mark),
                  let indicator = source.byte(at: offset),
                  indicator == UInt8(ascii: "|") || indicator == UInt8(ascii: ">") else { return }
            offset += 1
            let indicators = Array("+-0123456789".utf8)
            while let b = source.byte(at: offset), indicators.contains(b) { offset += 1 }
            if source.byte(at: offset) == Self.hash {
                throw syntax("a comment must be separated from the block scalar indicator by whitespace",
                             at: source.mark(atOffset: offset))
            }
        }
    }

    /// After a flow collection closes: its other lines must be indented (see `flowIndentation`), and a comment may
    /// not touch the closing bracket.
    mutating func checkClose(_ frame: Frame, end: Mark) throws(YAMLError) {
        guard frame.isFlow else { return }
        if let indentation = frame.indentation, end.line > indentation.line {
            try checkContinuationLines(after: indentation.line, through: end.line, spaces: indentation.spaces,
                                       isCollection: true)
        }
        try checkNoCommentRightAfter(end)
    }

    /// Inside a flow collection, `,#comment` is not a comment: the `#` needs whitespace before it.
    mutating func checkAfterNode(end: Mark) throws(YAMLError) {
        guard stack.last?.isFlow == true, var offset = source.offset(of: end) else { return }
        while let b = source.byte(at: offset), b == UInt8(ascii: " ") || b == UInt8(ascii: "\t") { offset += 1 }
        if source.byte(at: offset) == UInt8(ascii: ","), source.byte(at: offset + 1) == Self.hash {
            throw syntax("a comment must be separated from other tokens by whitespace",
                         at: source.mark(atOffset: offset + 1))
        }
    }

    private mutating func checkNoCommentRightAfter(_ end: Mark) throws(YAMLError) {
        guard let offset = source.offset(of: end), source.byte(at: offset) == Self.hash else { return }
        throw syntax("a comment must be separated from other tokens by whitespace", at: end)
    }

    /// Lines `first+1 ... last` must start with at least `spaces` spaces, except blank lines and, in a collection,
    /// comment lines and lines that start with the closing bracket.
    private mutating func checkContinuationLines(after first: Int, through last: Int, spaces required: Int,
                                                 isCollection: Bool) throws(YAMLError) {
        guard first < last else { return }
        for line in (first + 1)...last {
            guard var offset = source.offset(of: Mark(line: line, column: 1)) else { return }
            var spaces = 0
            while source.byte(at: offset) == UInt8(ascii: " ") { spaces += 1; offset += 1 }
            if spaces >= required { continue }
            var firstNonBlank = offset
            while let b = source.byte(at: firstNonBlank), b == UInt8(ascii: " ") || b == UInt8(ascii: "\t") {
                firstNonBlank += 1
            }
            switch source.byte(at: firstNonBlank) {
            case nil, UInt8(ascii: "\n")?, UInt8(ascii: "\r")?:
                continue  // blank line
            case Self.hash? where isCollection, UInt8(ascii: "]")? where isCollection,
                 UInt8(ascii: "}")? where isCollection:
                continue
            default:
                let what = isCollection ? "a flow collection" : "a quoted scalar"
                throw syntax(
                    "this line of \(what) must be indented more than the enclosing block collection "
                        + "(at least \(required) \(required == 1 ? "space" : "spaces"))",
                    at: Mark(line: line, column: spaces + 1),
                    note: stack.last.map { .init(message: "the block collection starts here", mark: $0.mark) })
            }
        }
    }
}
