import Foundation
import XCTest

/// Colour: only on a terminal, never with NO_COLOR set (non-empty) or TERM=dumb.
final class ColorCLITests: XCTestCase {
    var dir: URL!
    static let esc = "\u{1B}"

    override func setUpWithError() throws {
        dir = try CLI.tempDir("color")
        try CLI.write(CLI.manifest("good"), to: "good.yaml", in: dir)
        try CLI.write(CLI.manifest("good").replacingOccurrences(of: "kind: Export", with: "kind: Exprot"), to: "bad.yaml", in: dir)
        try CLI.write(CLI.manifest("dup"), to: "d1.yaml", in: dir)
        try CLI.write(CLI.manifest("dup"), to: "d2.yaml", in: dir)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    func testNoEscapesWhenNotATerminal() throws {
        for extra in [[:], ["NO_COLOR": "1"]] as [[String: String]] {
            let env = CLI.environment(extra)
            for args in [["validate", "bad.yaml"], ["validate", "d1.yaml", "d2.yaml"], ["validate", "good.yaml"],
                         ["plan", "--output-root", "out", "good.yaml"], ["plan", "bad.yaml"]] {
                let r = try CLI.run(args, cwd: dir, env: env)
                XCTAssertFalse(r.stderr.contains(Self.esc), "\(args) \(extra): escape on stderr: \(r.stderr)")
                XCTAssertFalse(r.stdout.contains(Self.esc), "\(args) \(extra): escape on stdout: \(r.stdout)")
            }
        }
        let r = try CLI.run(["validate", "bad.yaml"], cwd: dir)
        XCTAssertEqual(r.errLines, ["bad.yaml:2:7: error: unsupported kind 'Exprot'; the only kind is Export", "1 error in 1 file"])
    }

    /// Runs a command under `script`, which gives it a pseudo-terminal on stdin, stdout and stderr.
    private func underTerminal(_ args: String, env extra: [String: String]) throws -> CLI.Result? {
        let script = URL(fileURLWithPath: "/usr/bin/script")
        guard FileManager.default.isExecutableFile(atPath: script.path), let exe = CLI.executable else { return nil }
        return try CLI.runProcess(script, ["-q", "-e", "-c", "'\(exe.path)' \(args)", "/dev/null"], cwd: dir, env: CLI.environment(extra))
    }

    func testColourOnATerminalAndNotWithNoColor() throws {
        guard let plain = try underTerminal("validate bad.yaml d1.yaml d2.yaml", env: [:]) else {
            throw XCTSkip("script(1) is not available to fake a terminal")
        }
        XCTAssertEqual(plain.status, 1)
        let tty = plain.stdout.replacingOccurrences(of: "\r\n", with: "\n")
        XCTAssertTrue(tty.contains("\(Self.esc)[1mbad.yaml:2:7: \(Self.esc)[0m\(Self.esc)[1;31merror:\(Self.esc)[0m unsupported kind 'Exprot'"), tty)
        XCTAssertTrue(tty.contains("\(Self.esc)[1md1.yaml:4:9: \(Self.esc)[0m\(Self.esc)[1;36mnote:\(Self.esc)[0m first used here"), tty)

        let empty = try XCTUnwrap(underTerminal("validate bad.yaml", env: ["NO_COLOR": ""]))
        XCTAssertTrue(empty.stdout.contains(Self.esc), "an empty NO_COLOR does not turn colour off (no-color.org)")

        for off in [["NO_COLOR": "1"], ["TERM": "dumb"]] {
            let r = try XCTUnwrap(underTerminal("validate bad.yaml d1.yaml d2.yaml", env: off))
            XCTAssertEqual(r.status, 1)
            XCTAssertFalse(r.stdout.contains(Self.esc), "\(off): \(r.stdout)")
            XCTAssertTrue(r.stdout.contains("bad.yaml:2:7: error: unsupported kind 'Exprot'; the only kind is Export"), r.stdout)
        }
    }

    func testPlanIsColouredOnATerminalOnly() throws {
        guard let r = try underTerminal("plan --output-root out good.yaml", env: [:]) else {
            throw XCTSkip("script(1) is not available to fake a terminal")
        }
        XCTAssertEqual(r.status, 0)
        XCTAssertTrue(r.stdout.contains("\(Self.esc)[32m+ create\(Self.esc)[0m \(Self.esc)[1mgood\(Self.esc)[0m"), r.stdout)
        let off = try XCTUnwrap(underTerminal("plan --output-root out good.yaml", env: ["NO_COLOR": "1"]))
        XCTAssertFalse(off.stdout.contains(Self.esc), off.stdout)
        XCTAssertTrue(off.stdout.contains("+ create good  (good.yaml:4) → out/build/good"), off.stdout)
    }
}
