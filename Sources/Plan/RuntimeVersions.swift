import Bundles

/// The plan's fingerprint against the runtime that runs it. The plan names the runtime's Python, torch and
/// transformers versions when that runtime reported them before (the runtime-version cache); the exporting worker's
/// hello must then report the same ones. A runtime never seen before leaves them out of the plan, and the first
/// worker's hello completes them.
public enum RuntimeVersions {
    /// The versions a worker's hello reports, which the fingerprint names.
    public static let keys = ["python", "torch", "transformers"]

    /// What the running runtime means for the plan's fingerprint.
    public enum Check: Sendable {
        /// The plan named every version and the worker reports the same: the plan's fingerprint is the record's.
        case planned
        /// The plan did not know these versions: the fingerprint with the running worker's.
        case completed(FingerprintInputs)
        /// The worker reports another version than the plan names: the sentence that refuses the export.
        case changed(String)
    }

    /// Checks the plan's fingerprint inputs against the versions the running worker reports.
    public static func check(planned: FingerprintInputs, running: [String: String]) -> Check {
        var completed = planned
        var differences: [String] = []
        for key in keys {
            guard let now = running[key] else { continue }
            if let was = planned.versions[key] {
                if was != now { differences.append("\(key) \(now) where the plan names \(was)") }
            } else {
                completed.versions[key] = now
            }
        }
        if !differences.isEmpty {
            return .changed("the Python runtime changed after the plan was made: the exporting worker reports "
                            + differences.joined(separator: ", ")
                            + "; nothing was exported (run apply again to plan with this runtime)")
        }
        return completed.versions == planned.versions ? .planned : .completed(completed)
    }
}
