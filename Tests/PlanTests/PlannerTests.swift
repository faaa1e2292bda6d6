import Bundles
import Foundation
import JSON
import Manifest
import Plan
import XCTest

/// The pure planner on real manifests: the steps per manifest, create / up to date / rebuild with every reason,
/// --force and --replace, and both renderers.
final class PlannerTests: XCTestCase {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let specs = repo.appendingPathComponent("specs")
    /// An output root that need not exist: planning never touches it.
    static let root = URL(fileURLWithPath: "/srv/tsexport-plan-tests/out")

    // MARK: - Helpers

    static func loadSpecs() throws -> [Manifest] {
        let result = ManifestLoader(options: ValidationOptions(outputRoot: root)).validate(paths: [specs.path])
        XCTAssertEqual(result.diagnostics.filter { $0.severity == .error }, [], "specs/ must be valid")
        return result.manifests
    }

    static func spec(_ name: String) throws -> Manifest {
        try XCTUnwrap(loadSpecs().first { $0.name == name }, "specs/ has no manifest named \(name)")
    }

    /// Loads one manifest from text (its local paths resolve against specs/).
    static func manifest(_ text: String, file: String = "m.yaml") throws -> Manifest {
        let (ms, ds) = ManifestLoader(options: ValidationOptions(outputRoot: root)).load(bytes: Data(text.utf8), file: file, directory: specs)
        XCTAssertEqual(ds, [], "test manifest must be valid")
        return try XCTUnwrap(ms.first)
    }

    static let deployText = """
        apiVersion: tsexport/v1
        kind: Export
        metadata:
          name: small
          labels: {team: search}
        spec:
          model:
            class: BertModel
            config: {vocab_size: 100, hidden_size: 32, num_attention_heads: 4}
            seed: 7
          inputs:
            tensors:
              - {name: input_ids, from: values, values: [[1, 2, 3]]}
              - {name: attention_mask, from: ones, shape: [1, 3]}
          trace:
            check_shapes: [[1, 7], [2, 3]]
          output:
            dir: out/./small/../small-bundle
            deploy:
              - kind: directory
              - kind: triton
                repository: build/triton
              - kind: torchserve
                store: build/model-store

        """

    static func fingerprint(_ m: Manifest, files: [String: String] = [:], versions: [String: String] = ["worker": WorkerInfo.version]) -> FingerprintInputs {
        FingerprintInputs(manifest: FingerprintInputs.normalise(m.document), files: files, versions: versions)
    }

    /// The record a bundle built from these fingerprint inputs would hold.
    static func record(_ fp: FingerprintInputs, versions: [String: String]? = nil) -> RecordSummary {
        var v = fp.versions
        v["torch"] = "2.5.1"
        v["transformers"] = "4.46.3"
        return RecordSummary(fingerprint: fp.fingerprint, manifest: fp.manifest, inputFiles: fp.files, versions: versions ?? v, modelSHA256: nil)
    }

    func plan(_ ms: [Manifest], fingerprints: [String: FingerprintInputs] = [:], existing: [String: RecordSummary] = [:],
              unavailable: [String: String]? = nil, force: Bool = false, replace: Set<String> = []) -> Plan {
        Planner().plan(PlannerInput(manifests: ms, outputRoot: Self.root, fingerprints: fingerprints, existing: existing,
                                    unavailableTargets: unavailable, force: force, replace: replace))
    }

    // MARK: - Steps

    func testSpecsPlanTheFourStepsPlusOneDeployPerEntryWithAbsoluteOutputsUnderTheRoot() throws {
        let ms = try Self.loadSpecs()
        XCTAssertGreaterThanOrEqual(ms.count, 2)
        let p = plan(ms)
        XCTAssertEqual(p.outputRoot, Self.root.path)
        XCTAssertEqual(p.entries.map(\.name), ms.map(\.name), "one entry per manifest, in order")
        for (m, e) in zip(ms, p.entries) {
            XCTAssertEqual(e.action, .create, e.name)
            XCTAssertEqual(e.reasons, [])
            XCTAssertEqual(e.file, m.file)
            XCTAssertEqual(e.line, m.locations.location(of: "metadata.name").line)
            XCTAssertEqual(e.bundle, Self.root.appendingPathComponent(OutputPaths.normalise(m.output.dir)).path)
            let deploys = m.output.deploy.count
            XCTAssertEqual(e.steps.map(\.kind), [.load, .trace, .serialize, .verify] + Array(repeating: .deploy, count: deploys), e.name)
            for s in e.steps {
                for o in s.outputs {
                    XCTAssertTrue(o.hasPrefix(Self.root.path + "/"), "\(e.name) \(s.kind): \(o) is not under the output root")
                    XCTAssertFalse(o.contains("/./") || o.contains("/../"), o)
                }
            }
            XCTAssertEqual(e.steps[2].outputs, Planner.bundleFiles.map { e.bundle + "/" + $0 })
            XCTAssertEqual(e.steps[3].inputs, [e.bundle + "/model.pt"])
            XCTAssertEqual(e.steps[3].outputs, [e.bundle + "/record.json"])
            XCTAssertEqual(e.steps[0].description.hasPrefix("load \(m.model.className), "), true, e.steps[0].description)
        }
    }

