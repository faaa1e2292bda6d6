import ArgumentParser
import Bundles
import Execution
import Foundation
import JSON
import Plan

/// `tsexport verify DIR...`
public struct Verify: ParsableCommand {
    public static let configuration = CommandConfiguration(abstract: "Re-check bundles against their recorded reference outputs in a fresh process.")
    @Argument(help: "Bundle folders (each holds model.pt and record.json).")
    public var bundles: [String] = []
    @OptionGroup public var runtime: RuntimeOptions
    @Flag(help: "Print JSON instead of text.")
    public var json = false
    @Flag(help: "Check with a small libtorch program instead of Python: model.pt (torch::jit::load) and model.pt2 (AOTIModelPackageLoader), built once with the runtime's torch; needs a C++ compiler (g++).")
    public var native = false
    public init() {}

    public func run() throws {
        let code = Verify.execute(self, console: .standard)
        if code != 0 { throw ExitCode(code) }
    }

    /// Runs verify and returns the exit code.
    public static func execute(_ cmd: Verify, console: Console, runner: ProcessRunner = SystemProcessRunner(),
                               environment: [String: String] = ProcessInfo.processInfo.environment) -> Int32 {
        guard !cmd.bundles.isEmpty else {
            console.err("error: name at least one bundle folder")
            return ExitStatus.failure
        }
        var options = VerifySession.Options(dirs: cmd.bundles, cwd: URL(fileURLWithPath: FileManager.default.currentDirectoryPath),
                                            environment: environment)
        options.native = cmd.native
        options.python = cmd.runtime.python
        let session = VerifySession(options: options, runner: runner)
        guard let summary = session.run(message: { Apply.show($0, console: console) },
                                        verdict: { dir, v in if !cmd.json { render(dir, v).forEach(console.out) } }) else {
            return ExitStatus.failure
        }
        if cmd.json {
            var o: [String: Any] = ["bundles": summary.verdicts.map { report($0.dir, $0.verdict) }, "ok": summary.ok]
            if let built = summary.native {
                o["native"] = ["binary": built.binary, "compiler": built.compiler] as [String: Any]
                if let s = built.buildSeconds { o["build_seconds"] = (s * 10).rounded() / 10 }
            }
            console.printJSON(o)
        }
        return summary.ok ? ExitStatus.success : ExitStatus.failure
    }
}

extension Verify {
    /// The text lines for one bundle: `DIR: verified` (or `verified natively (…)`, `FAILED`), then a line per finding.
    static func render(_ dir: String, _ v: BundleVerdict) -> [String] {
        var head = "\(dir): \(v.ok ? "verified" : "FAILED")"
        if let n = v.native {
            let artifacts = n.summary?["artifacts"]?.arrayValue?.compactMap(\.stringValue) ?? []
            let what = artifacts.isEmpty ? "" : " (\(artifacts.joined(separator: ", ")), libtorch, in \(String(format: "%.1f", n.seconds)) s)"
            head = "\(dir): \(v.ok ? "verified natively" : "FAILED")\(what)"
        }
        var lines = [head]
        for f in v.findings {
            switch f {
            case .problem(let message), .note(let message):
                lines.append("  \(message)")
            case .check(let c):
                let label = c.artifact.map { $0.padding(toLength: 10, withPad: " ", startingAt: 0) } ?? ""
                let note = c.counted ? "" : " (outside the envelope model.pt2 was verified over; not counted)"
                lines.append("  " + caseLine(c.result, artifact: label, note: note))
                if let why = c.qualityFailure {
                    lines.append("  FAIL \(label)\(c.result["case"]?.stringValue ?? "?") \(CanonicalJSON.text(c.result["shape"] ?? .null)): \(why)")
                }
            }
        }
        return lines
    }

    /// The `--json` object for one bundle.
    static func report(_ dir: String, _ v: BundleVerdict) -> [String: Any] {
        func object(_ j: JSONValue) -> Any? { try? JSONSerialization.jsonObject(with: Data(j.serialized(pretty: false).utf8)) }
        var o: [String: Any] = ["bundle": dir, "ok": v.ok]
        if let n = v.native {
            o["artifacts"] = n.summary?["artifacts"]?.arrayValue?.compactMap(\.stringValue) ?? []
            o["check_seconds"] = (n.seconds * 1000).rounded() / 1000
            o["cases"] = n.cases.compactMap(object)
            if !n.loadErrors.isEmpty { o["load_errors"] = n.loadErrors.map { ["artifact": $0.0, "error": $0.1] } }
        } else if let r = v.workerResult {
            o["result"] = object(r) ?? [:]
        }
        if let e = v.error { o["error"] = e }
        return o
    }

