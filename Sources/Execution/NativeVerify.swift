import Bundles
import Foundation
import JSON

/// `tsexport verify --native`: a small libtorch program (the worker resource `native/tsexport_native_check.cpp`),
/// built once per source, torch version and interpreter with the runtime's own torch, loads model.pt
/// (torch::jit::load) and model.pt2 (AOTIModelPackageLoader) and compares them with the bundle's reference outputs —
/// no Python in the checking process. Python is asked once, for where its torch lives.
public enum NativeVerify {
    /// The C++ source of the checker.
    public static var source: URL { WorkerResources.directory.appendingPathComponent("native/tsexport_native_check.cpp") }

    /// The message for a machine without a C++ compiler.
    public static let noCompilerMessage = "verify --native needs a C++ compiler (g++); install it with: apt-get install g++"

    /// Why the native check could not run.
    public struct Failure: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    /// The C++ compiler: `TSEXPORT_CXX` (a path, or a name looked up on PATH) when set, else g++, else c++ on PATH.
    public static func compiler(environment: [String: String]) -> String? {
        func lookup(_ name: String) -> String? {
            if name.contains("/") { return FileManager.default.isExecutableFile(atPath: name) ? name : nil }
            for dir in (environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
                let p = "\(dir)/\(name)"
                if FileManager.default.isExecutableFile(atPath: p) { return p }
            }
            return nil
        }
        if let x = environment["TSEXPORT_CXX"], !x.isEmpty { return lookup(x) }
        return lookup("g++") ?? lookup("c++")
    }

    /// Where the runtime's torch lives.
    public struct Torch: Sendable {
        /// The torch package folder (include/ and lib/ inside).
        public var dir: String
        /// torch._C._GLIBCXX_USE_CXX11_ABI as 0 or 1.
        public var abi: Int
        /// torch.__version__.
        public var version: String
    }

    /// Runs a program to its end: (exit status, stdout lines, stderr tail).
    static func run(_ argv: [String], environment: [String: String], runner: ProcessRunner) throws -> (Int32, [String], String) {
        let child = try runner.start(argv, environment: environment, directory: nil)
        child.closeInput()
        var lines: [String] = []
        while let line = child.readLine() { lines.append(line) }
        let status = child.wait()
        return (status, lines, child.stderrTail)
    }

    /// Asks the runtime's Python, once, where its torch is and which C++ ABI it was built with.
    public static func probeTorch(python: String, environment: [String: String], runner: ProcessRunner) throws -> Torch {
        let code = "import json, os, torch; print(json.dumps({'dir': os.path.dirname(torch.__file__), "
            + "'abi': int(bool(torch._C._GLIBCXX_USE_CXX11_ABI)), 'version': torch.__version__}))"
        let (status, lines, err) = try run([python, "-c", code], environment: environment, runner: runner)
        guard status == 0, let last = lines.last, let v = try? JSONValue(parsing: Data(last.utf8)),
              let dir = v["dir"]?.stringValue, let abi = v["abi"]?.intValue, let version = v["version"]?.stringValue
        else {
            throw Failure(message: "could not ask \(python) where its torch is (exit status \(status)): \(err.suffix(1500))")
        }
        guard FileManager.default.fileExists(atPath: dir + "/include/torch/script.h") else {
            throw Failure(message: "the torch at \(dir) has no C++ headers (include/torch/script.h); verify --native needs a torch wheel that ships them")
        }
        return Torch(dir: dir, abi: abi, version: version)
    }

    /// The built checker: its path, and how long the build took (nil when a cached build was used).
    public struct Built: Sendable {
        public var binary: String
        public var buildSeconds: Double?
        public var compiler: String
    }