    func testTheGuideSpec() throws {
        let m = try Self.spec("bert-base-guide")
        let e = try XCTUnwrap(plan([m]).entries.first)
        XCTAssertEqual(e.bundle, Self.root.path + "/build/bert-base-guide")
        XCTAssertEqual(e.steps[0].description, "load BertModel, random initialisation from config (seed 0), dtype float32")
        XCTAssertEqual(e.steps[0].inputs, [])
        XCTAssertTrue(e.steps[1].description.hasPrefix("torch.jit.trace on cpu with input_ids (values), token_type_ids (values), "), e.steps[1].description)
        // The default envelope: from 1 to the largest of the traced shape [1, 14] and the check shapes.
        XCTAssertTrue(e.steps[3].description.hasPrefix(
            "reload model.pt in a fresh process, compare with the eager model over the envelope: batch [1, 2] (default), sequence [1, 14] (default); 6 points (atol 1e-05, rtol 0.0001)"),
            e.steps[3].description)
        // [2, 14] is a corner of the grid already: checked there once, as check 1.
        XCTAssertEqual(e.envelope?.points.filter { $0.role == .check }.map(\.name), ["p3", "check0"])
        XCTAssertEqual(e.envelope?.points.filter { $0.role == .check }.map(\.checkIndex), [1, 0])
    }

    func testTheTokenizerSpecReadsItsTokenizerFolder() throws {
        let m = try Self.spec("tiny-bert-text")
        let e = try XCTUnwrap(plan([m]).entries.first)
        XCTAssertEqual(e.bundle, Self.root.path + "/build/tiny-bert-text")
        XCTAssertEqual(e.steps[1].inputs, [Self.specs.path + "/tokenizers/tiny-bert"])
        XCTAssertTrue(e.steps[1].description.hasPrefix("torch.jit.trace on cpu with input_ids (text), attention_mask (text), token_type_ids (values), "))
        XCTAssertEqual(e.steps[0].description, "load BertForMaskedLM, random initialisation from config (seed 7), dtype float32")
    }

    func testEveryStepOfADeployingManifestExactly() throws {
        let m = try Self.manifest(Self.deployText)
        let e = try XCTUnwrap(plan([m]).entries.first)
        let r = Self.root.path, b = r + "/out/small-bundle"
        XCTAssertEqual(e.bundle, b, "output.dir is normalised lexically")
        XCTAssertEqual(e.line, 4)
        let descriptions = e.steps.map(\.description)
        XCTAssertEqual(descriptions[0], "load BertModel, random initialisation from config (seed 7), dtype float32")
        XCTAssertEqual(descriptions[1], "torch.jit.trace on cpu with input_ids (values), attention_mask (ones), strict (tracer warnings must be covered by the envelope), tuple outputs, tied weights untied")
        XCTAssertEqual(descriptions[2], "torch.jit.save with the record embedded; staged, then moved into place")
        XCTAssertTrue(descriptions[3].hasPrefix("reload model.pt in a fresh process, compare with the eager model over the envelope: batch [1, 2] (default), sequence [1, 7] (default); "), descriptions[3])
        XCTAssertEqual(Array(descriptions[4...]), [
            "directory: the bundle itself",
            "triton: model repository entry, platform pytorch_libtorch, max_batch_size 2 (lower if the default envelope narrows in verification)",
            "torchserve: .mar archive made by torch-model-archiver",
        ])
        XCTAssertEqual(e.steps.map(\.inputs), [[], [], [], [b + "/model.pt"], [], [b + "/model.pt"], [b + "/model.pt"]])
        XCTAssertEqual(e.steps.map(\.outputs), [
            [], [], [b + "/model.pt", b + "/record.json", b + "/sample_inputs.safetensors", b + "/reference_outputs.safetensors"],
            [b + "/record.json"], [b],
            [r + "/build/triton/small/config.pbtxt", r + "/build/triton/small/1/model.pt"], [r + "/build/model-store/small.mar"],
        ])
        // The exact requests: every default resolved, every path absolute.
        let staging = r + "/.tsexport/staging/small.staging"
        XCTAssertEqual(e.steps.map { $0.request?["op"]?.stringValue }, [nil, "export", nil, "verify_bundle", nil, "deploy", "deploy"])
        let job = try XCTUnwrap(e.steps[1].request?["job"])
        XCTAssertEqual(job["staging_dir"], .string(staging))
        XCTAssertEqual(job["trace"]?["api"], "torch.jit.trace")
        XCTAssertEqual(job["trace"]?["tolerance"], .object([("atol", .double(1e-5)), ("rtol", .double(1e-4)), ("min_cosine", .null)]))
        XCTAssertEqual(job["trace"]?["float32_reference"], .bool(false))
        XCTAssertEqual(job["target"]?["quantize"], .null)
        XCTAssertEqual(job["model"]?["attn_implementation"], "eager")
        XCTAssertEqual(job["inputs"]?["tokenizer_revision"], .null)
        XCTAssertEqual(job["trace"]?["envelope"]?["pad_masks"], .bool(true))
        XCTAssertEqual(e.steps[3].request, .object([("op", "verify_bundle"), ("dir", .string(staging)),
                                                      ("tolerance", .object([("atol", .double(1e-5)), ("rtol", .double(1e-4)), ("min_cosine", .null)])),
                                                      ("encode_check", .null)]))
        XCTAssertEqual(e.steps[5].request?["max_batch_size"], 2)
        XCTAssertEqual(e.steps[5].request?["variable_dims"], .bool(true))
        XCTAssertEqual(e.steps[5].request?["dest"], .string(r + "/.tsexport/staging/small.deploy-1.staging"))
        // Where each staged deploy is installed: the Triton model folder, the .mar file; nothing for the others.
        XCTAssertEqual(e.steps.map(\.install), [nil, nil, nil, nil, nil, r + "/build/triton/small", r + "/build/model-store/small.mar"])
        let json = try JSONValue(parsing: PlanRenderer.json(Plan(outputRoot: r, entries: [e])))
        XCTAssertEqual(json["entries"]?[0]?["steps"]?[5]?["install"], .string(r + "/build/triton/small"), "plan --json shows the destination")
        XCTAssertNil(json["entries"]?[0]?["steps"]?[4]?["install"])
    }

