import Bundles
import Foundation
import JSON
import TSExportCLI
import XCTest

/// The output root's state tells the truth: reproducible bundles with a content digest, drift named and restored,
/// orphans listed and pruned. Real tiny bundles, driven through the real `tsexport` binary.
final class StateTests: XCTestCase {
    static func manifest(_ name: String, seed: Int = 7, deploy: Bool = true) -> String {
        IncrementalApplyTests.tinyManifest(name: name, seed: seed)
            + (deploy ? "  output:\n    deploy:\n      - {kind: triton, repository: triton}\n      - {kind: torchserve, store: model-store}\n" : "")
    }

    func run(_ args: [String], python: String = Harness.python, file: StaticString = #filePath, line: UInt = #line) throws -> (Int32, String) {
        try IncrementalApplyTests.run(args, python: python)
    }

    func json(_ url: URL) throws -> JSONValue { try JSONValue(parsing: Data(contentsOf: url)) }

    func testTwoRootsGiveByteIdenticalBundlesWithOneContentDigest() throws {
        let dir = try Harness.tempDir("repro")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("m.yaml")
        try Self.manifest("repro").write(to: file, atomically: true, encoding: .utf8)
        let a = dir.appendingPathComponent("root-a"), b = dir.appendingPathComponent("elsewhere/root-b")
        for root in [a, b] { XCTAssertEqual(try run(["apply", file.path, "--output-root", root.path]).0, 0) }
        for rel in ["build/repro/model.pt", "build/repro/record.json", "build/repro/sample_inputs.safetensors",
                    "build/repro/reference_outputs.safetensors", "triton/repro/config.pbtxt", "triton/repro/1/model.pt", "model-store/repro.mar"] {
            let x = try Data(contentsOf: a.appendingPathComponent(rel)), y = try Data(contentsOf: b.appendingPathComponent(rel))
            XCTAssertEqual(x, y, "\(rel) differs between the two roots")
        }
        let record = try String(contentsOf: a.appendingPathComponent("build/repro/record.json"), encoding: .utf8)
        XCTAssertFalse(record.contains(dir.path), "record.json names no absolute path")
        for key in ["created_at", "timings_ms", "manifest_dir", "manifest_file", "staging"] { XCTAssertFalse(record.contains("\"\(key)\""), key) }
        XCTAssertFalse(try String(contentsOf: a.appendingPathComponent("triton/repro/config.pbtxt"), encoding: .utf8).contains(dir.path))
        let cpu = try json(a.appendingPathComponent("build/repro/record.json"))["cpu"]
        XCTAssertNotNil(cpu?["machine"]?.stringValue)
        XCTAssertNotNil(cpu?["features"]?.arrayValue)

        // build.json: the build facts and the content digest, the same in both roots and equal to the files' digest.
        let buildA = try json(a.appendingPathComponent("build/repro/build.json")), buildB = try json(b.appendingPathComponent("build/repro/build.json"))
        XCTAssertEqual(buildA["output_root"]?.stringValue, a.path)
        XCTAssertNotNil(buildA["built_at"]?.stringValue)
        XCTAssertNotNil(buildA["timings_ms"]?["verify"])
        let digest = try XCTUnwrap(buildA["content_digest"]?.stringValue)
        XCTAssertEqual(buildB["content_digest"]?.stringValue, digest)
        XCTAssertEqual(try BundleContent.digest(of: b.appendingPathComponent("build/repro")), digest)
        XCTAssertEqual(try BundleContent.entries(of: a.appendingPathComponent("build/repro")).map(\.path),
                       ["model.pt", "record.json", "reference_outputs.safetensors", "sample_inputs.safetensors"])
        let (_, planOut) = try run(["plan", file.path, "--output-root", b.path, "--json"], python: "/bin/false")
        XCTAssertEqual(try JSONValue(parsing: Data(planOut.utf8))["entries"]?[0]?["contentDigest"]?.stringValue, digest)

        // A moved bundle is still a bundle: verify accepts it.
        let moved = dir.appendingPathComponent("moved")
        try FileManager.default.moveItem(at: b.appendingPathComponent("build/repro"), to: moved)
        let (code, out) = try run(["verify", moved.path])
        XCTAssertEqual(code, 0, out)
    }

