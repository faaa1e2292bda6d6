import Bundles
import Foundation
import JSON
import Manifest

/// The version of the worker protocol and code that this tsexport ships; part of every fingerprint.
public enum WorkerInfo {
    /// Must equal `WORKER_VERSION` in the worker's `__init__.py` (a test checks it).
    public static let version = "2.0.0"
    /// The protocol version spoken over the JSON lines.
    public static let protocolVersion = 2
}

/// The version of tsexport itself, recorded in every bundle.
public enum ToolInfo {
    /// Semantic version.
    public static let version = "0.2.0"
}

/// What the planner is told about the world; gathering it reads files, planning itself is pure.
public struct PlannerInput: Sendable {
    /// The manifests to plan, in order.
    public var manifests: [Manifest]
    /// The output root.
    public var outputRoot: URL
    /// Current fingerprint inputs, by manifest name.
    public var fingerprints: [String: FingerprintInputs]
    /// Records of existing bundles, by manifest name.
    public var existing: [String: RecordSummary]
    /// Targets the runtime lacks, by hardware name, with what to install; nil when the runtime was not probed.
    public var unavailableTargets: [String: String]?
    /// `--force`: rebuild everything selected.
    public var force: Bool
    /// `--replace NAME`: rebuild these.
    public var replace: Set<String>
    /// What drifted in existing bundles and their deploys, by manifest name.
    public var drift: [String: Drift] = [:]

    /// Creates an input.
    public init(
        manifests: [Manifest], outputRoot: URL, fingerprints: [String: FingerprintInputs],
        existing: [String: RecordSummary] = [:], unavailableTargets: [String: String]? = nil,
        force: Bool = false, replace: Set<String> = []
    ) {
        self.manifests = manifests
        self.outputRoot = outputRoot
        self.fingerprints = fingerprints
        self.existing = existing
        self.unavailableTargets = unavailableTargets
        self.force = force
        self.replace = replace
    }
}

/// Builds a `Plan` from manifests and observed state. Pure: no process, no file access.
public struct Planner: Sendable {
    /// Creates a planner.
    public init() {}

    /// Where a manifest's bundle goes.
    public static func bundleURL(_ m: Manifest, root: URL) -> URL {
        root.standardizedFileURL.appendingPathComponent(OutputPaths.normalise(m.output.dir))
    }

    /// The files a complete bundle holds.
    public static let bundleFiles = RecordSummary.bundleFiles

    /// Plans every manifest.
    public func plan(_ input: PlannerInput) -> Plan {
        let root = input.outputRoot.standardizedFileURL
        let entries = input.manifests.map { m -> PlanEntry in
            let bundle = Self.bundleURL(m, root: root)
            var fp = input.fingerprints[m.name] ?? FingerprintInputs(manifest: FingerprintInputs.normalise(m.document), files: [:], versions: ["worker": WorkerInfo.version])
            for (key, value) in Self.policyInputs(m) { fp.versions[key] = value }
            var (action, reasons) = decide(current: fp, existing: input.existing[m.name])
            var redeploy: [PlanStep] = []
            if action == .upToDate && (input.force || input.replace.contains(m.name)) {
                action = .rebuild
                reasons = [PlanReason(kind: .forced, subject: input.force ? "--force" : "--replace \(m.name)")]
            } else if action == .upToDate, let drift = input.drift[m.name], !drift.isEmpty, let existing = input.existing[m.name] {
                (action, reasons, redeploy) = driftAction(m, drift: drift, existing: existing, root: root)
            }
            var blockers: [String] = []
            if let missing = Self.unavailableTarget(m.target.hardware, unavailable: input.unavailableTargets ?? [:]) {
                blockers.append(missing)
            }
            let envelope = action == .upToDate || action == .redeploy ? nil : EnvelopePlanner.plan(m)
            var entry = PlanEntry(
                name: m.name, file: m.file, line: m.locations.location(of: "metadata.name").line,
                action: action, reasons: reasons, bundle: bundle.path, fingerprint: fp.fingerprint,
                steps: envelope.map { steps(m, bundle: bundle, root: root, envelope: $0, fingerprint: fp, existing: input.existing[m.name]) } ?? redeploy, blockers: blockers,
                envelope: envelope)
            entry.contentDigest = input.existing[m.name]?.build?.contentDigest
            if let envelope { entry.policy = VerificationPolicy(m, envelope: envelope, staging: BundleStore(root: root).stagingURL(name: m.name)) }
            entry.manifestDirectory = m.directory.path
            if action == .upToDate || action == .redeploy { entry.verifiedEnvelope = input.existing[m.name]?.verifiedEnvelope }
            entry.documentIndex = m.documentIndex
            return entry
        }
        return Plan(outputRoot: root.path, entries: entries)
    }

