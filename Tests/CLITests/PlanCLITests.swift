import Bundles
import Foundation
import JSON
import Plan
import TSExportCLI
import XCTest

/// `tsexport plan` as a process: exit codes with and without `--detailed-exitcode`, against an output root that
/// holds a bundle record (made here by hand, the way apply writes `record.json`), `--force`, `--replace`, `--json`.
final class PlanCLITests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = try CLI.tempDir("plan")
        try CLI.write(CLI.manifest("alpha"), to: "m/alpha.yaml", in: dir)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    /// `CLI.manifest("alpha")` as the normalised JSON document fingerprints hash (labels dropped).
    static func document(_ name: String, seed: Int? = nil) -> [String: Any] {
        var model: [String: Any] = ["class": "BertModel", "config": ["vocab_size": 100, "hidden_size": 32, "num_attention_heads": 4]]
        if let seed { model["seed"] = seed }
        return [
            "apiVersion": "tsexport/v1", "kind": "Export", "metadata": ["name": name],
            "spec": ["model": model, "inputs": ["tensors": [["name": "input_ids", "from": "values", "values": [[1, 2, 3]]]]]],
        ]
    }

    /// Writes a complete-looking bundle `<root>/build/<name>/` (every file of `Planner.bundleFiles`, the record's
    /// model_sha256 matching model.pt, build.json with the content) as apply would.
    func writeRecord(_ name: String, root: URL, document: [String: Any], versions: [String: String]? = nil, files: [String: String] = [:]) throws {
        let v = versions ?? ["worker": WorkerInfo.version, "torch": "2.5.1", "transformers": "4.46.0", "python": "3.11.2"]
        let bundle = root.appendingPathComponent("build/\(name)")
        try FileManager.default.createDirectory(at: bundle, withIntermediateDirectories: true)
        let model = Data("not really TorchScript".utf8)
        for f in Planner.bundleFiles where f != RecordSummary.fileName {
            try (f == "model.pt" ? model : Data()).write(to: bundle.appendingPathComponent(f))
        }
        let record: [String: Any] = [
            "fingerprint": "sha256:0000",
            "fingerprint_inputs": ["manifest": document, "files": files, "versions": ["worker": WorkerInfo.version]],
            "versions": v,
            "model_sha256": Digest.sha256(model),
        ]
        try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys]).write(to: bundle.appendingPathComponent("record.json"))
        let build = BuildInfo.json(content: try BundleContent.entries(of: bundle), deployments: [], facts: [])
        try Data(build.serialized(pretty: true).utf8).write(to: bundle.appendingPathComponent(BundleContent.buildFile))
    }

    func testCreateWhenNoBundle() throws {
        var r = try CLI.run(["plan", "--output-root", "out", "m"], cwd: dir)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.hasPrefix("+ create alpha  (m/alpha.yaml:4) → out/build/alpha\n"), r.stdout)
        XCTAssertTrue(r.stdout.hasSuffix("Plan: 1 to create, 0 to rebuild, 0 up to date.\n"), r.stdout)
        XCTAssertEqual(r.stderr, "")
        r = try CLI.run(["plan", "--detailed-exitcode", "--output-root", "out", "m"], cwd: dir)
        XCTAssertEqual(r.status, 2, "changes pending")
    }

    func testUpToDateExitsZeroWithDetailedExitcode() throws {
        let out = dir.appendingPathComponent("out")
        try writeRecord("alpha", root: out, document: Self.document("alpha"))
        var r = try CLI.run(["plan", "--detailed-exitcode", "--output-root", "out", "m"], cwd: dir)
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertEqual(r.stdout, "= up to date alpha  (m/alpha.yaml:4) → out/build/alpha\nPlan: 0 to create, 0 to rebuild, 1 up to date.\n")

        // Labels select manifests but do not change the artifact; comments and layout do not either.
        let relabelled = "# a comment\n" + CLI.manifest("alpha").replacingOccurrences(of: "  name: alpha\n", with: "  name: alpha\n  labels: {team: search}\n")
        try CLI.write(relabelled, to: "m/alpha.yaml", in: dir)
        r = try CLI.run(["plan", "--detailed-exitcode", "--output-root", "out", "m"], cwd: dir)
        XCTAssertEqual(r.status, 0, r.stdout)

        // --selector picks it; a selector that matches nothing plans nothing.
        r = try CLI.run(["plan", "--detailed-exitcode", "--output-root", "out", "--selector", "team=search", "m"], cwd: dir)
        XCTAssertEqual(r.status, 0)
        r = try CLI.run(["plan", "--detailed-exitcode", "--output-root", "out", "--selector", "team=other", "m"], cwd: dir)
        XCTAssertEqual(r.status, 0)
        XCTAssertEqual(r.stdout, "Plan: 0 to create, 0 to rebuild, 0 up to date.\n")

        // --force and --replace rebuild it, saying why.
        r = try CLI.run(["plan", "--detailed-exitcode", "--force", "--output-root", "out", "m"], cwd: dir)
        XCTAssertEqual(r.status, 2)
        XCTAssertTrue(r.stdout.hasPrefix("~ rebuild alpha  (m/alpha.yaml:5) → out/build/alpha\n    because --force\n    load "), r.stdout)
        r = try CLI.run(["plan", "--detailed-exitcode", "--replace", "alpha", "--output-root", "out", "m"], cwd: dir)
        XCTAssertEqual(r.status, 2)
        XCTAssertTrue(r.stdout.contains("    because --replace alpha\n"), r.stdout)
        r = try CLI.run(["plan", "--replace", "alhpa", "--output-root", "out", "m"], cwd: dir)
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderr, "error: no manifest is named 'alhpa'; did you mean 'alpha'?\n")
    }

    func testChangedFieldAndVersionAreReasons() throws {
        let out = dir.appendingPathComponent("out")
        try writeRecord("alpha", root: out, document: Self.document("alpha", seed: 7),
                        versions: ["worker": "0.9.0", "torch": "2.5.1"])
        try CLI.write(CLI.manifest("alpha").replacingOccurrences(of: "model: {class: BertModel,", with: "model: {class: BertModel, seed: 8,"),
                      to: "m/alpha.yaml", in: dir)
        let r = try CLI.run(["plan", "--detailed-exitcode", "--output-root", "out", "m"], cwd: dir)
        XCTAssertEqual(r.status, 2, r.stderr)
        XCTAssertTrue(r.stdout.hasPrefix("""
            ~ rebuild alpha  (m/alpha.yaml:4) → out/build/alpha
                because spec.model.seed: 7 → 8
                because worker: 0.9.0 → \(WorkerInfo.version)
                load      load BertModel, random initialisation from config (seed 8), dtype float32

            """), r.stdout)
        XCTAssertTrue(r.stdout.hasSuffix("Plan: 0 to create, 1 to rebuild, 0 up to date.\n"), r.stdout)
    }

    func testInvalidManifestsExitOneEvenWithDetailedExitcode() throws {
        try CLI.write("kind: [\n", to: "m/broken.yaml", in: dir)
        let r = try CLI.run(["plan", "--detailed-exitcode", "--output-root", "out", "m"], cwd: dir)
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stdout, "")
        XCTAssertTrue(r.stderr.hasPrefix("m/broken.yaml:2:1: error: "), r.stderr)
    }

    func testJSONPlanDecodesToThePlanValue() throws {
        let r = try CLI.run(["plan", "--json", "--output-root", "out", "m"], cwd: dir)
        XCTAssertEqual(r.status, 0, r.stderr)
        let plan = try JSONDecoder().decode(Plan.self, from: Data(r.stdout.utf8))
        XCTAssertEqual(plan.outputRoot, dir.appendingPathComponent("out").path)
        XCTAssertEqual(plan.entries.map(\.name), ["alpha"])
        let e = plan.entries[0]
        XCTAssertEqual(e.action, .create)
        XCTAssertEqual(e.file, "m/alpha.yaml")
        XCTAssertEqual(e.line, 4)
        XCTAssertEqual(e.bundle, dir.appendingPathComponent("out/build/alpha").path)
        XCTAssertEqual(e.steps.map(\.kind), [.load, .trace, .serialize, .verify])
        XCTAssertTrue(e.fingerprint.hasPrefix("sha256:"))
        for s in e.steps { for o in s.outputs { XCTAssertTrue(o.hasPrefix(plan.outputRoot + "/"), o) } }
        XCTAssertEqual(PlanRendererJSONProbe.reencode(plan), r.stdout.trimmingCharacters(in: .newlines))
    }

    /// The executable and the in-process command print the same thing.
    func testInProcessCommandMatchesTheExecutable() throws {
        // The in-process commands see this process's environment: give them the executable's (no TSEXPORT_PYTHON, the
        // isolated cache), so neither asks a Python runtime anything.
        let saved = ["TSEXPORT_PYTHON", "TSEXPORT_CACHE_DIR"].map { ($0, ProcessInfo.processInfo.environment[$0]) }
        unsetenv("TSEXPORT_PYTHON")
        setenv("TSEXPORT_CACHE_DIR", CLI.isolatedCache, 1)
        defer { for (k, v) in saved { if let v { setenv(k, v, 1) } else { unsetenv(k) } } }
        let exe = try CLI.run(["validate", "m"], cwd: dir)
        var outLines: [String] = [], errLines: [String] = []
        let console = Console(out: { outLines.append($0) }, err: { errLines.append($0) }, color: false, colorOut: false)
        let savedDirectory = FileManager.default.currentDirectoryPath
        XCTAssertTrue(FileManager.default.changeCurrentDirectoryPath(dir.path))
        defer { FileManager.default.changeCurrentDirectoryPath(savedDirectory) }
        let code = Validate.execute(try ManifestOptions.parse(["m"]), console: console)
        XCTAssertEqual(code, exe.status)
        XCTAssertEqual(errLines.map { $0 + "\n" }.joined(), exe.stderr)
        XCTAssertEqual(outLines.joined(separator: "\n") + "\n", exe.stdout)

        outLines = []
        errLines = []
        let planCode = PlanCommand.execute(
            try ManifestOptions.parse(["--output-root", "out", "m"]), selection: try SelectionOptions.parse([]),
            detailedExitcode: true, console: console)
        XCTAssertEqual(planCode, 2)
        let planExe = try CLI.run(["plan", "--output-root", "out", "m"], cwd: dir)
        XCTAssertEqual(outLines.joined(separator: "\n") + "\n", planExe.stdout)
    }
}

enum PlanRendererJSONProbe {
    static func reencode(_ plan: Plan) -> String { PlanRenderer.json(plan) }
}
