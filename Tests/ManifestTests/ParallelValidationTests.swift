import Diagnostics
import Foundation
@testable import Manifest
import XCTest

/// `validate` loads files in parallel; the result must be exactly what a sequential run gives: the same manifests
/// and the same diagnostics in the same order (file order, reading order within a file, then the cross-file checks).
final class ParallelValidationTests: XCTestCase {
    var root: URL!

    override func setUpWithError() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("tsexport-parallel-\(UUID().uuidString)").resolvingSymlinksInPath()
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: root)
    }

    static func manifest(_ name: String, extraModel: String = "", output: String? = nil) -> String {
        """
        apiVersion: tsexport/v1
        kind: Export
        metadata: {name: \(name)}
        spec:
          model:
            class: BertModel
            config: {vocab_size: 100, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 4}\(extraModel)
          inputs:
            tensors: [{name: input_ids, from: random, shape: [1, 8], high: 100}]

        """ + (output.map { "  output: {dir: \($0)}\n" } ?? "")
    }

    /// Writes `count` files over several folders: mostly valid, with schema errors, YAML syntax errors, empty files,
    /// multi-document files, names used again in later files and output folders shared across files.
    func generate(count: Int) throws -> (folder: URL, duplicateNames: Int, sharedDirs: Int) {
        let folder = root.appendingPathComponent("manifests")
        var duplicateNames = 0, sharedDirs = 0
        for i in 0..<count {
            let sub = folder.appendingPathComponent("group-\(i % 6)")
            try FileManager.default.createDirectory(at: sub, withIntermediateDirectories: true)
            let text: String
            switch i {
            case _ where i % 23 == 5:
                text = ""
            case _ where i % 13 == 3:
                text = "apiVersion: tsexport/v1\nkind: Export\nmetadata: {name: broken-\(i)\nspec: [\n"
            case _ where i % 11 == 2:
                // Two schema problems in one file: their order inside the file must hold too.
                text = Self.manifest("typo-\(i)", extraModel: "\n    sed: 1\n    dtype: float64")
            case _ where i % 7 == 0:
                // Names reused across files: the first file with each name keeps it.
                if i >= 21 { duplicateNames += 1 }
                text = Self.manifest("dup-\(i % 3)")
            case _ where i % 17 == 1:
                if i > 1 { sharedDirs += 1 }
                text = Self.manifest("shared-\(i)", output: "build/shared")
            case _ where i % 19 == 4:
                text = Self.manifest("multi-\(i)-a") + "---\n" + Self.manifest("multi-\(i)-b", extraModel: "\n    seed: x")
            default:
                text = Self.manifest("m-\(i)")
            }
            try text.write(to: sub.appendingPathComponent(String(format: "m%04d.yaml", i)), atomically: true, encoding: .utf8)
        }
        return (folder, duplicateNames, sharedDirs)
    }

    func validate(_ paths: [String], sequential: Bool) -> ValidationResult {
        var loader = ManifestLoader(options: ValidationOptions(outputRoot: root))
        loader.sequential = sequential
        return loader.validate(paths: paths)
    }

    func testParallelValidationGivesExactlyTheSequentialResult() throws {
        let (folder, duplicateNames, sharedDirs) = try generate(count: 300)
        let sequential = validate([folder.path], sequential: true)
        XCTAssertEqual(sequential.fileCount, 300)
        XCTAssertFalse(sequential.isValid)
        let printer = DiagnosticPrinter(color: false)
        let expectedText = printer.render(sequential.diagnostics)

        // Every kind of problem made it in, and the cross-file checks found every reuse.
        let messages = sequential.diagnostics.map(\.message)
        XCTAssertEqual(messages.filter { $0.hasPrefix("metadata.name 'dup-") }.count, duplicateNames)
        XCTAssertEqual(messages.filter { $0.hasPrefix("output.dir 'build/shared' is also the output folder of") }.count, sharedDirs)
        XCTAssertTrue(messages.contains("file holds no manifest: it is empty"))
        XCTAssertGreaterThan(sequential.diagnostics.count, duplicateNames + sharedDirs + 20)

        // Repeated, since an ordering bug in parallel code need not show on every run.
        for run in 0..<5 {
            let parallel = validate([folder.path], sequential: false)
            XCTAssertEqual(parallel.fileCount, sequential.fileCount)
            XCTAssertEqual(parallel.diagnostics, sequential.diagnostics, "run \(run)")
            XCTAssertEqual(printer.render(parallel.diagnostics), expectedText, "run \(run)")
            XCTAssertEqual(parallel.manifests.map(\.file), sequential.manifests.map(\.file), "run \(run)")
            XCTAssertEqual(parallel.manifests.map(\.name), sequential.manifests.map(\.name), "run \(run)")
            XCTAssertEqual(parallel.manifests.map(\.documentIndex), sequential.manifests.map(\.documentIndex), "run \(run)")
        }
    }

    func testOrderIsFileOrderThenCrossFileChecksWithTheirExactText() throws {
        let (folder, _, _) = try generate(count: 120)
        let result = validate([folder.path], sequential: false)
        // Per-file diagnostics come first, in the sorted file order (then line order within a file); the cross-file
        // ones (which carry notes pointing at the first use) follow.
        var ds: [Diagnostic] = []
        let order = ManifestLoader.expand(paths: [folder.path], diagnostics: &ds)
        let rank = Dictionary(uniqueKeysWithValues: order.enumerated().map { ($1, $0) })
        let cross = result.diagnostics.filter { $0.message.contains("already used by another manifest") || $0.message.contains("is also the output folder of") }
        let perFile = Array(result.diagnostics.prefix(result.diagnostics.count - cross.count))
        XCTAssertEqual(Array(result.diagnostics.suffix(cross.count)), cross, "the cross-file checks run after every file is loaded")
        let sorted = perFile.sorted { a, b in
            let ra = rank[a.location?.file ?? ""] ?? -1, rb = rank[b.location?.file ?? ""] ?? -1
            return ra != rb ? ra < rb : (a.location?.line ?? 0) < (b.location?.line ?? 0)
        }
        XCTAssertEqual(perFile.map { $0.location?.file }, sorted.map { $0.location?.file })

        // Two cross-file findings, exactly as worded: files are taken in sorted path order (group-0 first), so
        // dup-0 in group-3/m0021 was first used in group-0/m0000, and group-1/m0001 reuses the output folder of
        // shared-18 (group-0/m0018).
        let file = { (i: Int) in folder.appendingPathComponent("group-\(i % 6)").appendingPathComponent(String(format: "m%04d.yaml", i)).path }
        XCTAssertEqual(cross.first { $0.location?.file == file(21) }, .error(
            "metadata.name 'dup-0' is already used by another manifest; names must be unique",
            at: SourceLocation(file: file(21), line: 3, column: 18), field: "metadata.name",
            notes: [.init(message: "first used here", location: SourceLocation(file: file(0), line: 3, column: 18))]))
        XCTAssertEqual(cross.first { $0.location?.file == file(1) }, .error(
            "output.dir 'build/shared' is also the output folder of 'shared-18'; each manifest needs its own",
            at: SourceLocation(file: file(1), line: 10, column: 17), field: "spec.output.dir",
            notes: [.init(message: "'shared-18' writes there", location: SourceLocation(file: file(18), line: 10, column: 17))]))
    }

    func testOneFileAndManyFilesGivenAsPathsKeepArgumentOrder() throws {
        let (folder, _, _) = try generate(count: 40)
        var ds: [Diagnostic] = []
        // Paths in reverse order: the result follows the arguments, not the sorted folder order.
        let files = Array(ManifestLoader.expand(paths: [folder.path], diagnostics: &ds).reversed())
        let sequential = validate(files, sequential: true)
        let parallel = validate(files, sequential: false)
        XCTAssertEqual(parallel.diagnostics, sequential.diagnostics)
        XCTAssertEqual(parallel.manifests.map(\.name), sequential.manifests.map(\.name))
        let one = validate([files[0]], sequential: false)
        XCTAssertEqual(one.fileCount, 1)
        XCTAssertEqual(one.diagnostics, validate([files[0]], sequential: true).diagnostics)
    }
}