    func testAnInt8BundleIsByteIdenticalUnderTwoRoots() throws {
        let dir = try Harness.tempDir("repro-int8")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("m.yaml")
        try QualityApplyTests.manifest("q8", target: "    quantize: dynamic_int8").write(to: file, atomically: true, encoding: .utf8)
        let a = dir.appendingPathComponent("root-a"), b = dir.appendingPathComponent("elsewhere/root-b")
        for root in [a, b] { XCTAssertEqual(try run(["apply", file.path, "--output-root", root.path]).0, 0) }
        for rel in ["model.pt", "record.json", "sample_inputs.safetensors", "reference_outputs.safetensors"] {
            let x = try Data(contentsOf: a.appendingPathComponent("build/q8/\(rel)")), y = try Data(contentsOf: b.appendingPathComponent("build/q8/\(rel)"))
            XCTAssertEqual(x, y, "\(rel) differs between the two roots")
        }
        XCTAssertEqual(try json(a.appendingPathComponent("build/q8/build.json"))["content_digest"],
                       try json(b.appendingPathComponent("build/q8/build.json"))["content_digest"])
    }

    func testDriftIsNamedAndApplyRestoresIt() throws {
        let dir = try Harness.tempDir("drift")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("m.yaml")
        try Self.manifest("drift").write(to: file, atomically: true, encoding: .utf8)
        let root = dir.appendingPathComponent("out")
        XCTAssertEqual(try run(["apply", file.path, "--output-root", root.path]).0, 0)
        let model = root.appendingPathComponent("build/drift/model.pt"), config = root.appendingPathComponent("triton/drift/config.pbtxt")
        let mar = root.appendingPathComponent("model-store/drift.mar")
        let originalModel = try Data(contentsOf: model), originalConfig = try Data(contentsOf: config)
        let digest = try json(root.appendingPathComponent("build/drift/build.json"))["content_digest"]

        // One byte inside model.pt, same size: the size check cannot see it, the digest does.
        var bytes = originalModel
        bytes[bytes.count / 2] ^= 0x01
        try bytes.write(to: model)
        var (code, out) = try run(["plan", file.path, "--output-root", root.path, "--detailed-exitcode"], python: "/bin/false")
        XCTAssertEqual(code, 2, out)
        XCTAssertTrue(out.contains("~ rebuild drift"), out)
        XCTAssertTrue(out.contains("because model.pt changed"), out)
        XCTAssertEqual(try run(["apply", file.path, "--output-root", root.path]).0, 0)
        XCTAssertEqual(try Data(contentsOf: model), originalModel, "the rebuild gives the same bytes back")
        XCTAssertEqual(try json(root.appendingPathComponent("build/drift/build.json"))["content_digest"], digest)

        // A hand-edited Triton config and a deleted .mar: a redeploy from the installed bundle, no re-export.
        try Data("# edited by hand\n".utf8).write(to: config)
        try FileManager.default.removeItem(at: mar)
        let added = root.appendingPathComponent("triton/drift/2/model.pt")
        try FileManager.default.createDirectory(at: added.deletingLastPathComponent(), withIntermediateDirectories: true)
        try originalModel.write(to: added)
        (code, out) = try run(["plan", file.path, "--output-root", root.path, "--detailed-exitcode"], python: "/bin/false")
        XCTAssertEqual(code, 2, out)
        XCTAssertTrue(out.contains("~ redeploy drift"), out)
        XCTAssertTrue(out.contains("because deploy triton: config.pbtxt changed"), out)
        XCTAssertTrue(out.contains("because deploy torchserve: .mar missing"), out)
        XCTAssertTrue(out.contains("because deploy triton: 2/model.pt added"), out)
        XCTAssertFalse(out.contains("trace "), "no export step is planned: \(out)")
        let before = try FileManager.default.attributesOfItem(atPath: model.path)
        (code, out) = try run(["apply", file.path, "--output-root", root.path])
        XCTAssertEqual(code, 0, out)
        XCTAssertTrue(out.contains("1 redeployed"), out)
        let after = try FileManager.default.attributesOfItem(atPath: model.path)
        XCTAssertEqual(before[.systemFileNumber] as? Int, after[.systemFileNumber] as? Int, "model.pt was not re-exported")
        XCTAssertEqual(before[.modificationDate] as? Date, after[.modificationDate] as? Date)
        XCTAssertEqual(try Data(contentsOf: config), originalConfig)
        XCTAssertTrue(FileManager.default.fileExists(atPath: mar.path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: added.path), "a Triton model folder holds only what tsexport wrote")
        (code, out) = try run(["plan", file.path, "--output-root", root.path, "--detailed-exitcode"], python: "/bin/false")
        XCTAssertEqual(code, 0, out)
    }

