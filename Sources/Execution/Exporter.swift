import Bundles
import Diagnostics
import Foundation
import JSON
import Manifest
import Plan

/// The version of tsexport itself, recorded in every bundle.
public enum ToolInfo {
    /// Semantic version.
    public static let version = "0.1.0"
}

/// What happened to one manifest during apply.
public struct ExportOutcome: Sendable {
    /// The manifest's name.
    public var name: String
    /// create / rebuild / up-to-date.
    public var action: PlanAction
    /// ok, failed, skipped (up to date).
    public var status: String
    /// Wall time in seconds.
    public var seconds: Double
    /// The bundle folder.
    public var bundle: String
    /// The record written (nil unless ok).
    public var record: JSONValue?
    /// Errors and warnings, positioned in the manifest where they come from it.
    public var diagnostics: [Diagnostic]

    /// Creates an outcome.
    public init(name: String, action: PlanAction, status: String, seconds: Double, bundle: String, record: JSONValue?, diagnostics: [Diagnostic]) {
        self.name = name
        self.action = action
        self.status = status
        self.seconds = seconds
        self.bundle = bundle
        self.record = record
        self.diagnostics = diagnostics
    }
}

/// Runs a plan: one warm exporting worker, one fresh verifying worker, staging, verification and install.
public final class Exporter: @unchecked Sendable {
    let python: String
    let runner: ProcessRunner
    let store: BundleStore
    let progress: ProgressSink
    private var exporter: WorkerClient?
    private var verifierStart: DispatchGroup?
    /// Exporting workers sent away early (see `export(isLast:)`), reaped in `stop()`.
    private var retiring: [WorkerClient] = []
    private var verifierResult: Result<WorkerClient, Error>?

    /// Creates an exporter; nothing starts until the first manifest needs it.
    public init(python: String, runner: ProcessRunner, outputRoot: URL, progress: ProgressSink) {
        self.python = python
        self.runner = runner
        self.store = BundleStore(root: outputRoot)
        self.progress = progress
    }

    /// Starts the exporting worker. The verifying worker starts in the background once the first model is loaded,
    /// so its imports overlap tracing and saving instead of competing with the exporter's own imports for the cores.
    public func start() throws -> WorkerHello {
        let w = try WorkerClient(python: python, runner: runner)
        exporter = w
        return w.hello
    }

    private func startVerifierInBackground() {
        guard verifierStart == nil else { return }
        let group = DispatchGroup()
        group.enter()
        verifierStart = group
        let python = self.python, runner = self.runner
        DispatchQueue.global().async { [self] in
            let r = Result { try WorkerClient(python: python, runner: runner) }
            self.verifierResult = r
            group.leave()
        }
    }

    private func verifier() throws -> WorkerClient {
        startVerifierInBackground()
        verifierStart?.wait()
        switch verifierResult {
        case .success(let w)?: return w
        case .failure(let e)?: throw e
        case nil: throw WorkerCrash(description: "the verifying worker did not start", stderrTail: "")
        }
    }

    /// Stops both workers.
    public func stop() {
        exporter?.shutdown()
        exporter = nil
        retiring.forEach { $0.shutdown() }
        retiring = []
        if verifierStart != nil, let w = try? verifier() { w.shutdown() }
        verifierResult = nil
        verifierStart = nil
    }

