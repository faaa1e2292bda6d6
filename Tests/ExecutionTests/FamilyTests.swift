import Execution
import Foundation
import JSON
import TSExportCLI
import XCTest

/// The coverage matrix: one `tsexport apply` over every manifest in specs/families, then each artifact is
/// reloaded in a separate Python and compared with an independently built eager model on fresh inputs (another batch
/// size, new values, a padded attention mask). Auto* classes resolve to the concrete class recorded in the bundle.
final class FamilyTests: XCTestCase {
    static let families = Harness.repo.appendingPathComponent("specs/families")

    /// Fresh inputs at batch 2 per the bundle's input signature; the eager model rebuilt from the record's class,
    /// the manifest's config and seed; prints {name: max abs error}.
    static let freshCompare = #"""
        import json, os, sys
        import torch, transformers

        def fresh(signature, config, generator):
            args = []
            for entry in signature:
                shape = [2] + entry["shape"][1:]
                name, dtype = entry["name"], getattr(torch, entry["dtype"])
                if dtype.is_floating_point:
                    args.append(torch.randn(shape, generator=generator).to(dtype))
                elif name.endswith("attention_mask"):
                    mask = torch.ones(shape, dtype=dtype)
                    mask[1, shape[1] - max(1, shape[1] // 3):] = 0
                    args.append(mask)
                elif name == "token_type_ids":
                    args.append(torch.randint(0, 2, shape, generator=generator, dtype=dtype))
                else:
                    vocab = getattr(config, "vocab_size", None) or config.text_config.vocab_size
                    args.append(torch.randint(3, vocab - 1, shape, generator=generator, dtype=dtype))
            return args

        def flat(output):
            # CLIP-like outputs nest the text and vision model outputs: compare tensor by tensor, in order.
            if isinstance(output, torch.Tensor):
                return [output]
            items = output.to_tuple() if hasattr(output, "to_tuple") else output
            return [t for item in items for t in flat(item)] if isinstance(items, (tuple, list)) else []

        report = {}
        for bundle in sys.argv[1:]:
            record = json.load(open(os.path.join(bundle, "record.json")))
            spec = record["fingerprint_inputs"]["manifest"]["spec"]["model"]
            cls = getattr(transformers, record["model_class"])
            config = cls.config_class(**spec.get("config", {}), attn_implementation="eager")
            if hasattr(config, "use_cache"):
                config.use_cache = False
            torch.manual_seed(spec.get("seed", 0))
            eager = cls(config).eval()
            traced = torch.jit.load(os.path.join(bundle, "model.pt"))
            args = fresh(record["input_signature"], config, torch.Generator().manual_seed(99))
            names = [s["name"] for s in record["input_signature"]]
            with torch.no_grad():
                actual = traced(*args)
                expected = eager(**dict(zip(names, args)), **spec.get("forward", {})).to_tuple()
            actual, expected = flat(actual), flat(expected)
            if len(actual) != len(expected):
                report[record["name"]] = None
                continue
            report[record["name"]] = max(float((a - e).abs().max()) for a, e in zip(actual, expected))
        print(json.dumps(report))
        """#

    func testEveryFamilyManifestAppliesInOneRunAndMatchesEagerOnFreshInputs() throws {
        let root = try Harness.tempDir("family-matrix")
        defer { try? FileManager.default.removeItem(at: root) }
        let (code, out) = try Harness.apply([Self.families.path, "--output-root", root.path])
        XCTAssertEqual(code, 0, out.stderr)
        XCTAssertEqual(out.stderr.components(separatedBy: "starting a new Python worker").count, 1, "one warm worker serves every manifest")

        let build = root.appendingPathComponent("build")
        let names = try FileManager.default.contentsOfDirectory(atPath: build.path).sorted()
        XCTAssertGreaterThanOrEqual(names.count, 22, "\(names)")
        var classes: Set<String> = []
        for name in names {
            let bundle = build.appendingPathComponent(name)
            // family-marian also carries the encoder/decoder split (trace.split).
            let split = name == "family-marian" ? ["decoder_step.pt", "encoder.pt"] : []
            XCTAssertEqual(Harness.tree(bundle), (split + ApplyEndToEndTests.bundleFiles).sorted(), name)
            let record = try JSONValue(parsing: Data(contentsOf: bundle.appendingPathComponent("record.json")))
            XCTAssertTrue(record["parity"]?["verdict"]?.stringValue?.hasPrefix("valid across the envelope ") == true, "\(name): \(String(describing: record["parity"]?["verdict"]))")
            XCTAssertEqual(record["envelope"]?["narrowed"], .bool(false), name)
            XCTAssertEqual(record["envelope"]?["points"]?.arrayValue?.allSatisfy { $0["passed"] == .bool(true) }, true, name)
            XCTAssertEqual(record["envelope"]?["enforced"], .bool(true), "\(name): model.pt carries the envelope guard")
            if case .string(let cls)? = record["model_class"] { classes.insert(cls) }
        }
        for required in ["BertModel", "BertForMaskedLM", "BertForSequenceClassification", "BertForTokenClassification",
                         "BertForQuestionAnswering", "DistilBertModel", "RobertaModel", "XLMRobertaForSequenceClassification",
                         "AlbertForMaskedLM", "ElectraForPreTraining", "GPT2Model", "GPT2LMHeadModel",
                         "BartForConditionalGeneration", "MarianMTModel", "T5EncoderModel", "ViTForImageClassification",
                         "CLIPModel", "SiglipModel", "ModernBertModel", "DebertaV2ForSequenceClassification",
                         "WhisperForConditionalGeneration", "WhisperForAudioClassification", "ViTModel"] {
            XCTAssertTrue(classes.contains(required), "no family bundle for \(required)")
        }

        let errors = try Harness.pythonJSON(["-c", Self.freshCompare] + names.map { build.appendingPathComponent($0).path })
        for name in names {
            guard let error = errors[name]?.doubleValue else { XCTFail("\(name): no comparison (\(String(describing: errors[name])))"); continue }
            XCTAssertLessThanOrEqual(error, 1e-4, "\(name): max abs error \(error) on fresh inputs")
        }

        // verify re-checks every bundle in a fresh process.
        let (console, captured) = Harness.console()
        let verify = try Verify.parse(names.map { build.appendingPathComponent($0).path } + ["--python", Harness.python])
        XCTAssertEqual(Verify.execute(verify, console: console), 0, captured.stderr + captured.stdout)
    }

    func testAutoClassResolvesToTheConcreteClassInTheBundle() throws {
        let dir = try Harness.tempDir("family-auto")
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try Harness.miniLMDir()
        let manifest = """
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: minilm-auto}
            spec:
              model:
                class: AutoModel
                pretrained: \(model)
              inputs:
                tensors:
                  - {name: input_ids, from: random, low: 1000, high: 30000, shape: [1, 9]}
              trace: {check_shapes: [[2, 5]]}
            ---
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: minilm-auto-seq-cls}
            spec:
              model:
                class: AutoModelForSequenceClassification
                pretrained: \(model)
                config: {num_labels: 3}
              inputs:
                tensors:
                  - {name: input_ids, from: random, low: 1000, high: 30000, shape: [1, 9]}
            """
        let file = dir.appendingPathComponent("auto.yaml")
        try manifest.write(to: file, atomically: true, encoding: .utf8)
        let root = dir.appendingPathComponent("out")
        let (code, out) = try Harness.apply([file.path, "--output-root", root.path])
        XCTAssertEqual(code, 0, out.stderr)
        for (name, cls) in [("minilm-auto", "BertModel"), ("minilm-auto-seq-cls", "BertForSequenceClassification")] {
            let bundle = root.appendingPathComponent("build/\(name)")
            let record = try JSONValue(parsing: Data(contentsOf: bundle.appendingPathComponent("record.json")))
            XCTAssertEqual(record["model_class"], .string(cls), name)
            XCTAssertTrue(record["parity"]?["verdict"]?.stringValue?.hasPrefix("valid across the envelope ") == true, name)
            XCTAssertEqual(record["envelope"]?["narrowed"], .bool(false), name)
        }
        let cmp = try Harness.compare(bundle: root.appendingPathComponent("build/minilm-auto"), manifestDir: dir)
        XCTAssertLessThan(cmp["max_abs_error"]?.doubleValue ?? 1, 1e-4)
    }
}
