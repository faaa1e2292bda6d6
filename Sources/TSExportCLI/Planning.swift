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

    /// The library's selection for these flags.
    public var selection: ManifestSelection {
        ManifestSelection(names: names, selectors: selectors, force: force, replace: replace, shard: shard, prune: prune)
    }

    /// Which shard (0-based) a manifest name falls in (`ManifestSelection.shardIndex`).
    public static func shardIndex(of name: String, count: Int) -> Int { ManifestSelection.shardIndex(of: name, count: count) }
}

/// Flags to `PlanObserver`, and its refusal rendered; shared by plan and apply.
enum Planning {
    typealias Result = PlanObserver.Observation

    /// The observer for these flags.
    static func observer(_ options: ManifestOptions, selection: SelectionOptions, python: String?) -> PlanObserver {
        PlanObserver(PlanObserver.Request(
            paths: options.paths, validation: options.validationOptions, outputRoot: options.resolvedOutputRoot,
            selection: selection.selection, python: python))
    }

    /// Returns nil (after reporting) when the manifests are invalid; else the plan, the warnings and the selected
    /// manifests.
    static func build(_ options: ManifestOptions, selection: SelectionOptions, python: String?, console: Console, cache shared: CacheSetting? = nil) -> Result? {
        guard !options.paths.isEmpty else {
            console.err("error: name at least one manifest file or folder")
            return nil
        }
        switch observer(options, selection: selection, python: python).observe(annotate: shared.map(annotate)) {
        case .success(let observed): return observed
        case .failure(let invalid):
            show(invalid, json: options.json, console: console)
            return nil
        }
    }

    /// The shared cache's lookups as the observer's annotation; every plan made with it shares its answers.
    static func annotate(_ setting: CacheSetting) -> PlanObserver.Annotate { setting.lookups().annotation }

    /// Manifests that cannot be planned: their diagnostics, as text on stderr or as JSON.
    static func show(_ invalid: InvalidManifests, json: Bool, console: Console) {
        if json { console.printJSON(["valid": false, "diagnostics": DiagnosticPrinter.json(invalid.diagnostics)] as [String: Any]) } else {
            console.report(invalid.diagnostics)
        }
    }
}