    /// Exports one planned manifest. Never throws: every failure becomes diagnostics on the outcome, and the
    /// staging folder is removed.
    ///
    /// With `isLast`, the exporting worker is sent away as soon as the trace is saved: verification and deploys run
    /// in the verifying worker, so the traced model's memory is gone before the saved one is loaded.
    public func export(_ m: Manifest, entry: PlanEntry, fingerprint: FingerprintInputs, isLast: Bool = false) -> ExportOutcome {
        let started = Date()
        var outcome = ExportOutcome(name: m.name, action: entry.action, status: "failed", seconds: 0, bundle: entry.bundle, record: nil, diagnostics: [])
        let staging: URL
        do {
            staging = try store.makeStaging(name: m.name)
        } catch {
            outcome.diagnostics.append(.error("\(m.name): cannot create a staging folder in \(store.stagingRoot.path): \(error.localizedDescription)", at: m.locations.location(of: "metadata.name")))
            outcome.seconds = Date().timeIntervalSince(started)
            return outcome
        }
        do {
            var deployments: [StagedDeploy] = []
            defer { for d in deployments { try? FileManager.default.removeItem(at: d.staging) } }
            let record = try run(m, fingerprint: fingerprint, staging: staging, outcome: &outcome, deployments: &deployments, isLast: isLast)
            try store.install(staging, at: URL(fileURLWithPath: entry.bundle))
            for d in deployments { try install(d) }
            outcome.status = "ok"
            outcome.record = record
        } catch let f as WorkerFailure {
            store.discard(staging)
            outcome.diagnostics.append(diagnostic(for: f, m))
        } catch let c as WorkerCrash {
            store.discard(staging)
            exporter?.kill()
            exporter = nil
            let tail = c.stderrTail.split(separator: "\n").suffix(5).joined(separator: "\n")
            outcome.diagnostics.append(.error("\(m.name): \(c.description)" + (tail.isEmpty ? "" : "; the worker's last words:\n\(tail)"),
                                              at: m.locations.location(of: "metadata.name"), field: "metadata.name"))
        } catch let d as Diagnostic {
            store.discard(staging)
            outcome.diagnostics.append(d)
        } catch {
            store.discard(staging)
            outcome.diagnostics.append(.error("\(m.name): \(error)", at: m.locations.location(of: "metadata.name")))
        }
        outcome.seconds = Date().timeIntervalSince(started)
        return outcome
    }

    /// A worker error, placed at the manifest field it names (or the manifest's name).
    func diagnostic(for f: WorkerFailure, _ m: Manifest) -> Diagnostic {
        let field = f.field ?? "metadata.name"
        var message = "\(m.name): \(f.stage) failed: " + (f.field.map { "\($0): " } ?? "") + f.message
        if ProcessInfo.processInfo.environment["TSEXPORT_VERBOSE"] == "1", let d = f.detail { message += "\n\(d)" }
        return .error(message, at: m.locations.location(of: field), field: f.field)
    }

    private func ensureExporter() throws -> WorkerClient {
        if let w = exporter { return w }
        progress.message("starting a new Python worker")
        let w = try WorkerClient(python: python, runner: runner)
        exporter = w
        return w
    }

    /// A deploy output assembled in staging, and where it goes.
    struct StagedDeploy {
        var kind: String
        var staging: URL
        /// For triton: the model folder `<repository>/<name>`; for torchserve: `<store>/<name>.mar`.
        var destination: URL
    }

    /// Moves a staged deploy output into place: a Triton model folder is swapped in like a bundle; a .mar is one
    /// file, renamed over the old one.
    func install(_ d: StagedDeploy) throws {
        let fm = FileManager.default
        if d.kind == "triton" {
            try store.install(d.staging, at: d.destination)
            return
        }
        let mar = d.staging.appendingPathComponent(d.destination.lastPathComponent)
        try fm.createDirectory(at: d.destination.deletingLastPathComponent(), withIntermediateDirectories: true)
        BundleStore.fsyncTree(d.staging)
        guard rename(mar.path, d.destination.path) == 0 else {
            throw WorkerFailure(stage: "deploy", code: "deploy_failed", message: "cannot move \(mar.lastPathComponent) into \(d.destination.deletingLastPathComponent().path): \(String(cString: strerror(errno)))", field: nil, detail: nil)
        }
        try? fm.removeItem(at: d.staging)
    }

