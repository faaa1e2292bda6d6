import Bundles
import Foundation
import Plan
import WorkerPackage

/// Where tsexport's Python code lives: the WorkerPackage target's resource bundle shipped beside the binary
/// (`tsexport_WorkerPackage.resources`, copied from `Sources/Worker`), or `TSEXPORT_WORKER_DIR` when set.
public enum WorkerResources {
    /// The folder that holds the `tsexport_worker` package and `requirements.txt`.
    public static var directory: URL {
        if let d = ProcessInfo.processInfo.environment["TSEXPORT_WORKER_DIR"], !d.isEmpty { return URL(fileURLWithPath: d) }
        guard let url = WorkerPackage.resourceDirectory else {
            fatalError("tsexport is installed without its resources: copy tsexport_WorkerPackage.resources next to the binary")
        }
        return url
    }

    /// The pinned requirements of the managed runtime.
    public static var requirements: URL { directory.appendingPathComponent("requirements.txt") }
}

/// The Python interpreter tsexport runs its worker with, and how it was chosen.
public struct PythonRuntime: Sendable, Equatable {
    /// How it was chosen.
    public enum Origin: String, Sendable { case flag = "--python", environment = "TSEXPORT_PYTHON", managed = "managed runtime" }
    /// The interpreter.
    public var python: String
    /// How it was chosen.
    public var origin: Origin

    /// Creates a runtime description.
    public init(python: String, origin: Origin) {
        self.python = python
        self.origin = origin
    }
}

/// Why no runtime could be had.
public struct RuntimeError: Error, CustomStringConvertible {
    /// A sentence for a user, naming what to do.
    public var description: String
}

/// Chooses the Python runtime: `--python PATH`, else `TSEXPORT_PYTHON`, else the managed runtime, a virtual
/// environment cached under `~/.cache/tsexport/runtimes/<sha256 of requirements.txt, 16 hex>` and created on first
/// use with `python3 -m venv` and pip.
public struct RuntimeResolver: Sendable {
    /// Runs the venv and pip commands.
    public var runner: ProcessRunner
    /// Progress lines (creation of the managed runtime).
    public var progress: @Sendable (String) -> Void
    /// The environment to read `TSEXPORT_PYTHON`, `XDG_CACHE_HOME`, `HOME` from.
    public var environment: [String: String]

    /// Creates a resolver.
    public init(runner: ProcessRunner = SystemProcessRunner(), environment: [String: String] = ProcessInfo.processInfo.environment,
                progress: @escaping @Sendable (String) -> Void) {
        self.runner = runner
        self.environment = environment
        self.progress = progress
    }

    /// The runtime to use; creates the managed one when needed.
    public func resolve(flag: String?) throws -> PythonRuntime {
        if let f = flag, !f.isEmpty { return PythonRuntime(python: try executable(f, what: "--python"), origin: .flag) }
        if let e = environment["TSEXPORT_PYTHON"], !e.isEmpty {
            return PythonRuntime(python: try executable(e, what: "TSEXPORT_PYTHON"), origin: .environment)
        }
        return PythonRuntime(python: try managed(), origin: .managed)
    }

    /// The interpreter that `resolve` would return, without creating anything; nil when the managed runtime does not
    /// exist yet (or the named interpreter cannot be found).
    public func peek(flag: String?) -> String? {
        if let f = flag, !f.isEmpty { return try? executable(f, what: "--python") }
        if let e = environment["TSEXPORT_PYTHON"], !e.isEmpty { return try? executable(e, what: "TSEXPORT_PYTHON") }
        guard let dir = try? managedDirectory(), FileManager.default.fileExists(atPath: dir.appendingPathComponent(".complete").path) else { return nil }
        return dir.appendingPathComponent("bin/python").path
    }

