import Foundation
import JSON

/// What differs between a bundle (and its deploys) on disk and what its build.json recorded.
public struct Drift: Sendable, Hashable {
    /// One phrase per bundle file: `model.pt changed`, `record.json missing`.
    public var bundle: [String]
    /// Phrases per deploy destination (relative to the output root): `deploy triton: config.pbtxt changed`.
    public var deploys: [String: [String]]

    /// Creates a drift.
    public init(bundle: [String] = [], deploys: [String: [String]] = [:]) {
        self.bundle = bundle
        self.deploys = deploys
    }

    /// Nothing drifted.
    public var isEmpty: Bool { bundle.isEmpty && deploys.values.allSatisfy(\.isEmpty) }

    /// Checks every recorded file of a bundle and of its deploys, hashing through the cache.
    public static func check(bundle: URL, build: BuildInfo, root: URL, cache: FileDigestCache) -> Drift {
        var d = Drift(bundle: BuildInfo.drift(bundle: bundle, recorded: build.files, cache: cache))
        for deploy in build.deployments {
            let phrases = BuildInfo.drift(deploy: deploy, root: root, cache: cache)
            if !phrases.isEmpty { d.deploys[deploy.path] = phrases }
        }
        return d
    }
}

