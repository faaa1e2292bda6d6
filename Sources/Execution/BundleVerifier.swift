import Bundles
import Foundation
import JSON
import Manifest
import Plan

/// The tolerance and quality gate a bundle was verified with, as its record states them (`parity.tolerance`).
public struct RecordedTolerance: Equatable, Sendable {
    public var atol: Double
    public var rtol: Double
    /// nil: the bundle was built without a quality gate.
    public var minCosine: Double?

    /// nil when the record states no atol and rtol.
    public init?(record: JSONValue) {
        let t = record["parity"]?["tolerance"] ?? record["tolerance"]
        guard let atol = t?["atol"]?.doubleValue, let rtol = t?["rtol"]?.doubleValue else { return nil }
        self.atol = atol
        self.rtol = rtol
        minCosine = t?["min_cosine"]?.doubleValue
    }

    /// The message for a record without one.
    public static let missingMessage = "record.json states no tolerance (parity.tolerance); rebuild the bundle with tsexport apply"
}

/// One case a checker reported, judged.
public struct CaseCheck: Sendable {
    /// The file the case ran (`model.pt`, `model.pt2`, or a part a case names); nil: the bundle's only artifact,
    /// which the Python checker does not name.
    public var artifact: String?
    /// The case as the checker reported it (case, shape, passed, errors, cosines).
    public var result: JSONValue
    public var passed: Bool
    /// false: a model.pt2 failure outside the envelope model.pt2 was verified over, which does not count.
    public var counted: Bool
    /// Why the case is below the recorded quality gate (nil: it is not, or there is none).
    public var qualityFailure: String?
}

/// What verification found, in the order it was found.
public enum VerifyFinding: Sendable {
    /// A failure that is not a case: a file that changed after apply, a missing artifact, a checker error.
    case problem(String)
    case check(CaseCheck)
    /// What was checked beside the cases, for the reader (not a failure).
    case note(String)
}

/// The verdict on one bundle, the same for the Python and the native checker.
public struct BundleVerdict: Sendable {
    public var findings: [VerifyFinding] = []
    /// The Python worker's `verify_bundle` answer (nil for the native checker, or when it failed).
    public var workerResult: JSONValue?
    /// The native checker's run (nil for the Python checker).
    public var native: NativeVerify.Report?
    /// A failure of the whole check (no tolerance, a worker error), also the last finding.
    public var error: String?

    /// Whether the bundle verified: no problem, every counted case passed and kept the quality gate.
    public var ok: Bool {
        findings.allSatisfy {
            switch $0 {
            case .problem: return false
            case .note: return true
            case .check(let c): return !c.counted || (c.passed && c.qualityFailure == nil)
            }
        }
    }

    public var checks: [CaseCheck] { findings.compactMap { if case .check(let c) = $0 { return c } else { return nil } } }
}

/// `tsexport verify`: re-checks a bundle against its recorded reference outputs, in a fresh Python worker or with
/// the libtorch checker. Either way the artifacts' sha256 are computed here and compared with the record, the
/// tolerance and gate are the record's, and the cases are judged by the same rules (`judge`).
public enum BundleVerifier {
    /// The program that runs the artifacts.
    public enum Checker {
        /// A worker's `verify_bundle` op (the request from `WorkerRequests.verifyBundle`).
        case python(WorkerClient)
        /// The built libtorch checker (`NativeVerify.build`).
        case native(binary: String, environment: [String: String], runner: ProcessRunner)
    }

