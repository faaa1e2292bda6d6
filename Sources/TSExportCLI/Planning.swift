import ArgumentParser
import Diagnostics
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
    public init() {}

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
        let picked = manifests.filter { m in
            (names.isEmpty || names.contains(m.name)) && pairs.allSatisfy { m.labels[$0.0] == $0.1 }
        }
        return (picked, ds)
    }
}

/// Validation, selection, state gathering and planning, shared by plan and apply.
enum Planning {
    /// Returns nil (after reporting) when the manifests are invalid; else the plan, the warnings and the selected
    /// manifests.
    static func build(_ options: ManifestOptions, selection: SelectionOptions, console: Console) -> (Plan, [Diagnostic], [Manifest])? {
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
        for m in selected {
            fingerprints[m.name] = FingerprintInputs(
                manifest: FingerprintInputs.normalise(m.document), files: hasher.hashes(for: m), versions: ["worker": WorkerInfo.version])
            if let r = RecordSummary.read(bundle: Planner.bundleURL(m, root: root)) { existing[m.name] = r }
        }
        let plan = Planner().plan(PlannerInput(
            manifests: selected, outputRoot: root, fingerprints: fingerprints, existing: existing,
            force: selection.force, replace: Set(selection.replace)))
        return (plan, diagnostics, selected)
    }
}
