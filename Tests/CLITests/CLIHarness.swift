import Foundation
import TestSupport
import XCTest

/// Runs the real `tsexport` executable that `swift build --build-tests` / `swift test` put beside the test bundle
/// (found by `BuiltExecutable`, the one rule every test target uses).
enum CLI {
    /// The repository root (Tests/CLITests/<this file> → ../..).
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The `tsexport` executable, or nil when it was not built.
    static let executable: URL? = BuiltExecutable.tsexport

    /// What one run printed and returned.
    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
        /// stderr split into lines (no trailing empty line).
        var errLines: [String] { stderr.split(separator: "\n", omittingEmptySubsequences: false).map(String.init).filter { !$0.isEmpty } }
    }

    /// An empty cache folder, so no runtime versions remembered on this machine leak into plan results.
    static let isolatedCache = FileManager.default.temporaryDirectory.appendingPathComponent("tsexport-cli-cache-\(getpid())").path

    /// The environment children get: ours, minus anything that changes colour decisions unless a test sets it, and
    /// with a cache folder of their own.
    static func environment(_ extra: [String: String] = [:], removing: [String] = ["NO_COLOR", "TSEXPORT_PYTHON"]) -> [String: String] {
        var env = ProcessInfo.processInfo.environment
        for k in removing { env.removeValue(forKey: k) }
        env["TERM"] = "xterm"
        env["TSEXPORT_CACHE_DIR"] = isolatedCache
        for (k, v) in extra { env[k] = v }
        return env
    }

    /// Runs `tsexport ARGS` in `cwd`; stdout and stderr go through files, so neither can fill a pipe and block.
    static func run(_ args: [String], cwd: URL, env: [String: String] = environment(),
                    file: StaticString = #filePath, line: UInt = #line) throws -> Result {
        let exe = try XCTUnwrap(executable, BuiltExecutable.notFound, file: file, line: line)
        return try runProcess(exe, args, cwd: cwd, env: env)
    }

    /// Runs any executable the same way.
    static func runProcess(_ exe: URL, _ args: [String], cwd: URL, env: [String: String]) throws -> Result {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("tsexport-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        let outURL = tmp.appendingPathComponent("out"), errURL = tmp.appendingPathComponent("err")
        FileManager.default.createFile(atPath: outURL.path, contents: nil)
        FileManager.default.createFile(atPath: errURL.path, contents: nil)
        let out = try FileHandle(forWritingTo: outURL), err = try FileHandle(forWritingTo: errURL)
        let p = Process()
        p.executableURL = exe
        p.arguments = args
        p.currentDirectoryURL = cwd
        p.environment = env
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        try out.close()
        try err.close()
        let o = String(decoding: try Data(contentsOf: outURL), as: UTF8.self)
        let e = String(decoding: try Data(contentsOf: errURL), as: UTF8.self)
        return Result(status: p.terminationStatus, stdout: o, stderr: e)
    }

    /// A fresh temporary folder, resolved through symbolic links (so paths compare equal to what tsexport prints).
    static func tempDir(_ tag: String = "t") throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("tsexport-\(tag)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url.resolvingSymlinksInPath()
    }

    /// Writes text to a file, creating folders.
    @discardableResult
    static func write(_ text: String, to rel: String, in dir: URL) throws -> URL {
        let url = dir.appendingPathComponent(rel)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// A small valid manifest named `name` (9 lines; metadata.name at line 4, column 9).
    static func manifest(_ name: String, extraSpec: String = "") -> String {
        """
        apiVersion: tsexport/v1
        kind: Export
        metadata:
          name: \(name)
        spec:
          model: {class: BertModel, config: {vocab_size: 100, hidden_size: 32, num_attention_heads: 4}}
          inputs:
            tensors: [{name: input_ids, from: values, values: [[1, 2, 3]]}]

        """ + extraSpec
    }

    /// Fails when text shows a crash.
    static func assertNoCrash(_ r: Result, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        for needle in ["Backtrace", "Fatal error", "fatalError", "Stack dump", "Segmentation fault", "Illegal instruction", "💣"] {
            XCTAssertFalse(r.stderr.contains(needle), "\(what): stderr shows a crash (\(needle)):\n\(r.stderr)", file: file, line: line)
            XCTAssertFalse(r.stdout.contains(needle), "\(what): stdout shows a crash (\(needle)):\n\(r.stdout)", file: file, line: line)
        }
        XCTAssertLessThan(r.status, 128, "\(what): killed by a signal", file: file, line: line)
    }
}
