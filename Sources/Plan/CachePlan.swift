import Foundation
import JSON

/// What the plan says about one manifest and the shared bundle cache (`apply --cache oci://HOST/PATH`).
public struct PlanCache: Codable, Hashable, Sendable {
    /// `cached`: pulled, checked and verified instead of built; `build`: built, then pushed.
    public enum Status: String, Codable, Hashable, Sendable { case cached, build }
    /// What happens.
    public var status: Status
    /// The repository (`host[:port]/path`).
    public var repository: String
    /// The fingerprint's tag in it (one tag per fingerprint).
    public var tag: String
    /// For `cached`: the manifest digest the lookup found; the pull asks for exactly that.
    public var digest: String?
    /// Why a manifest is built although a cache is set: not in the cache, the cache could not be reached, or the
    /// runtime's versions (part of the fingerprint) are not known yet.
    public var reason: String?
    /// `--cache-required`: an unreachable cache or a failed push fails the manifest instead of warning.
    public var required: Bool
    /// The cache could not be reached at planning time (the lookup's error).
    public var unreachable: String?

    /// Creates one.
    public init(status: Status, repository: String, tag: String, digest: String? = nil, reason: String? = nil, required: Bool = false,
                unreachable: String? = nil) {
        self.status = status
        self.repository = repository
        self.tag = tag
        self.digest = digest
        self.reason = reason
        self.required = required
        self.unreachable = unreachable
    }

    /// `host/path:tag`, or `host/path@digest` when the lookup pinned one.
    public var reference: String { digest.map { "\(repository)@\($0)" } ?? "\(repository):\(tag)" }

    /// Whether apply must stop before starting anything: the cache is required and could not be reached.
    public var blocksApply: Bool { required && unreachable != nil }
}

/// What a cache lookup found for one fingerprint tag.
public enum CacheLookup: Sendable, Hashable {
    /// The tag exists; its manifest digest.
    case hit(digest: String)
    /// No such tag.
    case miss
    /// The registry did not answer, or refused (the error, in a sentence).
    case unreachable(String)
}

/// Decides, per manifest that needs building, whether it comes from the shared cache: pure, from the lookups that
/// planning made (one HEAD per fingerprint tag).
public enum CachePlanner {
    /// The tag of a fingerprint: `fp-` and its 64 hex digits.
    public static func tag(fingerprint: String) -> String {
        "fp-" + (fingerprint.split(separator: ":").last.map(String.init) ?? fingerprint)
    }

    /// Whether the fingerprint inputs name the runtime's versions: without them the fingerprint is not the one the
    /// build will record, so a lookup would be for the wrong tag.
    public static func versionsKnown(_ versions: [String: String]) -> Bool {
        ["python", "torch", "transformers"].allSatisfy { versions[$0] != nil }
    }

    /// The entries that the cache concerns: those that build a bundle (create or rebuild).
    public static func concerns(_ e: PlanEntry) -> Bool { e.action == .create || e.action == .rebuild }

    /// Adds `cache` to each entry that builds, and its steps: a `pull` first for a hit (the build's steps stay as
    /// the fallback when the cached entry is refused), a `push` last for every entry (a hit that is refused is
    /// rebuilt and pushed over it).
    public static func apply(_ plan: inout Plan, repository: String, required: Bool, lookups: [String: CacheLookup],
                             versionsKnown: Set<String>) {
        for i in plan.entries.indices where concerns(plan.entries[i]) {
            var e = plan.entries[i]
            let tag = tag(fingerprint: e.fingerprint)
            var cache = PlanCache(status: .build, repository: repository, tag: tag, required: required)
            if !versionsKnown.contains(e.name) {
                cache.reason = "the runtime's versions are not known yet, so the fingerprint is not final: not looked up"
            } else {
                switch lookups[e.name] {
                case .hit(let digest)?:
                    cache.status = .cached
                    cache.digest = digest
                case .miss?: cache.reason = "not in the cache"
                case .unreachable(let why)?:
                    cache.reason = "the cache could not be reached: \(why)"
                    cache.unreachable = why
                    if required { e.blockers.append("the cache \(repository) could not be reached and --cache-required is set: \(why)") }
                case nil: cache.reason = "not looked up"
                }
            }
            let staging = e.step(.trace)?.request?["job"]?["staging_dir"]?.stringValue
            if cache.status == .cached, let staging {
                let pull = PlanStep(
                    kind: .pull,
                    description: "pull \(cache.reference) (tag \(tag)): every file checked against its digest, the record's fingerprint against this plan's; then verified below as if just built (no model is loaded); a refused entry is reported and built instead",
                    inputs: ["oci://\(cache.reference)"], outputs: [e.bundle],
                    request: .object([("op", "pull"), ("reference", .string(cache.reference)), ("fingerprint", .string(e.fingerprint)),
                                      ("staging_dir", .string(staging))]))
                // The build's steps stay, with their requests, for a cached entry that is refused.
                e.steps = e.steps.map { s in
                    guard [.load, .trace, .serialize].contains(s.kind) else { return s }
                    var s = s
                    s.description = "only if the cached entry is refused: " + s.description
                    return s
                }
                e.steps.insert(pull, at: 0)
            }
            let when = cache.status == .cached ? "only when the cached entry is refused and the bundle is built: " : ""
            e.steps.append(PlanStep(
                kind: .push,
                description: when + "push the verified bundle to \(repository):\(tag) (blobs the registry has are skipped; a failure "
                    + (required ? "fails the manifest and installs nothing (--cache-required))" : "is a warning, the bundle is installed)"),
                inputs: [e.bundle], outputs: ["oci://\(repository):\(tag)"],
                request: .object([("op", "push"), ("repository", .string(repository)), ("tags", .array([.string(tag)])),
                                  ("required", .bool(required))])))
            e.cache = cache
            plan.entries[i] = e
        }
    }
}
