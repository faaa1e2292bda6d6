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
        if cmd.native && NativeVerify.compiler(environment: environment) == nil {
            console.err("error: " + NativeVerify.noCompilerMessage)
            return ExitStatus.failure
        }
        // Check every folder before starting Python.
        var (records, bad) = readBundleRecords(cmd.bundles, console: console)
        if records.isEmpty { return ExitStatus.failure }
        if cmd.native { return executeNative(cmd, records: records, bad: bad, console: console, runner: runner, environment: environment) }
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
                // Bundles made before the quality gate state no min_cosine: no gate (protocol 2 wants the key).
                let request = JSONValue.object([("atol", tolerance["atol"] ?? .null), ("rtol", tolerance["rtol"] ?? .null),
                                                ("min_cosine", tolerance["min_cosine"] ?? .null)])
                // A sentence-transformers bundle is compared with encode() again, at the cosine its record states.
                let encode = record["library"]?["encode_check"]?["min_cosine_allowed"].map { JSONValue.object([("min_cosine", $0)]) } ?? .null
                let result = try worker.request("verify_bundle", [("dir", .string(abs)), ("tolerance", request), ("encode_check", encode)])
                let sha = result["sha256"]?.stringValue
                if let recorded = record["model_sha256"]?.stringValue, sha != recorded {
                    ok = false
                    lines.append("  model.pt sha256 \(sha ?? "?") differs from the recorded \(recorded)")
                }
                let aoti = result["aoti"]
                let artifact = aoti == nil ? "" : "model.pt  "
                // The quality gate the bundle was built under (tolerance.min_cosine), on every case that matched.
                func quality(_ c: JSONValue, _ artifact: String) {
                    guard c["passed"] == .bool(true), let line = qualityFailure(c, artifact: artifact, record: record, tolerance: tolerance) else { return }
                    ok = false
                    lines.append(line)
                }
                // formats: [aoti] alone: the bundle's cases are model.pt2's, judged once below
                let aotiOnly = result["artifact"]?.stringValue == "model.pt2"
                for c in aotiOnly ? [] : result["cases"]?.arrayValue ?? [] {
                    let passed = c["passed"] == .bool(true)
                    ok = ok && passed
                    let label = c["artifact"]?.stringValue.map { $0.padding(toLength: 10, withPad: " ", startingAt: 0) } ?? artifact
                    lines.append("  " + caseLine(c, artifact: label))
                    if c["artifact"] == nil { quality(c, label) }
                }
                if let aoti, aoti != .null {
                    // model.pt2 (formats: aoti), against the same references
                    let sha = aoti["sha256"]?.stringValue
                    if let recorded = record["aoti"]?["sha256"]?.stringValue, sha != recorded {
                        ok = false
                        lines.append("  model.pt2 sha256 \(sha ?? "?") differs from the recorded \(recorded)")
                    }
                    let outside = outsideCases(record)
                    for c in aoti["cases"]?.arrayValue ?? [] {
                        let name = c["case"]?.stringValue ?? "?"
                        let passed = c["passed"] == .bool(true)
                        if !passed && outside.contains(name) {
                            lines.append("  " + caseLine(c, artifact: "model.pt2 ", note: " (outside the envelope model.pt2 was verified over; not counted)"))
                            continue
                        }
                        ok = ok && passed
                        lines.append("  " + caseLine(c, artifact: "model.pt2 "))
                        quality(c, "model.pt2 ")
                    }
                } else if record["aoti"]?.objectValue != nil && FileManager.default.fileExists(atPath: b.url.appendingPathComponent("model.pt2").path) {
                    ok = false
                    lines.append("  model.pt2 was not checked: the worker's verify_bundle returned no aoti result")
                } else if record["aoti"]?.objectValue != nil {
                    ok = false
                    lines.append("  the bundle lacks model.pt2, which record.json lists (aoti)")
                }
                // sentence-transformers: encode()'s cosine at every point the record judged inside the envelope.
                if let allowed = record["library"]?["encode_check"]?["min_cosine_allowed"]?.doubleValue {
                    let inside = Set((record["library"]?["encode_check"]?["points"]?.arrayValue ?? []).filter { $0["inside"] == .bool(true) }.compactMap { $0["case"]?.stringValue })
                    let compared = (result["encode_check"]?["points"]?.arrayValue ?? []).filter { p in
                        p["skipped"] == nil && inside.contains(p["case"]?.stringValue ?? "")
                    }
                    for p in compared {
                        let cosine = p["min_cosine"]?.doubleValue ?? .nan
                        if !(cosine >= allowed) {
                            ok = false
                            lines.append("  model.pt's sentence_embedding at \(CanonicalJSON.text(p["shape"] ?? .null)) has cosine \(cosine) to encode(), below \(allowed)")
                        }
                    }
                    let least = compared.compactMap { $0["min_cosine"]?.doubleValue }.min()
                    lines.append("  sentence_embedding against encode(): least cosine \(least.map { String(format: "%.6f", $0) } ?? "-") at \(compared.count) point\(compared.count == 1 ? "" : "s") (allowed \(allowed))")
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

extension Verify {
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

    /// The `FAIL` line of a case below the recorded quality gate (nil: it passes, or the record states no gate).
    static func qualityFailure(_ c: JSONValue, artifact: String, record: JSONValue, tolerance: JSONValue?) -> String? {
        let traced = QualityGate.tracedModel(dtype: record["dtype"]?.stringValue ?? "float32",
                                             quantized: record["quantize"].map { $0 != .null } ?? false)
        guard let why = QualityGate.failure(c, gate: tolerance?["min_cosine"]?.doubleValue, dtype: traced) else { return nil }
        return "  FAIL \(artifact)\(c["case"]?.stringValue ?? "?") \(CanonicalJSON.text(c["shape"] ?? .null)): \(why)"
    }

    /// The model.pt2 cases the record marks as outside the envelope it was verified over.
    static func outsideCases(_ record: JSONValue) -> Set<String> {
        Set((record["aoti"]?["cases"]?.arrayValue ?? []).compactMap { c in c["inside"] == .bool(false) ? c["case"]?.stringValue : nil })
    }

    /// `verify --native`: ask Python once where torch is, build the checker (cached), run it per bundle.
    static func executeNative(_ cmd: Verify, records: [BundleRecord], bad: Bool, console: Console, runner: ProcessRunner,
                              environment: [String: String]) -> Int32 {
        var bad = bad
        guard let compiler = NativeVerify.compiler(environment: environment) else {
            console.err("error: " + NativeVerify.noCompilerMessage)
            return ExitStatus.failure
        }
        guard let rt = cmd.runtime.resolve(console: console) else { return ExitStatus.failure }
        let built: NativeVerify.Built
        do {
            let torch = try NativeVerify.probeTorch(python: rt.python, environment: environment, runner: runner)
            built = try NativeVerify.build(python: rt.python, torch: torch, compiler: compiler, environment: environment, runner: runner,
                                           progress: { console.err("tsexport: " + $0) })
            if let s = built.buildSeconds { console.err(String(format: "tsexport: built the native checker in %.1f s", s)) }
        } catch {
            console.err("error: verify --native: \(error)")
            return ExitStatus.failure
        }
        var reports: [[String: Any]] = []
        // The checker's environment: no Python variables needed; AOTI_RUNTIME_CHECK_INPUTS left as the user set it.
        for b in records {
            let (dir, record) = (b.dir, b.record)
            var ok = true
            var lines: [String] = []
            var json: [String: Any] = ["bundle": dir]
            let tolerance = record["parity"]?["tolerance"] ?? record["tolerance"]
            guard let atol = tolerance?["atol"]?.doubleValue, let rtol = tolerance?["rtol"]?.doubleValue else {
                let message = "record.json states no tolerance (parity.tolerance); rebuild the bundle with tsexport apply"
                bad = true
                if !cmd.json { console.out("\(dir): FAILED"); console.out("  \(message)") }
                reports.append(["bundle": dir, "ok": false, "error": message])
                continue
            }
            let folder = b.url.path
            let pt2 = b.url.appendingPathComponent("model.pt2").path
            let hasPT2 = FileManager.default.fileExists(atPath: pt2)
            // The files must be the ones apply verified and recorded.
            for (file, recorded) in [("model.pt", record["model_sha256"]?.stringValue), ("model.pt2", record["aoti"]?["sha256"]?.stringValue)] {
                let path = b.url.appendingPathComponent(file).path
                guard let recorded, FileManager.default.fileExists(atPath: path) else { continue }
                let sha = (try? Digest.sha256(file: path)) ?? "?"
                if sha != recorded {
                    ok = false
                    lines.append("  \(file) sha256 \(sha) differs from the recorded \(recorded): the file changed after apply")
                }
            }
            if record["aoti"]?.objectValue != nil && !hasPT2 {
                ok = false
                lines.append("  the bundle lacks model.pt2, which record.json lists (aoti)")
            }
            let inputs = (record["input_signature"]?.arrayValue ?? []).compactMap { $0["name"]?.stringValue }
            let report = NativeVerify.check(binary: built.binary, bundle: folder, atol: atol, rtol: rtol, inputs: inputs, aoti: true,
                                            environment: environment, runner: runner)
            let outside = outsideCases(record)
            var cases: [JSONValue] = []
            for c in report.cases {
                let artifact = c["artifact"]?.stringValue ?? "?"
                let passed = c["passed"] == .bool(true)
                var note = ""
                if !passed && artifact == "model.pt2" && outside.contains(c["case"]?.stringValue ?? "") {
                    note = " (outside the envelope model.pt2 was verified over; not counted)"
                } else {
                    ok = ok && passed
                }
                let label = artifact.padding(toLength: 10, withPad: " ", startingAt: 0)
                lines.append("  " + caseLine(c, artifact: label, note: note))
                // the quality gate the bundle was built under, as `verify` applies it
                if passed, note.isEmpty, let line = qualityFailure(c, artifact: label, record: record, tolerance: tolerance) {
                    ok = false
                    lines.append(line)
                }
                cases.append(c)
            }
            for (file, message) in report.loadErrors {
                ok = false
                lines.append("  FAIL \(file): \(message)")
            }
            if let e = report.error {
                ok = false
                lines.append("  \(e)")
            }
            let artifacts = report.summary?["artifacts"]?.arrayValue?.compactMap(\.stringValue) ?? []
            json["ok"] = ok
            json["artifacts"] = artifacts
            json["check_seconds"] = (report.seconds * 1000).rounded() / 1000
            json["cases"] = cases.compactMap { try? JSONSerialization.jsonObject(with: Data($0.serialized(pretty: false).utf8)) }
            if !report.loadErrors.isEmpty { json["load_errors"] = report.loadErrors.map { ["artifact": $0.0, "error": $0.1] } }
            if let e = report.error { json["error"] = e }
            reports.append(json)
            bad = bad || !ok
            if !cmd.json {
                let what = artifacts.isEmpty ? "" : " (\(artifacts.joined(separator: ", ")), libtorch, in \(String(format: "%.1f", report.seconds)) s)"
                console.out("\(dir): \(ok ? "verified natively" : "FAILED")\(what)")
                lines.forEach(console.out)
            }
        }
        if cmd.json {
            var o: [String: Any] = ["bundles": reports, "ok": !bad, "native": ["binary": built.binary, "compiler": built.compiler] as [String: Any]]
            if let s = built.buildSeconds { o["build_seconds"] = (s * 10).rounded() / 10 }
            console.printJSON(o)
        }
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
            if !h.missing.isEmpty { console.out("error: " + missingPackagesMessage(rt, missing: h.missing)) }
        }
        return h.missing.isEmpty ? ExitStatus.success : ExitStatus.failure
    }
}