    /// Decisions of tsexport's that shape the artifact beyond the manifest's text (AOTInductor's compile settings, the
    /// quantization library), fingerprinted beside the versions so that changing them rebuilds.
    public static func policyInputs(_ m: Manifest) -> [String: String] {
        var out: [String: String] = [:]
        if m.output.formats.contains("aoti") {
            out["policy.aoti.inductor_configs"] = CanonicalJSON.text(WorkerRequests.inductorConfigs(m))
            out["policy.aoti.compile_mode"] = WorkerRequests.aotiCompileMode
        }
        let quantize = WorkerRequests.quantize(m)
        if let library = quantize["library"]?.stringValue { out["policy.quantize.library"] = library }
        if let mapping = quantize["activation_mapping"]?.stringValue { out["policy.quantize.activation_mapping"] = mapping }
        return out
    }

    /// The AOTInductor compile's expected duration, for the plan: the last build's when the bundle records one.
    static func compileEstimate(_ existing: RecordSummary?) -> String {
        guard let seconds = existing?.aotiCompileSeconds else {
            return "compile time unknown until the first build (tens of seconds for small models, minutes for large ones)"
        }
        return "compile about \(Int(seconds.rounded())) s (the last build's)"
    }

    /// create / rebuild with every reason / up to date.
    func decide(current: FingerprintInputs, existing: RecordSummary?) -> (PlanAction, [PlanReason]) {
        guard let old = existing else { return (.create, []) }
        var reasons: [PlanReason] = []
        if let why = old.incomplete { reasons.append(PlanReason(kind: .incomplete, subject: why)) }
        FieldDiff.diff(old.manifest, current.manifest, path: "", into: &reasons)
        for key in Set(old.inputFiles.keys).union(current.files.keys).sorted() where old.inputFiles[key] != current.files[key] {
            reasons.append(PlanReason(kind: .inputFile, subject: key, old: old.inputFiles[key].map(Self.short), new: current.files[key].map(Self.short)))
        }
        // Only versions known now are compared: plan without a probed runtime still sees manifest and file changes.
        for key in current.versions.keys.sorted() where old.versions[key] != current.versions[key] {
            reasons.append(PlanReason(kind: .version, subject: key, old: old.versions[key], new: current.versions[key]))
        }
        return reasons.isEmpty ? (.upToDate, []) : (.rebuild, reasons)
    }

    static func short(_ hash: String) -> String { String(hash.prefix(12)) }

    /// What the bundle's record starts from (the worker lays its fields over it). The executor sends it as planned
    /// when the plan knew the runtime's versions (a running worker that reports others is refused), and completes
    /// `fingerprint` and `versions` from the running worker's hello when it did not (`RuntimeVersions`).
    static func extraRecord(_ m: Manifest, fingerprint fp: FingerprintInputs) -> JSONValue {
        let versions = versionsRecord(worker: WorkerInfo.version, runtime: fp.versions)
        return .object([
            ("format", .string("tsexport-bundle/1")), ("name", .string(m.name)),
            ("fingerprint", .string(fp.fingerprint)), ("versions", versions),
            ("target", .object([("hardware", .string(m.target.hardware)), ("optimize", .string(m.target.optimize)),
                                ("quantize", .string(m.target.quantize))])),
            ("dtype", .string(m.model.dtype)), ("tolerance", WorkerRequests.tolerance(m)),
        ])
    }

    /// The record's `versions`: tsexport's, the worker's, and the runtime's Python, torch and transformers (null
    /// when unknown).
    public static func versionsRecord(worker: String, runtime: [String: String]) -> JSONValue {
        .object([("tsexport", .string(ToolInfo.version)), ("worker", .string(worker))]
            + ["python", "torch", "transformers"].map { ($0, runtime[$0].map(JSONValue.string) ?? .null) })
    }

    /// Why a manifest's target cannot be built in a runtime, from the targets that runtime reports unavailable (with
    /// the reason); nil when it can. The plan's blocker and apply's refusal from the running worker's hello.
    public static func unavailableTarget(_ hardware: String, unavailable: [String: String]) -> String? {
        unavailable[hardware].map { "target \(hardware) is not available in this runtime: \($0)" }
    }

