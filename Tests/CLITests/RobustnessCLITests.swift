import Foundation
import XCTest

/// Hostile inputs and every bad-input fixture, through the real executable: exit 1, clean positioned errors, and
/// never a crash or a backtrace.
final class RobustnessCLITests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = try CLI.tempDir("hostile")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    private func expectCleanRejection(_ file: String, _ expected: [String], file f: StaticString = #filePath, line: UInt = #line) throws {
        let r = try CLI.run(["validate", file], cwd: dir)
        CLI.assertNoCrash(r, file, file: f, line: line)
        XCTAssertEqual(r.status, 1, r.stderr, file: f, line: line)
        XCTAssertEqual(r.stdout, "", file: f, line: line)
        XCTAssertEqual(r.errLines, expected, file: f, line: line)
        XCTAssertEqual(r.errLines.filter { $0.contains(" error: ") }.count, 1, "exactly one error line", file: f, line: line)

        let j = try CLI.run(["validate", "--json", file], cwd: dir)
        CLI.assertNoCrash(j, file + " --json", file: f, line: line)
        XCTAssertEqual(j.status, 1, file: f, line: line)
        let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as? [String: Any], file: f, line: line)
        XCTAssertEqual((o["diagnostics"] as? [Any])?.count, 1, file: f, line: line)
    }

    func testTwelveMegabyteFileIsRefusedBeforeParsing() throws {
        let size = 12 << 20
        var bytes = Data(repeating: UInt8(ascii: "a"), count: size)
        bytes[1] = 0xFF
        try bytes.write(to: dir.appendingPathComponent("big.yaml"))
        try expectCleanRejection("big.yaml", [
            "big.yaml:1:1: error: file is \(size) bytes, over the limit of 1048576 bytes per manifest",
            "1 error in 1 file",
        ])
    }

    func testMaxManifestBytesRaisesTheLimit() throws {
        // 2 MiB of a comment after a valid manifest: refused by default, valid with a larger limit.
        let text = CLI.manifest("padded") + "#" + String(repeating: "x", count: 2 << 20) + "\n"
        try CLI.write(text, to: "padded.yaml", in: dir)
        var r = try CLI.run(["validate", "padded.yaml"], cwd: dir)
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.errLines.first, "padded.yaml:1:1: error: file is \(text.utf8.count) bytes, over the limit of 1048576 bytes per manifest")
        r = try CLI.run(["validate", "--max-manifest-bytes", "\(4 << 20)", "padded.yaml"], cwd: dir)
        XCTAssertEqual(r.status, 0, r.stderr)
    }

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

    func testAliasBombIsRefused() throws {
        XCTAssertLessThan(Self.billionLaughs.utf8.count, 350)
        try CLI.write(Self.billionLaughs, to: "bomb.yaml", in: dir)
        try expectCleanRejection("bomb.yaml", [
            "bomb.yaml:5:8: error: alias '*d' expands the document past the limit of 10000 aliased nodes",
            "bomb.yaml:4:4: note: anchor defined here",
            "1 error in 1 file",
        ])
    }

    func testTwentyThousandDeepFlowSequenceIsRefused() throws {
        try CLI.write(String(repeating: "[", count: 20_000) + String(repeating: "]", count: 20_000) + "\n", to: "deep.yaml", in: dir)
        try expectCleanRejection("deep.yaml", [
            "deep.yaml:1:65: error: nesting is deeper than the limit of 64 sequences and mappings",
            "1 error in 1 file",
        ])
        // Unclosed, too.
        try CLI.write(String(repeating: "[", count: 20_000), to: "open.yaml", in: dir)
        try expectCleanRejection("open.yaml", [
            "open.yaml:1:65: error: nesting is deeper than the limit of 64 sequences and mappings",
            "1 error in 1 file",
        ])
    }

    func testDeepBlockNestingAndBinaryGarbageAreRefused() throws {
        try CLI.write(String(repeating: "- ", count: 20_000) + "x\n", to: "dashes.yaml", in: dir)
        let r = try CLI.run(["validate", "dashes.yaml"], cwd: dir)
        CLI.assertNoCrash(r, "dashes.yaml")
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.errLines, ["dashes.yaml:1:129: error: nesting is deeper than the limit of 64 sequences and mappings", "1 error in 1 file"])

        var g = Data((0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 7) })
        g.insert(0, at: 0)
        try g.write(to: dir.appendingPathComponent("garbage.yaml"))
        let r2 = try CLI.run(["validate", "garbage.yaml"], cwd: dir)
        CLI.assertNoCrash(r2, "garbage.yaml")
        XCTAssertEqual(r2.status, 1)
        XCTAssertEqual(r2.errLines.filter { $0.hasPrefix("garbage.yaml:") && $0.contains(": error: ") }.count, 1, r2.stderr)
    }

    /// Every fixture of ManifestTests, through the executable: exit 1, exactly the expected diagnostics (the
    /// fixtures' `.expected` files, which name files relative to the Fixtures folder), no crash; the same in JSON.
    func testEveryFixtureIsRejectedCleanlyWithItsExpectedDiagnostics() throws {
        let fixtures = CLI.repo.appendingPathComponent("Tests/ManifestTests/Fixtures")
        let names = try FileManager.default.contentsOfDirectory(atPath: fixtures.path).filter { $0.hasSuffix(".yaml") }.sorted()
        XCTAssertGreaterThanOrEqual(names.count, 15)
        for name in names {
            let r = try CLI.run(["validate", name], cwd: fixtures)
            CLI.assertNoCrash(r, name)
            XCTAssertEqual(r.status, 1, "\(name): \(r.stderr)")
            let expectedURL = fixtures.appendingPathComponent(name).deletingPathExtension().appendingPathExtension("expected")
            let expected = try String(contentsOf: expectedURL, encoding: .utf8).split(separator: "\n").map(String.init)
            let errors = expected.filter { $0.contains(": error: ") || $0.hasPrefix("error: ") }.count
            // The .expected files name absolute paths relative to the Fixtures folder, as FixtureTests renders them.
            let actual = r.errLines.map { $0.replacingOccurrences(of: fixtures.path + "/", with: "") }
            XCTAssertEqual(actual, expected + ["\(errors) error\(errors == 1 ? "" : "s") in 1 file"], name)

            let j = try CLI.run(["validate", "--json", name], cwd: fixtures)
            CLI.assertNoCrash(j, name + " --json")
            XCTAssertEqual(j.status, 1)
            let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as? [String: Any], name)
            XCTAssertEqual(o["valid"] as? Bool, false, name)
            XCTAssertEqual((o["diagnostics"] as? [[String: Any]])?.filter { $0["severity"] as? String == "error" }.count, errors, name)

            let p = try CLI.run(["plan", "--detailed-exitcode", name], cwd: fixtures)
            CLI.assertNoCrash(p, name + " plan")
            XCTAssertEqual(p.status, 1, "plan of an invalid manifest exits 1 even with --detailed-exitcode")
        }
        // All of them at once: each file's diagnostics, in file order, one run.
        let all = try CLI.run(["validate", "."], cwd: fixtures)
        CLI.assertNoCrash(all, "all fixtures")
        XCTAssertEqual(all.status, 1)
        var expectedAll: [String] = []
        for name in names {
            let url = fixtures.appendingPathComponent(name).deletingPathExtension().appendingPathExtension("expected")
            expectedAll += try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map { "./" + $0 }
        }
        XCTAssertEqual(all.errLines.dropLast().map { $0.replacingOccurrences(of: fixtures.path + "/", with: "") }, expectedAll)
        XCTAssertEqual(all.errLines.last, "\(expectedAll.filter { $0.contains(": error: ") }.count) errors in \(names.count) files")
    }

    /// A manifest given where a bundle belongs: the error names the bundle that manifest makes, and no Python starts
    /// (TSEXPORT_PYTHON names a program that does not exist).
    func testVerifyGivenAManifestNamesItsBundle() throws {
        try CLI.write(CLI.manifest("named"), to: "named.yaml", in: dir)
        for command in ["verify", "bench"] {
            var env = CLI.environment()
            env["TSEXPORT_PYTHON"] = "/nonexistent/python"
            let r = try CLI.run([command, "named.yaml"], cwd: dir, env: env)
            CLI.assertNoCrash(r, command)
            XCTAssertEqual(r.status, 1, r.stderr)
            XCTAssertEqual(r.errLines, ["named.yaml: error: this is a manifest, not a bundle; it makes the bundle build/named (with the current directory as output root); name that folder instead"])
        }
    }
}
