import Foundation
import JSON
import TSExportCLI
import XCTest

/// Every manifest in specs/ is applied (one apply over the folder) and each artifact is compared with the eager
/// model in a separate Python; deploy outputs are checked with Triton's own config schema and TorchServe's archive
/// layout.
final class SpecsApplyTests: XCTestCase {
    func testEverySpecAppliesAndMatchesEager() throws {
        let root = try Harness.tempDir("specs")
        defer { try? FileManager.default.removeItem(at: root) }
        let specs = Harness.repo.appendingPathComponent("specs")
        let (code, out) = try Harness.apply([specs.path, "--output-root", root.path, "--jobs", "2"])
        XCTAssertEqual(code, 0, out.stderr + out.stdout)
        let build = root.appendingPathComponent("build")
        let bundles = try FileManager.default.contentsOfDirectory(atPath: build.path).filter {
            FileManager.default.fileExists(atPath: build.appendingPathComponent("\($0)/record.json").path)
        }
        XCTAssertTrue(bundles.contains("bert-base-guide") && bundles.contains("tiny-bert-text"), "\(bundles)")
        for name in bundles.sorted() {
            let bundle = build.appendingPathComponent(name)
            let record = try JSONValue(parsing: Data(contentsOf: bundle.appendingPathComponent("record.json")))
            XCTAssertNil(record["manifest_file"], "the record names no path; build.json does")
            let build = try JSONValue(parsing: Data(contentsOf: bundle.appendingPathComponent("build.json")))
            guard case .string(let manifestFile)? = build["manifest_file"] else { return XCTFail("no manifest_file in \(name)'s build.json") }
            let cmp = try Harness.compare(bundle: bundle, manifestDir: URL(fileURLWithPath: manifestFile).deletingLastPathComponent())
            XCTAssertLessThan(cmp["max_abs_error"]?.doubleValue ?? 1, 1e-3, name)
        }

        try checkGuideBundle(root: root, spec: specs.appendingPathComponent("bert-base-guide.yaml"))

        // Triton: the written config.pbtxt parses with Triton's ModelConfig and matches the record; 1/model.pt loads.
        let triton = try Harness.pythonJSON(["-c", Self.tritonCheck, build.appendingPathComponent("triton/tiny-bert-text").path,
                                             build.appendingPathComponent("tiny-bert-text/record.json").path])
        XCTAssertEqual(triton["platform"], "pytorch_libtorch")
        XCTAssertEqual(triton["inputs"], ["input_ids__0", "attention_mask__1", "token_type_ids__2"])
        XCTAssertEqual(triton["input_types"], ["TYPE_INT64", "TYPE_INT64", "TYPE_INT64"])
        XCTAssertEqual(triton["output_types"], ["TYPE_FP32"])
        XCTAssertEqual(triton["model_loads"], true)
        XCTAssertEqual(triton["dims_match_record"], true)

        // TorchServe: the .mar is a zip with MAR-INF/MANIFEST.json naming a serialized file that torch loads.
        let mar = try Harness.pythonJSON(["-c", Self.marCheck, build.appendingPathComponent("model-store/tiny-bert-text.mar").path])
        XCTAssertEqual(mar["model_name"], "tiny-bert-text")
        XCTAssertEqual(mar["loads"], true)
    }

