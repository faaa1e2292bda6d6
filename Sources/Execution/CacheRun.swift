import Bundles
import Diagnostics
import Foundation
import JSON
import Manifest
import Plan
import Registry

/// Adds a fact to a bundle's build.json (in staging, before the bundle is installed): `published` (an oci deploy's
/// push, a list), `cache` (what the shared cache did).
enum BuildFile {
    static func append(_ key: String, _ value: JSONValue, bundle: URL, asList: Bool? = nil) throws {
        let url = bundle.appendingPathComponent(BundleContent.buildFile)
        guard let data = FileManager.default.contents(atPath: url.path), case .object(var fields)? = try? JSONValue(parsing: data) else {
            throw BundleError("\(url.path) is missing or unreadable")
        }
        let list = asList ?? (key == "published")
        if let i = fields.firstIndex(where: { $0.0 == key }) {
            fields[i].1 = list ? .array((fields[i].1.arrayValue ?? []) + [value]) : value
        } else {
            fields.append((key, list ? .array([value]) : value))
        }
        try AtomicFile.write(Data((JSONValue.object(fields).serialized(pretty: true) + "\n").utf8), to: url)
    }
}

/// Why a cached entry is not installed (it is then built).
struct CacheRefusal: Error, CustomStringConvertible {
    var description: String
}

extension Exporter {
    /// What trying the cache gave: the bundle installed from it, or the warning that says why it was refused.
    enum CachedResult {
        case installed(ExportOutcome)
        case refused(Diagnostic)
    }

    /// Serves a plan entry from the shared cache: the plan's `pull` (every blob checked against its digest, the
    /// record's fingerprint against the plan's) into the plan's staging folder, then the plan's `verify_bundle` in
    /// the verifying worker (a process that never loaded the model) judged like `tsexport verify` (every case, the
    /// artifacts' sha256 against the record, the quality gate), the deploys, build.json, and the atomic install. No
    /// model is loaded. Anything refused is reported with the manifest digest, staging is removed, and the caller
    /// builds instead.
    func fromCache(_ item: ExportItem, started: Date) -> CachedResult {
        let entry = item.entry
        guard let pull = entry.step(.pull)?.request, let reference = pull["reference"]?.stringValue,
              let stagingPath = pull["staging_dir"]?.stringValue, let fingerprint = pull["fingerprint"]?.stringValue else {
            return .refused(.warning("\(entry.name): the plan's pull step is incomplete; building instead", at: item.locations.location(of: "metadata.name")))
        }
        var deployments: [StagedDeploy] = []
        var staging: URL?
        defer { for d in deployments { try? FileManager.default.removeItem(at: d.staging) } }
        do {
            let ref = try Reference(parsing: reference)
            let dir = try store.makeStaging(at: URL(fileURLWithPath: stagingPath))
            staging = dir
            progress.stage(entry.name, "pull", seconds: nil)
            let pullStart = Date()
            let pulled = try BundleTransfer(client: RegistryClient(options: registry)).fetch(ref, into: dir, expectFingerprint: fingerprint)
            let pullMs = Date().timeIntervalSince(pullStart) * 1000
            progress.stage(entry.name, "pull", seconds: pullMs / 1000)
            guard let recordData = FileManager.default.contents(atPath: dir.appendingPathComponent(RecordSummary.fileName).path),
                  let record = try? JSONValue(parsing: recordData) else { throw CacheRefusal(description: "record.json is unreadable") }

            let verifyStart = Date()
            progress.stage(entry.name, "verify", seconds: nil)
            let fields = (entry.step(.verify)?.request?.objectValue ?? []).filter { $0.0 != "op" }
            let verdict = try workers.verifier().request("verify_bundle", fields)
            let verifyMs = Date().timeIntervalSince(verifyStart) * 1000
            progress.stage(entry.name, "verify", seconds: verifyMs / 1000)
            if let why = CachedVerdict.failure(record: record, verdict: verdict, tolerance: entry.step(.verify)?.request?["tolerance"]) {
                throw CacheRefusal(description: "its verification in a fresh process failed: \(why)")
            }

            let run = EntryRun(entry: entry, locations: item.locations, fingerprint: item.fingerprint, staging: dir,
                               workers: workers, store: store, progress: progress)
            guard let policy = entry.policy else { throw CacheRefusal(description: "the plan states no verification policy") }
            let deployed = try run.deploy(envelope: CachedVerdict.envelope(record: record), policy: policy, deployments: &deployments)
            try publish(dir, entry: entry, locations: item.locations)

            // Only the pulled files: nothing else was written into the bundle.
            let files = BundleContent.files(in: dir)
            guard files == pulled.content.map(\.path).sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }) else {
                throw CacheRefusal(description: "the staged bundle holds files the artifact does not list")
            }
            var facts = RecordAssembly(entry: entry, fingerprint: item.fingerprint, job: .null, data: .null).buildFacts
            facts += [("timings_ms", .object([("pull", .double(pullMs)), ("verify", .double(verifyMs))])),
                      ("deploy_details", .array(deployed.map(\.build))),
                      ("cache", .object([("result", "pulled"), ("reference", .string(reference)), ("digest", .string(pulled.digest))])),
                      ("installed_at", .string(ISO8601DateFormatter().string(from: Date()))),
                      ("host", .string(ProcessInfo.processInfo.hostName)), ("output_root", .string(store.root.path)),
                      ("bundle", .string(entry.bundle))]
            let deployFiles = try deployments.map { (try EntryRun.stagedFiles($0, root: store.root), [(String, JSONValue)]()) }
            let build = BuildInfo.json(content: pulled.content, deployments: deployFiles, facts: facts)
            try Data((build.serialized(pretty: true) + "\n").utf8).write(to: dir.appendingPathComponent(BundleContent.buildFile))
            if let why = RecordSummary.read(bundle: dir)?.incomplete { throw CacheRefusal(description: why) }