    /// An absolute interpreter path from a path or a command name looked up on PATH.
    func executable(_ s: String, what: String) throws -> String {
        if s.contains("/") {
            guard FileManager.default.isExecutableFile(atPath: s) else {
                throw RuntimeError(description: "\(what) names \(s), which is not an executable file")
            }
            return s.hasPrefix("/") ? s : FileManager.default.currentDirectoryPath + "/" + s
        }
        for dir in (environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let p = "\(dir)/\(s)"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        throw RuntimeError(description: "\(what) names \(s), which is not on PATH")
    }

    /// The cache folder of the managed runtime for the current requirements.
    public func managedDirectory() throws -> URL {
        guard let data = FileManager.default.contents(atPath: WorkerResources.requirements.path) else {
            throw RuntimeError(description: "the worker's requirements.txt is missing from \(WorkerResources.directory.path)")
        }
        let key = String(Digest.sha256(data).prefix(16))
        return RuntimeCache.folder(environment: environment).appendingPathComponent("runtimes").appendingPathComponent(key)
    }

    /// Creates (once) and returns the managed runtime's interpreter. Built in a temporary folder and renamed into
    /// place when complete, so an interrupted creation is never mistaken for a finished one.
    func managed() throws -> String {
        let dir = try managedDirectory()
        let python = dir.appendingPathComponent("bin/python").path
        if FileManager.default.fileExists(atPath: dir.appendingPathComponent(".complete").path) { return python }
        let base = try executable(environment["TSEXPORT_BASE_PYTHON"] ?? "python3", what: "python3")
        let tmp = dir.deletingLastPathComponent().appendingPathComponent(".\(dir.lastPathComponent).tmp-\(getpid())")
        try? FileManager.default.removeItem(at: tmp)
        try FileManager.default.createDirectory(at: tmp.deletingLastPathComponent(), withIntermediateDirectories: true)
        // The full output of venv and pip goes to a log file (kept, and named on failure); the user sees one line
        // per step with its elapsed time.
        let log = RuntimeCache.folder(environment: environment).appendingPathComponent("logs")
            .appendingPathComponent("runtime-\(dir.lastPathComponent).log")
        try FileManager.default.createDirectory(at: log.deletingLastPathComponent(), withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: log.path, contents: Data())
        progress("creating the managed Python runtime in \(dir.path) (once; pip installs the pinned torch and transformers, a minute or two; log: \(log.path))")
        let started = Date()
        do {
            let venv = try run([base, "-m", "venv", tmp.path], step: "python3 -m venv", log: log)
            progress("  [1/2] python3 -m venv: done in \(Self.seconds(venv.elapsed))")
            let pip = [tmp.appendingPathComponent("bin/python").path, "-m", "pip", "install", "--disable-pip-version-check",
                       "--progress-bar", "off", "-r", WorkerResources.requirements.path]
            let installed = try run(pip, step: "pip install -r requirements.txt", log: log)
            let what = installed.packages.map { "\($0) package\($0 == 1 ? "" : "s") installed" } ?? "done"
            progress("  [2/2] pip install -r requirements.txt: \(what) in \(Self.seconds(installed.elapsed))")
            try Data().write(to: tmp.appendingPathComponent(".complete"))
        } catch {
            try? FileManager.default.removeItem(at: tmp)
            throw error
        }
        try? FileManager.default.removeItem(at: dir)
        do {
            try FileManager.default.moveItem(at: tmp, to: dir)
        } catch {
            // Another tsexport finished first: use its runtime.
            try? FileManager.default.removeItem(at: tmp)
            if !FileManager.default.fileExists(atPath: dir.appendingPathComponent(".complete").path) { throw error }
        }
        // A venv's scripts hold its absolute path; the interpreter itself does not, so bin/python works after the move.
        progress("managed Python runtime ready in \(Self.seconds(Date().timeIntervalSince(started)))")
        return python
    }

    /// What one step took, and how many packages pip said it installed.
    struct Step {
        var elapsed: TimeInterval
        var packages: Int?
    }

    /// Runs one step, appending its stdout and stderr to `log`; on failure the error names the step, the exit status
    /// and the log, and quotes the end of stderr.
    private func run(_ argv: [String], step: String, log: URL) throws -> Step {
        let started = Date()
        let handle = try? FileHandle(forWritingTo: log)
        defer { try? handle?.close() }
        func append(_ s: String) { handle?.seekToEndOfFile(); handle?.write(Data(s.utf8)) }
        append("$ \(argv.joined(separator: " "))\n")
        let child = try runner.start(argv, environment: environment, directory: nil)
        child.closeInput()
        var packages: Int?
        while let line = child.readLine() {
            append(line + "\n")
            if line.hasPrefix("Successfully installed ") {
                packages = line.split(separator: " ").count - 2
            }
        }
        let status = child.wait()
        let stderr = child.stderrTail
        if !stderr.isEmpty { append("--- stderr (last 16 KiB) ---\n\(stderr)\n") }
        append("--- exit \(status) after \(Self.seconds(Date().timeIntervalSince(started))) ---\n")
        if status != 0 {
            throw RuntimeError(description: "creating the managed runtime failed at `\(step)` (exit \(status)): the full log is \(log.path); it ends:\n\(stderr.suffix(2000))")
        }
        return Step(elapsed: Date().timeIntervalSince(started), packages: packages)
    }

    /// `2.3 s`, `84 s`.
    static func seconds(_ t: TimeInterval) -> String { t < 10 ? String(format: "%.1f s", t) : String(format: "%.0f s", t) }
}
