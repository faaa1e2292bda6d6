import ArgumentParser
import Bundles
import Diagnostics
import Execution
import Foundation
import Manifest
import Plan

/// Which manifests a command works on.
public struct SelectionOptions: ParsableArguments {
    /// Names to pick.
    @Option(name: .customLong("name"), help: "Only the manifest with this metadata.name (repeatable).")
    public var names: [String] = []
    /// Label selectors.
    @Option(name: .customLong("selector"), help: "Only manifests whose metadata.labels has key=value (repeatable; all must match).")
    public var selectors: [String] = []
    /// Rebuild everything.
    @Flag(help: "Rebuild every selected manifest even when up to date.")
    public var force = false
    /// Rebuild named ones.
    @Option(name: .customLong("replace"), help: "Rebuild this manifest even when up to date (repeatable).")
    public var replace: [String] = []
    /// `--shard i/n`.
    @Option(name: .customLong("shard"), help: "Only shard i of n (1-based, e.g. 2/4): manifests are split deterministically by name, for CI matrices.")
    public var shard: String?
    public init() {}

    /// Parses `i/n`; nil when absent; throws a message when malformed.
    func parsedShard() -> Result<(Int, Int)?, Diagnostic> {
        guard let s = shard else { return .success(nil) }
        let parts = s.split(separator: "/").map { Int($0) }
        guard parts.count == 2, let i = parts[0], let n = parts[1], n >= 1, (1...n).contains(i) else {
            return .failure(.error("--shard '\(s)' is not i/n with 1 ≤ i ≤ n"))
        }
        return .success((i, n))
    }

    /// Which shard (0-based) a manifest name falls in: a stable hash of the name, so adding a manifest never moves
    /// the others.
    public static func shardIndex(of name: String, count: Int) -> Int {
        let hex = Digest.sha256(name).prefix(12)
        return Int(UInt64(hex, radix: 16)! % UInt64(count))
    }

    /// Applies names and selectors; unknown names and malformed selectors are errors.
    func select(_ manifests: [Manifest]) -> ([Manifest], [Diagnostic]) {
        var ds: [Diagnostic] = []
        var pairs: [(String, String)] = []
        for s in selectors {
            let parts = s.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2, !parts[0].isEmpty { pairs.append((parts[0], parts[1])) } else {
                ds.append(.error("--selector '\(s)' is not key=value"))
            }
        }
        let known = Set(manifests.map(\.name))
        for n in names + replace where !known.contains(n) {
            ds.append(.error("no manifest is named '\(n)'" + (Suggest.closest(to: n, among: Array(known)).map { "; did you mean '\($0)'?" } ?? "")))
        }
        var shardSpec: (Int, Int)?
        switch parsedShard() {
        case .success(let v): shardSpec = v
        case .failure(let d): ds.append(d)
        }
        let picked = manifests.filter { m in
            (names.isEmpty || names.contains(m.name)) && pairs.allSatisfy { m.labels[$0.0] == $0.1 }
                && (shardSpec.map { Self.shardIndex(of: m.name, count: $0.1) == $0.0 - 1 } ?? true)
        }
        return (picked, ds)
    }
}

/// Validation, selection, state gathering and planning, shared by plan and apply.
enum Planning {
    /// Returns nil (after reporting) when the manifests are invalid; else the plan, the warnings and the selected
    /// manifests.
    /// What planning produced.
    struct Result {
        var plan: Plan
        var diagnostics: [Diagnostic]
        var manifests: [Manifest]
        var fingerprints: [String: FingerprintInputs]
    }

    static func build(_ options: ManifestOptions, selection: SelectionOptions, python: String?, console: Console) -> Result? {
        guard !options.paths.isEmpty else {
            console.err("error: name at least one manifest file or folder")
            return nil
        }
        let result = ManifestLoader(options: options.validationOptions).validate(paths: options.paths)
        let (selected, selectionErrors) = selection.select(result.manifests)
        let diagnostics = result.diagnostics + selectionErrors
        if diagnostics.hasErrors {
            if options.json { console.printJSON(["valid": false, "diagnostics": DiagnosticPrinter.json(diagnostics)] as [String: Any]) } else {
                console.report(diagnostics)
            }
            return nil
        }
        let root = options.resolvedOutputRoot
        var fingerprints: [String: FingerprintInputs] = [:]
        var existing: [String: RecordSummary] = [:]
        let hasher = InputHasher()
        // Versions the runtime reported before, still valid while its files are unchanged: no Python is started.
        var versions = ["worker": WorkerInfo.version]
        var unavailable: [String: String]?
        if let interpreter = RuntimeResolver(progress: { _ in }).peek(flag: python), let known = RuntimeCache().info(for: interpreter) {
            versions.merge(known.versions) { a, _ in a }
            unavailable = known.unavailableTargets
        }
        for m in selected {
            fingerprints[m.name] = FingerprintInputs(
                manifest: FingerprintInputs.normalise(m.document), files: hasher.hashes(for: m),
                versions: versions.merging(Planner.policyInputs(m)) { _, policy in policy })
            if let r = RecordSummary.read(bundle: Planner.bundleURL(m, root: root)) { existing[m.name] = r }
        }
        let plan = Planner().plan(PlannerInput(
            manifests: selected, outputRoot: root, fingerprints: fingerprints, existing: existing,
            unavailableTargets: unavailable, force: selection.force, replace: Set(selection.replace)))
        return Result(plan: plan, diagnostics: diagnostics, manifests: selected, fingerprints: fingerprints)
    }
}
