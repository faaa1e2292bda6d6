import ArgumentParser
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
    public init() {}

    public func run() throws {
        let code = Verify.execute(self, console: .standard)
        if code != 0 { throw ExitCode(code) }
    }

    /// Runs verify and returns the exit code.
    public static func execute(_ cmd: Verify, console: Console, runner: ProcessRunner = SystemProcessRunner()) -> Int32 {
        guard !cmd.bundles.isEmpty else {
            console.err("error: name at least one bundle folder")
            return ExitStatus.failure
        }
        // Check every folder before starting Python.
        var (records, bad) = readBundleRecords(cmd.bundles, console: console)
        if records.isEmpty { return ExitStatus.failure }
        guard let (_, worker) = cmd.runtime.startWorker(console: console, runner: runner, needs: ["torch", "safetensors"]) else { return ExitStatus.failure }
        defer { worker.shutdown() }
        var reports: [[String: Any]] = []
        for b in records {
            let (dir, record, abs) = (b.dir, b.record, b.url.path)
            var ok = true
            var lines: [String] = []
            do {
                // The tolerance the bundle was verified with; the record always states it.
                guard let tolerance = record["parity"]?["tolerance"] ?? record["tolerance"] else {
                    throw WorkerFailure(stage: "verify", code: "verify_failed", message: "record.json states no tolerance (parity.tolerance); rebuild the bundle with tsexport apply", field: nil, detail: nil)
                }
                let result = try worker.request("verify_bundle", [("dir", .string(abs)), ("tolerance", tolerance)])
                let sha = result["sha256"]?.stringValue
                if let recorded = record["model_sha256"]?.stringValue, sha != recorded {
                    ok = false
                    lines.append("  model.pt sha256 \(sha ?? "?") differs from the recorded \(recorded)")
                }
                for c in result["cases"]?.arrayValue ?? [] {
                    let passed = c["passed"] == .bool(true)
                    ok = ok && passed
                    let shape = CanonicalJSON.text(c["shape"] ?? .null)
                    let detail = c["error"]?.stringValue
                        ?? String(format: "max abs error %.2e, max rel error %.2e", c["max_abs_error"]?.doubleValue ?? .nan, c["max_rel_error"]?.doubleValue ?? .nan)
                    lines.append("  \(passed ? "pass" : "FAIL") \(c["case"]?.stringValue ?? "?") \(shape): \(detail)")
                }
                reports.append(["bundle": dir, "ok": ok, "result": (try? JSONSerialization.jsonObject(with: Data(result.serialized(pretty: false).utf8))) ?? [:]])
            } catch let f as WorkerFailure {
                ok = false
                lines.append("  \(f.message)")
                reports.append(["bundle": dir, "ok": false, "error": f.message])
            } catch {
                ok = false
                lines.append("  \(error)")
                reports.append(["bundle": dir, "ok": false, "error": "\(error)"])
            }
            bad = bad || !ok
            if !cmd.json {
                console.out("\(dir): \(ok ? "verified" : "FAILED")")
                lines.forEach(console.out)
            }
        }
        if cmd.json { console.printJSON(["bundles": reports, "ok": !bad] as [String: Any]) }
        return bad ? ExitStatus.failure : ExitStatus.success
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
            if !h.missing.isEmpty { console.out("error: " + missingPackagesMessage(rt, missing: h.missing)) }
        }
        return h.missing.isEmpty ? ExitStatus.success : ExitStatus.failure
    }
}
