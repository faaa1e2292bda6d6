internal import CYAML

/// One libyaml event, copied into Swift values so that no C object outlives `EventParser.next()`.
/// Marks are 1-based; `end` is the position just after the event's last character.
enum Event {
    case streamStart
    case streamEnd
    case documentStart(mark: Mark, end: Mark, hasDirectives: Bool)
    case documentEnd(implicit: Bool)
    case alias(name: String, mark: Mark, end: Mark)
    case scalar(text: String, style: ScalarStyle, tag: String?, anchor: String?, mark: Mark, end: Mark)
    case sequenceStart(tag: String?, anchor: String?, mark: Mark, flow: Bool)
    case sequenceEnd(end: Mark)
    case mappingStart(tag: String?, anchor: String?, mark: Mark, flow: Bool)
    case mappingEnd(end: Mark)
}

/// Owns a `yaml_parser_t` (and each `yaml_event_t` while it is converted) and frees them; the only code in the
/// package that touches libyaml. The input buffer must outlive the parser.
final class EventParser {
    private let parser: UnsafeMutablePointer<yaml_parser_t>
    /// The input, for checks that need the raw text.
    let input: UnsafeBufferPointer<UInt8>

    init(input: UnsafeBufferPointer<UInt8>) throws(YAMLError) {
        self.input = input
        parser = .allocate(capacity: 1)
        guard yaml_parser_initialize(parser) != 0 else {
            parser.deallocate()
            throw YAMLError(kind: .outOfMemory, message: "libyaml could not initialise a parser")
        }
        yaml_parser_set_input_string(parser, input.baseAddress, input.count)
    }

    deinit {
        yaml_parser_delete(parser)
        parser.deallocate()
    }

    /// The next event, or libyaml's error converted to a positioned `YAMLError`.
    func next() throws(YAMLError) -> Event {
        var event = yaml_event_t()
        guard yaml_parser_parse(parser, &event) != 0 else { throw currentError() }
        defer { yaml_event_delete(&event) }
        let mark = Mark(line: Int(event.start_mark.line) + 1, column: Int(event.start_mark.column) + 1)
        let end = Mark(line: Int(event.end_mark.line) + 1, column: Int(event.end_mark.column) + 1)
        switch event.type {
        case YAML_STREAM_START_EVENT:
            return .streamStart
        case YAML_STREAM_END_EVENT:
            return .streamEnd
        case YAML_DOCUMENT_START_EVENT:
            let d = event.data.document_start
            return .documentStart(
                mark: mark, end: end,
                hasDirectives: d.version_directive != nil || d.tag_directives.start != d.tag_directives.end)
        case YAML_DOCUMENT_END_EVENT:
            return .documentEnd(implicit: event.data.document_end.implicit != 0)
        case YAML_ALIAS_EVENT:
            return .alias(name: Self.string(event.data.alias.anchor) ?? "", mark: mark, end: end)
        case YAML_SCALAR_EVENT:
            let s = event.data.scalar
            let text: String
            if let value = s.value, s.length > 0 {
                text = String(decoding: UnsafeBufferPointer(start: value, count: Int(s.length)), as: UTF8.self)
            } else {
                text = ""
            }
            let style: ScalarStyle
            switch s.style {
            case YAML_SINGLE_QUOTED_SCALAR_STYLE: style = .singleQuoted
            case YAML_DOUBLE_QUOTED_SCALAR_STYLE: style = .doubleQuoted
            case YAML_LITERAL_SCALAR_STYLE: style = .literal
            case YAML_FOLDED_SCALAR_STYLE: style = .folded
            default: style = .plain
            }
            return .scalar(text: text, style: style, tag: Self.string(s.tag), anchor: Self.string(s.anchor),
                           mark: mark, end: end)
        case YAML_SEQUENCE_START_EVENT:
            let s = event.data.sequence_start
            return .sequenceStart(tag: Self.string(s.tag), anchor: Self.string(s.anchor), mark: mark,
                                  flow: s.style == YAML_FLOW_SEQUENCE_STYLE)
        case YAML_SEQUENCE_END_EVENT:
            return .sequenceEnd(end: end)
        case YAML_MAPPING_START_EVENT:
            let m = event.data.mapping_start
            return .mappingStart(tag: Self.string(m.tag), anchor: Self.string(m.anchor), mark: mark,
                                 flow: m.style == YAML_FLOW_MAPPING_STYLE)
        case YAML_MAPPING_END_EVENT:
            return .mappingEnd(end: end)
        default:
            // YAML_NO_EVENT is only produced after an error or the stream end; treat it as the end.
            return .streamEnd
        }
    }

    private static func string(_ pointer: UnsafeMutablePointer<yaml_char_t>?) -> String? {
        pointer.map { String(cString: $0) }
    }

    /// libyaml's error state as a `YAMLError`: its problem text and 1-based problem mark, with its context (e.g.
    /// "while parsing a block mapping") in the message and, where it starts elsewhere, as a note.
    private func currentError() -> YAMLError {
        let p = parser.pointee
        let problem = p.problem.map { String(cString: $0) } ?? "unknown libyaml error"
        switch p.error {
        case YAML_MEMORY_ERROR:
            return YAMLError(kind: .outOfMemory, message: "libyaml ran out of memory")
        case YAML_READER_ERROR:
            // Reader errors carry a byte offset, not a mark.
            var message = problem
            if p.problem_value != -1 {
                let value = UInt32(bitPattern: p.problem_value)
                message += value <= 0xFF && problem.contains("octet")
                    ? " (byte 0x\(hex(value, 2)))" : " (U+\(hex(value, 4)))"
            }
            var source = SourceText(input)
            return YAMLError(kind: .invalidEncoding, message: message,
                             mark: source.mark(atOffset: Int(p.problem_offset)))
        default:
            let problemMark = Mark(line: Int(p.problem_mark.line) + 1, column: Int(p.problem_mark.column) + 1)
            guard let contextPointer = p.context else {
                return YAMLError(kind: .syntax, message: problem, mark: problemMark)
            }
            let context = String(cString: contextPointer)
            let contextMark = Mark(line: Int(p.context_mark.line) + 1, column: Int(p.context_mark.column) + 1)
            var note: YAMLError.Note?
            if contextMark != problemMark {
                let what = context.hasPrefix("while parsing ") ? String(context.dropFirst("while parsing ".count))
                    : context.hasPrefix("while scanning ") ? String(context.dropFirst("while scanning ".count))
                    : context
                note = .init(message: "\(what) started here", mark: contextMark)
            }
            return YAMLError(kind: .syntax, message: "\(context), \(problem)", mark: problemMark, note: note)
        }
    }
}

private func hex(_ value: UInt32, _ width: Int) -> String {
    let digits = String(value, radix: 16, uppercase: true)
    return String(repeating: "0", count: max(0, width - digits.count)) + digits
}
