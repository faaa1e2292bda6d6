import Bundles
import Diagnostics
import Foundation
import JSON
import Manifest
import Plan

/// One plan entry being executed: the export request, verification in the fresh worker, the envelope verdict, the
/// record, the deploys. Every request sent is the one the plan step carries (a narrowed re-export sends it with the
/// verified box as its envelope, as the policy's `recompileWhenNarrowed` says); the running worker's versions are
/// checked against the plan's fingerprint (`RuntimeVersions`), and complete it only where the plan did not know them.
struct EntryRun {
    let entry: PlanEntry
    let locations: FieldLocations
    var fingerprint: FingerprintInputs
    let staging: URL
    let workers: WorkerPair
    let store: BundleStore
    let progress: ProgressSink
    /// Warnings for the user, positioned in the manifest.
    var warnings: [Diagnostic] = []

    func fields(_ step: PlanStep.Kind) throws -> [(String, JSONValue)] {
        guard let r = entry.step(step)?.request?.objectValue else {
            throw WorkerFailure(stage: step.rawValue, code: "bad_request", message: "the plan has no \(step.rawValue) request", field: nil, detail: nil)
        }
        return r.filter { $0.0 != "op" }
    }

    mutating func warn(_ field: String?, _ message: String) {
        warnings.append(.warning("\(entry.name): \(message)", at: locations.location(of: field ?? "metadata.name"), field: field))
    }

    /// The plan's export job; when the plan did not know the runtime's versions (`completed`), its record carries
    /// the fingerprint and versions the running worker completed.
    func job(hello: WorkerHello, completed fp: FingerprintInputs?) throws -> JSONValue {
        guard var job = try fields(.trace).first(where: { $0.0 == "job" })?.1.objectValue else {
            throw WorkerFailure(stage: "trace", code: "bad_request", message: "the plan's export request has no job", field: nil, detail: nil)
        }
        guard let fp else { return .object(job) }
        let versions = Planner.versionsRecord(worker: hello.workerVersion, runtime: hello.versions)
        if let i = job.firstIndex(where: { $0.0 == "extra_record" }), var extra = job[i].1.objectValue {
            extra = extra.map { k, v in k == "fingerprint" ? (k, .string(fp.fingerprint)) : k == "versions" ? (k, versions) : (k, v) }
            job[i].1 = .object(extra)
        }
        return .object(job)
    }

    /// Sends `job` to the exporting `worker`, then the plan's `verify_bundle` to the verifying worker (a process that
    /// did not trace the model: only the saved file is exercised). The export's data, the verdict and the verify time.
    func exportAndVerify(_ job: JSONValue, on worker: WorkerClient, retire: Bool) throws -> (data: JSONValue, verdict: JSONValue, verifyMs: Double) {
        let name = entry.name, progress = self.progress
        let data = try worker.request("export", [("job", job)]) { p in
            progress.stage(name, p.stage, seconds: p.status == "done" ? (p.elapsedMs ?? 0) / 1000 : nil)
        }
        if retire { workers.retireExporter() }
        let verifyStart = Date()
        progress.stage(name, "verify", seconds: nil)
        let verdict = try workers.verifier().request("verify_bundle", try fields(.verify))
        let verifyMs = Date().timeIntervalSince(verifyStart) * 1000
        progress.stage(name, "verify", seconds: verifyMs / 1000)
        return (data, verdict, verifyMs)
    }

