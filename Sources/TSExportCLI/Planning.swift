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
    /// `--prune`.
    @Flag(help: "Remove bundles (with their deploys) whose manifest the given paths no longer hold.")
    public var prune = false
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
    /// The bundles the root's state says the given paths made, whose manifest is gone.
    static func orphans(_ options: ManifestOptions, selection: SelectionOptions, loaded: [Manifest], root: URL) -> ([PlanOrphan], [String]) {
        let state = OutputState.read(root: root)
        guard !state.bundles.isEmpty else { return ([], []) }
        let cwd = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
        let paths = options.paths.map { ($0.hasPrefix("/") ? URL(fileURLWithPath: $0) : cwd.appendingPathComponent($0)).standardizedFileURL.path }
        var filters: [String] = []
        if !selection.names.isEmpty { filters.append("--name") }
        if !selection.selectors.isEmpty { filters.append("--selector") }
        var shard: (Int, Int)?
        if case .success(let s) = selection.parsedShard() { shard = s }
        let scope = OrphanPlanner.Scope(paths: paths, filtered: filters.isEmpty ? nil : filters.joined(separator: " and "), shard: shard, prune: selection.prune)
        return OrphanPlanner(shardIndex: SelectionOptions.shardIndex).plan(
            state: state, loaded: loaded, root: root, scope: scope, exists: { FileManager.default.fileExists(atPath: $0) })
    }

    /// Returns nil (after reporting) when the manifests are invalid; else the plan, the warnings and the selected
    /// manifests.
    /// What planning produced.
    struct Result {
        var plan: Plan
        var diagnostics: [Diagnostic]
        var manifests: [Manifest]
        /// Every manifest loaded from the given paths (before `--name`, `--selector` and `--shard`).
        var loaded: [Manifest] = []
        var fingerprints: [String: FingerprintInputs]
    }

    static func build(_ options: ManifestOptions, selection: SelectionOptions, python: String?, console: Console, cache shared: CacheSetting? = nil) -> Result? {
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
        // Config keys the model's config class does not declare but nearly does are typos: refused before any model is
        // built, from the class's declared keys (cached per runtime and class; a worker only on a miss).
        let typos = configKeyTypos(selected, python: python, console: console)
        if typos.hasErrors {
            if options.json { console.printJSON(["valid": false, "diagnostics": DiagnosticPrinter.json(diagnostics + typos)] as [String: Any]) } else {
                console.report(diagnostics + typos)
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
        // Every file of every existing bundle and deploy is checked against build.json; the digest cache means only
        // files whose stat changed are read.
        let cache = FileDigestCache(root: root)
        var drift: [String: Drift] = [:]
        for m in selected {
            fingerprints[m.name] = FingerprintInputs(
                manifest: FingerprintInputs.normalise(m.document), files: hasher.hashes(for: m, cache: cache),
                versions: versions.merging(Planner.policyInputs(m)) { _, policy in policy })
            let bundle = Planner.bundleURL(m, root: root)
            if let r = RecordSummary.read(bundle: bundle) {
                existing[m.name] = r
                if r.incomplete == nil, let build = r.build { drift[m.name] = Drift.check(bundle: bundle, build: build, root: root, cache: cache) }
            }
        }
        cache.save()
        var input = PlannerInput(
            manifests: selected, outputRoot: root, fingerprints: fingerprints, existing: existing,
            unavailableTargets: unavailable, force: selection.force, replace: Set(selection.replace))
        input.drift = drift
        var plan = Planner().plan(input)
        (plan.orphans, plan.notes) = orphans(options, selection: selection, loaded: result.manifests, root: root)
        shared?.annotate(&plan, fingerprints: fingerprints)
        return Result(plan: plan, diagnostics: diagnostics, manifests: selected, loaded: result.manifests, fingerprints: fingerprints)
    }

    /// `ConfigKeyCheck`'s errors for the manifests that set `spec.model.config`, with the declared keys from
    /// `ConfigKeysCache`. Without a runtime to ask (the managed one not created yet) or when its worker cannot answer,
    /// nothing is checked here and the worker's warning at load stays.
    static func configKeyTypos(_ manifests: [Manifest], python: String?, console: Console) -> [Diagnostic] {
        let asking = manifests.filter { !$0.model.config.isEmpty }
        guard !asking.isEmpty, let interpreter = RuntimeResolver(progress: { _ in }).peek(flag: python) else { return [] }
        guard let answers = try? ConfigKeysCache().answers(classNames: asking.map(\.model.className), python: interpreter) else {
            return []
        }
        return asking.flatMap { m -> [Diagnostic] in
            guard case .some(.some(let answer)) = answers[m.model.className] else { return [] }
            return ConfigKeyCheck.diagnostics(m, configClass: answer.configClass, declared: answer.keys)
        }
    }
}
