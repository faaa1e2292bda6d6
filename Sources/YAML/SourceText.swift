/// The raw input seen as lines, to turn libyaml's marks (line and column counted in characters) into byte offsets.
/// Only built when a check needs it. UTF-16 input (a UTF-16 byte-order mark) has no byte mapping: `offset` is nil.
struct SourceText {
    let bytes: UnsafeBufferPointer<UInt8>
    let isUTF8: Bool
    private var lineStarts: [Int]?
    /// The last mark resolved and its offset: queries come in document order, so walking on from here keeps the
    /// total work linear even on one very long line.
    private var cache: (mark: Mark, offset: Int)?

    init(_ bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
        let bom = bytes.count >= 2 ? (bytes[0], bytes[1]) : (0, 0)
        isUTF8 = !(bom == (0xFF, 0xFE) || bom == (0xFE, 0xFF))
    }

    /// Byte offset of a 1-based mark, or nil (UTF-16 input, or a mark past the end).
    mutating func offset(of mark: Mark) -> Int? {
        guard isUTF8 else { return nil }
        let starts = lineStarts ?? computeLineStarts()
        lineStarts = starts
        guard mark.line >= 1, mark.line <= starts.count else { return nil }
        var offset = starts[mark.line - 1]
        var column = 1
        if let cache, cache.mark.line == mark.line, cache.mark.column <= mark.column {
            offset = cache.offset
            column = cache.mark.column
        }
        defer { cache = (Mark(line: mark.line, column: column), offset) }
        while column < mark.column, offset < bytes.count {
            offset += 1
            while offset < bytes.count, bytes[offset] & 0xC0 == 0x80 { offset += 1 }
            column += 1
        }
        return offset
    }

    /// The byte at `offset`, or nil past the end.
    func byte(at offset: Int) -> UInt8? {
        offset >= 0 && offset < bytes.count ? bytes[offset] : nil
    }

    /// Line starts as libyaml counts lines: CR, LF, CRLF, NEL (U+0085), LS and PS (U+2028, U+2029) all break. The
    /// first line starts after a UTF-8 byte-order mark, which libyaml does not count as a column.
    private func computeLineStarts() -> [Int] {
        var starts: [Int] = []
        starts.reserveCapacity(bytes.count / 16 + 1)
        var i = bytes.count >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF ? 3 : 0
        starts.append(i)
        let n = bytes.count
        while i < n {
            let b = bytes[i]
            if b == 0x0A {
                i += 1
                starts.append(i)
            } else if b == 0x0D {
                i += (i + 1 < n && bytes[i + 1] == 0x0A) ? 2 : 1
                starts.append(i)
            } else if b == 0xC2, i + 1 < n, bytes[i + 1] == 0x85 {
                i += 2
                starts.append(i)
            } else if b == 0xE2, i + 2 < n, bytes[i + 1] == 0x80, bytes[i + 2] == 0xA8 || bytes[i + 2] == 0xA9 {
                i += 3
                starts.append(i)
            } else {
                i += 1
            }
        }
        return starts
    }

    /// The 1-based mark of a byte offset (columns count characters), the inverse of `offset(of:)` for UTF-8.
    mutating func mark(atOffset target: Int) -> Mark {
        let starts = lineStarts ?? computeLineStarts()
        lineStarts = starts
        // Last line start <= target.
        var low = 0, high = starts.count - 1
        while low < high {
            let mid = (low + high + 1) / 2
            if starts[mid] <= target { low = mid } else { high = mid - 1 }
        }
        var column = 1
        var i = starts[low]
        while i < min(target, bytes.count) {
            if bytes[i] & 0xC0 != 0x80 { column += 1 }
            i += 1
        }
        if starts[low] > target { return Mark(line: 1, column: 1) }
        return Mark(line: low + 1, column: column)
    }
}