    mutating func execute(isLast: Bool, deployments: inout [StagedDeploy]) throws -> JSONValue {
        // The verifying worker starts with the exporting one: its Python and torch import (about 1.5 s) runs on the
        // other core while the model loads, instead of on the critical path before verify.
        workers.startVerifierInBackground()
        let exporter = try workers.ensureExporter()
        let hello = exporter.hello
        var completed: FingerprintInputs?
        switch RuntimeVersions.check(planned: fingerprint, running: hello.versions) {
        case .planned: break
        case .completed(let fp): completed = fp
        case .changed(let why): throw WorkerFailure(stage: "export", code: "runtime_changed", message: why, field: nil, detail: nil)
        }
        if let completed { fingerprint = completed }
        let job = try job(hello: hello, completed: completed)
        let name = entry.name, progress = self.progress, workers = self.workers
        // The exporter is retired after the last export of its slot; a narrowed re-export may still need it.
        let mayRecompile = entry.policy?.recompileWhenNarrowed ?? false
        var (data, verdict, verifyMs) = try exportAndVerify(job, on: exporter, retire: isLast && !mayRecompile)
        for w in data["warnings"]?.arrayValue ?? [] {
            guard let message = w["message"]?.stringValue else { continue }
            warn(w["field"]?.stringValue, message)
        }

        var judge = try VerificationJudge(entry: entry, data: data, verdict: verdict)
        var envelope = try judge.judge()
        for w in judge.warnings { warn(w.field, w.message) }
        // formats: [aoti] alone: model.pt2 is the artifact
        let artifact = judge.policy.artifact
        let torchscript = artifact == BundleLayout.modelFile
        var timingsExtra: [(String, JSONValue)] = []
        let builtAOTI = (data["aoti"] ?? .null) != .null
        if judge.policy.recompileWhenNarrowed, builtAOTI, let ranges = envelope.resealRanges, let box = VerifiedEnvelope(json: ranges), let plan = entry.envelope {
            // model.pt2 has no guard and accepts the dims it was compiled for: compiled for the planned envelope, it
            // would serve shapes that did not verify. The entry is exported again for the verified box (model.pt, when
            // there is one, then carries a guard of that box) and verified again.
            progress.message("\(name): model.pt2 verified only in \(box.text): compiling it again for that envelope")
            let start = Date()
            var narrowedEntry = entry
            narrowedEntry.envelope = plan.narrowed(to: box, traced: judge.tracedSizes)
            let narrowedJob = Self.job(job, envelope: narrowedEntry.envelope?.json ?? .null)
            let first = envelope
            (data, verdict, verifyMs) = try exportAndVerify(narrowedJob, on: exporter, retire: false)
            judge = try VerificationJudge(entry: narrowedEntry, data: data, verdict: verdict)
            var second = try judge.judge()
            guard second.resealRanges == nil else {
                throw WorkerFailure(stage: "verify", code: "envelope_failed", message: "model.pt2 compiled again for the verified envelope \(box.text) does not match the eager model at every point of it; nothing was written", field: "spec.trace.envelope", detail: nil)
            }
            second.record = Self.recompiledRecord(second.record, planned: first.record)
            envelope = second
            timingsExtra.append(("recompile_narrowed", .double(Date().timeIntervalSince(start) * 1000)))
        }
        if isLast && mayRecompile { workers.retireExporter() }
        if let ranges = envelope.resealRanges, let planned = judge.policy.guardRequest?.objectValue {
            // A default envelope narrowed: the artifact's guard is rewritten to refuse what did not verify.
            progress.stage(name, "guard", seconds: nil)
            let fields = planned.filter { $0.0 != "op" }.map { $0.0 == "ranges" ? ($0.0, ranges) : $0 }
            _ = try workers.verifier().request("guard", fields)
        }

        let modelSHA = try Digest.sha256(file: staging.appendingPathComponent(artifact).path)
        if envelope.resealRanges == nil || !judge.policy.guarded, let reported = verdict["sha256"]?.stringValue, reported != modelSHA {
            throw WorkerFailure(stage: "verify", code: "verify_failed", message: "\(artifact) changed while it was being verified", field: nil, detail: nil)
        }
        var record = RecordAssembly(entry: entry, fingerprint: fingerprint, job: job, data: data)
        record.addWarnings(judge.recordWarnings)
        record.add("artifact", .string(artifact))
        if torchscript {
            record.add("model_sha256", .string(modelSHA))
            if let size = (try? FileManager.default.attributesOfItem(atPath: staging.appendingPathComponent(artifact).path))?[.size] as? Int {
                record.add("model_bytes", .int(size))
            }
        }
        record.add("envelope", envelope.record)
        if let g = envelope.generation { record.add("generation_check", g) }
        if var aoti = envelope.aoti?.objectValue {
            let path = staging.appendingPathComponent(BundleLayout.aotiFile).path
            if let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int {
                aoti = aoti.map { k, v in k == "bytes" ? (k, .int(size)) : (k, v) }
            }
            record.add("aoti", .object(aoti))
        }
        record.add("parity", judge.parity(envelope: envelope))
        if let q = judge.quality { record.add("quality", q) }
        if let l = judge.library { record.add("library", l) }
        let deployed = try deploy(envelope: envelope, policy: judge.policy, deployments: &deployments)
        if !deployed.isEmpty { record.add("deployments", .array(deployed.map(\.record))) }
        let value = record.value
        try Data((value.serialized(pretty: true) + "\n").utf8).write(to: staging.appendingPathComponent(RecordSummary.fileName))

        // build.json: the content (every file but itself), the deploys' files, and how, when and where it was built.
        var timings = data["timings_ms"]?.objectValue ?? []
        timings.append(("verify", .double(verifyMs)))
        timings += timingsExtra
        var facts = record.buildFacts
        facts += [("timings_ms", .object(timings)), ("deploy_details", .array(deployed.map(\.build))),
                  ("built_at", .string(ISO8601DateFormatter().string(from: Date()))),
                  ("host", .string(ProcessInfo.processInfo.hostName)), ("output_root", .string(store.root.path)),
                  ("bundle", .string(entry.bundle))]
        if let seconds = data["aoti"]?.objectValue?.filter({ $0.0.hasSuffix("_seconds") }), !seconds.isEmpty {
            facts.append(("aoti_seconds", .object(seconds)))
        }
        let content = try BundleContent.entries(of: staging, known: [artifact: modelSHA])
        let deployFiles = try deployments.map { d -> (DeployedFiles, [(String, JSONValue)]) in
            try (Self.stagedFiles(d, root: store.root), [])
        }
        let build = BuildInfo.json(content: content, deployments: deployFiles, facts: facts)
        try Data((build.serialized(pretty: true) + "\n").utf8).write(to: staging.appendingPathComponent(BundleContent.buildFile))
        return value
    }

