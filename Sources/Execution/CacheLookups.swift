import Bundles
import Foundation
import Plan
import Registry

/// The shared bundle cache's lookups for planning (`apply --cache`, `plan --cache`): one ping that tells an
/// unreachable registry apart from a miss, then one `HEAD` per fingerprint tag of the entries that build; then
/// `CachePlanner` decides. Each fingerprint's answer is kept for the life of this value, so a plan made again (under
/// the output root's lock) asks the registry only about fingerprints it has not asked about: a tag pushed in
/// between is missed, which costs a build, never a wrong bundle (a pull checks every digest and the fingerprint).
public final class CacheLookups: @unchecked Sendable {
    /// The repository (no tag).
    public let repository: Reference
    /// `--cache-required`.
    public let required: Bool
    /// Insecure hosts and credentials.
    public let options: RegistryOptions
    private let lock = NSLock()
    private var answers: [String: CacheLookup] = [:]

    public init(repository: Reference, required: Bool, options: RegistryOptions) {
        self.repository = repository
        self.required = required
        self.options = options
    }

    /// `host[:port]/path`.
    public var name: String { "\(repository.registry)/\(repository.repository)" }

    /// The lookups as the observer's annotation.
    public var annotation: PlanObserver.Annotate {
        { plan, fingerprints in self.annotate(&plan, fingerprints: fingerprints) }
    }

    /// Looks up every fingerprint the plan builds whose runtime versions are known (those not asked before) and
    /// lets `CachePlanner` decide.
    public func annotate(_ plan: inout Plan, fingerprints: [String: FingerprintInputs]) {
        let known = Set(plan.entries.filter { CachePlanner.concerns($0) && fingerprints[$0.name].map { CachePlanner.versionsKnown($0.versions) } ?? false }.map(\.name))
        let asked = plan.entries.filter { known.contains($0.name) }
        let new = Array(Set(asked.map(\.fingerprint)).subtracting(remembered.keys)).sorted()
        if !new.isEmpty {
            let found = lookUp(new)
            lock.lock()
            answers.merge(found) { _, latest in latest }
            lock.unlock()
        }
        let all = remembered
        let lookups = Dictionary(asked.compactMap { e in all[e.fingerprint].map { (e.name, $0) } }, uniquingKeysWith: { a, _ in a })
        CachePlanner.apply(&plan, repository: name, required: required, lookups: lookups, versionsKnown: known)
    }

    /// The answers so far, by fingerprint.
    public var remembered: [String: CacheLookup] {
        lock.lock()
        defer { lock.unlock() }
        return answers
    }

    /// One ping, then the tags in parallel.
    func lookUp(_ fingerprints: [String]) -> [String: CacheLookup] {
        var quick = options
        quick.timeout = min(options.timeout, 20)
        let client = RegistryClient(options: quick)
        do {
            try client.ping(repository)
        } catch {
            return Dictionary(uniqueKeysWithValues: fingerprints.map { ($0, CacheLookup.unreachable("\(error)")) })
        }
        let found = Found()
        DispatchQueue.concurrentPerform(iterations: fingerprints.count) { i in
            let result: CacheLookup
            do {
                let d = try client.headManifest(repository.tagged(CachePlanner.tag(fingerprint: fingerprints[i])))
                result = d.map { .hit(digest: $0.digest) } ?? .miss
            } catch {
                result = .unreachable("\(error)")
            }
            found.set(fingerprints[i], result)
        }
        return found.lookups
    }

    /// The answers of parallel lookups.
    private final class Found: @unchecked Sendable {
        let lock = NSLock()
        var lookups: [String: CacheLookup] = [:]
        func set(_ fingerprint: String, _ r: CacheLookup) {
            lock.lock()
            lookups[fingerprint] = r
            lock.unlock()
        }
    }
}
