import Foundation
import XCTest

/// `tsexport validate`, run as a real process: exit codes, the text and JSON reports, folders, cross-file checks.
final class ValidateCLITests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = try CLI.tempDir("validate")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    // MARK: - Exit codes and the summary line

    func testValidFileExitsZeroWithSummaryOnStdoutOnly() throws {
        try CLI.write(CLI.manifest("one"), to: "one.yaml", in: dir)
        let r = try CLI.run(["validate", "one.yaml"], cwd: dir)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stderr, "")
        XCTAssertEqual(r.stdout, "1 manifest in 1 file: valid\n")
    }

    func testInvalidFileExitsOne() throws {
        try CLI.write(CLI.manifest("one").replacingOccurrences(of: "BertModel", with: "Bert-Model"), to: "one.yaml", in: dir)
        let r = try CLI.run(["validate", "one.yaml"], cwd: dir)
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stdout, "")
        XCTAssertEqual(r.errLines, [
            "one.yaml:6:18: error: spec.model.class: 'Bert-Model' is not a class name: a Python identifier such as BertModel (pattern ^[A-Za-z_][A-Za-z0-9_]*$)",
            "1 error in 1 file",
        ])
    }

    func testNoPathsAndMissingPathsAreErrors() throws {
        var r = try CLI.run(["validate"], cwd: dir)
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderr, "error: name at least one manifest file or folder\n")

        try CLI.write(CLI.manifest("one"), to: "one.yaml", in: dir)
        r = try CLI.run(["validate", "nope.yaml", "one.yaml"], cwd: dir)
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.errLines, ["error: no such file or directory: nope.yaml", "1 error in 1 file"])
    }

    func testEveryFileInSpecsIsValid() throws {
        let specs = CLI.repo.appendingPathComponent("specs")
        let out = try CLI.tempDir("specs-root")
        defer { try? FileManager.default.removeItem(at: out) }
        var files: [String] = []
        let e = try XCTUnwrap(FileManager.default.enumerator(atPath: specs.path))
        while let rel = e.nextObject() as? String {
            if (rel as NSString).lastPathComponent.hasPrefix(".") {
                e.skipDescendants()
                continue
            }
            if rel.hasSuffix(".yaml") || rel.hasSuffix(".yml") { files.append(rel) }
        }
        XCTAssertGreaterThanOrEqual(files.count, 2)
        // The folder at once...
        let all = try CLI.run(["validate", "--output-root", out.path, "specs"], cwd: CLI.repo)
        XCTAssertEqual(all.status, 0, all.stderr)
        XCTAssertTrue(all.stdout.hasSuffix("in \(files.count) files: valid\n"), all.stdout)
        XCTAssertFalse(all.stderr.contains("error:"), all.stderr)
        CLI.assertNoCrash(all, "validate specs")
        // ...and every file on its own.
        for f in files.sorted() {
            let r = try CLI.run(["validate", "--output-root", out.path, "specs/" + f], cwd: CLI.repo)
            XCTAssertEqual(r.status, 0, "specs/\(f): \(r.stderr)")
            XCTAssertTrue(r.stdout.hasSuffix("in 1 file: valid\n"), r.stderr)
        }
    }

    // MARK: - Every problem in every file, in order

    static let badA = """
        apiVersion: tsexport/v1
        kind: Export
        metadata:
          name: Bad_Name
        spec:
          model: {class: BertModel, seed: "7", config: {vocab_size: 100}}
          inputs:
            tensors: [{name: input_ids, from: values, values: [[1, 2, 3]]}]

        """

    static let badB = """
        apiVersion: tsexport/v1
        kind: Export
        metadata:
          name: b
        spec:
          model: {class: BertModel, config: {vocab_size: 100}}
          inputs:
            tensors: [{name: input_ids, from: values, values: [[1, 2, 3]]}]
          modle: {}
        ---
        apiVersion: tsexport/v1
        kind: Export
        metadata:
          name: b2
        spec:
          model: {class: BertModel, config: {vocab_size: 100}}
          inputs:
            tensors: [{name: input_ids, from: values, values: [[1, 2, 300]]}]

        """

    static let aLines = [
        "two/a.yaml:4:9: error: metadata.name: 'Bad_Name' is not a valid name: lowercase letters, digits and '-', starting and ending with a letter or digit (pattern ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$)",
        "two/a.yaml:6:35: error: spec.model.seed: expected integer, got string \"7\" (a quoted value is a string; remove the quotes)",
    ]
    static let bLines = [
        "two/b.yaml:9:3: error: unknown field 'modle' in spec; did you mean 'model'?",
        "two/b.yaml:18:63: error: token id 300 in 'input_ids' is outside the vocabulary (vocab_size 100: ids 0...99)",
    ]

    func testEveryProblemOfEveryFileInOneRunInFolderOrder() throws {
        try CLI.write(Self.badA, to: "two/a.yaml", in: dir)
        try CLI.write(Self.badB, to: "two/b.yaml", in: dir)
        let r = try CLI.run(["validate", "two"], cwd: dir)
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.errLines, Self.aLines + Self.bLines + ["4 errors in 2 files"])
    }

    func testFilesNamedExplicitlyKeepCommandLineOrder() throws {
        try CLI.write(Self.badA, to: "two/a.yaml", in: dir)
        try CLI.write(Self.badB, to: "two/b.yaml", in: dir)
        let r = try CLI.run(["validate", "two/b.yaml", "two/a.yaml"], cwd: dir)
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.errLines, Self.bLines + Self.aLines + ["4 errors in 2 files"])
    }

    // MARK: - Folders

    func testFolderRecursionTakesYamlAndYmlAndSkipsHiddenAndOtherFiles() throws {
        try CLI.write(CLI.manifest("top"), to: "m/top.yaml", in: dir)
        try CLI.write(CLI.manifest("deep"), to: "m/sub/deeper/deep.yml", in: dir)
        let broken = "kind: [\n"
        try CLI.write(broken, to: "m/.hidden/broken.yaml", in: dir)
        try CLI.write(broken, to: "m/sub/.git/broken.yml", in: dir)
        try CLI.write(broken, to: "m/.broken.yaml", in: dir)
        try CLI.write(broken, to: "m/notes.txt", in: dir)
        try CLI.write(broken, to: "m/old.yaml.bak", in: dir)
        try CLI.write(broken, to: "m/README.md", in: dir)
        var r = try CLI.run(["validate", "m"], cwd: dir)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, "2 manifests in 2 files: valid\n")

        r = try CLI.run(["validate", "--json", "m/"], cwd: dir)
        XCTAssertEqual(r.status, 0)
        let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let ms = try XCTUnwrap(o["manifests"] as? [[String: Any]])
        XCTAssertEqual(ms.map { $0["file"] as? String }, ["m/sub/deeper/deep.yml", "m/top.yaml"])
        XCTAssertEqual(ms.map { $0["name"] as? String }, ["deep", "top"])
    }

    func testEmptyFolderWarnsAndStillExitsZero() throws {
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("empty"), withIntermediateDirectories: true)
        let r = try CLI.run(["validate", "empty"], cwd: dir)
        XCTAssertEqual(r.status, 0)
        XCTAssertEqual(r.errLines, ["warning: no *.yaml or *.yml files in empty"])
        XCTAssertEqual(r.stdout, "0 manifests in 0 files: valid\n")
    }

    func testMultiDocumentFileCountsEveryManifest() throws {
        try CLI.write(CLI.manifest("first") + "---\n" + CLI.manifest("second"), to: "multi.yaml", in: dir)
        let r = try CLI.run(["validate", "--json", "multi.yaml"], cwd: dir)
        XCTAssertEqual(r.status, 0, r.stdout)
        let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let ms = try XCTUnwrap(o["manifests"] as? [[String: Any]])
        XCTAssertEqual(ms.map { $0["document"] as? Int }, [0, 1])
        XCTAssertEqual(ms.map { $0["name"] as? String }, ["first", "second"])
    }

    // MARK: - Duplicate names across files

    func testDuplicateNameAcrossFilesIsAnErrorAtTheSecondWithANoteAtTheFirst() throws {
        try CLI.write(CLI.manifest("same"), to: "d/a.yaml", in: dir)
        // The second file places the name elsewhere, so both positions are checked.
        try CLI.write("# leading comment\n\n" + CLI.manifest("same").replacingOccurrences(of: "name: same", with: "name:   same"),
                      to: "d/b.yaml", in: dir)
        let r = try CLI.run(["validate", "d"], cwd: dir)
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.errLines, [
            "d/b.yaml:6:11: error: metadata.name 'same' is already used by another manifest; names must be unique",
            "d/a.yaml:4:9: note: first used here",
            "1 error in 2 files",
        ])

        let j = try CLI.run(["validate", "--json", "d"], cwd: dir)
        XCTAssertEqual(j.status, 1)
        let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as? [String: Any])
        let d = try XCTUnwrap((o["diagnostics"] as? [[String: Any]])?.first)
        XCTAssertEqual(d["file"] as? String, "d/b.yaml")
        XCTAssertEqual(d["line"] as? Int, 6)
        XCTAssertEqual(d["column"] as? Int, 11)
        XCTAssertEqual(d["field"] as? String, "metadata.name")
        let note = try XCTUnwrap((d["notes"] as? [[String: Any]])?.first)
        XCTAssertEqual(note["file"] as? String, "d/a.yaml")
        XCTAssertEqual(note["line"] as? Int, 4)
        XCTAssertEqual(note["column"] as? Int, 9)
        XCTAssertEqual(note["message"] as? String, "first used here")
    }

    // MARK: - JSON

    func testJSONReportShape() throws {
        let text = """
            apiVersion: tsexport/v1
            kind: Export
            metadata:
              name: j
            spec:
              model: {class: BertModel, config: {vocab_size: 100}}
              inputs:
                tensors:
                  - {name: input_ids, from: values, values: [[1, 2, 3]]}
                  - {name: input_ids, from: values, values: [[1, 2, 3]]}

            """
        try CLI.write(text, to: "j.yaml", in: dir)
        let r = try CLI.run(["validate", "--json", "j.yaml"], cwd: dir)
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderr, "", "JSON mode prints nothing on stderr")
        let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(Set(o.keys), ["valid", "files", "manifests", "diagnostics"])
        XCTAssertEqual(o["valid"] as? Bool, false)
        XCTAssertEqual(o["files"] as? Int, 1)
        XCTAssertEqual((o["manifests"] as? [Any])?.count, 0)
        let ds = try XCTUnwrap(o["diagnostics"] as? [[String: Any]])
        XCTAssertEqual(ds.count, 1)
        let d = ds[0]
        XCTAssertEqual(Set(d.keys), ["file", "line", "column", "severity", "message", "field", "notes"])
        XCTAssertEqual(d["file"] as? String, "j.yaml")
        XCTAssertEqual(d["line"] as? Int, 10)
        XCTAssertEqual(d["column"] as? Int, 16)
        XCTAssertEqual(d["severity"] as? String, "error")
        XCTAssertEqual(d["message"] as? String, "tensor 'input_ids' is given twice; each forward() parameter gets one tensor")
        XCTAssertEqual(d["field"] as? String, "spec.inputs.tensors[1].name")
        let notes = try XCTUnwrap(d["notes"] as? [[String: Any]])
        XCTAssertEqual(notes.count, 1)
        XCTAssertEqual(Set(notes[0].keys), ["file", "line", "column", "message"])
        XCTAssertEqual(notes[0]["file"] as? String, "j.yaml")
        XCTAssertEqual(notes[0]["line"] as? Int, 9)
        XCTAssertEqual(notes[0]["column"] as? Int, 16)
        XCTAssertEqual(notes[0]["message"] as? String, "first given here")
    }

    func testJSONReportOfAValidFileAndOfAPositionlessError() throws {
        try CLI.write(CLI.manifest("ok"), to: "ok.yaml", in: dir)
        var r = try CLI.run(["validate", "--json", "ok.yaml"], cwd: dir)
        XCTAssertEqual(r.status, 0)
        var o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(o["valid"] as? Bool, true)
        XCTAssertEqual((o["diagnostics"] as? [Any])?.count, 0)
        let m = try XCTUnwrap((o["manifests"] as? [[String: Any]])?.first)
        XCTAssertEqual(Set(m.keys), ["name", "file", "document"])
        XCTAssertEqual(m["name"] as? String, "ok")
        XCTAssertEqual(m["file"] as? String, "ok.yaml")
        XCTAssertEqual(m["document"] as? Int, 0)

        r = try CLI.run(["validate", "--json", "missing.yaml"], cwd: dir)
        XCTAssertEqual(r.status, 1)
        o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let d = try XCTUnwrap((o["diagnostics"] as? [[String: Any]])?.first)
        XCTAssertTrue(d["file"] is NSNull)
        XCTAssertTrue(d["line"] is NSNull)
        XCTAssertTrue(d["column"] is NSNull)
        XCTAssertTrue(d["field"] is NSNull)
        XCTAssertEqual(d["message"] as? String, "no such file or directory: missing.yaml")
    }

    // MARK: - Output paths and the output root

    func testOutputDirThroughASymlinkLeavingTheRootIsRefused() throws {
        let root = dir.appendingPathComponent("root")
        let outside = dir.appendingPathComponent("outside")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: outside, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: root.appendingPathComponent("link").path, withDestinationPath: "../outside")
        try FileManager.default.createDirectory(at: root.appendingPathComponent("inner"), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: root.appendingPathComponent("alias").path, withDestinationPath: "inner")
        try CLI.write(CLI.manifest("sl", extraSpec: "  output:\n    dir: link/bundle\n"), to: "sl.yaml", in: dir)
        try CLI.write(CLI.manifest("ok", extraSpec: "  output:\n    dir: alias/bundle\n"), to: "ok.yaml", in: dir)

        let message = "sl.yaml:10:10: error: output.dir 'link/bundle' goes through a symbolic link to \(outside.path), outside the output root"
        var r = try CLI.run(["validate", "--output-root", "root", "sl.yaml", "ok.yaml"], cwd: dir)
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.errLines, [message, "1 error in 2 files"])

        // Without --output-root the current directory is the root.
        r = try CLI.run(["validate", "../sl.yaml"], cwd: root)
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.errLines, ["../" + message, "1 error in 1 file"])

        // The same link is fine when the root is the folder above, which holds its target.
        // Relative to the folder above, 'link/bundle' names nothing that exists: no link is crossed.
        r = try CLI.run(["validate", "--output-root", dir.path, "sl.yaml"], cwd: dir)
        XCTAssertEqual(r.status, 0, r.stderr)
    }

    func testOutputRootDecidesWhatLeavesIt() throws {
        try CLI.write(CLI.manifest("up", extraSpec: "  output:\n    dir: ../up\n"), to: "up.yaml", in: dir)
        let r = try CLI.run(["validate", "--output-root", "a/b", "up.yaml"], cwd: dir)
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.errLines, [
            "up.yaml:10:10: error: output.dir '../up' leaves the output root through '..'; output paths must stay inside it",
            "1 error in 1 file",
        ])
        try CLI.write(CLI.manifest("res", extraSpec: "  output:\n    dir: .tsexport/x\n"), to: "res.yaml", in: dir)
        let r2 = try CLI.run(["validate", "res.yaml"], cwd: dir)
        XCTAssertEqual(r2.status, 1)
        XCTAssertEqual(r2.errLines.first, "res.yaml:10:10: error: output.dir '.tsexport/x' is inside .tsexport/, which tsexport keeps for staging and locks")
    }

    // MARK: - Opt-ins

    func testAllowRemoteCodeLetsTrustRemoteCodeThrough() throws {
        let text = CLI.manifest("remote").replacingOccurrences(of: "model: {class: BertModel,", with: "model: {class: BertModel, trust_remote_code: true,")
        try CLI.write(text, to: "remote.yaml", in: dir)
        var r = try CLI.run(["validate", "remote.yaml"], cwd: dir)
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.errLines, [
            "remote.yaml:6:48: error: trust_remote_code: true runs Python code from the model's repository; refused unless the command line also says --allow-remote-code",
            "1 error in 1 file",
        ])
        r = try CLI.run(["validate", "--allow-remote-code", "remote.yaml"], cwd: dir)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, "1 manifest in 1 file: valid\n")
        // --allow-remote-code does not also allow pickle.
        try CLI.write(text.replacingOccurrences(of: "trust_remote_code: true,", with: "trust_remote_code: true, allow_pickle: true,"), to: "both.yaml", in: dir)
        r = try CLI.run(["validate", "--allow-remote-code", "both.yaml"], cwd: dir)
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.errLines.count, 2)
        XCTAssertTrue(r.errLines[0].contains("allow_pickle: true lets pickle weights run code"), r.stderr)
        r = try CLI.run(["validate", "--allow-remote-code", "--allow-pickle", "both.yaml"], cwd: dir)
        XCTAssertEqual(r.status, 0, r.stderr)
    }

    // MARK: - schema

    func testSchemaCommandPrintsTheSchemaFileByteForByte() throws {
        let r = try CLI.run(["schema"], cwd: dir)
        XCTAssertEqual(r.status, 0)
        XCTAssertEqual(r.stderr, "")
        let file = try String(contentsOf: CLI.repo.appendingPathComponent("schemas/export.schema.json"), encoding: .utf8)
        XCTAssertEqual(r.stdout.trimmingCharacters(in: .newlines), file.trimmingCharacters(in: .newlines),
                       "tsexport schema differs from schemas/export.schema.json (rebuild after editing the schema)")
        let parsed = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(parsed["$schema"] as? String, "https://json-schema.org/draft/2020-12/schema")
        XCTAssertEqual(parsed["$id"] as? String, "https://tsexport.dev/schemas/export.schema.json")
    }
}