    func testReducedPrecisionRequestsCarryTheQualityGateAndTheQuantizePolicy() throws {
        let base = Self.deployText.replacingOccurrences(of: "    seed: 7\n", with: "    seed: 7\n    dtype: bfloat16\n")
        let bf16 = try XCTUnwrap(plan([try Self.manifest(base)]).entries.first)
        let job = try XCTUnwrap(bf16.steps[1].request?["job"])
        // bfloat16: its own tolerance, the default gate 0.99, float32 references, nothing quantized
        XCTAssertEqual(job["trace"]?["tolerance"], .object([("atol", .double(5e-2)), ("rtol", .double(5e-2)), ("min_cosine", .double(0.99))]))
        XCTAssertEqual(job["trace"]?["float32_reference"], .bool(true))
        XCTAssertEqual(job["target"]?["quantize"], .null)
        XCTAssertEqual(bf16.steps[3].request?["tolerance"], job["trace"]?["tolerance"])
        XCTAssertTrue(bf16.steps[3].description.contains("(atol 0.05, rtol 0.05); and with the float32 eager model: cosine per output row at least 0.99"), bf16.steps[3].description)

        let quantized = Self.deployText.replacingOccurrences(of: "  output:\n", with: "    tolerance: {min_cosine: 0.98}\n  target: {quantize: dynamic_int8}\n  output:\n")
        let q = try XCTUnwrap(plan([try Self.manifest(quantized)]).entries.first)
        let qjob = try XCTUnwrap(q.steps[1].request?["job"])
        XCTAssertEqual(qjob["target"]?["quantize"], .object([
            ("scheme", "dynamic_int8"), ("library", "torch.ao"), ("activations", "per_tensor"), ("activation_mapping", "asymmetric"),
            ("modules", .array(["torch.nn.Linear"])), ("weights", "per_channel"),
            ("select_min_cosine", .double(0.99)),  // halfway between the gate 0.98 and 1
        ]))
        XCTAssertEqual(qjob["aoti"], .null)
        XCTAssertEqual(qjob["trace"]?["tolerance"], .object([("atol", .double(1e-5)), ("rtol", .double(1e-4)), ("min_cosine", .double(0.98))]))
        XCTAssertEqual(qjob["trace"]?["float32_reference"], .bool(true))
        XCTAssertEqual(qjob["model"]?["dtype"], "float32")
        XCTAssertEqual(qjob["extra_record"]?["target"]?["quantize"], "dynamic_int8")
        XCTAssertTrue(q.steps[1].description.hasPrefix("dynamic int8 quantization with torch.ao (per-tensor activations, per-channel weights) of the Linear layers that together keep cosine 0.99 to the float32 model on the traced inputs, the rest float32; then torch.jit.trace on cpu"), q.steps[1].description)
        // quantize is part of the manifest, so of the fingerprint
        XCTAssertNotEqual(q.fingerprint, try XCTUnwrap(plan([try Self.manifest(Self.deployText)]).entries.first).fingerprint)
    }

    func testHubAndLocalSourcesAndTargetsInTheStepDescriptions() throws {
        let text = """
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: hub}
            spec:
              model: {class: AutoModel, pretrained: prajjwal1/bert-tiny, revision: main, dtype: bfloat16, torchscript: false}
              inputs:
                tokenizer: ./tokenizers/tiny-bert
                text: hello world
                tensors: [{name: input_ids, from: text}]
              trace: {strict: false}
              target: {hardware: inf2}

            """
        let m = try Self.manifest(text)
        let e = try XCTUnwrap(plan([m]).entries.first)
        XCTAssertEqual(e.steps[0], PlanStep(kind: .load, description: "load AutoModel, pretrained weights from the hub id prajjwal1/bert-tiny at revision main, dtype bfloat16",
                                            inputs: ["hub:prajjwal1/bert-tiny@main"], outputs: []))
        XCTAssertEqual(e.steps[1].description, "torch_neuronx.trace on inf2 with input_ids (text), warnings recorded")
        XCTAssertEqual(e.steps[1].inputs, [Self.specs.path + "/tokenizers/tiny-bert"])
        XCTAssertEqual(e.steps[1].request?["job"]?["trace"]?["api"], "torch_neuronx.trace")
        XCTAssertEqual(e.steps[1].request?["job"]?["trace"]?["tolerance"], .object([("atol", .double(5e-2)), ("rtol", .double(5e-2)), ("min_cosine", .double(0.99))]), "bfloat16 default tolerances and quality gate")
        // The tokenizer is a local folder, not the hub model: no revision; a text tensor's length is the traced one.
        XCTAssertEqual(e.steps[1].request?["job"]?["inputs"]?["tokenizer_revision"], .null)
        XCTAssertTrue(e.steps[3].description.contains("batch [1, 1] (default), sequence [1, traced] (default); 2 points (atol 0.05, rtol 0.05)"), e.steps[3].description)
    }

