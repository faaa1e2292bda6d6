import JSON
@testable import Plan
import XCTest

/// The cache decision per manifest, from the lookups planning made: pure, no registry.
final class CachePlannerTests: XCTestCase {
    let fp = "sha256:" + String(repeating: "c0", count: 32)

    func entry(_ name: String, action: PlanAction) -> PlanEntry {
        let trace = PlanStep(kind: .trace, description: "trace", inputs: [], outputs: [],
                             request: .object([("op", "export"), ("job", .object([("staging_dir", .string("/out/.tsexport/staging/\(name)"))]))]))
        let verify = PlanStep(kind: .verify, description: "verify", inputs: [], outputs: [], request: .object([("op", "verify_bundle")]))
        return PlanEntry(name: name, file: "m.yaml", line: 4, action: action, reasons: [], bundle: "/out/build/\(name)",
                         fingerprint: fp, steps: action == .upToDate ? [] : [trace, verify])
    }

    func testHitMissUnreachableAndUnknownVersions() {
        var plan = Plan(outputRoot: "/out", entries: [
            entry("hit", action: .create), entry("miss", action: .rebuild), entry("down", action: .create),
            entry("unknown", action: .create), entry("same", action: .upToDate),
        ])
        let digest = "sha256:" + String(repeating: "d1", count: 32)
        CachePlanner.apply(&plan, repository: "reg:5000/team/cache", required: false,
                           lookups: ["hit": .hit(digest: digest), "miss": .miss, "down": .unreachable("connection refused")],
                           versionsKnown: ["hit", "miss", "down"])
        let tag = "fp-" + String(repeating: "c0", count: 32)
        let hit = plan.entries[0]
        XCTAssertEqual(hit.cache, PlanCache(status: .cached, repository: "reg:5000/team/cache", tag: tag, digest: digest))
        XCTAssertEqual(hit.steps.map(\.kind), [.pull, .trace, .verify, .push])
        XCTAssertEqual(hit.steps[1].description, "only if the cached entry is refused: trace")
        XCTAssertEqual(hit.steps[2].description, "verify")
        XCTAssertEqual(hit.steps[0].request, .object([
            ("op", "pull"), ("reference", .string("reg:5000/team/cache@\(digest)")), ("fingerprint", .string(fp)),
            ("staging_dir", "/out/.tsexport/staging/hit"),
        ]))
        XCTAssertEqual(hit.steps[3].request, .object([
            ("op", "push"), ("repository", "reg:5000/team/cache"), ("tags", .array([.string(tag)])), ("required", false),
        ]))
        XCTAssertEqual(plan.entries[1].cache?.status, .build)
        XCTAssertEqual(plan.entries[1].cache?.reason, "not in the cache")
        XCTAssertEqual(plan.entries[1].steps.map(\.kind), [.trace, .verify, .push])
        XCTAssertEqual(plan.entries[1].steps[0].description, "trace")
        XCTAssertEqual(plan.entries[2].cache?.reason, "the cache could not be reached: connection refused")
        XCTAssertEqual(plan.entries[2].cache?.blocksApply, false)
        XCTAssertEqual(plan.entries[2].blockers, [])
        XCTAssertEqual(plan.entries[3].cache?.status, .build)
        XCTAssertEqual(plan.entries[3].cache?.reason, "the runtime's versions are not known yet, so the fingerprint is not final: not looked up")
        XCTAssertNil(plan.entries[4].cache)
        XCTAssertEqual(plan.entries[4].steps, [])
        let text = PlanRenderer.text(plan)
        XCTAssertTrue(text.contains("    cache: cached at reg:5000/team/cache@\(digest)"), text)
        XCTAssertTrue(text.contains("    cache: build (not in the cache)"), text)
        XCTAssertTrue(text.hasSuffix("Plan: 3 to create, 1 to rebuild, 1 up to date (1 from the cache)."), text)
    }

    func testRequiredAndUnreachableBlocksApply() {
        var plan = Plan(outputRoot: "/out", entries: [entry("down", action: .create)])
        CachePlanner.apply(&plan, repository: "reg:5000/team/cache", required: true, lookups: ["down": .unreachable("connection refused")],
                           versionsKnown: ["down"])
        XCTAssertEqual(plan.entries[0].cache?.blocksApply, true)
        XCTAssertEqual(plan.entries[0].blockers, ["the cache reg:5000/team/cache could not be reached and --cache-required is set: connection refused"])
        XCTAssertEqual(plan.entries[0].step(.push)?.request?["required"], .bool(true))
    }

    func testTagAndVersions() {
        XCTAssertEqual(CachePlanner.tag(fingerprint: "sha256:abc"), "fp-abc")
        XCTAssertFalse(CachePlanner.versionsKnown(["worker": "2.0.0"]))
        XCTAssertTrue(CachePlanner.versionsKnown(["python": "3.12", "torch": "2.13", "transformers": "5.24", "worker": "2.0.0"]))
    }
}