    /// Builds the checker unless the cache already holds the build for this source, torch and interpreter.
    public static func build(python: String, torch: Torch, compiler: String, environment: [String: String], runner: ProcessRunner,
                             progress: (String) -> Void) throws -> Built {
        guard let main = FileManager.default.contents(atPath: source.path),
              let header = FileManager.default.contents(atPath: source.deletingLastPathComponent().appendingPathComponent("tsexport_safetensors.hpp").path)
        else {
            throw Failure(message: "the native checker's source is missing (\(source.path))")
        }
        let text = main + header
        let key = Digest.sha256(Digest.sha256(text) + "\n" + torch.version + "\n" + python + "\n" + compiler).prefix(24)
        let folder = RuntimeCache.folder(environment: environment).appendingPathComponent("native/\(key)")
        let binary = folder.appendingPathComponent("tsexport_native_check").path
        if FileManager.default.isExecutableFile(atPath: binary) { return Built(binary: binary, buildSeconds: nil, compiler: compiler) }
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        progress("building the native checker with \(compiler) against torch \(torch.version) (\(torch.dir)); once per torch version")
        let started = Date()
        let tmp = binary + ".tmp-\(getpid())"
        let argv = [compiler, "-std=c++17", "-O1", "-w", "-D_GLIBCXX_USE_CXX11_ABI=\(torch.abi)",
                    "-I\(torch.dir)/include", "-I\(torch.dir)/include/torch/csrc/api/include",
                    source.path, "-o", tmp,
                    "-L\(torch.dir)/lib", "-ltorch", "-ltorch_cpu", "-lc10", "-Wl,-rpath,\(torch.dir)/lib"]
        let (status, lines, err) = try run(argv, environment: environment, runner: runner)
        guard status == 0, FileManager.default.isExecutableFile(atPath: tmp) else {
            try? FileManager.default.removeItem(atPath: tmp)
            let log = (lines + [err]).joined(separator: "\n")
            try? Data((argv.joined(separator: " ") + "\n" + log).utf8).write(to: folder.appendingPathComponent("build.log"))
            throw Failure(message: "building the native checker failed (\(compiler), exit status \(status)): \(log.suffix(2000))")
        }
        guard rename(tmp, binary) == 0 else { throw Failure(message: "could not move the native checker into \(binary)") }
        let version = "source sha256 \(Digest.sha256(text))\ntorch \(torch.version) \(torch.dir)\npython \(python)\ncompiler \(compiler)\n"
        try? Data(version.utf8).write(to: folder.appendingPathComponent("build.txt"))
        return Built(binary: binary, buildSeconds: Date().timeIntervalSince(started), compiler: compiler)
    }

    /// The checker for a runtime: the compiler, where the runtime's torch is (Python is asked once), the build
    /// (cached).
    public static func prepare(python: String, environment: [String: String], runner: ProcessRunner,
                               progress: (String) -> Void) throws -> Built {
        guard let compiler = compiler(environment: environment) else { throw Failure(message: noCompilerMessage) }
        let torch = try probeTorch(python: python, environment: environment, runner: runner)
        return try build(python: python, torch: torch, compiler: compiler, environment: environment, runner: runner, progress: progress)
    }

    /// What the checker said about one bundle.
    public struct Report: Sendable {
        /// One object per case (artifact, case, shape, passed, max_abs_error, max_rel_error, error).
        public var cases: [JSONValue] = []
        /// Artifacts that could not be loaded: (file, message).
        public var loadErrors: [(String, String)] = []
        /// The summary line, if the checker got that far.
        public var summary: JSONValue?
        /// A failure of the whole run (unreadable bundle, crash).
        public var error: String?
        /// Exit status.
        public var status: Int32 = 0
        /// Seconds the check took.
        public var seconds: Double = 0
    }

    /// Runs the checker on one bundle folder.
    public static func check(binary: String, bundle: String, atol: Double, rtol: Double, inputs: [String], aoti: Bool,
                             environment: [String: String], runner: ProcessRunner) -> Report {
        var report = Report()
        var argv = [binary, bundle, "\(atol)", "\(rtol)"]
        if !inputs.isEmpty { argv += ["--inputs", inputs.joined(separator: ",")] }
        if !aoti { argv.append("--no-aoti") }
        let started = Date()
        let status: Int32, lines: [String], err: String
        do {
            (status, lines, err) = try run(argv, environment: environment, runner: runner)
        } catch {
            report.error = "\(error)"
            report.status = -1
            return report
        }
        report.seconds = Date().timeIntervalSince(started)
        report.status = status
        for line in lines {
            guard let v = try? JSONValue(parsing: Data(line.utf8)), v.objectValue != nil else { continue }
            if v["summary"] == .bool(true) {
                report.summary = v
            } else if let e = v["load_error"]?.stringValue {
                report.loadErrors.append((v["artifact"]?.stringValue ?? "?", e))
            } else if let e = v["error"]?.stringValue, v["case"] == nil {
                report.error = e
            } else if v["case"] != nil {
                report.cases.append(v)
            }
        }
        if report.summary == nil && report.error == nil {
            let why = status > 128 ? "was killed by signal \(status - 128)" : "exited with status \(status)"
            report.error = "the native checker \(why) before its summary: \(err.suffix(1500))"
        }
        return report
    }
}