    /// Two documents in one file and a second file, all deploying to one Triton repository.
    func makeSpecs(_ dir: URL) throws -> (two: URL, single: URL) {
        let specs = dir.appendingPathComponent("specs")
        try FileManager.default.createDirectory(at: specs, withIntermediateDirectories: true)
        let two = specs.appendingPathComponent("two.yaml"), single = specs.appendingPathComponent("single.yaml")
        try (Self.manifest("o-a") + "---\n" + Self.manifest("o-b", seed: 8)).write(to: two, atomically: true, encoding: .utf8)
        try Self.manifest("o-c", seed: 9).write(to: single, atomically: true, encoding: .utf8)
        return (two, single)
    }

    func testRenamedDocumentAndDeletedFileAreOrphansThatPruneRemovesWithTheirDeploys() throws {
        let dir = try Harness.tempDir("orphans")
        defer { try? FileManager.default.removeItem(at: dir) }
        let (two, single) = try makeSpecs(dir)
        let specs = two.deletingLastPathComponent(), root = dir.appendingPathComponent("out")
        XCTAssertEqual(try run(["apply", specs.path, "--output-root", root.path, "--jobs", "1"]).0, 0)
        let state = OutputState.read(root: root)
        XCTAssertEqual(state.bundles["build/o-b"]?.manifestFile, two.path)
        XCTAssertEqual(state.bundles["build/o-b"]?.documentIndex, 1)
        XCTAssertEqual(state.bundles["build/o-c"]?.deploys, ["triton/o-c", "model-store/o-c.mar"])

        try (Self.manifest("o-a") + "---\n" + Self.manifest("o-b2", seed: 8)).write(to: two, atomically: true, encoding: .utf8)
        try FileManager.default.removeItem(at: single)
        var (code, out) = try run(["plan", specs.path, "--output-root", root.path], python: "/bin/false")
        XCTAssertEqual(code, 0, out)
        XCTAssertTrue(out.contains("! orphaned o-b  (\(two.path), document 2: no document in the file is named o-b any more)"), out)
        XCTAssertTrue(out.contains("! orphaned o-c  (\(single.path), document 1: the manifest file is gone)"), out)
        XCTAssertTrue(out.contains("would remove \(root.path)/triton/o-c"), out)
        XCTAssertTrue(out.contains("2 orphaned (apply --prune removes them)"), out)

        // One file out of the folder does not cover the deleted one: only o-b is judged, and the plan says so.
        (code, out) = try run(["plan", two.path, "--output-root", root.path], python: "/bin/false")
        XCTAssertTrue(out.contains("! orphaned o-b"), out)
        XCTAssertFalse(out.contains("o-c"), out)
        XCTAssertTrue(out.contains("note: 1 bundle(s) in the output root were made by manifests outside the given paths"), out)
        (code, out) = try run(["plan", specs.path, "--output-root", root.path, "--name", "o-a"], python: "/bin/false")
        XCTAssertFalse(out.contains("orphaned"), out)
        XCTAssertTrue(out.contains("--name selects a subset"), out)

        (code, out) = try run(["plan", specs.path, "--output-root", root.path, "--prune", "--json"], python: "/bin/false")
        let orphans = try JSONValue(parsing: Data(out.utf8))["orphans"]?.arrayValue ?? []
        XCTAssertEqual(orphans.compactMap { $0["name"]?.stringValue }, ["o-b", "o-c"])
        XCTAssertEqual(orphans.compactMap { $0["action"]?.stringValue }, ["remove", "remove"])
        XCTAssertEqual(orphans.last?["paths"], .array([.string(root.path + "/build/o-c"), .string(root.path + "/triton/o-c"), .string(root.path + "/model-store/o-c.mar")]))

        (code, out) = try run(["apply", specs.path, "--output-root", root.path, "--prune"])
        XCTAssertEqual(code, 0, out)
        let fm = FileManager.default
        for gone in ["build/o-b", "build/o-c", "triton/o-b", "triton/o-c", "model-store/o-b.mar", "model-store/o-c.mar"] {
            XCTAssertFalse(fm.fileExists(atPath: root.appendingPathComponent(gone).path), gone)
        }
        for kept in ["build/o-a", "build/o-b2", "triton/o-a/config.pbtxt", "triton/o-b2/1/model.pt", "model-store/o-a.mar"] {
            XCTAssertTrue(fm.fileExists(atPath: root.appendingPathComponent(kept).path), kept)
        }
        XCTAssertEqual(Set(OutputState.read(root: root).bundles.keys), ["build/o-a", "build/o-b2"])
        XCTAssertEqual(try run(["plan", specs.path, "--output-root", root.path, "--detailed-exitcode", "--prune"], python: "/bin/false").0, 0)
    }