    /// The guide's example (random BERT-base, values-based): record, parity, segment ids, no-op re-apply, verify.
    func checkGuideBundle(root: URL, spec: URL) throws {
        let bundle = root.appendingPathComponent("build/bert-base-guide")
        XCTAssertEqual(Harness.tree(bundle), ApplyEndToEndTests.bundleFiles)
        XCTAssertFalse(FileManager.default.fileExists(atPath: root.appendingPathComponent(".tsexport/staging").path), "no staging folder is left behind")
        XCTAssertFalse(FileManager.default.fileExists(atPath: root.appendingPathComponent(".tsexport/lock.json").path), "no lock is left behind")

        let record = try JSONValue(parsing: Data(contentsOf: bundle.appendingPathComponent("record.json")))
        XCTAssertEqual(record["input_signature"]?[0]?["name"], "input_ids")
        XCTAssertEqual(record["input_signature"]?[1]?["name"], "token_type_ids")
        XCTAssertEqual(record["input_signature"]?[0]?["shape"], [1, 14])
        // The default envelope: batch [1, 2] and sequence [1, 14] from the traced shape and the check shapes.
        XCTAssertEqual(record["parity"]?["verdict"], "valid across the envelope batch [1,2], sequence [1,14]")
        XCTAssertEqual(record["envelope"]?["verified"], .object([("batch", [1, 2]), ("sequence", [1, 14])]))
        let cases = record["parity"]?["cases"]?.arrayValue ?? []
        XCTAssertEqual(cases.first?["case"], "traced")
        XCTAssertTrue(cases.contains { $0["shape"] == [2, 14] }, "check shape [2, 14], a corner of the grid")
        XCTAssertEqual(cases.first { $0["case"] == "check0" }?["shape"], [1, 7])
        XCTAssertGreaterThanOrEqual(cases.count, 5, "the traced shape, the grid, interior points and both check shapes")
        for c in cases { XCTAssertEqual(c["passed"], true, "\(c)") }
        XCTAssertEqual(record["versions"]?["transformers"], "5.24.0")
        XCTAssertNotNil(record["model_sha256"])

        let cmp = try Harness.compare(bundle: bundle, manifestDir: spec.deletingLastPathComponent())
        XCTAssertLessThan(cmp["max_abs_error"]?.doubleValue ?? 1, 1e-4)
        XCTAssertEqual(cmp["sample_inputs"]?["input_ids"], .array([.array(ApplyEndToEndTests.guideIDs.map { .int($0) })]))
        XCTAssertEqual(cmp["segments_as_mask_differs"], true, "the segment ids must feed token_type_ids, not attention_mask")

        // A second apply is a no-op, and verify re-checks the bundle in a fresh process.
        let (again, out2) = try Harness.apply([spec.path, "--output-root", root.path])
        XCTAssertEqual(again, 0, out2.stderr)
        XCTAssertTrue(out2.stdout.contains("up to date"), out2.stdout)
        let (console, captured) = Harness.console()
        let verify = try Verify.parse([bundle.path, "--python", Harness.python])
        XCTAssertEqual(Verify.execute(verify, console: console), 0, captured.stderr + captured.stdout)
        XCTAssertTrue(captured.stdout.contains("verified"), captured.stdout)
    }

    static let tritonCheck = """
        import importlib.util, json, os, sys, torch, tritonclient
        from google.protobuf import text_format
        path = os.path.join(os.path.dirname(tritonclient.__file__), "grpc", "model_config_pb2.py")
        spec = importlib.util.spec_from_file_location("model_config_pb2", path)
        pb = importlib.util.module_from_spec(spec); spec.loader.exec_module(pb)
        config = text_format.Parse(open(sys.argv[1] + "/config.pbtxt").read(), pb.ModelConfig())
        record = json.load(open(sys.argv[2]))
        torch.jit.load(sys.argv[1] + "/1/model.pt")
        name = lambda t: pb.DataType.Name(t)
        batched = config.max_batch_size > 0
        want = [s["shape"][1:] if batched else s["shape"] for s in record["input_signature"]]
        print(json.dumps({"platform": config.platform, "inputs": [i.name for i in config.input],
            "input_types": [name(i.data_type) for i in config.input], "output_types": [name(o.data_type) for o in config.output],
            "dims_match_record": all(len(list(i.dims)) == len(w) for i, w in zip(config.input, want)), "model_loads": True}))
        """

    static let marCheck = """
        import io, json, sys, zipfile, torch
        z = zipfile.ZipFile(sys.argv[1])
        manifest = json.loads(z.read("MAR-INF/MANIFEST.json"))
        model = torch.jit.load(io.BytesIO(z.read(manifest["model"]["serializedFile"])))
        print(json.dumps({"model_name": manifest["model"]["modelName"], "loads": model is not None}))
        """
}
