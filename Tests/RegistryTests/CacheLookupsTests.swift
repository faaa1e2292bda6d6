import Bundles
import Execution
import Foundation
import JSON
import Plan
import Registry
import XCTest

/// The cache's lookups against a real registry: a plan made again asks only about fingerprints not asked before.
final class CacheLookupsTests: RegistryTestCase {
    let known = ["worker": "w", "python": "3.12", "torch": "2.13", "transformers": "5.24"]

    func entry(_ name: String, fingerprint: String) -> PlanEntry {
        let trace = PlanStep(kind: .trace, description: "trace", inputs: [], outputs: [],
                             request: .object([("op", "export"), ("job", .object([("staging_dir", .string("/out/.tsexport/staging/\(name)"))]))]))
        return PlanEntry(name: name, file: "m.yaml", line: 4, action: .create, reasons: [], bundle: "/out/build/\(name)",
                         fingerprint: fingerprint, steps: [trace])
    }

    func inputs(_ name: String) -> FingerprintInputs {
        FingerprintInputs(manifest: .object([("name", .string(name))]), files: [:], versions: known)
    }

    func testAPlanMadeAgainReusesTheAnswersForUnchangedFingerprints() throws {
        let registry = try LocalRegistry(self)
        let repository = Reference(registry: registry.host, repository: "team/cache")
        let lookups = CacheLookups(repository: repository, required: false,
                                   options: RegistryOptions(insecureHosts: [registry.host], credentials: DockerCredentials(environment: [:])))
        let a = "sha256:" + String(repeating: "a1", count: 32), b = "sha256:" + String(repeating: "b2", count: 32)
        var first = Plan(outputRoot: "/out", entries: [entry("a", fingerprint: a)])
        lookups.annotate(&first, fingerprints: ["a": inputs("a")])
        XCTAssertEqual(first.entries[0].cache?.status, .build)
        XCTAssertEqual(first.entries[0].cache?.reason, "not in the cache")
        XCTAssertEqual(lookups.remembered, [a: .miss])

        // With the registry gone, the unchanged fingerprint keeps its answer (no request is made for it) and only
        // the new one is asked, and found unreachable.
        registry.stop()
        var again = Plan(outputRoot: "/out", entries: [entry("a", fingerprint: a), entry("b", fingerprint: b)])
        lookups.annotate(&again, fingerprints: ["a": inputs("a"), "b": inputs("b")])
        XCTAssertEqual(again.entries[0].cache?.reason, "not in the cache")
        XCTAssertEqual(again.entries[0].cache?.unreachable, nil)
        XCTAssertNotNil(again.entries[1].cache?.unreachable, "\(String(describing: again.entries[1].cache))")
        XCTAssertEqual(Set(lookups.remembered.keys), [a, b])
    }
}