    func testADeployDroppedFromALiveManifestIsPrunedAndAFailedRemovalFailsTheApply() throws {
        let dir = try Harness.tempDir("dropdeploy")
        defer { try? FileManager.default.removeItem(at: dir) }
        let specs = dir.appendingPathComponent("specs"), root = dir.appendingPathComponent("out")
        try FileManager.default.createDirectory(at: specs, withIntermediateDirectories: true)
        let file = specs.appendingPathComponent("m.yaml")
        try Self.manifest("dd").write(to: file, atomically: true, encoding: .utf8)
        XCTAssertEqual(try run(["apply", specs.path, "--output-root", root.path]).0, 0)
        let stateText = try String(contentsOf: OutputState.file(root: root), encoding: .utf8)
        XCTAssertTrue(stateText.contains("\"manifest_file\": \"../specs/m.yaml\""), stateText)

        // The torchserve deploy leaves the manifest: its .mar is an orphan; the bundle and the Triton model are not.
        try (IncrementalApplyTests.tinyManifest(name: "dd", seed: 7) + "  output:\n    deploy:\n      - {kind: triton, repository: triton}\n")
            .write(to: file, atomically: true, encoding: .utf8)
        var (code, out) = try run(["plan", specs.path, "--output-root", root.path], python: "/bin/false")
        XCTAssertTrue(out.contains("! orphaned dd  (\(file.path), document 1: its manifest no longer declares the deploy to model-store/dd.mar)"), out)
        (code, out) = try run(["apply", specs.path, "--output-root", root.path, "--prune"])
        XCTAssertEqual(code, 0, out)
        XCTAssertTrue(out.contains("removed dd (1 path(s))"), out)
        XCTAssertTrue(out.contains("Pruned: 1 path(s) of 1 orphan(s) removed."), out)
        XCTAssertFalse(FileManager.default.fileExists(atPath: root.appendingPathComponent("model-store/dd.mar").path))
        XCTAssertTrue(FileManager.default.fileExists(atPath: root.appendingPathComponent("build/dd/model.pt").path))
        XCTAssertTrue(FileManager.default.fileExists(atPath: root.appendingPathComponent("triton/dd/config.pbtxt").path))
        XCTAssertEqual(OutputState.read(root: root).bundles["build/dd"]?.deploys, ["triton/dd"])

        // The manifest goes; a forged state also names a file outside the output root as its deploy. The bundle and
        // its Triton model go, the outside file stays, and apply says so and fails.
        try FileManager.default.removeItem(at: file)
        let victim = dir.appendingPathComponent("victim.mar")
        try Data("not tsexport's".utf8).write(to: victim)
        var state = OutputState.read(root: root)
        state.bundles["build/dd"]?.deploys.append("../victim.mar")
        try state.write(root: root)
        (code, out) = try run(["apply", specs.path, "--output-root", root.path, "--prune", "--json"])
        XCTAssertEqual(code, 1, out)
        XCTAssertTrue(out.contains("error: dd: refused \(root.path)/../victim.mar: not a path tsexport installed under the output root"), out)
        XCTAssertEqual(try String(contentsOf: victim, encoding: .utf8), "not tsexport's")
        XCTAssertFalse(FileManager.default.fileExists(atPath: root.appendingPathComponent("build/dd").path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: root.appendingPathComponent("triton/dd").path))
        let start = try XCTUnwrap(out.range(of: "\n{\n")?.lowerBound ?? (out.hasPrefix("{") ? out.startIndex : nil), out)
        let end = try XCTUnwrap(out.range(of: "\n}", options: .backwards)?.upperBound, out)
        let json = try JSONValue(parsing: Data(out[start..<end].utf8))
        XCTAssertEqual(json["removed"]?[0]?["paths"], .array([.string(root.path + "/build/dd"), .string(root.path + "/triton/dd")]))
        XCTAssertEqual(json["prune_failed"]?.arrayValue?.count, 1)
        XCTAssertEqual(OutputState.read(root: root).bundles["build/dd"]?.deploys, ["../victim.mar"], "what was not removed stays named")
    }