    /// One case as a table line: `pass model.pt2  traced [1,8]: max abs error …, max rel error …`.
    static func caseLine(_ c: JSONValue, artifact: String, note: String = "") -> String {
        let passed = c["passed"] == .bool(true)
        let shape = CanonicalJSON.text(c["shape"] ?? .null)
        func error(_ key: String) -> String {
            guard let v = c[key], v != .null else { return passed || c["error"] != nil ? "?" : "inf" }
            return String(format: "%.2e", v.doubleValue ?? .nan)
        }
        var detail = c["error"]?.stringValue ?? "max abs error \(error("max_abs_error")), max rel error \(error("max_rel_error"))"
        if c["error"] == nil, let f = c["float32"]?["min_cosine"]?.doubleValue { detail += ", cosine to float32 \(QualityGate.format(f))" }
        return "\(passed ? "pass" : "FAIL") \(artifact)\(c["case"]?.stringValue ?? "?") \(shape): \(detail)\(note)"
    }
}

/// `tsexport doctor`
public struct Doctor: ParsableCommand {
    public static let configuration = CommandConfiguration(abstract: "Show the Python runtime, its torch and transformers versions and the hardware targets available.")
    @OptionGroup public var runtime: RuntimeOptions
    @Flag(help: "Print JSON instead of text.")
    public var json = false
    public init() {}

    public func run() throws {
        let code = Doctor.execute(self, console: .standard)
        if code != 0 { throw ExitCode(code) }
    }

    /// Runs doctor and returns the exit code.
    public static func execute(_ cmd: Doctor, console: Console, runner: ProcessRunner = SystemProcessRunner()) -> Int32 {
        guard let rt = cmd.runtime.resolve(console: console) else { return ExitStatus.failure }
        let worker: WorkerClient
        do {
            worker = try WorkerClient(python: rt.python, runner: runner)
        } catch {
            console.err("error: \(error)")
            return ExitStatus.failure
        }
        defer { worker.shutdown() }
        let h = worker.hello
        RuntimeCache().store(python: rt.python, hello: h)
        if cmd.json {
            var o: [String: Any] = ["python_executable": rt.python, "chosen_by": rt.origin.rawValue, "tsexport": ToolInfo.version,
                                    "worker": h.workerVersion, "protocol": h.protocolVersion, "missing": h.missing]
            for (k, v) in h.versions { o[k] = v }
            o["cxx_compiler"] = NativeVerify.compiler(environment: ProcessInfo.processInfo.environment) ?? NSNull()
            o["targets"] = Dictionary(uniqueKeysWithValues: h.targets.map { k, v in (k, ["available": v == nil, "reason": v ?? NSNull()] as [String: Any]) })
            console.printJSON(o)
        } else {
            console.out("tsexport      \(ToolInfo.version) (worker \(h.workerVersion), protocol \(h.protocolVersion))")
            console.out("python        \(rt.python) (\(rt.origin.rawValue)), version \(h.versions["python"] ?? "?")")
            console.out("torch         \(h.versions["torch"] ?? "missing")")
            console.out("transformers  \(h.versions["transformers"] ?? "missing")")
            console.out("targets:")
            for name in ["cpu", "cuda", "inf1", "inf2"] {
                guard let entry = h.targets[name] else { continue }
                console.out("  \(name.padding(toLength: 5, withPad: " ", startingAt: 0)) " + (entry == nil ? "available" : "unavailable: \(entry!)"))
            }
            let cxx = NativeVerify.compiler(environment: ProcessInfo.processInfo.environment)
            console.out("c++ compiler  " + (cxx.map { "\($0) (for verify --native)" } ?? "not found: " + NativeVerify.noCompilerMessage))
            if !h.missing.isEmpty { console.out("error: " + rt.missingPackagesMessage(h.missing)) }
        }
        return h.missing.isEmpty ? ExitStatus.success : ExitStatus.failure
    }
}