    // MARK: - create / up to date / rebuild

    func testCreateWhenThereIsNoRecord() throws {
        let m = try Self.manifest(Self.deployText)
        let fp = Self.fingerprint(m)
        let e = try XCTUnwrap(plan([m], fingerprints: ["small": fp]).entries.first)
        XCTAssertEqual(e.action, .create)
        XCTAssertEqual(e.reasons, [])
        XCTAssertEqual(e.fingerprint, fp.fingerprint)
        XCTAssertTrue(plan([m]).hasChanges)
    }

    func testAOTIAloneWithQuantizePlansTorchaoAndFreezingAndFingerprintsThePolicy() throws {
        let text = Self.deployText
            .replacingOccurrences(of: "  output:\n", with: "  target: {quantize: dynamic_int8}\n  output:\n    formats: [aoti]\n")
            .replacingOccurrences(of: "      - kind: triton\n        repository: build/triton\n      - kind: torchserve\n        store: build/model-store\n",
                                  with: "      - {kind: triton, repository: build/triton, format: aoti}\n")
        let m = try Self.manifest(text)
        let e = try XCTUnwrap(plan([m]).entries.first)
        let job = try XCTUnwrap(e.steps[1].request?["job"])
        XCTAssertEqual(job["formats"], .array(["aoti"]))
        XCTAssertEqual(job["aoti"], .object([("inductor_configs", .object([("freezing", .bool(true))]))]))
        XCTAssertEqual(job["target"]?["quantize"]?["library"], "torchao")
        XCTAssertEqual(job["target"]?["quantize"]?["activations"], "per_token")
        XCTAssertEqual(job["target"]?["quantize"]?["activation_mapping"], .string(WorkerRequests.torchaoActivationMapping))
        XCTAssertEqual(job["trace"]?["tolerance"], .object([("atol", .double(0.5)), ("rtol", .double(5e-2)), ("min_cosine", .double(0.99))]))
        XCTAssertTrue(e.steps[1].description.hasPrefix("torchao Int8DynamicActivationInt8WeightConfig (per-token \(WorkerRequests.torchaoActivationMapping) activations, per-channel weights) of the Linear layers"), e.steps[1].description)
        let bundle = URL(fileURLWithPath: e.bundle)
        XCTAssertEqual(e.steps[2].outputs, ["record.json", "sample_inputs.safetensors", "reference_outputs.safetensors", "model.pt2"].map { bundle.appendingPathComponent($0).path })
        XCTAssertTrue(e.steps[2].description.hasPrefix("torch.export (no_grad) over the envelope and AOTInductor (no_grad; freezing=true) into model.pt2, compile time unknown until the first build"), e.steps[2].description)
        XCTAssertEqual(e.steps[3].inputs, [bundle.appendingPathComponent("model.pt2").path])
        XCTAssertTrue(e.steps[3].description.hasPrefix("reload model.pt2 in a fresh process"), e.steps[3].description)
        XCTAssertEqual(Planner.policyInputs(m), ["policy.aoti.inductor_configs": "{\"freezing\":true}", "policy.aoti.compile_mode": "no_grad",
                                                 "policy.quantize.library": "torchao", "policy.quantize.activation_mapping": "asymmetric"])

        // the last build's compile time is the estimate; the policy is fingerprinted, so a record without it rebuilds
        var record = Self.record(Self.fingerprint(m))
        record.aotiCompileSeconds = 41.6
        let again = try XCTUnwrap(plan([m], existing: [m.name: record]).entries.first)
        XCTAssertEqual(again.action, .rebuild)
        XCTAssertEqual(again.reasons.map(\.subject), ["policy.aoti.compile_mode", "policy.aoti.inductor_configs", "policy.quantize.activation_mapping", "policy.quantize.library"])
        XCTAssertTrue(again.steps[2].description.contains("compile about 42 s (the last build's)"), again.steps[2].description)
        var fp = Self.fingerprint(m)
        for (k, v) in Planner.policyInputs(m) { fp.versions[k] = v }
        XCTAssertEqual(try XCTUnwrap(plan([m], existing: [m.name: Self.record(fp)]).entries.first).action, .upToDate)
    }

    func testUpToDateWhenTheRecordMatches() throws {
        let ms = try Self.loadSpecs()
        var fps: [String: FingerprintInputs] = [:]
        var records: [String: RecordSummary] = [:]
        for m in ms {
            let fp = Self.fingerprint(m, files: InputHasher().hashes(for: m))
            fps[m.name] = fp
            records[m.name] = Self.record(fp)
        }
        let p = plan(ms, fingerprints: fps, existing: records)
        XCTAssertEqual(p.entries.map(\.action), Array(repeating: .upToDate, count: ms.count))
        XCTAssertEqual(p.entries.flatMap(\.steps), [], "an up-to-date entry has no steps")
        XCTAssertEqual(p.entries.flatMap(\.reasons), [])
        XCTAssertFalse(p.hasChanges)
        // Versions the record holds but the current run does not know (no runtime probed) are not compared.
        XCTAssertEqual(records[ms[0].name]?.versions["torch"], "2.5.1")
    }