    /// Verifies the bundle at `bundle` whose record is `record`.
    public static func verify(bundle: URL, record: JSONValue, with checker: Checker) -> BundleVerdict {
        var v = BundleVerdict()
        func fail(_ message: String) -> BundleVerdict {
            v.error = message
            v.findings.append(.problem(message))
            return v
        }
        guard let tolerance = RecordedTolerance(record: record) else { return fail(RecordedTolerance.missingMessage) }
        let hasPT2 = FileManager.default.fileExists(atPath: bundle.appendingPathComponent("model.pt2").path)
        let listsPT2 = record["aoti"]?.objectValue != nil
        // The files must be the ones apply verified and recorded.
        for (file, recorded) in [("model.pt", record["model_sha256"]?.stringValue), ("model.pt2", record["aoti"]?["sha256"]?.stringValue)] {
            let path = bundle.appendingPathComponent(file).path
            guard let recorded, FileManager.default.fileExists(atPath: path) else { continue }
            let sha = (try? Digest.sha256(file: path)) ?? "?"
            if sha != recorded {
                v.findings.append(.problem("\(file) sha256 \(sha) differs from the recorded \(recorded): the file changed after apply"))
            }
        }
        if listsPT2 && !hasPT2 { v.findings.append(.problem("the bundle lacks model.pt2, which record.json lists (aoti)")) }

        let reported: [(artifact: String?, result: JSONValue)]
        switch checker {
        case .python(let worker):
            // A sentence-transformers bundle is compared with encode() again, at the cosine its record states.
            let allowed = record["library"]?["encode_check"]?["min_cosine_allowed"]?.doubleValue
            let request = WorkerRequests.verifyBundle(
                bundle: bundle, tolerance: WorkerRequests.tolerance(atol: tolerance.atol, rtol: tolerance.rtol, minCosine: tolerance.minCosine),
                encodeCheck: WorkerRequests.encodeCheck(minCosine: allowed))
            let result: JSONValue
            do {
                result = try worker.request("verify_bundle", request.objectValue ?? [])
            } catch let f as WorkerFailure {
                return fail(f.message)
            } catch {
                return fail("\(error)")
            }
            v.workerResult = result
            let aoti = result["aoti"].flatMap { $0 == .null ? nil : $0 }
            // formats: [aoti] alone: the bundle's cases are model.pt2's
            let aotiOnly = result["artifact"]?.stringValue == "model.pt2"
            var cases: [(String?, JSONValue)] = []
            for c in aotiOnly ? [] : result["cases"]?.arrayValue ?? [] {
                cases.append((c["artifact"]?.stringValue ?? (aoti == nil ? nil : "model.pt"), c))
            }
            for c in aoti?["cases"]?.arrayValue ?? [] { cases.append(("model.pt2", c)) }
            reported = cases
            v.findings += encodeFindings(record: record, result: result)
            if aoti == nil && listsPT2 && hasPT2 {
                v.findings.append(.problem("model.pt2 was not checked: the worker's verify_bundle returned no aoti result"))
            }
        case .native(let binary, let environment, let runner):
            let inputs = (record["input_signature"]?.arrayValue ?? []).compactMap { $0["name"]?.stringValue }
            let report = NativeVerify.check(binary: binary, bundle: bundle.path, atol: tolerance.atol, rtol: tolerance.rtol,
                                            inputs: inputs, aoti: true, environment: environment, runner: runner)
            v.native = report
            reported = report.cases.map { ($0["artifact"]?.stringValue ?? "?", $0) }
            v.findings += judge(reported, record: record, gate: tolerance.minCosine).map(VerifyFinding.check)
            for (file, message) in report.loadErrors { v.findings.append(.problem("FAIL \(file): \(message)")) }
            if let e = report.error { v.error = e; v.findings.append(.problem(e)) }
            return v
        }
        v.findings += judge(reported, record: record, gate: tolerance.minCosine).map(VerifyFinding.check)
        return v
    }

    /// sentence-transformers: encode()'s cosine at every point the record judged inside the envelope, held to the
    /// cosine the record allows.
    static func encodeFindings(record: JSONValue, result: JSONValue) -> [VerifyFinding] {
        guard let allowed = record["library"]?["encode_check"]?["min_cosine_allowed"]?.doubleValue else { return [] }
        let judged = EncodeCheck.judge(points: result["encode_check"]?["points"]?.arrayValue ?? [], minCosine: allowed,
                                       inside: EncodeCheck.insideRecorded(record))
        let compared = judged.counted
        if compared.isEmpty {
            return [.problem("model.pt's sentence_embedding was not compared with encode(): the worker returned no point inside the envelope")]
        }
        var findings: [VerifyFinding] = judged.failures.map { p in
            .problem("model.pt's sentence_embedding at \(CanonicalJSON.text(p.raw["shape"] ?? .null)) has cosine \(p.cosine) to encode(), below \(allowed)")
        }
        let count = "\(compared.count) point\(compared.count == 1 ? "" : "s")"
        findings.append(.note("sentence_embedding against encode(): least cosine \(judged.least.map { String(format: "%.6f", $0) } ?? "-") at \(count) (allowed \(allowed))"))
        return findings
    }

    /// Judges reported cases: a model.pt2 failure at a case the record marks outside the envelope model.pt2 was
    /// verified over does not count; a passing, counted case of the bundle's artifact (model.pt, model.pt2, or the
    /// unnamed one) is held to the quality gate the bundle was built under.
    public static func judge(_ cases: [(artifact: String?, result: JSONValue)], record: JSONValue, gate: Double?) -> [CaseCheck] {
        let outside = outsideCases(record)
        // A record without a dtype predates the field, when every export was float32.
        let traced = QualityGate.tracedModel(dtype: record["dtype"]?.stringValue ?? ManifestDefaults.dtype,
                                             quantized: record["quantize"].map { $0 != .null } ?? false)
        return cases.map { artifact, c in
            let passed = c["passed"] == .bool(true)
            let counted = passed || artifact != "model.pt2" || !outside.contains(c["case"]?.stringValue ?? "")
            let gated = artifact == nil || artifact == "model.pt" || artifact == "model.pt2"
            let quality = passed && counted && gated ? QualityGate.failure(c, gate: gate, dtype: traced) : nil
            return CaseCheck(artifact: artifact, result: c, passed: passed, counted: counted, qualityFailure: quality)
        }
    }

    /// The model.pt2 cases the record marks as outside the envelope it was verified over.
    public static func outsideCases(_ record: JSONValue) -> Set<String> {
        Set((record["aoti"]?["cases"]?.arrayValue ?? []).compactMap { c in c["inside"] == .bool(false) ? c["case"]?.stringValue : nil })
    }
}