    /// The export job with its `trace.envelope` replaced.
    static func job(_ job: JSONValue, envelope: JSONValue) -> JSONValue {
        guard var o = job.objectValue, let i = o.firstIndex(where: { $0.0 == "trace" }), var trace = o[i].1.objectValue else { return job }
        trace = trace.map { $0.0 == "envelope" ? ($0.0, envelope) : $0 }
        o[i].1 = .object(trace)
        return .object(o)
    }

    /// The record's envelope of model.pt2 compiled again for the verified box: the second verification's points,
    /// ranges and verdicts, the planned ranges of the first, `narrowed`, and `compiled` (the ranges model.pt2's
    /// dynamic dims were compiled for: the verified ones).
    static func recompiledRecord(_ second: JSONValue, planned first: JSONValue) -> JSONValue {
        guard var o = second.objectValue else { return second }
        o = o.map { k, v in
            switch k {
            case "axes": return (k, first["axes"] ?? v)
            case "narrowed": return (k, .bool(true))
            default: return (k, v)
            }
        }
        o.append(("compiled", second["verified"] ?? .null))
        // Why it narrowed: the planned points that failed in the first verification.
        let failed = (first["points"]?.arrayValue ?? []).filter { $0["passed"] == .bool(false) }
        o.append(("narrowed_by", .array(failed)))
        return .object(o)
    }

    /// A staged deploy's files, with the paths they will have under the output root.
    static func stagedFiles(_ d: StagedDeploy, root: URL) throws -> DeployedFiles {
        guard let dest = OutputState.relative(d.destination.path, root: root) else {
            throw WorkerFailure(stage: "deploy", code: "deploy_failed", message: "\(d.destination.path) is outside the output root", field: nil, detail: nil)
        }
        if d.kind == "triton" {
            let files = try BundleContent.entries(of: d.staging).map { ContentEntry(path: dest + "/" + $0.path, sha256: $0.sha256, size: $0.size) }
            return DeployedFiles(kind: d.kind, path: dest, files: files)
        }
        let file = d.staging.appendingPathComponent(d.destination.lastPathComponent).path
        let size = (try FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? 0
        return DeployedFiles(kind: d.kind, path: dest, files: [ContentEntry(path: dest, sha256: try Digest.sha256(file: file), size: size)])
    }

    /// Deploys the staged bundle for every planned deploy step, into staging folders; the batch settings follow the
    /// verified envelope.
    func deploy(envelope: JudgedEnvelope, policy: VerificationPolicy, deployments: inout [StagedDeploy]) throws -> [DeployResult] {
        var results: [DeployResult] = []
        let deploySteps = entry.steps.filter { $0.kind == .deploy && $0.request != nil }
        for (i, step) in deploySteps.enumerated() {
            guard var request = step.request?.objectValue, let kind = step.request?["kind"]?.stringValue,
                  let dest = step.request?["dest"]?.stringValue
            else { continue }
            guard let install = step.install else {
                throw WorkerFailure(stage: "deploy", code: "bad_request", message: "the plan states no install destination for this \(kind) deploy",
                                    field: "spec.output.deploy[\(i)]", detail: nil)
            }
            // The plan's settings, or the verified envelope's by the same rule when a default envelope narrowed.
            let index = entry.steps.filter { $0.kind == .deploy }.firstIndex { $0 == step } ?? i
            guard let settings = policy.deployRule(index: index)?.settings(verified: envelope.verified) else {
                throw WorkerFailure(stage: "deploy", code: "bad_request", message: "the plan states no batch settings rule for this \(kind) deploy",
                                    field: "spec.output.deploy[\(index)]", detail: nil)
            }
            let verified = Dictionary(uniqueKeysWithValues: WorkerRequests.deployFields(settings))
            request = request.filter { $0.0 != "op" }.map { k, v in (k, verified[k] ?? v) }
            let destination = URL(fileURLWithPath: install)
            let stagingDest = try store.makeStaging(at: URL(fileURLWithPath: dest))
            deployments.append(StagedDeploy(kind: kind, staging: stagingDest, destination: destination))
            progress.stage(entry.name, "deploy \(kind)", seconds: nil)
            let start = Date()
            do {
                let data = try workers.verifier().request("deploy", request)
                results.append(DeployResult(kind: kind, path: OutputState.relative(destination.path, root: store.root) ?? destination.path,
                                            request: .object(request), details: data))
            } catch var f as WorkerFailure {
                f.field = f.field ?? "spec.output.deploy[\(index)]"
                throw f
            }
            progress.stage(entry.name, "deploy \(kind)", seconds: Date().timeIntervalSince(start))
        }
        return results
    }
}

/// The record: the plan's extra record, the worker's fields, then what Swift verified.
/// The record holds what the artifact is: no absolute path, no clock time, no timing; those go to `buildFacts`
/// (build.json).
struct RecordAssembly {
    private var fields: [(String, JSONValue)]
    /// Where and from what file it was built: build.json's.
    var buildFacts: [(String, JSONValue)] = []

