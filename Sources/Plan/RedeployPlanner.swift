import Bundles
import Foundation
import JSON
import Manifest

extension Planner {
    /// The action for a bundle that is otherwise up to date but drifted: a rebuild when a bundle file changed, a
    /// redeploy (from the installed bundle) when only deploys did; nil when the redeploy cannot be planned (the
    /// record lacks a deploy's settings), which makes it a rebuild.
    func driftAction(_ m: Manifest, drift: Drift, existing: RecordSummary, root: URL) -> (PlanAction, [PlanReason], [PlanStep]) {
        let reasons = (drift.bundle + drift.deploys.keys.sorted().flatMap { drift.deploys[$0] ?? [] }).map { PlanReason(kind: .drift, subject: $0) }
        guard drift.bundle.isEmpty, let steps = redeploySteps(m, drift: drift, existing: existing, root: root) else {
            return (.rebuild, reasons, [])
        }
        return (.redeploy, reasons, steps)
    }

    /// One deploy step per drifted deploy, reading the installed bundle, with the settings its record states.
    func redeploySteps(_ m: Manifest, drift: Drift, existing: RecordSummary, root: URL) -> [PlanStep]? {
        let bundle = Self.bundleURL(m, root: root)
        let store = BundleStore(root: root)
        var steps: [PlanStep] = []
        for (i, d) in m.output.deploy.enumerated() {
            guard let dest = Self.deployDestination(d, name: m.name, root: root),
                  let rel = OutputState.relative(dest.path, root: root), drift.deploys[rel] != nil else { continue }
            guard let recorded = existing.deploys.first(where: { $0.kind == d.kind && $0.path == rel }),
                  let maxBatch = recorded.settings["max_batch_size"]?.intValue,
                  let variable = recorded.settings["variable_dims"]?.boolValue else { return nil }
            let format = recorded.settings["format"]?.stringValue ?? format(of: d)
            let rule = DeployBatchRule(index: i, kind: d.kind, format: format, envelope: EnvelopePlan(axes: [], tensors: [], points: [], padMasks: false))
            let settings = rule.settings(recorded: DeploySettings(maxBatchSize: maxBatch, variableDims: variable))
            let request = JSONValue.object([("op", "deploy")] + (WorkerRequests.deploy(
                kind: d.kind, bundle: bundle, dest: store.stagingURL(name: "\(m.name).deploy-\(i)"), name: m.name,
                settings: settings, format: format).objectValue ?? []))
            let outputs: [String]
            if case .triton = d {
                let file = format == "aoti" ? BundleLayout.aotiFile : BundleLayout.modelFile
                outputs = [dest.appendingPathComponent("config.pbtxt").path, dest.appendingPathComponent("1/\(file)").path]
            } else {
                outputs = [dest.path]
            }
            steps.append(PlanStep(kind: .deploy, description: "\(d.kind): made again from the installed bundle (max_batch_size \(settings.maxBatchSize))",
                                  inputs: [bundle.appendingPathComponent(BundleLayout.modelFile).path], outputs: outputs, request: request, install: dest.path))
        }
        return steps.isEmpty ? nil : steps
    }
}
