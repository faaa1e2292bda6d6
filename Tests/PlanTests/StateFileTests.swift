import Bundles
import Foundation
import JSON
import Manifest
import Plan
import XCTest

/// The output root's state and the files around bundles: what covers a manifest, how owners are keyed, which files
/// of a bundle are content, and what a deploy folder may hold.
final class StateFileTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("tsexport-statefile-\(UUID().uuidString.prefix(8))").standardizedFileURL
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func write(_ rel: String, _ text: String = "x: 1\n") throws {
        let url = dir.appendingPathComponent(rel)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(text.utf8).write(to: url)
    }

    func testCoveredIsExactlyWhatTheLoaderReadsFromTheGivenFolder() throws {
        let specs = dir.appendingPathComponent("specs").path
        try write("specs/a.yaml")
        try write("specs/sub/b.yml")
        try write("specs/.hidden/c.yaml")
        try write("specs/.d.yaml")
        try write("specs/notes.txt")
        try write("elsewhere/e.yaml")
        try FileManager.default.createSymbolicLink(atPath: specs + "/linked", withDestinationPath: dir.appendingPathComponent("elsewhere").path)
        let loaded = Set(ManifestLoader.manifestFiles(paths: [specs]))
        let scope = OrphanPlanner.Scope(paths: [specs])
        for rel in ["a.yaml", "sub/b.yml", ".hidden/c.yaml", ".d.yaml", "notes.txt", "linked/e.yaml"] {
            let file = specs + "/" + rel
            XCTAssertEqual(scope.covers(file), loaded.contains(file), "\(rel): covered must mean loaded")
        }
        XCTAssertTrue(scope.covers(specs + "/a.yaml"))
        XCTAssertFalse(scope.covers(specs + "/.hidden/c.yaml"))
        XCTAssertFalse(scope.covers(specs + "/notes.txt"))
        // Files that are gone: those the expansion would have read.
        XCTAssertTrue(scope.covers(specs + "/gone.yaml"))
        XCTAssertTrue(scope.covers(specs + "/sub/gone.yml"))
        XCTAssertFalse(scope.covers(specs + "/.gone.yaml"))
        XCTAssertFalse(scope.covers(specs + "/.hidden/gone.yaml"))
        XCTAssertFalse(scope.covers(specs + "/gone.txt"))
        XCTAssertFalse(scope.covers(specs + "/notes.txt/gone.yaml"))
        // A file given by itself is covered whatever its name.
        XCTAssertTrue(OrphanPlanner.Scope(paths: [specs + "/notes.txt"]).covers(specs + "/notes.txt"))
    }

    func testOwnersAreKeyedRelativeToTheOutputRootSoAMovedCheckoutKeepsThem() throws {
        let root = dir.appendingPathComponent("project/out")
        var state = OutputState()
        state.bundles["build/x"] = .init(name: "x", manifestFile: dir.appendingPathComponent("project/specs/x.yaml").path, documentIndex: 1,
                                         deploys: ["triton/x"], deployFiles: ["triton/x": [ContentEntry(path: "triton/x/config.pbtxt", sha256: "ab", size: 2)]])
        try state.write(root: root)
        let text = try String(contentsOf: OutputState.file(root: root), encoding: .utf8)
        XCTAssertTrue(text.contains("\"manifest_file\": \"../specs/x.yaml\""), text)
        XCTAssertFalse(text.contains(dir.path), text)
        let moved = dir.appendingPathComponent("moved")
        try FileManager.default.moveItem(at: dir.appendingPathComponent("project"), to: moved)
        let read = OutputState.read(root: moved.appendingPathComponent("out"))
        XCTAssertEqual(read.bundles["build/x"]?.manifestFile, moved.appendingPathComponent("specs/x.yaml").path)
        XCTAssertEqual(read.bundles["build/x"]?.deployFiles["triton/x"]?.first?.path, "triton/x/config.pbtxt")
        XCTAssertEqual(OutputState.manifestPath(key: "/abs/m.yaml", root: root), "/abs/m.yaml", "an absolute key is read as it is")
    }

    func testAClaimKeepsTheDeploysTheNewOwnerNoLongerDeclaresUntilTheyAreGone() {
        var state = OutputState()
        state.bundles["build/x"] = .init(name: "x", manifestFile: "/s/x.yaml", documentIndex: 0, deploys: ["triton/x", "store/x.mar"],
                                         deployFiles: ["store/x.mar": [ContentEntry(path: "store/x.mar", sha256: "cd", size: 3)]])
        state.claim("build/x", .init(name: "x", manifestFile: "/s/x.yaml", documentIndex: 0, deploys: ["triton/x"]))
        XCTAssertEqual(state.bundles["build/x"]?.deploys, ["triton/x", "store/x.mar"])
        XCTAssertEqual(state.bundles["build/x"]?.deployFiles["store/x.mar"]?.first?.sha256, "cd")
    }

    func testUnsafePathsFromAStateFileAreRecognised() {
        for bad in ["", "/etc", "../x", "a/../../x", "a//b", "./a", "a/.", ".tsexport", ".tsexport/staging", "a\0b"] {
            XCTAssertFalse(OutputState.isSafeRelative(bad), bad)
        }
        for good in ["build/x", "triton/x", "store/x.mar", ".hidden/x", "a/.tsexport"] { XCTAssertTrue(OutputState.isSafeRelative(good), good) }
    }

    func testTemporaryFilesOfAtomicWritesAreNotContent() throws {
        try write("b/model.pt", "m")
        try write("b/.build.json.4242.ab12cd34.tmp", "{")
        try write("b/.bench-k3j2.html.tmp", "<")
        try write("b/.other.tmp", "o")
        try write("b/sub/.build.json.1.tmp", "s")
        XCTAssertEqual(BundleContent.files(in: dir.appendingPathComponent("b")), [".other.tmp", "model.pt", "sub/.build.json.1.tmp"])
    }

    func testAFileAddedToADeployFolderIsDrift() throws {
        try write("triton/x/config.pbtxt", "name: \"x\"\n")
        try write("triton/x/1/model.pt", "m")
        let cache = FileDigestCache(root: dir)
        let files = try ["triton/x/config.pbtxt", "triton/x/1/model.pt"].map { rel -> ContentEntry in
            let d = try XCTUnwrap(cache.digest(path: dir.appendingPathComponent(rel).path))
            return ContentEntry(path: rel, sha256: d.sha256, size: d.size)
        }
        let deploy = DeployedFiles(kind: "triton", path: "triton/x", files: files)
        XCTAssertEqual(BuildInfo.drift(deploy: deploy, root: dir, cache: cache), [])
        try write("triton/x/2/model.pt", "other")
        XCTAssertEqual(BuildInfo.drift(deploy: deploy, root: dir, cache: cache), ["deploy triton: 2/model.pt added"])
    }
}