    func testLabelsAndFormattingDoNotChangeTheFingerprint() throws {
        let a = try Self.manifest(Self.deployText)
        let reformatted = Self.deployText
            .replacingOccurrences(of: "  labels: {team: search}\n", with: "  labels: {team: ranking, tier: gold}\n")
            .replacingOccurrences(of: "    config: {vocab_size: 100, hidden_size: 32, num_attention_heads: 4}\n",
                                  with: "    # a comment\n    config:\n      num_attention_heads: 0x4\n      hidden_size: 32\n      vocab_size: 100\n")
        let b = try Self.manifest("# leading comment\n" + reformatted)
        XCTAssertEqual(Self.fingerprint(a).fingerprint, Self.fingerprint(b).fingerprint)
        let e = try XCTUnwrap(plan([b], fingerprints: ["small": Self.fingerprint(b)], existing: ["small": Self.record(Self.fingerprint(a))]).entries.first)
        XCTAssertEqual(e.action, .upToDate)
        XCTAssertEqual(e.line, 5)
    }

    func testRebuildNamesEveryChangedField() throws {
        let old = try Self.manifest(Self.deployText)
        let new = try Self.manifest(Self.deployText
            .replacingOccurrences(of: "    seed: 7\n", with: "    seed: 8\n    dtype: float16\n")
            .replacingOccurrences(of: "    check_shapes: [[1, 7], [2, 3]]\n", with: "    check_shapes: [[1, 7]]\n    strict: false\n")
            .replacingOccurrences(of: "      - kind: directory\n", with: ""))
        let e = try XCTUnwrap(plan([new], fingerprints: ["small": Self.fingerprint(new)], existing: ["small": Self.record(Self.fingerprint(old))]).entries.first)
        XCTAssertEqual(e.action, .rebuild)
        XCTAssertEqual(e.reasons.map(\.summary), [
            "spec.model.seed: 7 → 8",
            "spec.model.dtype: (absent) → float16",
            "spec.trace.check_shapes: [[1,7],[2,3]] → [[1,7]]",
            "spec.trace.strict: (absent) → false",
            // Long values are cut to 57 characters and "...".
            "spec.output.deploy: [{\"kind\":\"directory\"},{\"kind\":\"triton\",\"repository\":\"buil... → [{\"kind\":\"triton\",\"repository\":\"build/triton\"},{\"kind\":\"t...",
        ])
        XCTAssertEqual(e.reasons.first, PlanReason(kind: .field, subject: "spec.model.seed", old: "7", new: "8"))
        XCTAssertEqual(e.steps.map(\.kind), [.load, .trace, .serialize, .verify, .deploy, .deploy])
        XCTAssertTrue(plan([new], existing: ["small": Self.record(Self.fingerprint(old))]).hasChanges)
    }

    func testRebuildWhenAFieldIsRemoved() throws {
        let old = try Self.manifest(Self.deployText)
        let new = try Self.manifest(Self.deployText.replacingOccurrences(of: "    seed: 7\n", with: ""))
        let e = try XCTUnwrap(plan([new], fingerprints: ["small": Self.fingerprint(new)], existing: ["small": Self.record(Self.fingerprint(old))]).entries.first)
        XCTAssertEqual(e.reasons, [PlanReason(kind: .field, subject: "spec.model.seed", old: "7", new: nil)])
        XCTAssertEqual(e.reasons[0].summary, "spec.model.seed: 7 → (absent)")
        XCTAssertEqual(e.steps[0].description, "load BertModel, random initialisation from config (seed 0), dtype float32")
    }

    func testRebuildNamesEveryChangedInputFile() throws {
        let m = try Self.spec("tiny-bert-text")
        let hashes = InputHasher().hashes(for: m)
        XCTAssertEqual(hashes.keys.sorted(), ["spec.inputs.tokenizer/tokenizer_config.json", "spec.inputs.tokenizer/vocab.txt"])
        let vocabHash = try XCTUnwrap(hashes["spec.inputs.tokenizer/vocab.txt"])
        XCTAssertEqual(vocabHash, Digest.sha256(try Data(contentsOf: Self.specs.appendingPathComponent("tokenizers/tiny-bert/vocab.txt"))))
        var recorded = hashes
        recorded["spec.inputs.tokenizer/vocab.txt"] = String(repeating: "a", count: 64)
        recorded["spec.inputs.tokenizer/special_tokens_map.json"] = String(repeating: "b", count: 64)
        recorded.removeValue(forKey: "spec.inputs.tokenizer/tokenizer_config.json")
        let old = Self.fingerprint(m, files: recorded)
        let cur = Self.fingerprint(m, files: hashes)
        XCTAssertNotEqual(old.fingerprint, cur.fingerprint)
        let e = try XCTUnwrap(plan([m], fingerprints: [m.name: cur], existing: [m.name: Self.record(old)]).entries.first)
        XCTAssertEqual(e.action, .rebuild)
        let configHash = try XCTUnwrap(hashes["spec.inputs.tokenizer/tokenizer_config.json"])
        XCTAssertEqual(e.reasons, [
            PlanReason(kind: .inputFile, subject: "spec.inputs.tokenizer/special_tokens_map.json", old: "bbbbbbbbbbbb", new: nil),
            PlanReason(kind: .inputFile, subject: "spec.inputs.tokenizer/tokenizer_config.json", old: nil, new: String(configHash.prefix(12))),
            PlanReason(kind: .inputFile, subject: "spec.inputs.tokenizer/vocab.txt", old: "aaaaaaaaaaaa", new: String(vocabHash.prefix(12))),
        ])
        XCTAssertEqual(e.reasons.map(\.summary), [
            "spec.inputs.tokenizer/special_tokens_map.json: bbbbbbbbbbbb → (absent)",
            "spec.inputs.tokenizer/tokenizer_config.json: (absent) → \(configHash.prefix(12))",
            "spec.inputs.tokenizer/vocab.txt: aaaaaaaaaaaa → \(vocabHash.prefix(12))",
        ])
    }

