import Foundation
import JSON
import Manifest

/// The batch settings a `deploy` request carries: Triton's `max_batch_size`, whether other dimensions are -1, and
/// the size the config states for the batch dimension when it is not batched (nil: the recorded one, -1 where it
/// varies and `variableDims`).
public struct DeploySettings: Codable, Hashable, Sendable {
    public var maxBatchSize: Int
    public var variableDims: Bool
    public var batchDim: Int?

    public init(maxBatchSize: Int, variableDims: Bool, batchDim: Int? = nil) {
        self.maxBatchSize = maxBatchSize
        self.variableDims = variableDims
        self.batchDim = batchDim
    }
}

/// How one deploy's batch settings follow the envelope: the one rule the planner applies to the planned envelope
/// (the values `plan` prints and the request carries), apply to the verified one (the values written), and a
/// redeploy to the settings a record states. The worker validates and writes what it is sent.
public struct DeployBatchRule: Codable, Hashable, Sendable {
    /// The deploy's position in `spec.output.deploy` (one plan step each, in order).
    public var index: Int
    /// `triton` or `torchserve`.
    public var kind: String
    /// The artifact served: `torchscript` (model.pt) or `aoti` (model.pt2).
    public var format: String
    /// Whether the server may batch along the batch axis. False for model.pt2: Triton's PT2 support (beta) serves
    /// batch 1 only, so its `max_batch_size` is 0 and its batch dimension 1 whatever the envelope.
    public var batching: Bool
    /// The settings for the planned envelope.
    public var planned: DeploySettings
    /// Whether verification may change them: a default envelope narrows to what verified, a declared one is a
    /// promise that verifies whole or fails the apply.
    public var followsVerifiedEnvelope: Bool

    public init(index: Int, kind: String, format: String, envelope: EnvelopePlan) {
        self.index = index
        self.kind = kind
        self.format = format
        batching = format != "aoti"
        followsVerifiedEnvelope = envelope.axes.contains { !$0.declared }
        planned = DeploySettings(maxBatchSize: 0, variableDims: false)
        planned = settings(envelope.axes.map { ($0.name, $0.min, $0.max) })
    }

    /// The settings for an envelope given as (axis, min, max) ranges; a nil maximum is the traced size.
    public func settings(_ ranges: [(name: String, min: Int, max: Int?)]) -> DeploySettings {
        let batch = ranges.first { $0.name == "batch" }
        return DeploySettings(maxBatchSize: batching ? Self.maxBatchSize(min: batch?.min, max: batch?.max) : 0,
                              variableDims: Self.variableDims(ranges), batchDim: batching ? nil : 1)
    }

    /// The settings for the envelope that verified.
    public func settings(verified: VerifiedEnvelope) -> DeploySettings {
        settings(verified.ranges.map { (name: $0.0, min: $0.1, max: Optional($0.2)) })
    }

    /// The settings a bundle's record states, for a redeploy: the rule still holds (no batching for model.pt2).
    public func settings(recorded: DeploySettings) -> DeploySettings {
        DeploySettings(maxBatchSize: batching ? recorded.maxBatchSize : 0, variableDims: recorded.variableDims, batchDim: batching ? nil : 1)
    }

    /// What `plan` prints of the settings: the planned `max_batch_size`, and when it may still follow verification.
    public var summary: String {
        if !batching { return "max_batch_size 0 (model.pt2 is served at batch 1)" }
        let text = "max_batch_size \(planned.maxBatchSize)"
        return followsVerifiedEnvelope ? text + " (lower if the default envelope narrows in verification)" : text
    }

    /// Triton's `max_batch_size` for a batch range: its maximum when the batch varies from 1, else 0 (no batching).
    /// A nil maximum is the traced size, unknown before tracing: no batching is planned.
    public static func maxBatchSize(min: Int?, max: Int?) -> Int {
        guard min == 1, let hi = max, hi > 1 else { return 0 }
        return hi
    }

    /// Whether a dimension other than the batch varies (Triton's -1 dims); a nil maximum is the traced size, which
    /// text may exceed or fall short of.
    public static func variableDims(_ axes: [(name: String, min: Int, max: Int?)]) -> Bool {
        axes.contains { $0.name != "batch" && ($0.max == nil || $0.max != $0.min) }
    }

    /// The rules of a manifest's deploys that the worker makes (triton, torchserve), by deploy index.
    public static func rules(_ m: Manifest, envelope: EnvelopePlan) -> [DeployBatchRule] {
        m.output.deploy.enumerated().compactMap { i, d in
            switch d {
            case .triton(_, let format): return DeployBatchRule(index: i, kind: d.kind, format: format, envelope: envelope)
            case .torchserve: return DeployBatchRule(index: i, kind: d.kind, format: "torchscript", envelope: envelope)
            case .directory, .oci: return nil
            }
        }
    }
}
