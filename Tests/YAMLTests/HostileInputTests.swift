import Foundation
import XCTest
import YAML

/// Hostile inputs: each must end in a clean, positioned error (or a correct load) quickly and without crashing.
/// No timing assertions — a stall would show up as a hung test, a recursion as a crash.
final class HostileInputTests: XCTestCase {
    private func m(_ line: Int, _ column: Int) -> Mark { Mark(line: line, column: column) }

    private func expectError(_ kind: YAMLError.Kind, _ bytes: [UInt8], limits: LoaderLimits = .init(),
                             file: StaticString = #filePath, line: UInt = #line) -> YAMLError? {
        do {
            _ = try YAMLLoader(limits: limits).load(bytes)
            XCTFail("expected \(kind), but the input loaded", file: file, line: line)
        } catch {
            XCTAssertEqual(error.kind, kind, "\(error)", file: file, line: line)
            return error
        }
        return nil
    }

    func testTwelveMegabyteFileIsTooLargeBeforeParsing() {
        let size = 12 << 20
        var bytes = [UInt8](repeating: UInt8(ascii: "a"), count: size)
        bytes[1] = 0xFF  // invalid UTF-8: only the size check may run
        let error = expectError(.tooLarge, bytes)
        XCTAssertNil(error?.mark)
        XCTAssertEqual(error?.message, "input is \(size) bytes, more than the limit of \(1 << 20) bytes")
        XCTAssertThrowsError(try YAMLLoader().load(String(repeating: "a", count: size)))
        XCTAssertThrowsError(try YAMLLoader().load(Data(count: size)))
    }

    /// The classic 340-byte "billion laughs": 9^9 strings if expanded.
    static let billionLaughs = """
        a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
        b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
        c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
        d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
        e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
        f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
        g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
        h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
        i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
        """

    func testBillionLaughsExceedsTheAliasBudget() {
        XCTAssertLessThan(Self.billionLaughs.utf8.count, 350)
        // Budget so far: b 9×10, c 9×91, d 9×820 = 8289; the first *d (7381 nodes) in line e crosses 10,000.
        let error = expectError(.aliasBudget, Array(Self.billionLaughs.utf8))
        XCTAssertEqual(error?.mark, m(5, 8))
        XCTAssertEqual(error?.note?.mark, m(4, 4))
        XCTAssertEqual(expectError(.aliasRefused, Array(Self.billionLaughs.utf8),
                                   limits: .init(allowAliases: false))?.mark, m(2, 8))
    }

    func testBillionLaughsWithoutBudgetIsSharedNotCopied() throws {
        // With the budget lifted the stream still loads at once: aliases share nodes instead of copying them.
        let docs = try YAMLLoader(limits: .init(maxAliasExpansion: .max)).load(Self.billionLaughs)
        let i = try XCTUnwrap(docs.first?.root.mappingValue(forKey: "i")?.sequence)
        XCTAssertEqual(i.count, 9)
        XCTAssertTrue(i[0] === i[8])
    }

    func testDeepFlowNestingIsRefused() {
        let deep = String(repeating: "[", count: 20_000) + String(repeating: "]", count: 20_000)
        let error = expectError(.tooDeep, Array(deep.utf8))
        XCTAssertEqual(error?.mark, m(1, 65))
        XCTAssertEqual(expectError(.tooDeep, Array(String(repeating: "{a: ", count: 20_000).utf8))?.mark, m(1, 257))
        XCTAssertEqual(expectError(.tooDeep, Array(String(repeating: "[", count: 20_000).utf8))?.kind, .tooDeep)
    }

    func testDeepBlockNestingIsRefused() {
        let dashes = String(repeating: "- ", count: 20_000) + "x\n"
        XCTAssertEqual(expectError(.tooDeep, Array(dashes.utf8))?.mark, m(1, 129))
        var staircase = ""
        for level in 0..<1_000 { staircase += String(repeating: " ", count: level) + "-\n" }
        XCTAssertEqual(expectError(.tooDeep, Array(staircase.utf8))?.mark, m(65, 65))
        var mappings = ""
        for level in 0..<1_000 { mappings += String(repeating: " ", count: level) + "k:\n" }
        XCTAssertEqual(expectError(.tooDeep, Array(mappings.utf8))?.mark, m(65, 65))
    }

    func testDepthLimitIsExact() throws {
        let atLimit = String(repeating: "[", count: 64) + String(repeating: "]", count: 64)
        XCTAssertNoThrow(try YAMLLoader().load(atLimit))
        let over = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        XCTAssertEqual(expectError(.tooDeep, Array(over.utf8))?.mark, m(1, 65))
    }

    /// With the depth limit lifted, a 10,000-deep tree is built, compared and dropped on a thread with a 256 KiB
    /// stack: any recursion in building, equality or deinitialisation would overflow it and crash the test.
    /// (10,000, not 20,000: libyaml's own flow scanner is quadratic in depth, 1 s at 20,000.)
    func testDeepTreeNeedsNoRecursion() throws {
        let depth = 10_000
        let text = String(repeating: "[", count: depth) + "x" + String(repeating: "]", count: depth)
        let finished = expectation(description: "deep load")
        let result = LockedBox()
        let thread = Thread {
            do {
                let loader = YAMLLoader(limits: .init(maxDepth: depth + 1))
                let a = try loader.load(text)
                let b = try loader.load(text)
                var node = a[0].root
                var levels = 0
                while let inner = node.sequence?.first { node = inner; levels += 1 }
                result.set("levels=\(levels) equal=\(a[0].root.isStructurallyEqual(to: b[0].root))")
            } catch {
                result.set("error: \(error)")
            }
            finished.fulfill()
        }
        thread.stackSize = 256 << 10
        thread.start()
        wait(for: [finished], timeout: 120)
        XCTAssertEqual(result.get(), "levels=\(depth) equal=true")
    }

    func testGarbageNeverCrashes() {
        // Deterministic pseudo-random bytes and mutations of valid YAML: any outcome but a crash is fine.
        var rng = SplitMix64(seed: 0x5EED)
        let seeds = ["a: [1, {b: &x c}, *x]\n", "- |\n  text\n- 'q'\n", "? [a]\n: {b: !!str 1}\n", "%YAML 1.2\n--- x\n"]
        let alphabet = Array("[]{}:,-?&*!|>'\"#%@` \n\t\\ax0.~".utf8) + [0x00, 0xFF, 0xC3, 0xE2]
        var outcomes = 0
        for round in 0..<3_000 {
            var bytes = Array(seeds[round % seeds.count].utf8)
            for _ in 0..<(1 + Int(rng.next() % 6)) {
                let position = Int(rng.next() % UInt64(bytes.count + 1))
                let byte = alphabet[Int(rng.next() % UInt64(alphabet.count))]
                if rng.next() % 2 == 0, position < bytes.count {
                    bytes[position] = byte
                } else {
                    bytes.insert(byte, at: position)
                }
            }
            if round % 10 == 0 {
                bytes = (0..<Int(rng.next() % 64)).map { _ in alphabet[Int(rng.next() % UInt64(alphabet.count))] }
            }
            _ = try? YAMLLoader().load(bytes)
            _ = YAMLLoader.syntaxError(in: bytes)
            outcomes += 1
        }
        XCTAssertEqual(outcomes, 3_000)
    }
}

private struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

private final class LockedBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value = ""
    func set(_ newValue: String) { lock.lock(); value = newValue; lock.unlock() }
    func get() -> String { lock.lock(); defer { lock.unlock() }; return value }
}