    func testRebuildNamesEveryChangedVersion() throws {
        let m = try Self.manifest(Self.deployText)
        let cur = Self.fingerprint(m, versions: ["worker": WorkerInfo.version, "torch": "2.6.0", "transformers": "4.46.3", "python": "3.12.1"])
        let rec = Self.record(cur, versions: ["worker": "0.9.0", "torch": "2.5.1", "transformers": "4.46.3", "numpy": "2.0.0"])
        let e = try XCTUnwrap(plan([m], fingerprints: ["small": cur], existing: ["small": rec]).entries.first)
        XCTAssertEqual(e.action, .rebuild)
        XCTAssertEqual(e.reasons.map(\.summary), ["python: (absent) → 3.12.1", "torch: 2.5.1 → 2.6.0", "worker: 0.9.0 → \(WorkerInfo.version)"])
        XCTAssertEqual(e.reasons.map(\.kind), [.version, .version, .version])
    }

    func testReasonsComeInOrderFieldsThenFilesThenVersions() throws {
        let m = try Self.manifest(Self.deployText)
        let old = try Self.manifest(Self.deployText.replacingOccurrences(of: "seed: 7", with: "seed: 6"))
        let cur = Self.fingerprint(m, files: ["spec.model.pretrained/config.json": "1111111111111111"], versions: ["worker": "2.0.0"])
        let rec = Self.record(Self.fingerprint(old, files: [:], versions: ["worker": "1.0.0"]))
        let e = try XCTUnwrap(plan([m], fingerprints: ["small": cur], existing: ["small": rec]).entries.first)
        XCTAssertEqual(e.reasons.map(\.kind), [.field, .inputFile, .version])
        XCTAssertEqual(e.reasons.map(\.summary), ["spec.model.seed: 6 → 7", "spec.model.pretrained/config.json: (absent) → 111111111111", "worker: 1.0.0 → 2.0.0"])
    }

    // MARK: - --force and --replace

    func testForceAndReplaceRebuildWhatIsUpToDate() throws {
        let a = try Self.manifest(Self.deployText)
        let b = try Self.manifest(Self.deployText.replacingOccurrences(of: "name: small", with: "name: other")
            .replacingOccurrences(of: "small-bundle", with: "other-bundle"), file: "n.yaml")
        let fps = ["small": Self.fingerprint(a), "other": Self.fingerprint(b)]
        let recs = ["small": Self.record(Self.fingerprint(a)), "other": Self.record(Self.fingerprint(b))]

        var p = plan([a, b], fingerprints: fps, existing: recs)
        XCTAssertEqual(p.entries.map(\.action), [.upToDate, .upToDate])

        p = plan([a, b], fingerprints: fps, existing: recs, force: true)
        XCTAssertEqual(p.entries.map(\.action), [.rebuild, .rebuild])
        XCTAssertEqual(p.entries.map(\.reasons), Array(repeating: [PlanReason(kind: .forced, subject: "--force")], count: 2))
        XCTAssertEqual(p.entries[0].reasons[0].summary, "--force")
        XCTAssertEqual(p.entries[0].steps.count, 7)

        p = plan([a, b], fingerprints: fps, existing: recs, replace: ["other"])
        XCTAssertEqual(p.entries.map(\.action), [.upToDate, .rebuild])
        XCTAssertEqual(p.entries[1].reasons, [PlanReason(kind: .forced, subject: "--replace other")])
        XCTAssertEqual(p.entries[1].reasons[0].summary, "--replace other")
    }

    func testForceKeepsCreateAndRealReasons() throws {
        let a = try Self.manifest(Self.deployText)
        let old = try Self.manifest(Self.deployText.replacingOccurrences(of: "seed: 7", with: "seed: 6"))
        var p = plan([a], fingerprints: ["small": Self.fingerprint(a)], force: true)
        XCTAssertEqual(p.entries[0].action, .create)
        XCTAssertEqual(p.entries[0].reasons, [])
        p = plan([a], fingerprints: ["small": Self.fingerprint(a)], existing: ["small": Self.record(Self.fingerprint(old))], force: true, replace: ["small"])
        XCTAssertEqual(p.entries[0].action, .rebuild)
        XCTAssertEqual(p.entries[0].reasons.map(\.summary), ["spec.model.seed: 6 → 7"])
    }

    func testUnavailableTargetsBecomeBlockers() throws {
        let a = try Self.manifest(Self.deployText)
        let p = plan([a], unavailable: ["cpu": "install torch", "cuda": "no GPU"])
        XCTAssertEqual(p.entries[0].blockers, ["target cpu is not available in this runtime: install torch"])
        XCTAssertEqual(Planner.unavailableTarget("cpu", unavailable: ["cpu": "install torch"]), p.entries[0].blockers.first, "apply refuses with the same words")
        XCTAssertEqual(plan([a], unavailable: ["cuda": "no GPU"]).entries[0].blockers, [])
        XCTAssertEqual(plan([a]).entries[0].blockers, [])
    }