            try store.install(dir, at: URL(fileURLWithPath: entry.bundle))
            for d in deployments { try install(d) }
            var outcome = ExportOutcome(name: entry.name, action: entry.action, status: .ok, seconds: Date().timeIntervalSince(started),
                                        bundle: entry.bundle, record: record, diagnostics: [])
            outcome.cache = "pulled"
            return .installed(outcome)
        } catch {
            if let staging { store.discard(staging) }
            if error is WorkerCrash { workers.recoverFromCrash() }
            let why: String
            switch error {
            case let f as WorkerFailure: why = "\(f.stage): \(f.message)"
            case let d as Diagnostic: why = d.message
            default: why = "\(error)"
            }
            return .refused(.warning("\(entry.name): the cached entry \(reference) was refused, not installed: \(why); building it instead",
                                     at: item.locations.location(of: "metadata.name")))
        }
    }

    /// Pushes the verified bundle in staging to the cache under its fingerprint's tag and records the result in its
    /// build.json. Returns `pushed` or `push failed` with a warning; with `required` a failure throws (nothing is
    /// installed).
    func pushToCache(_ staging: URL, step: PlanStep, entry: PlanEntry, locations: FieldLocations) throws -> (String, Diagnostic?) {
        guard let repository = step.request?["repository"]?.stringValue else { return ("push failed", nil) }
        let tags = (step.request?["tags"]?.arrayValue ?? []).compactMap(\.stringValue)
        let required = step.request?["required"]?.boolValue ?? false
        progress.stage(entry.name, "push cache", seconds: nil)
        let start = Date()
        do {
            let pushed = try BundleTransfer(client: RegistryClient(options: registry)).push(bundle: staging, to: try Reference(parsing: repository), tags: tags)
            let seconds = Date().timeIntervalSince(start)
            progress.stage(entry.name, "push cache", seconds: seconds)
            try BuildFile.append("cache", .object([("result", "pushed"), ("reference", .string("\(repository):\(tags.first ?? "")")),
                                                   ("digest", .string(pushed.digest)), ("seconds", .double(seconds))]), bundle: staging)
            return ("pushed", nil)
        } catch {
            let message = "\(entry.name): the push to the cache \(repository) failed: \(error)"
            if required {
                throw Diagnostic.error(message + "; --cache-required: nothing installed", at: locations.location(of: "metadata.name"))
            }
            try BuildFile.append("cache", .object([("result", "push failed"), ("reference", .string("\(repository):\(tags.first ?? "")")),
                                                   ("error", .string("\(error)"))]), bundle: staging)
            return ("push failed", .warning(message + "; the bundle is installed", at: locations.location(of: "metadata.name")))
        }
    }
}