    /// Five bundles applied; four manifest files then deleted, leaving one so the folder still holds a manifest.
    func orphanedRoot(_ dir: URL) throws -> (specs: URL, root: URL, names: [String]) {
        let specs = dir.appendingPathComponent("specs"), root = dir.appendingPathComponent("out")
        try FileManager.default.createDirectory(at: specs, withIntermediateDirectories: true)
        let names = (1...5).map { "s-\($0)" }
        for (i, n) in names.enumerated() {
            try Self.manifest(n, seed: i, deploy: i % 2 == 0).write(to: specs.appendingPathComponent("\(n).yaml"), atomically: true, encoding: .utf8)
        }
        XCTAssertEqual(try run(["apply", specs.path, "--output-root", root.path, "--jobs", "2"]).0, 0)
        for n in names.dropFirst() { try FileManager.default.removeItem(at: specs.appendingPathComponent("\(n).yaml")) }
        return (specs, root, Array(names.dropFirst()))
    }

    func testPruneWithShardRemovesOnlyThatShardsOrphans() throws {
        let dir = try Harness.tempDir("shard")
        defer { try? FileManager.default.removeItem(at: dir) }
        let (specs, root, orphans) = try orphanedRoot(dir)
        let first = orphans.filter { SelectionOptions.shardIndex(of: $0, count: 2) == 0 }
        let second = orphans.filter { SelectionOptions.shardIndex(of: $0, count: 2) == 1 }
        XCTAssertFalse(first.isEmpty || second.isEmpty, "the names fall in both shards: \(first) \(second)")
        var (code, out) = try run(["plan", specs.path, "--output-root", root.path, "--shard", "1/2", "--prune"], python: "/bin/false")
        for n in first { XCTAssertTrue(out.contains("- remove \(n) "), out) }
        for n in second { XCTAssertFalse(out.contains(" \(n) "), out) }
        XCTAssertTrue(out.contains("note: \(second.count) orphan(s) fall in other shards than 1/2 and are left to those"), out)
        (code, out) = try run(["apply", specs.path, "--output-root", root.path, "--shard", "1/2", "--prune"])
        XCTAssertEqual(code, 0, out)
        let left = try FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent("build").path)
        XCTAssertEqual(Set(left), Set(second + ["s-1"]))
        XCTAssertEqual(Set(OutputState.read(root: root).bundles.keys), Set((second + ["s-1"]).map { "build/\($0)" }))
        (code, out) = try run(["apply", specs.path, "--output-root", root.path, "--shard", "2/2", "--prune"])
        XCTAssertEqual(code, 0, out)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent("build").path), ["s-1"])
    }

    func testKillDuringPruneLeavesAConsistentStateThatTheNextPruneFinishes() throws {
        let dir = try Harness.tempDir("killprune")
        defer { try? FileManager.default.removeItem(at: dir) }
        let (specs, root, _) = try orphanedRoot(dir)
        let fm = FileManager.default
        // Each round kills at an event the prune makes on disk, not after a delay: the moment a path has been moved
        // into staging (before the state drops its owner), or the moment the state has lost a bundle (between two
        // orphans). Four orphans, so the rounds alternate until none is left.
        let staging = root.appendingPathComponent(".tsexport/staging")
        func pruneFolders() -> Set<String> { Set(((try? fm.contentsOfDirectory(atPath: staging.path)) ?? []).filter { $0.hasPrefix("prune-") }) }
        var caught = 0
        for round in 0..<4 {
            let count = OutputState.read(root: root).bundles.count
            let leftovers = pruneFolders()
            let event: () -> Bool = round % 2 == 0 ? { !pruneFolders().subtracting(leftovers).isEmpty } : { OutputState.read(root: root).bundles.count < count }
            let (p, _) = try IncrementalApplyTests.launch(["apply", specs.path, "--output-root", root.path, "--prune"])
            let until = Date().addingTimeInterval(60)
            while p.isRunning, Date() < until, !event() { usleep(100) }
            if p.isRunning, event() { caught += 1 }
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            // The state file is always whole, and every bundle still on disk is one it names (nothing leaks).
            let text = try String(contentsOf: OutputState.file(root: root), encoding: .utf8)
            XCTAssertEqual(try JSONValue(parsing: Data(text.utf8))["format"]?.stringValue, OutputState.format)
            let state = OutputState.read(root: root)
            for b in (try? fm.contentsOfDirectory(atPath: root.appendingPathComponent("build").path)) ?? [] {
                XCTAssertNotNil(state.bundles["build/\(b)"], "\(b) is on disk but not in the state (round \(round))")
                XCTAssertTrue(fm.fileExists(atPath: root.appendingPathComponent("build/\(b)/build.json").path), b)
            }
        }
        XCTAssertGreaterThan(caught, 0, "no round killed the prune at its event")
        let (code, out) = try run(["apply", specs.path, "--output-root", root.path, "--prune"])
        XCTAssertEqual(code, 0, out)
        XCTAssertEqual(try fm.contentsOfDirectory(atPath: root.appendingPathComponent("build").path), ["s-1"])
        XCTAssertEqual(Set(OutputState.read(root: root).bundles.keys), ["build/s-1"])
        XCTAssertFalse(fm.fileExists(atPath: root.appendingPathComponent(".tsexport/staging").path))
        XCTAssertEqual(try run(["plan", specs.path, "--output-root", root.path, "--prune", "--detailed-exitcode"], python: "/bin/false").0, 0)
    }
}