    /// Deploys the staged bundle for every `output.deploy` entry other than `directory`, into staging folders.
    private func deploy(_ m: Manifest, staging: URL, worker: WorkerClient, cases: [JSONValue], tracedBatch: Int?, deployments: inout [StagedDeploy]) throws -> [JSONValue] {
        var results: [JSONValue] = []
        let allPassed = cases.allSatisfy { $0["passed"] == .bool(true) }
        // Triton may batch only when a check shape with another batch size passed.
        let batches = cases.filter { $0["passed"] == .bool(true) }.compactMap { $0["shape"]?[0]?.intValue }
        let maxBatch = allPassed && batches.contains(where: { $0 != tracedBatch }) ? (batches.max() ?? 0) : 0
        for (i, d) in m.output.deploy.enumerated() {
            let destination: URL
            switch d {
            case .directory: continue
            case .triton(let repo): destination = store.root.appendingPathComponent(OutputPaths.normalise(repo)).appendingPathComponent(m.name)
            case .torchserve(let dir): destination = store.root.appendingPathComponent(OutputPaths.normalise(dir)).appendingPathComponent("\(m.name).mar")
            }
            let dest = try store.makeStaging(name: "\(m.name).deploy-\(d.kind)")
            deployments.append(StagedDeploy(kind: d.kind, staging: dest, destination: destination))
            progress.stage(m.name, "deploy \(d.kind)", seconds: nil)
            let start = Date()
            do {
                let data = try worker.request("deploy", [
                    ("kind", .string(d.kind)), ("bundle", .string(staging.path)), ("dest", .string(dest.path)),
                    ("name", .string(m.name)), ("max_batch_size", .int(maxBatch)), ("variable_dims", .bool(allPassed)),
                ])
                results.append(.object([("kind", .string(d.kind)), ("path", .string(destination.path)), ("details", data)]))
            } catch var f as WorkerFailure {
                f.field = f.field ?? "spec.output.deploy[\(i)]"
                throw f
            }
            progress.stage(m.name, "deploy \(d.kind)", seconds: Date().timeIntervalSince(start))
        }
        return results
    }

