import Bundles
import Diagnostics
import Foundation
import Manifest
import Plan

/// The observe stage before the pure `Planner`: loads and validates the manifests, applies the selection, checks
/// config keys against the runtime's declared ones, reads the existing bundles and their drift (through
/// `FileDigestCache`), builds the fingerprints and plans the orphans from the output root's state.
public struct PlanObserver {
    /// What to observe.
    public struct Request {
        /// Manifest files and folders as given.
        public var paths: [String]
        /// Validation options (output root, remote code, pickle, limits).
        public var validation: ValidationOptions
        /// The output root.
        public var outputRoot: URL
        /// Names, selectors, shard, force and replace.
        public var selection: ManifestSelection
        /// `--python`, when given.
        public var python: String?
        /// What relative manifest paths are resolved against.
        public var workingDirectory: String

        public init(paths: [String], validation: ValidationOptions, outputRoot: URL, selection: ManifestSelection, python: String?,
                    workingDirectory: String = FileManager.default.currentDirectoryPath) {
            self.paths = paths
            self.validation = validation
            self.outputRoot = outputRoot
            self.selection = selection
            self.python = python
            self.workingDirectory = workingDirectory
        }
    }

    /// What observing and planning produced.
    public struct Observation {
        public var plan: Plan
        /// Warnings from validation and selection.
        public var diagnostics: [Diagnostic]
        /// The selected manifests.
        public var manifests: [Manifest]
        /// Every manifest loaded from the given paths (before `--name`, `--selector` and `--shard`).
        public var loaded: [Manifest]
        public var fingerprints: [String: FingerprintInputs]

        public init(plan: Plan, diagnostics: [Diagnostic], manifests: [Manifest], loaded: [Manifest], fingerprints: [String: FingerprintInputs]) {
            self.plan = plan
            self.diagnostics = diagnostics
            self.manifests = manifests
            self.loaded = loaded
            self.fingerprints = fingerprints
        }
    }

    /// Looks up cached bundles for the plan's entries (the shared cache's annotation), when a cache is set.
    public typealias Annotate = (inout Plan, [String: FingerprintInputs]) -> Void

    public let request: Request

    public init(_ request: Request) { self.request = request }

    /// The plan, or every diagnostic (errors included) when the manifests, the selection or a config key is wrong.
    public func observe(annotate: Annotate? = nil) -> Result<Observation, InvalidManifests> {
        let result = ManifestLoader(options: request.validation).validate(paths: request.paths)
        let (selected, selectionErrors) = request.selection.select(result.manifests)
        let diagnostics = result.diagnostics + selectionErrors
        if diagnostics.hasErrors { return .failure(InvalidManifests(diagnostics: diagnostics)) }
        // Config keys the model's config class does not declare but nearly does are typos: refused before any model is
        // built, from the class's declared keys (cached per runtime and class; a worker only on a miss).
        let typos = Self.configKeyTypos(selected, python: request.python)
        if typos.hasErrors { return .failure(InvalidManifests(diagnostics: diagnostics + typos)) }
        let root = request.outputRoot
        var fingerprints: [String: FingerprintInputs] = [:]
        var existing: [String: RecordSummary] = [:]
        let hasher = InputHasher()
        // Versions the runtime reported before, still valid while its files are unchanged: no Python is started.
        var versions = ["worker": WorkerInfo.version]
        var unavailable: [String: String]?
        if let interpreter = RuntimeResolver(progress: { _ in }).peek(flag: request.python), let known = RuntimeCache().info(for: interpreter) {
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
            unavailableTargets: unavailable, force: request.selection.force, replace: Set(request.selection.replace))
        input.drift = drift
        var plan = Planner().plan(input)
        (plan.orphans, plan.notes) = orphans(loaded: result.manifests)
        annotate?(&plan, fingerprints)
        return .success(Observation(plan: plan, diagnostics: diagnostics, manifests: selected, loaded: result.manifests, fingerprints: fingerprints))
    }

    /// The bundles the root's state says the given paths made, whose manifest is gone, as the state is now.
    public func orphans(loaded: [Manifest]) -> ([PlanOrphan], [String]) {
        let root = request.outputRoot
        let state = OutputState.read(root: root)
        guard !state.bundles.isEmpty else { return ([], []) }
        let scope = request.selection.orphanScope(paths: request.paths, workingDirectory: request.workingDirectory)
        return OrphanPlanner(shardIndex: ManifestSelection.shardIndex).plan(
            state: state, loaded: loaded, root: root, scope: scope, exists: { FileManager.default.fileExists(atPath: $0) })
    }

    /// `ConfigKeyCheck`'s errors for the manifests that set `spec.model.config`, with the declared keys from
    /// `ConfigKeysCache`. Without a runtime to ask (the managed one not created yet) or when its worker cannot answer,
    /// nothing is checked here and the worker's warning at load stays.
    static func configKeyTypos(_ manifests: [Manifest], python: String?) -> [Diagnostic] {
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

/// Manifests that cannot be planned: every diagnostic found, errors and warnings.
public struct InvalidManifests: Error {
    public var diagnostics: [Diagnostic]
}