    init(entry: PlanEntry, fingerprint: FingerprintInputs, job: JSONValue, data: JSONValue) {
        fields = job["extra_record"]?.objectValue ?? []
        fields.append(("fingerprint_inputs", fingerprint.json))
        buildFacts.append(("manifest_file", .string(URL(fileURLWithPath: entry.file).standardizedFileURL.path)))
        if let dir = entry.manifestDirectory { buildFacts.append(("manifest_dir", .string(dir))) }
        buildFacts.append(("document_index", .int(entry.documentIndex)))
        if let bytes = FileManager.default.contents(atPath: entry.file) {
            buildFacts.append(("manifest_sha256", .string(Digest.sha256(bytes))))
        }
        for key in ["model_class", "input_signature", "output_signature", "cases", "tracer_warnings", "untied_parameters", "hardware", "device", "cpu",
                    "attn_implementation", "adjusted_config", "warnings", "artifacts", "generation", "quantize"] {
            if let v = data[key] { fields.append((key, v)) }
        }
    }

    mutating func add(_ key: String, _ value: JSONValue) {
        if key == "aoti", case .object(let o) = value {
            fields.append((key, .object(o.filter { !$0.0.hasSuffix("_seconds") })))
            return
        }
        fields.append((key, value))
    }

    /// Adds the judge's warnings (the worker's own come with `data`) to the record's `warnings`.
    mutating func addWarnings(_ more: [JSONValue]) {
        guard !more.isEmpty else { return }
        if let i = fields.firstIndex(where: { $0.0 == "warnings" }) {
            fields[i].1 = .array((fields[i].1.arrayValue ?? []) + more)
        } else {
            fields.append(("warnings", .array(more)))
        }
    }

    var value: JSONValue { .object(fields) }
}

/// One deploy's result: what the record keeps (kind, path under the output root, the settings it was made with and
/// the worker's facts without paths or times) and what build.json keeps (staging path, timings, the archiver's
/// manifest with its creation time).
struct DeployResult {
    var kind: String
    var path: String
    var request: JSONValue
    var details: JSONValue

    static let buildOnly: Set<String> = ["dest", "timings_ms", "manifest"]

    var record: JSONValue {
        let settings = (request.objectValue ?? []).filter { ["max_batch_size", "variable_dims", "batch_dim", "format", "version"].contains($0.0) }
        return .object([("kind", .string(kind)), ("path", .string(path)), ("settings", .object(settings)),
                        ("details", .object((details.objectValue ?? []).filter { !Self.buildOnly.contains($0.0) }))])
    }

    var build: JSONValue {
        .object([("kind", .string(kind)), ("path", .string(path))] + (details.objectValue ?? []).filter { Self.buildOnly.contains($0.0) })
    }
}
