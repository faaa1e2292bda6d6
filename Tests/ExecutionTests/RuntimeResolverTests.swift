import Execution
import Foundation
import XCTest

/// A test double for `python3 -m venv` and pip: it records the argv arrays and fakes their effects, so the tests can
/// provoke a failing pip (which the real one does not do on demand). The real creation runs in
/// `testManagedRuntimeIsReallyCreatedAndUsed` below.
final class VenvPipDoubleRunner: ProcessRunner, @unchecked Sendable {
    var calls: [[String]] = []
    var failPip = false

    func start(_ argv: [String], environment: [String: String], directory: URL?) throws -> ChildProcess {
        calls.append(argv)
        var status: Int32 = 0
        if argv.count >= 4, argv[1] == "-m", argv[2] == "venv" {
            try FileManager.default.createDirectory(atPath: argv[3] + "/bin", withIntermediateDirectories: true)
            FileManager.default.createFile(atPath: argv[3] + "/bin/python", contents: Data())
        } else if argv.contains("pip") {
            status = failPip ? 1 : 0
        }
        return FinishedChild(lines: status == 0 ? ["Collecting torch==2.13.0 (from -r requirements.txt (line 3))", "Successfully installed torch-2.13.0"] : [], status: status)
    }

    final class FinishedChild: ChildProcess, @unchecked Sendable {
        var lines: [String]
        let status: Int32
        init(lines: [String], status: Int32) {
            self.lines = lines
            self.status = status
        }
        func write(_ data: Data) throws {}
        func readLine() -> String? { lines.isEmpty ? nil : lines.removeFirst() }
        var stderrTail: String { status == 0 ? "" : "ERROR: No matching distribution found for torch==2.13.0" }
        func closeInput() {}
        func signal(_ sig: Int32) {}
        func wait() -> Int32 { status }
        var pid: Int32 { 0 }
    }
}

/// The runtime choice: --python, TSEXPORT_PYTHON, else the managed runtime created once and reused.
final class RuntimeResolverTests: XCTestCase {
    func environment(_ cache: URL, extra: [String: String] = [:]) -> [String: String] {
        ["TSEXPORT_CACHE_DIR": cache.path, "PATH": "/usr/bin:/bin", "HOME": cache.path].merging(extra) { _, b in b }
    }

    func testFlagWinsOverEnvironmentWhichWinsOverManaged() throws {
        let cache = try Harness.tempDir("rt")
        defer { try? FileManager.default.removeItem(at: cache) }
        let runner = VenvPipDoubleRunner()
        let resolver = RuntimeResolver(runner: runner, environment: environment(cache, extra: ["TSEXPORT_PYTHON": "/bin/true"]), progress: { _ in })
        XCTAssertEqual(try resolver.resolve(flag: "/bin/false"), PythonRuntime(python: "/bin/false", origin: .flag))
        XCTAssertEqual(try resolver.resolve(flag: nil), PythonRuntime(python: "/bin/true", origin: .environment))
        XCTAssertThrowsError(try resolver.resolve(flag: "/no/such/python")) { e in
            XCTAssertEqual("\(e)", "--python names /no/such/python, which is not an executable file")
        }
        XCTAssertTrue(runner.calls.isEmpty, "choosing an interpreter starts nothing")
    }

    func testManagedRuntimeIsCreatedOnceWithArgvArraysAndReused() throws {
        let cache = try Harness.tempDir("rt")
        defer { try? FileManager.default.removeItem(at: cache) }
        let runner = VenvPipDoubleRunner()
        let lines = LineSink()
        let resolver = RuntimeResolver(runner: runner, environment: environment(cache, extra: ["TSEXPORT_BASE_PYTHON": "/bin/true"]), progress: { lines.add($0) })
        let dir = try resolver.managedDirectory()
        XCTAssertEqual(dir.deletingLastPathComponent().path, cache.appendingPathComponent("runtimes").path)
        XCTAssertEqual(dir.lastPathComponent.count, 16, "keyed by the requirements' hash")
        XCTAssertNil(resolver.peek(flag: nil), "no managed runtime yet")

        let rt = try resolver.resolve(flag: nil)
        XCTAssertEqual(rt, PythonRuntime(python: dir.appendingPathComponent("bin/python").path, origin: .managed))
        XCTAssertEqual(runner.calls.count, 2)
        XCTAssertEqual(Array(runner.calls[0].prefix(3)), ["/bin/true", "-m", "venv"])
        XCTAssertEqual(Array(runner.calls[1].suffix(2)), ["-r", WorkerResources.requirements.path])
        XCTAssertTrue(lines.all.contains { $0.hasPrefix("creating the managed Python runtime in \(dir.path)") })
        // One line per step with its elapsed time instead of pip's own output (which goes to the kept log).
        XCTAssertTrue(lines.all.contains { $0.hasPrefix("  [2/2] pip install -r requirements.txt: 1 package installed in ") }, "\(lines.all)")
        XCTAssertFalse(lines.all.contains("  Collecting torch==2.13.0"), "pip's lines stay in the log")
        XCTAssertEqual(resolver.peek(flag: nil), rt.python)

        // Reused: nothing runs the second time.
        XCTAssertEqual(try resolver.resolve(flag: nil), rt)
        XCTAssertEqual(runner.calls.count, 2)
    }

    func testFailedPipLeavesNoHalfRuntimeAndSaysWhichStep() throws {
        let cache = try Harness.tempDir("rt")
        defer { try? FileManager.default.removeItem(at: cache) }
        let runner = VenvPipDoubleRunner()
        runner.failPip = true
        let resolver = RuntimeResolver(runner: runner, environment: environment(cache, extra: ["TSEXPORT_BASE_PYTHON": "/bin/true"]), progress: { _ in })
        XCTAssertThrowsError(try resolver.resolve(flag: nil)) { e in
            XCTAssertTrue("\(e)".hasPrefix("creating the managed runtime failed at `pip install -r requirements.txt` (exit 1):"), "\(e)")
            XCTAssertTrue("\(e)".contains("No matching distribution"))
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: cache.appendingPathComponent("runtimes").path), [])
    }

    /// The real thing: a fresh cache folder, `tsexport doctor` with no interpreter named, so tsexport creates the
    /// managed virtual environment with python3 -m venv and pip (the torch wheel comes from the machine's local wheel
    /// folder, transformers from PyPI), then reuses it.
    func testManagedRuntimeIsReallyCreatedAndUsed() throws {
        let cache = try Harness.tempDir("managed")
        defer { try? FileManager.default.removeItem(at: cache) }
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "TSEXPORT_PYTHON")
        env["TSEXPORT_CACHE_DIR"] = cache.path
        func doctor() throws -> (Int32, String) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: try Harness.binary())
            p.arguments = ["doctor"]
            p.environment = env
            let pipe = Pipe()
            p.standardOutput = pipe
            p.standardError = pipe
            try p.run()
            let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            return (p.terminationStatus, out)
        }
        let (code, out) = try doctor()
        XCTAssertEqual(code, 0, out)
        XCTAssertTrue(out.contains("creating the managed Python runtime in \(cache.path)/runtimes/"), out)
        XCTAssertTrue(out.contains("(managed runtime)"), out)
        XCTAssertTrue(out.contains("torch         2.13.0"), out)
        XCTAssertTrue(out.contains("transformers  5.24.0"), out)
        let (again, out2) = try doctor()
        XCTAssertEqual(again, 0, out2)
        XCTAssertFalse(out2.contains("creating the managed Python runtime"), "reused: \(out2)")
    }
}

final class LineSink: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func add(_ s: String) { lock.lock(); lines.append(s); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return lines }
}