    // MARK: - Rendering

    func testTextRendering() throws {
        let a = try Self.manifest(Self.deployText)
        let b = try Self.spec("bert-base-guide")
        let old = try Self.manifest(Self.deployText.replacingOccurrences(of: "seed: 7", with: "seed: 6"))
        let bfp = Self.fingerprint(b)
        let p = plan([a, b], fingerprints: ["small": Self.fingerprint(a), b.name: bfp],
                     existing: ["small": Self.record(Self.fingerprint(old)), b.name: Self.record(bfp)], unavailable: ["cpu": "torch is missing"])
        let r = Self.root.path
        XCTAssertEqual(PlanRenderer.text(p, relativeTo: r), """
            ~ rebuild small  (m.yaml:4) → out/small-bundle
                because spec.model.seed: 6 → 7
                blocked: target cpu is not available in this runtime: torch is missing
                load      load BertModel, random initialisation from config (seed 7), dtype float32
                trace     torch.jit.trace on cpu with input_ids (values), attention_mask (ones), strict (tracer warnings must be covered by the envelope), tuple outputs, tied weights untied
                serialize torch.jit.save with the record embedded; staged, then moved into place
                          writes out/small-bundle/model.pt
                          writes out/small-bundle/record.json
                          writes out/small-bundle/sample_inputs.safetensors
                          writes out/small-bundle/reference_outputs.safetensors
                verify    reload model.pt in a fresh process, compare with the eager model over the envelope: batch [1, 2] (default), sequence [1, 7] (default); 8 points (atol 1e-05, rtol 0.0001)
                          points traced batch=1 sequence=3; p1 batch=1 sequence=1; p2 batch=1 sequence=7; p3 batch=2 sequence=1; p4 batch=2 sequence=3; p5 batch=2 sequence=7; p6 batch=2 sequence=2; p7 batch=1 sequence=4
                          reads  out/small-bundle/model.pt
                          writes out/small-bundle/record.json
                deploy    directory: the bundle itself
                          writes out/small-bundle
                deploy    triton: model repository entry, platform pytorch_libtorch, max_batch_size 2 (lower if the default envelope narrows in verification)
                          reads  out/small-bundle/model.pt
                          writes build/triton/small/config.pbtxt
                          writes build/triton/small/1/model.pt
                deploy    torchserve: .mar archive made by torch-model-archiver
                          reads  out/small-bundle/model.pt
                          writes build/model-store/small.mar
            = up to date bert-base-guide  (\(b.file):\(b.locations.location(of: "metadata.name").line)) → build/bert-base-guide
                blocked: target cpu is not available in this runtime: torch is missing
            Plan: 0 to create, 1 to rebuild, 1 up to date.
            """)
        // Without a base, paths stay absolute; with colour, actions and names are highlighted.
        let plain = PlanRenderer.text(p)
        XCTAssertTrue(plain.hasPrefix("~ rebuild small  (m.yaml:4) → \(r)/out/small-bundle\n"), plain)
        XCTAssertFalse(plain.contains("\u{1B}"))
        let coloured = PlanRenderer.text(p, color: true, relativeTo: r)
        XCTAssertTrue(coloured.hasPrefix("\u{1B}[33m~ rebuild\u{1B}[0m \u{1B}[1msmall\u{1B}[0m  (m.yaml:4) → out/small-bundle\n"), coloured)
        XCTAssertTrue(coloured.contains("    \u{1B}[31mblocked: \u{1B}[0mtarget cpu is not available in this runtime: torch is missing\n"), coloured)
        XCTAssertTrue(PlanRenderer.text(plan([a])).hasPrefix("+ create small  (m.yaml:4)"))
        XCTAssertEqual(PlanRenderer.text(Plan(outputRoot: r, entries: [])), "Plan: 0 to create, 0 to rebuild, 0 up to date.")
    }

    func testJSONRenderingDecodesBackToAnEqualPlan() throws {
        let ms = try Self.loadSpecs() + [try Self.manifest(Self.deployText)]
        let old = try Self.manifest(Self.deployText.replacingOccurrences(of: "seed: 7", with: "seed: 6"))
        let p = plan(ms, existing: ["small": Self.record(Self.fingerprint(old))], unavailable: ["cpu": "x"])
        let json = PlanRenderer.json(p)
        let back = try JSONDecoder().decode(Plan.self, from: Data(json.utf8))
        XCTAssertEqual(back, p)
        XCTAssertEqual(PlanRenderer.json(back), json, "rendering is deterministic")
        // The wire names: kebab-case actions and reason kinds, snake-free keys.
        let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        XCTAssertEqual(Set(o.keys), ["outputRoot", "entries", "orphans", "notes"])
        let entries = try XCTUnwrap(o["entries"] as? [[String: Any]])
        XCTAssertEqual(Set(entries[0].keys), ["name", "file", "line", "action", "reasons", "bundle", "fingerprint", "steps", "blockers", "envelope", "manifestDirectory", "documentIndex", "policy"])
        XCTAssertEqual(entries.last?["action"] as? String, "rebuild")
        let reason = try XCTUnwrap((entries.last?["reasons"] as? [[String: Any]])?.first)
        XCTAssertEqual(reason["kind"] as? String, "field")
        XCTAssertEqual(reason["subject"] as? String, "spec.model.seed")
        XCTAssertTrue(json.contains("\"\(Self.root.path)/build/"), "slashes are not escaped")

        let upToDate = Plan(outputRoot: "/r", entries: [PlanEntry(name: "x", file: "x.yaml", line: 1, action: .upToDate, reasons: [
            PlanReason(kind: .inputFile, subject: "f", old: nil, new: "n")], bundle: "/r/x", fingerprint: "sha256:1", steps: [])])
        let uj = PlanRenderer.json(upToDate)
        XCTAssertTrue(uj.contains("\"action\" : \"up-to-date\""), uj)
        XCTAssertTrue(uj.contains("\"kind\" : \"input-file\""), uj)
        XCTAssertEqual(try JSONDecoder().decode(Plan.self, from: Data(uj.utf8)), upToDate)
    }