    /// Where a deploy entry goes: a Triton model folder `<repository>/<name>` or a `.mar` in the store.
    public static func deployDestination(_ d: DeployTarget, name: String, root: URL) -> URL? {
        switch d {
        case .directory, .oci: return nil
        case .triton(let repo, _): return root.appendingPathComponent(OutputPaths.normalise(repo)).appendingPathComponent(name)
        case .torchserve(let store): return root.appendingPathComponent(OutputPaths.normalise(store)).appendingPathComponent("\(name).mar")
        }
    }

    func format(of d: DeployTarget) -> String {
        if case .triton(_, let f) = d { return f }
        return "torchscript"
    }

    func steps(_ m: Manifest, bundle: URL, root: URL, envelope: EnvelopePlan, fingerprint: FingerprintInputs, existing: RecordSummary? = nil) -> [PlanStep] {
        let store = BundleStore(root: root)
        let staging = store.stagingURL(name: m.name)
        var steps: [PlanStep] = []
        let source: String
        var loadInputs: [String] = []
        switch m.model.pretrained {
        case .none:
            source = "random initialisation from config (seed \(m.model.seed))"
        case .local(let p)?:
            source = "pretrained weights from \(p)"
            loadInputs.append(p)
        case .hub(let id)?:
            source = "pretrained weights from the hub id \(id)" + (m.model.revision.map { " at revision \($0)" } ?? "")
            loadInputs.append("hub:\(id)" + (m.model.revision.map { "@\($0)" } ?? ""))
        }
        steps.append(PlanStep(kind: .load, description: "load \(m.model.className), \(source), dtype \(m.model.dtype)", inputs: loadInputs, outputs: []))

        var traceInputs: [String] = []
        if let t = m.inputs.tokenizer { traceInputs.append(t.isLocal ? t.reference : "hub:\(t.reference)") }
        let names = m.inputs.tensors.map { "\($0.name) (\($0.from.rawValue))" }.joined(separator: ", ")
        var traceDesc = "\(WorkerRequests.traceAPI(hardware: m.target.hardware)) on \(m.target.hardware) with \(names)"
        traceDesc += m.trace.strict ? ", strict (tracer warnings must be covered by the envelope)" : ", warnings recorded"
        if m.model.torchscript { traceDesc += ", tuple outputs, tied weights untied" }
        let torchscript = m.output.formats.contains("torchscript")
        if !torchscript { traceDesc = "eager outputs on \(names) (formats: [aoti] alone: no TorchScript trace)" }
        if m.target.quantize == "dynamic_int8" {
            let keep = QualityGate.format(WorkerRequests.selectionCosine(gate: m.trace.minCosine))
            let how = torchscript ? "dynamic int8 quantization with torch.ao (per-tensor activations, per-channel weights)"
                : "torchao Int8DynamicActivationInt8WeightConfig (per-token \(WorkerRequests.torchaoActivationMapping) activations, per-channel weights)"
            traceDesc = "\(how) of the Linear layers that together keep cosine \(keep) to the float32 model on the traced inputs, the rest float32; then " + traceDesc
        }
        if m.target.optimize != "none" { traceDesc += ", then \(m.target.optimize)" }
        let job = WorkerRequests.exportJob(m, envelope: envelope, stagingDir: staging, extraRecord: Self.extraRecord(m, fingerprint: fingerprint))
        steps.append(PlanStep(kind: .trace, description: traceDesc, inputs: traceInputs, outputs: [],
                              request: .object([("op", "export"), ("job", job)])))

        let aoti = m.output.formats.contains("aoti")
        let configs = WorkerRequests.inductorConfigs(m).objectValue?.map { "\($0.0)=\(CanonicalJSON.text($0.1))" }.joined(separator: ", ") ?? ""
        let compile = "torch.export (no_grad) over the envelope and AOTInductor (\(WorkerRequests.aotiCompileMode); \(configs)) into model.pt2, \(Self.compileEstimate(existing))"
        let serializeDesc = torchscript ? "torch.jit.save with the record embedded" + (aoti ? "; " + compile : "") : compile + "; the record in record.json"
        steps.append(PlanStep(
            kind: .serialize,
            description: serializeDesc + "; staged, then moved into place",
            inputs: [], outputs: (RecordSummary.files(torchscript: torchscript) + (aoti ? [BundleLayout.aotiFile] : [])).map { bundle.appendingPathComponent($0).path }))

        let points = envelope.points.map { p in
            "\(p.name) " + envelope.axes.map { a in "\(a.name)=\(((p.sizes[a.name] ?? nil) ?? a.traced).map(String.init) ?? "traced")" }.joined(separator: " ")
        }
        let artifact = torchscript ? BundleLayout.modelFile : BundleLayout.aotiFile
        var verifyDesc = "reload \(artifact) in a fresh process, compare with the eager model over the envelope: \(envelope.summary)"
        verifyDesc += " (atol \(m.trace.atol), rtol \(m.trace.rtol))"
        if let gate = m.trace.minCosine {
            verifyDesc += m.reducedPrecision
                ? "; and with the float32 eager model: cosine per output row at least \(gate)"
                : "; cosine per output row at least \(gate)"
        }
        if !points.isEmpty { verifyDesc += "\n              points " + points.joined(separator: "; ") }
        steps.append(PlanStep(kind: .verify, description: verifyDesc, inputs: [bundle.appendingPathComponent(artifact).path],
                              outputs: [bundle.appendingPathComponent("record.json").path],
                              request: .object([("op", "verify_bundle")] + (WorkerRequests.verify(m, bundle: staging).objectValue ?? []))))

        let rules = DeployBatchRule.rules(m, envelope: envelope)
        for (i, d) in m.output.deploy.enumerated() {
            if case .oci(let repository) = d {
                let tags = WorkerRequests.ociTags(name: m.name, fingerprint: fingerprint.fingerprint)
                steps.append(PlanStep(
                    kind: .deploy, description: "oci: push to \(repository) as a ModelPack artifact, tags \(tags.joined(separator: ", "))",
                    inputs: [bundle.path], outputs: tags.map { "oci://\(repository):\($0)" },
                    request: WorkerRequests.ociPush(repository: repository, tags: tags)))
                continue
            }
            guard let dest = Self.deployDestination(d, name: m.name, root: root) else {
                steps.append(PlanStep(kind: .deploy, description: "directory: the bundle itself", inputs: [], outputs: [bundle.path]))
                continue
            }
            guard let rule = rules.first(where: { $0.index == i }) else { continue }
            let request = JSONValue.object([("op", "deploy")] + (WorkerRequests.deploy(
                kind: d.kind, bundle: staging, dest: store.stagingURL(name: "\(m.name).deploy-\(i)"), name: m.name,
                settings: rule.planned, format: rule.format).objectValue ?? []))
            switch d {
            case .directory, .oci: break
            case .triton(_, let format):
                let file = format == "aoti" ? BundleLayout.aotiFile : "model.pt"
                let platform = format == "aoti" ? "torch_aoti" : "pytorch_libtorch"
                steps.append(PlanStep(
                    kind: .deploy, description: "triton: model repository entry, platform \(platform), \(rule.summary)",
                    inputs: [bundle.appendingPathComponent(file).path],
                    outputs: [dest.appendingPathComponent("config.pbtxt").path, dest.appendingPathComponent("1/\(file)").path], request: request, install: dest.path))
            case .torchserve:
                steps.append(PlanStep(
                    kind: .deploy, description: "torchserve: .mar archive made by torch-model-archiver",
                    inputs: [bundle.appendingPathComponent("model.pt").path], outputs: [dest.path], request: request, install: dest.path))
            }
        }
        return steps
    }
}

