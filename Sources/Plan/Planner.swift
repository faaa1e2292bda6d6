import Bundles
import Foundation
import JSON
import Manifest

/// The version of the worker protocol and code that this tsexport ships; part of every fingerprint.
public enum WorkerInfo {
    /// Must equal `WORKER_VERSION` in the worker's `__init__.py` (a test checks it).
    public static let version = "1.0.0"
    /// The protocol version spoken over the JSON lines.
    public static let protocolVersion = 1
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
            let fp = input.fingerprints[m.name] ?? FingerprintInputs(manifest: FingerprintInputs.normalise(m.document), files: [:], versions: ["worker": WorkerInfo.version])
            var (action, reasons) = decide(current: fp, existing: input.existing[m.name])
            if action == .upToDate && (input.force || input.replace.contains(m.name)) {
                action = .rebuild
                reasons = [PlanReason(kind: .forced, subject: input.force ? "--force" : "--replace \(m.name)")]
            }
            var blockers: [String] = []
            if let missing = input.unavailableTargets?[m.target.hardware] {
                blockers.append(missing)
            }
            return PlanEntry(
                name: m.name, file: m.file, line: m.locations.location(of: "metadata.name").line,
                action: action, reasons: reasons, bundle: bundle.path, fingerprint: fp.fingerprint,
                steps: action == .upToDate ? [] : steps(m, bundle: bundle, root: root), blockers: blockers)
        }
        return Plan(outputRoot: root.path, entries: entries)
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

    func steps(_ m: Manifest, bundle: URL, root: URL) -> [PlanStep] {
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
        let how: String
        switch m.target.hardware {
        case "inf1": how = "torch.neuron.trace"
        case "inf2": how = "torch_neuronx.trace"
        default: how = "torch.jit.trace"
        }
        var traceDesc = "\(how) on \(m.target.hardware) with \(names)"
        traceDesc += m.trace.strict ? ", strict" : ", warnings recorded"
        if m.model.torchscript { traceDesc += ", tuple outputs, tied weights untied" }
        if m.target.optimize != "none" { traceDesc += ", then \(m.target.optimize)" }
        steps.append(PlanStep(kind: .trace, description: traceDesc, inputs: traceInputs, outputs: []))

        steps.append(PlanStep(
            kind: .serialize, description: "torch.jit.save with the record embedded; staged, then moved into place",
            inputs: [], outputs: Self.bundleFiles.map { bundle.appendingPathComponent($0).path }))

        let shapes = m.trace.checkShapes.map { "[\($0.map(String.init).joined(separator: ", "))]" }
        var verifyDesc = "reload model.pt in a fresh process, compare with the eager model at the traced shape"
        if !shapes.isEmpty { verifyDesc += " and at \(shapes.joined(separator: ", "))" }
        verifyDesc += " (atol \(m.trace.atol), rtol \(m.trace.rtol))"
        steps.append(PlanStep(kind: .verify, description: verifyDesc, inputs: [bundle.appendingPathComponent("model.pt").path], outputs: [bundle.appendingPathComponent("record.json").path]))

        for d in m.output.deploy {
            switch d {
            case .directory:
                steps.append(PlanStep(kind: .deploy, description: "directory: the bundle itself", inputs: [], outputs: [bundle.path]))
            case .triton(let repo):
                let dir = root.appendingPathComponent(OutputPaths.normalise(repo)).appendingPathComponent(m.name)
                steps.append(PlanStep(
                    kind: .deploy, description: "triton: model repository entry, platform pytorch_libtorch",
                    inputs: [bundle.appendingPathComponent("model.pt").path],
                    outputs: [dir.appendingPathComponent("config.pbtxt").path, dir.appendingPathComponent("1/model.pt").path]))
            case .torchserve(let store):
                let mar = root.appendingPathComponent(OutputPaths.normalise(store)).appendingPathComponent("\(m.name).mar")
                steps.append(PlanStep(
                    kind: .deploy, description: "torchserve: .mar archive made by torch-model-archiver",
                    inputs: [bundle.appendingPathComponent("model.pt").path], outputs: [mar.path]))
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