    private func run(_ m: Manifest, fingerprint: FingerprintInputs, staging: URL, outcome: inout ExportOutcome, deployments: inout [StagedDeploy], isLast: Bool) throws -> JSONValue {
        let worker = try ensureExporter()
        var fp = fingerprint
        for (k, v) in worker.hello.versions { fp.versions[k] = v }
        let versions = JSONValue.object(
            [("tsexport", .string(ToolInfo.version)), ("worker", .string(worker.hello.workerVersion))]
                + ["python", "torch", "transformers"].map { ($0, worker.hello.versions[$0].map(JSONValue.string) ?? .null) })
        let tolerance = JSONValue.object([("atol", .double(m.trace.atol)), ("rtol", .double(m.trace.rtol))])
        let extra = JSONValue.object([
            ("format", .string("tsexport-bundle/1")), ("name", .string(m.name)),
            ("fingerprint", .string(fp.fingerprint)), ("versions", versions),
            ("target", .object([("hardware", .string(m.target.hardware)), ("optimize", .string(m.target.optimize))])),
            ("dtype", .string(m.model.dtype)), ("tolerance", tolerance),
        ])
        let name = m.name
        let data = try worker.request("export", [("job", JobBuilder.job(m, stagingDir: staging, extraRecord: extra))]) { p in
            self.progress.stage(name, p.stage, seconds: p.status == "done" ? (p.elapsedMs ?? 0) / 1000 : nil)
            if p.stage == "load" && p.status == "done" { self.startVerifierInBackground() }
        }

        if isLast, let w = exporter {
            w.beginShutdown()
            retiring.append(w)
            exporter = nil
        }

        // Verify in a process that did not trace the model: only the saved file is exercised.
        let verifyStart = Date()
        progress.stage(name, "verify", seconds: nil)
        let verdict = try verifier().request("verify_bundle", [("dir", .string(staging.path)), ("tolerance", tolerance)])
        let verifyMs = Date().timeIntervalSince(verifyStart) * 1000
        progress.stage(name, "verify", seconds: verifyMs / 1000)

        if !m.trace.strict, let warnings = data["tracer_warnings"]?.arrayValue, let first = warnings.first?.stringValue {
            outcome.diagnostics.append(.warning(
                "\(m.name): the tracer warned \(warnings.count) time\(warnings.count == 1 ? "" : "s") (recorded in record.json); the first: \(first)",
                at: m.locations.location(of: "spec.trace.strict"), field: "spec.trace.strict"))
        }
        for w in data["warnings"]?.arrayValue ?? [] {
            guard let message = w["message"]?.stringValue else { continue }
            let field = w["field"]?.stringValue
            outcome.diagnostics.append(.warning("\(m.name): \(message)", at: m.locations.location(of: field ?? "metadata.name"), field: field))
        }
        let cases = verdict["cases"]?.arrayValue ?? []
        var validOnlyAtTraced = false
        for c in cases where c["passed"] != .bool(true) {
            let caseName = c["case"]?.stringValue ?? "?"
            let shape = CanonicalJSON.text(c["shape"] ?? .null)
            let why = c["error"]?.stringValue
                ?? "max abs error \(c["max_abs_error"]?.doubleValue ?? .nan), max rel error \(c["max_rel_error"]?.doubleValue ?? .nan) (atol \(m.trace.atol), rtol \(m.trace.rtol))"
            if caseName == "traced" || caseName.hasSuffix(".traced") {
                throw WorkerFailure(stage: "verify", code: "verify_failed",
                                    message: "the saved artifact does not match the eager model at the traced shape \(shape): \(why)", field: "spec.trace.tolerance", detail: nil)
            }
            let index = Int(caseName.split(separator: ".").last.map { $0.dropFirst("check".count) } ?? "") ?? 0
            let field = "spec.trace.check_shapes[\(index)]"
            let message = "\(m.name): the artifact differs from the eager model at check shape \(shape): \(why); it is valid only at the traced shape"
            if m.trace.strict {
                throw WorkerFailure(stage: "verify", code: "verify_failed", message: "the artifact differs from the eager model at check shape \(shape): \(why); with strict: true this fails the export (set strict: false to keep an artifact valid only at the traced shape)", field: field, detail: nil)
            }
            outcome.diagnostics.append(.warning(message, at: m.locations.location(of: field), field: field))
            validOnlyAtTraced = true
        }

        let modelSHA = try Digest.sha256(file: staging.appendingPathComponent("model.pt").path)
        if let reported = verdict["sha256"]?.stringValue, reported != modelSHA {
            throw WorkerFailure(stage: "verify", code: "verify_failed", message: "model.pt changed while it was being verified", field: nil, detail: nil)
        }
        var record: [(String, JSONValue)] = extra.objectValue ?? []
        record.append(("manifest_file", .string(m.file)))
        record.append(("manifest_dir", .string(m.directory.path)))
        record.append(("document_index", .int(m.documentIndex)))
        record.append(("fingerprint_inputs", fp.json))
        if let bytes = FileManager.default.contents(atPath: m.file) {
            record.append(("manifest_sha256", .string(Digest.sha256(bytes))))
        }
        for key in ["model_class", "input_signature", "output_signature", "cases", "tracer_warnings", "untied_parameters", "hardware", "device",
                    "attn_implementation", "adjusted_config", "warnings", "artifacts", "generation"] {
            if let v = data[key] { record.append((key, v)) }
        }
        record.append(("model_sha256", .string(modelSHA)))
        if let size = (try? FileManager.default.attributesOfItem(atPath: staging.appendingPathComponent("model.pt").path))?[.size] as? Int {
            record.append(("model_bytes", .int(size)))
        }
        record.append(("parity", .object([
            ("tolerance", tolerance), ("cases", .array(cases)),
            ("verdict", .string(validOnlyAtTraced ? "valid only at the traced shape" : "valid at every checked shape")),
        ])))
        let tracedBatch = data["input_signature"]?[0]?["shape"]?[0]?.intValue
        let deployed = try deploy(m, staging: staging, worker: try verifier(), cases: cases, tracedBatch: tracedBatch, deployments: &deployments)
        if !deployed.isEmpty { record.append(("deployments", .array(deployed))) }
        var timings = data["timings_ms"]?.objectValue ?? []
        timings.append(("verify", .double(verifyMs)))
        record.append(("timings_ms", .object(timings)))
        record.append(("created_at", .string(ISO8601DateFormatter().string(from: Date()))))
        let value = JSONValue.object(record)
        try Data((value.serialized(pretty: true) + "\n").utf8).write(to: staging.appendingPathComponent(RecordSummary.fileName))
        return value
    }
}
