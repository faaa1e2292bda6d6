import ArgumentParser
import Execution
import Foundation
import Registry

/// `--cache oci://HOST[:PORT]/PATH` (or `TSEXPORT_CACHE`) and `--cache-required`.
public struct CacheFlags: ParsableArguments {
    /// The cache, `oci://host[:port]/path`.
    @Option(name: .customLong("cache"), help: "A shared bundle cache, oci://HOST[:PORT]/PATH (default: $TSEXPORT_CACHE): each fingerprint is looked up there; a hit is pulled, checked and verified instead of built, a miss is built and pushed.")
    public var cache: String?
    /// Fail instead of warning when the cache cannot be reached or a push fails.
    @Flag(name: .customLong("cache-required"), help: "An unreachable cache stops apply before anything starts, and a failed push fails the manifest (nothing installed); without it both are warnings.")
    public var required = false
    public init() {}

    /// The cache setting, nil without `--cache` and `TSEXPORT_CACHE`; a message when the value is not an `oci://`
    /// repository.
    public func setting(registry: RegistryOptions, environment: [String: String] = ProcessInfo.processInfo.environment) -> Result<CacheSetting?, CacheSettingError> {
        let env = environment["TSEXPORT_CACHE"].flatMap { $0.isEmpty ? nil : $0 }
        guard let raw = cache ?? env else {
            return required ? .failure(CacheSettingError(message: "--cache-required needs a cache: --cache oci://HOST[:PORT]/PATH or TSEXPORT_CACHE")) : .success(nil)
        }
        let source = cache == nil ? "TSEXPORT_CACHE" : "--cache"
        guard raw.hasPrefix("oci://") else {
            return .failure(CacheSettingError(message: "\(source) '\(raw)' is not oci://HOST[:PORT]/PATH"))
        }
        do {
            let ref = try Reference(parsing: String(raw.dropFirst("oci://".count)))
            guard ref.tag == nil, ref.digest == nil else {
                return .failure(CacheSettingError(message: "\(source) '\(raw)' names a tag or digest; the cache is a repository, oci://HOST[:PORT]/PATH"))
            }
            return .success(CacheSetting(repository: Reference(registry: ref.registry, repository: ref.repository), required: required, options: registry))
        } catch {
            return .failure(CacheSettingError(message: "\(source) '\(raw)' is not oci://HOST[:PORT]/PATH: \(error)"))
        }
    }
}

/// Why `--cache` was refused.
public struct CacheSettingError: Error, Sendable {
    public var message: String
}

/// A shared bundle cache and how to reach it.
public struct CacheSetting: Sendable {
    /// The repository (no tag).
    public var repository: Reference
    /// `--cache-required`.
    public var required: Bool
    /// Insecure hosts and credentials.
    public var options: RegistryOptions

    /// `host[:port]/path`.
    public var name: String { "\(repository.registry)/\(repository.repository)" }

    /// The lookups for this cache: one value per command, so a plan made again asks only about new fingerprints.
    public func lookups() -> CacheLookups { CacheLookups(repository: repository, required: required, options: options) }
}