/// Field-by-field differences between two manifest documents, as `path: old → new` reasons.
enum FieldDiff {
    static func diff(_ a: JSONValue, _ b: JSONValue, path: String, into out: inout [PlanReason]) {
        if case .object(let oa) = a, case .object(let ob) = b {
            var keys: [String] = oa.map(\.0)
            for (k, _) in ob where !keys.contains(k) { keys.append(k) }
            for k in keys {
                let va = oa.first { $0.0 == k }?.1, vb = ob.first { $0.0 == k }?.1
                let p = path.isEmpty ? k : "\(path).\(k)"
                switch (va, vb) {
                case let (x?, y?): diff(x, y, path: p, into: &out)
                case let (x?, nil): out.append(PlanReason(kind: .field, subject: p, old: render(x), new: nil))
                case let (nil, y?): out.append(PlanReason(kind: .field, subject: p, old: nil, new: render(y)))
                case (nil, nil): break
                }
            }
            return
        }
        if CanonicalJSON.text(a) != CanonicalJSON.text(b) {
            out.append(PlanReason(kind: .field, subject: path, old: render(a), new: render(b)))
        }
    }

    static func render(_ v: JSONValue) -> String {
        let t = CanonicalJSON.text(v)
        if case .string(let s) = v, !s.contains(" ") { return s }
        return t.count > 60 ? String(t.prefix(57)) + "..." : t
    }
}