    // MARK: - Records and fingerprints

    func testRecordSummaryReadsWhatApplyWrites() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tsexport-record-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertNil(RecordSummary.read(bundle: dir), "no record")
        try Data("{not json".utf8).write(to: dir.appendingPathComponent("record.json"))
        XCTAssertNil(RecordSummary.read(bundle: dir), "unreadable record")
        try Data(#"{"versions": {"worker": "1.0.0"}}"#.utf8).write(to: dir.appendingPathComponent("record.json"))
        XCTAssertNil(RecordSummary.read(bundle: dir), "a record without a fingerprint")

        let m = try Self.manifest(Self.deployText)
        let fp = Self.fingerprint(m, files: ["spec.model.pretrained/config.json": "abc"])
        let record = JSONValue.object([
            ("fingerprint", .string(fp.fingerprint)),
            ("fingerprint_inputs", fp.json),
            ("versions", .object([("worker", .string(WorkerInfo.version)), ("torch", .string("2.5.1"))])),
            ("model_sha256", .string("deadbeef")),
        ])
        try Data(record.serialized(pretty: true).utf8).write(to: dir.appendingPathComponent("record.json"))
        // Without the other bundle files the bundle is incomplete and rebuilt, whatever the record says.
        let torn = try XCTUnwrap(RecordSummary.read(bundle: dir))
        XCTAssertEqual(torn.incomplete, "model.pt is missing from the bundle")
        let tornEntry = try XCTUnwrap(plan([m], fingerprints: ["small": fp], existing: ["small": torn]).entries.first)
        XCTAssertEqual(tornEntry.action, .rebuild)
        XCTAssertEqual(tornEntry.reasons, [PlanReason(kind: .incomplete, subject: "model.pt is missing from the bundle")])
        for f in ["model.pt", "sample_inputs.safetensors", "reference_outputs.safetensors"] {
            try Data().write(to: dir.appendingPathComponent(f))
        }
        // Without build.json (the bundle's content and its digest) it is not complete either.
        XCTAssertEqual(RecordSummary.read(bundle: dir)?.incomplete, "build.json is missing from the bundle")
        let build = BuildInfo.json(content: try BundleContent.entries(of: dir), deployments: [], facts: [])
        try Data(build.serialized(pretty: true).utf8).write(to: dir.appendingPathComponent(BundleContent.buildFile))
        let s = try XCTUnwrap(RecordSummary.read(bundle: dir))
        XCTAssertNil(s.incomplete)
        XCTAssertEqual(s.build?.contentDigest, try BundleContent.digest(of: dir))
        XCTAssertEqual(s.fingerprint, fp.fingerprint)
        XCTAssertEqual(CanonicalJSON.text(s.manifest), CanonicalJSON.text(fp.manifest))
        XCTAssertEqual(s.inputFiles, ["spec.model.pretrained/config.json": "abc"])
        XCTAssertEqual(s.versions, ["worker": WorkerInfo.version, "torch": "2.5.1"])
        XCTAssertEqual(s.modelSHA256, "deadbeef")
        let e = try XCTUnwrap(plan([m], fingerprints: ["small": fp], existing: ["small": s]).entries.first)
        XCTAssertEqual(e.action, .upToDate)
    }

    func testFingerprintIsSHA256OfCanonicalJSON() throws {
        XCTAssertEqual(Digest.sha256("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let fp = FingerprintInputs(manifest: .object([("b", .int(1)), ("a", .double(2.0))]), files: ["z": "1", "y": "2"], versions: ["worker": "1.0.0"])
        let canonical = #"{"files":{"y":"2","z":"1"},"manifest":{"a":2,"b":1},"versions":{"worker":"1.0.0"}}"#
        XCTAssertEqual(fp.fingerprint, "sha256:" + Digest.sha256(canonical))
        XCTAssertEqual(CanonicalJSON.text(.string("a\"b\\c\n\u{01}")), #""a\"b\\c\n\u0001""#)
        XCTAssertEqual(CanonicalJSON.text(.double(0.5)), "0.5")
        let normalised = FingerprintInputs.normalise(.object([("metadata", .object([("name", .string("n")), ("labels", .object([("a", .string("b"))]))]))]))
        XCTAssertEqual(CanonicalJSON.text(normalised), #"{"metadata":{"name":"n"}}"#)
    }
}
