import Bundles
import Execution
import Foundation
import JSON
import Plan
import XCTest

/// The Pruner alone, under hostile or changed state: it re-checks every path against the state it is given (read
/// under the lock), refuses anything outside the output root or not written by tsexport, and keeps an owner while any
/// of its paths remains. The bundle folders here are written by the test with a real build.json: the Pruner reads
/// files and lists, never a model, and a state file is untrusted input that a test must be able to forge.
final class PrunerTests: XCTestCase {
    var dir: URL!
    var root: URL { dir.appendingPathComponent("out") }
    let gone = OutputState.Owner(name: "x", manifestFile: "/specs/x.yaml", documentIndex: 0, deploys: [])

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("tsexport-pruner-\(UUID().uuidString.prefix(8))").standardizedFileURL
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func write(_ path: String, _ text: String = "bytes") throws {
        let url = URL(fileURLWithPath: path.hasPrefix("/") ? path : root.appendingPathComponent(path).path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(text.utf8).write(to: url)
    }

    func exists(_ rel: String) -> Bool { FileManager.default.fileExists(atPath: root.appendingPathComponent(rel).path) }

    /// A bundle folder with two files and a build.json that lists them (plus `extraListed`) and the given deploys.
    func bundle(_ rel: String, deploys: [DeployedFiles] = [], extraListed: [ContentEntry] = []) throws {
        try write(rel + "/model.pt", "model")
        try write(rel + "/record.json", "{}")
        let content = try BundleContent.entries(of: root.appendingPathComponent(rel)) + extraListed
        let build = BuildInfo.json(content: content, deployments: deploys.map { ($0, []) }, facts: [])
        try write(rel + "/build.json", build.serialized(pretty: true))
    }

    /// A Triton model folder and the list of its files.
    func triton(_ name: String) throws -> DeployedFiles {
        try write("triton/\(name)/config.pbtxt", "name: \"\(name)\"")
        try write("triton/\(name)/1/model.pt", "model")
        return DeployedFiles(kind: "triton", path: "triton/\(name)", files: [
            ContentEntry(path: "triton/\(name)/1/model.pt", sha256: Digest.sha256("model"), size: 5),
            ContentEntry(path: "triton/\(name)/config.pbtxt", sha256: Digest.sha256("name: \"\(name)\""), size: 9 + name.count),
        ])
    }

    func orphan(_ owner: OutputState.Owner, bundle: String = "build/x", paths: [String]) -> PlanOrphan {
        PlanOrphan(name: owner.name, action: .remove, manifestFile: owner.manifestFile, documentIndex: owner.documentIndex,
                   reason: "the manifest file is gone", bundle: root.appendingPathComponent(bundle).path,
                   paths: paths.map { $0.hasPrefix("/") ? $0 : root.appendingPathComponent($0).path })
    }

    func testABundleAnotherManifestOwnsByTheTimeOfThePruneIsNotTouched() throws {
        try bundle("build/x")
        var state = OutputState()
        // Planned from the old state; by the time the lock is held another document owns the folder.
        let planned = orphan(gone, paths: ["build/x"])
        state.bundles["build/x"] = .init(name: "x", manifestFile: "/specs/y.yaml", documentIndex: 0, deploys: [])
        let result = Pruner(root: root).prune([planned], state: &state)
        XCTAssertTrue(exists("build/x/model.pt"))
        XCTAssertEqual(result.removed.count, 0)
        XCTAssertEqual(result.kept, ["x: kept \(root.path)/build/x: the output root's state now names another manifest for it"])
        XCTAssertEqual(state.bundles["build/x"]?.manifestFile, "/specs/y.yaml")
        // A deploy path that another entry of the state also names is not removed either.
        var owner = gone
        owner.deploys = ["triton/shared"]
        state.bundles["build/x"] = owner
        state.bundles["build/z"] = .init(name: "z", manifestFile: "/specs/z.yaml", documentIndex: 0, deploys: ["triton/shared"])
        var t = try triton("shared")
        t.path = "triton/shared"
        owner.deployFiles["triton/shared"] = t.files
        state.bundles["build/x"] = owner
        let second = Pruner(root: root).prune([orphan(gone, paths: ["build/x", "triton/shared"])], state: &state)
        XCTAssertEqual(second.removed.map(\.paths), [[root.path + "/build/x"]])
        XCTAssertTrue(exists("triton/shared/config.pbtxt"))
        XCTAssertEqual(second.kept, ["x: kept \(root.path)/triton/shared: the output root's state says z owns it"])
        XCTAssertNil(state.bundles["build/x"], "the bundle is gone and the deploy is z's: nothing is left to own")
    }

    func testPathsFromAForgedStateOrBuildFileOutsideTheRootOrThroughALinkAreRefusedAndLeftAlone() throws {
        try write(dir.appendingPathComponent("victim.mar").path, "not tsexport's")
        try write(dir.appendingPathComponent("elsewhere/x.mar").path, "not tsexport's")
        try FileManager.default.createSymbolicLink(atPath: root.appendingPathComponent("linked").path, withDestinationPath: dir.appendingPathComponent("elsewhere").path)
        try write(".tsexport/digests.json", "{}")
        try FileManager.default.createDirectory(at: root.appendingPathComponent("triton/unlisted/1"), withIntermediateDirectories: true)
        // build.json lists a file outside the bundle; the bundle also holds a file it does not list, so the listed
        // files would be removed one by one.
        try bundle("build/x", extraListed: [ContentEntry(path: "../../victim.mar", sha256: "00", size: 1)])
        try write("build/x/notes.txt", "the user's")
        var owner = gone
        owner.deploys = ["../victim.mar", "linked/x.mar", ".tsexport/digests.json", "triton/unlisted"]
        for d in owner.deploys { owner.deployFiles[d] = [ContentEntry(path: d, sha256: "00", size: 1)] }
        owner.deployFiles["triton/unlisted"] = nil
        var state = OutputState()
        state.bundles["build/x"] = owner
        let paths = ["build/x", root.path + "/../victim.mar", "linked/x.mar", ".tsexport/digests.json", "triton/unlisted"]
        let result = Pruner(root: root).prune([orphan(owner, paths: paths)], state: &state)
        XCTAssertEqual(result.removed.count, 0)
        XCTAssertEqual(result.failed, [
            "x: refused \(root.path)/build/x: no safe list of the files tsexport wrote there",
            "x: refused \(root.path)/../victim.mar: not a path tsexport installed under the output root",
            "x: refused \(root.path)/linked/x.mar: not a path tsexport installed under the output root",
            "x: refused \(root.path)/.tsexport/digests.json: not a path tsexport installed under the output root",
            "x: refused \(root.path)/triton/unlisted: no safe list of the files tsexport wrote there",
        ])
        XCTAssertEqual(try String(contentsOf: dir.appendingPathComponent("victim.mar"), encoding: .utf8), "not tsexport's")
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("elsewhere/x.mar").path))
        XCTAssertTrue(exists(".tsexport/digests.json"))
        XCTAssertTrue(exists("build/x/model.pt"), "a bundle whose list is unsafe is left whole")
        XCTAssertTrue(exists("triton/unlisted/1"), "no empty folder is removed from a refused path")
        XCTAssertEqual(state.bundles["build/x"]?.deploys.sorted(), ["../victim.mar", ".tsexport/digests.json", "linked/x.mar", "triton/unlisted"],
                       "what could not be removed stays owned, so the next plan names it again")
    }

    func testAnOwnerStaysUntilEveryPathIsGoneAndTheRepositoryKeepsTheOtherModels() throws {
        let tx = try triton("x"), ty = try triton("y")
        try bundle("build/x", deploys: [tx])
        try bundle("build/y", deploys: [ty])
        try write("triton/x/notes.txt", "the user's")
        try FileManager.default.createDirectory(at: root.appendingPathComponent("triton/x/mine"), withIntermediateDirectories: true)
        var owner = gone
        owner.deploys = ["triton/x"]
        owner.deployFiles = ["triton/x": tx.files]
        var state = OutputState()
        state.bundles["build/x"] = owner
        state.bundles["build/y"] = .init(name: "y", manifestFile: "/specs/y.yaml", documentIndex: 0, deploys: ["triton/y"], deployFiles: ["triton/y": ty.files])
        var result = Pruner(root: root).prune([orphan(owner, paths: ["build/x", "triton/x"])], state: &state)
        XCTAssertEqual(result.failed, [])
        XCTAssertEqual(result.removed.map(\.paths), [[root.path + "/build/x"]])
        XCTAssertEqual(result.kept, ["x: kept \(root.path)/triton/x with files tsexport did not write: mine/, notes.txt"])
        XCTAssertFalse(exists("build/x"))
        XCTAssertFalse(exists("triton/x/config.pbtxt"))
        XCTAssertFalse(exists("triton/x/1"), "the folders its removed files leave empty go")
        XCTAssertTrue(exists("triton/x/notes.txt"))
        XCTAssertTrue(exists("triton/x/mine"), "an empty folder the user made stays")
        XCTAssertEqual(state.bundles["build/x"]?.deploys, ["triton/x"], "the model folder is still x's: it is not forgotten")
        XCTAssertEqual(OutputState.read(root: root), state, "the state on disk says the same")

        // The next plan names it again, from the state alone (the bundle and its build.json are gone).
        let (again, _) = OrphanPlanner(shardIndex: { _, _ in 0 }).plan(
            state: state, loaded: [], root: root, scope: .init(paths: ["/specs/x.yaml"], prune: true), exists: { FileManager.default.fileExists(atPath: $0) })
        XCTAssertEqual(again.map(\.paths), [[root.path + "/triton/x"]])
        try FileManager.default.removeItem(at: root.appendingPathComponent("triton/x/notes.txt"))
        try FileManager.default.removeItem(at: root.appendingPathComponent("triton/x/mine"))
        result = Pruner(root: root).prune(again, state: &state)
        XCTAssertEqual(result.removed.map(\.paths), [[root.path + "/triton/x"]])
        XCTAssertFalse(exists("triton/x"))
        XCTAssertNil(state.bundles["build/x"])
        XCTAssertTrue(exists("triton/y/config.pbtxt") && exists("triton/y/1/model.pt") && exists("build/y/model.pt"))
    }

    /// The whole apply: it plans, then waits for the output root's lock (held here); meanwhile another manifest makes
    /// one of the planned orphans fresh. Under the lock the apply judges again: only the other orphan goes. No
    /// manifest is left in the folder, so no Python starts.
    func testApplyPruneJudgesTheOrphansAgainUnderTheLock() throws {
        let specs = dir.appendingPathComponent("specs")
        try FileManager.default.createDirectory(at: specs, withIntermediateDirectories: true)
        try bundle("build/x")
        try bundle("build/w")
        var state = OutputState()
        state.bundles["build/x"] = .init(name: "x", manifestFile: specs.appendingPathComponent("x.yaml").path, documentIndex: 0, deploys: [])
        state.bundles["build/w"] = .init(name: "w", manifestFile: specs.appendingPathComponent("w.yaml").path, documentIndex: 0, deploys: [])
        try state.write(root: root)

        let lock = try OutputRootLock(root: root, timeout: 0)
        let (p, pipe) = try IncrementalApplyTests.launch(["apply", specs.path, "--output-root", root.path, "--prune", "--lock-timeout", "60"], python: "/bin/false")
        // The event: the apply holds the output root open, waiting for its lock (it has planned by then).
        func waiting() -> Bool {
            let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(p.processIdentifier)/fd")) ?? []
            return fds.contains { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(p.processIdentifier)/fd/\($0)")) == root.path }
        }
        let until = Date().addingTimeInterval(60)
        while p.isRunning, Date() < until, !waiting() { usleep(1000) }
        XCTAssertTrue(p.isRunning && waiting(), "the apply waits for the lock")
        state.bundles["build/x"] = .init(name: "x", manifestFile: dir.appendingPathComponent("other/x.yaml").path, documentIndex: 0, deploys: [])
        try state.write(root: root)
        lock.release()
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, out)
        XCTAssertTrue(exists("build/x/model.pt"), "the bundle another manifest owns now stays: \(out)")
        XCTAssertFalse(exists("build/w"), out)
        XCTAssertTrue(out.contains("removed w (1 path(s)): the manifest file is gone"), out)
        XCTAssertFalse(out.contains("removed x"), out)
        XCTAssertTrue(out.contains("Pruned: 1 path(s) of 1 orphan(s) removed."), out)
        XCTAssertEqual(Set(OutputState.read(root: root).bundles.keys), ["build/x"])
    }
}
