import Bundles
import Foundation
import JSON

/// What apply would do, as plain data: `plan`, `apply --dry-run` and `--json` all render this value, and `apply`
/// executes it. Building it never starts a process.
public struct Plan: Codable, Hashable, Sendable {
    /// The folder every output path is under.
    public var outputRoot: String
    /// One entry per selected manifest, in the order given.
    public var entries: [PlanEntry]
    /// Bundles in the output root whose manifest is gone (`orphaned`, or `remove` under `--prune`).
    public var orphans: [PlanOrphan] = []
    /// What the plan could not judge, in one sentence each (orphans outside a subset's reach).
    public var notes: [String] = []

    /// Creates a plan.
    public init(outputRoot: String, entries: [PlanEntry]) {
        self.outputRoot = outputRoot
        self.entries = entries
    }

    /// Whether anything would change.
    public var hasChanges: Bool { entries.contains { $0.action != .upToDate } || orphans.contains { $0.action == .remove } }
}

/// What happens to one manifest's bundle.
public enum PlanAction: String, Codable, Hashable, Sendable {
    /// No bundle yet.
    case create
    /// A bundle exists but something that decides it changed (see the reasons).
    case rebuild
    /// The bundle matches the manifest and its inputs.
    case upToDate = "up-to-date"
    /// The bundle is intact but a deploy drifted: it is made again from the bundle, without re-exporting.
    case redeploy
}

/// A bundle whose manifest is gone: the file deleted, or the document renamed.
public struct PlanOrphan: Codable, Hashable, Sendable {
    /// `orphaned` (listed) or `remove` (`--prune`).
    public enum Action: String, Codable, Hashable, Sendable { case orphaned, remove }
    /// The name it was built under.
    public var name: String
    /// What happens to it.
    public var action: Action
    /// The manifest file that made it (absolute) and the document's index there.
    public var manifestFile: String
    public var documentIndex: Int
    /// Why it is an orphan.
    public var reason: String
    /// The bundle folder (absolute).
    public var bundle: String
    /// Every path that would go (absolute): the bundle, then the deploys no other manifest declares.
    public var paths: [String]
    /// Deploy paths kept because another manifest still declares them (absolute).
    public var kept: [String] = []

    /// Creates one.
    public init(name: String, action: Action, manifestFile: String, documentIndex: Int, reason: String, bundle: String, paths: [String]) {
        self.name = name
        self.action = action
        self.manifestFile = manifestFile
        self.documentIndex = documentIndex
        self.reason = reason
        self.bundle = bundle
        self.paths = paths
    }
}

/// Why a manifest is rebuilt.
public struct PlanReason: Codable, Hashable, Sendable {
    /// What kind of change.
    public enum Kind: String, Codable, Hashable, Sendable {
        case field, inputFile = "input-file", version, forced, incomplete
        /// A file of the bundle or of a deploy differs from what build.json recorded.
        case drift
    }
    /// The kind.
    public var kind: Kind
    /// The field path, input file or version name it is about.
    public var subject: String
    /// The recorded value, if any.
    public var old: String?
    /// The current value, if any.
    public var new: String?

    /// Creates a reason.
    public init(kind: Kind, subject: String, old: String? = nil, new: String? = nil) {
        self.kind = kind
        self.subject = subject
        self.old = old
        self.new = new
    }

    /// `spec.model.seed: 7 → 8`.
    public var summary: String {
        switch kind {
        case .forced: return subject
        case .incomplete, .drift: return subject
        default: return "\(subject): \(old ?? "(absent)") → \(new ?? "(absent)")"
        }
    }
}

/// One step of an export.
public struct PlanStep: Codable, Hashable, Sendable {
    /// The step kinds, in the order apply runs them.
    public enum Kind: String, Codable, Hashable, Sendable {
        case load, trace, serialize, verify, deploy
        /// Fetch a bundle from the shared cache into staging (`--cache`), every digest checked.
        case pull
        /// Push the verified bundle to the shared cache under its fingerprint's tag.
        case push
    }
    /// The kind.
    public var kind: Kind
    /// One line for a user.
    public var description: String
    /// What it reads (files, folders, hub ids).
    public var inputs: [String]
    /// What it writes, as absolute paths under the output root.
    public var outputs: [String]
    /// The exact worker request this step sends (`op` and its fields), nil for steps that run in Swift alone.
    /// Deploy requests carry the batch settings of the envelope as planned; a default envelope that verification
    /// shrinks lowers them.
    public var request: JSONValue?
    /// A `triton` or `torchserve` deploy's final destination, the absolute path the staged deploy is installed at
    /// (the Triton model folder, the `.mar` file); nil for every other step.
    public var install: String?

    /// Creates a step.
    public init(kind: Kind, description: String, inputs: [String], outputs: [String], request: JSONValue? = nil, install: String? = nil) {
        self.kind = kind
        self.description = description
        self.inputs = inputs
        self.outputs = outputs
        self.request = request
        self.install = install
    }
}

/// The plan for one manifest.
public struct PlanEntry: Codable, Hashable, Sendable {
    /// metadata.name.
    public var name: String
    /// The manifest file, as named on the command line.
    public var file: String
    /// Where the document starts (its metadata.name line).
    public var line: Int
    /// create, rebuild or up-to-date.
    public var action: PlanAction
    /// Every reason for a rebuild.
    public var reasons: [PlanReason]
    /// The bundle folder (absolute).
    public var bundle: String
    /// The fingerprint the new bundle will record.
    public var fingerprint: String
    /// The steps apply will run (empty when up to date).
    public var steps: [PlanStep]

    /// The step of a kind, if planned.
    public func step(_ kind: PlanStep.Kind) -> PlanStep? { steps.first { $0.kind == kind } }
    /// Problems that will stop apply for this manifest before any model is loaded (a target the runtime lacks).
    public var blockers: [String]
    /// The serving envelope and the points verification checks (nil when up to date).
    public var envelope: EnvelopePlan?
    /// For an up-to-date bundle, the envelope it was verified over (what it serves today).
    public var verifiedEnvelope: [VerifiedAxis]?
    /// The folder the manifest's relative paths resolved against (recorded, so bench can rebuild the eager model).
    public var manifestDirectory: String?
    /// 0-based index of the document in its file.
    public var documentIndex: Int = 0
    /// The content digest of the bundle on disk (build.json), when there is one.
    public var contentDigest: String?
    /// With `--cache`: whether the bundle is pulled from the shared cache or built (and pushed); nil without one or
    /// when nothing is built.
    public var cache: PlanCache?
    /// How verification is judged (nil when nothing is exported).
    public var policy: VerificationPolicy?

    /// Creates an entry.
    public init(
        name: String, file: String, line: Int, action: PlanAction, reasons: [PlanReason], bundle: String,
        fingerprint: String, steps: [PlanStep], blockers: [String] = [], envelope: EnvelopePlan? = nil
    ) {
        self.envelope = envelope
        self.name = name
        self.file = file
        self.line = line
        self.action = action
        self.reasons = reasons
        self.bundle = bundle
        self.fingerprint = fingerprint
        self.steps = steps
        self.blockers = blockers
    }
}