/// Judges a pulled bundle's verification like `tsexport verify`: every case of the artifact passes (a point the
/// eager model itself refused does not count; nor does a model.pt2 case the record marks outside its envelope),
/// the artifacts' sha256 are the recorded ones, and the recorded quality gate holds.
enum CachedVerdict {
    static func failure(record: JSONValue, verdict: JSONValue, tolerance: JSONValue?) -> String? {
        let aotiOnly = record["artifact"]?.stringValue == BundleLayout.aotiFile
        if !aotiOnly, let recorded = record["model_sha256"]?.stringValue, verdict["sha256"]?.stringValue != recorded {
            return "model.pt sha256 \(verdict["sha256"]?.stringValue ?? "?") differs from the recorded \(recorded)"
        }
        let gate = tolerance?["min_cosine"]?.doubleValue
        // The cases as `tsexport verify` judges them (BundleVerifier.judge); a point the eager model refused is not
        // a case.
        func judge(_ cases: [JSONValue], artifact: String) -> String? {
            let checks = BundleVerifier.judge(cases.filter { $0["rejected_by_model"] == nil }.map { (artifact, $0) }, record: record, gate: gate)
            for c in checks where c.counted {
                let name = c.result["case"]?.stringValue ?? "?"
                if !c.passed { return "\(artifact) \(name) \(CanonicalJSON.text(c.result["shape"] ?? .null)): \(VerificationJudge.why(c.result, tolerance: tolerance))" }
                if let why = c.qualityFailure { return "\(artifact) \(name): \(why)" }
            }
            return nil
        }
        if !aotiOnly, let why = judge(verdict["cases"]?.arrayValue ?? [], artifact: BundleLayout.modelFile) { return why }
        if record["aoti"]?.objectValue != nil {
            guard let aoti = verdict["aoti"], aoti != .null else { return "model.pt2 was not checked" }
            if let recorded = record["aoti"]?["sha256"]?.stringValue, aoti["sha256"]?.stringValue != recorded {
                return "model.pt2 sha256 \(aoti["sha256"]?.stringValue ?? "?") differs from the recorded \(recorded)"
            }
            if let why = judge(aoti["cases"]?.arrayValue ?? [], artifact: BundleLayout.aotiFile) { return why }
        } else if aotiOnly, let why = judge(verdict["cases"]?.arrayValue ?? [], artifact: BundleLayout.aotiFile) {
            return why
        }
        if (verdict["cases"]?.arrayValue ?? []).isEmpty && verdict["aoti"]?["cases"]?.arrayValue?.isEmpty != false {
            return "the verifying worker checked no case"
        }
        return nil
    }

    /// The envelope the record states as verified, which the deploys' batch settings follow by the plan's rule.
    static func envelope(record: JSONValue) -> JudgedEnvelope {
        let verified = VerifiedEnvelope(ranges: VerifiedAxis.read(record: record).map { ($0.name, $0.min, $0.max) })
        return JudgedEnvelope(record: record["envelope"] ?? .null, resealRanges: nil, verified: verified, aoti: nil, generation: nil)
    }
}
