import Execution
import Foundation
import JSON
import Manifest
import TSExportCLI
import XCTest

/// `tsexport init`: the scaffolded manifest validates and applies as written — the pretrained MiniLM (tokenizer,
/// padded text) and tiny random folders of several families written with save_pretrained (random tensors).
final class InitTests: XCTestCase {
    /// Runs `tsexport init ARGS` in-process with the test Python.
    static func initCommand(_ args: [String]) throws -> (Int32, Harness.Captured) {
        let cmd = try Init.parse(args + ["--python", Harness.python])
        let (console, captured) = Harness.console()
        return (Init.execute(cmd, console: console), captured)
    }

    static func record(_ root: URL, _ name: String) throws -> JSONValue {
        try JSONValue(parsing: Data(contentsOf: root.appendingPathComponent("build/\(name)/record.json")))
    }

    func testMiniLMManifestValidatesAndAppliesAsWritten() throws {
        let dir = try Harness.tempDir("init-minilm")
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try Harness.miniLMDir()
        let file = dir.appendingPathComponent("minilm.yaml")
        let (code, out) = try Self.initCommand([model, "-o", file.path, "--name", "minilm"])
        XCTAssertEqual(code, 0, out.stderr)
        XCTAssertEqual(Harness.tree(dir), ["minilm.yaml"], "init writes only the file -o names")
        let text = try String(contentsOf: file, encoding: .utf8)
        XCTAssertTrue(text.hasPrefix("# yaml-language-server: $schema="), text)
        XCTAssertTrue(text.contains("class: BertModel"), text)
        XCTAssertTrue(text.contains("library: sentence-transformers      # the folder's modules.json pipeline (Transformer → Pooling → Normalize) is the model"), text)
        XCTAssertTrue(text.contains("pretrained: \"../"), "relative to the manifest's folder: \(text)")
        XCTAssertTrue(text.contains("pad_to: 128"), text)
        XCTAssertTrue(text.contains("envelope: {batch: [1, 8], sequence: [1, 128]}"), text)
        for name in ["input_ids", "attention_mask", "token_type_ids"] { XCTAssertTrue(text.contains("{name: \(name), "), name) }

        // It validates with the CLI's own validate, then applies over the declared envelope.
        let (console, captured) = Harness.console()
        XCTAssertEqual(Validate.execute(try Validate.parse([file.path]).options, console: console), 0, captured.stderr)
        let root = dir.appendingPathComponent("out")
        let (applied, log) = try Harness.apply([file.path, "--output-root", root.path])
        XCTAssertEqual(applied, 0, log.stderr + log.stdout)
        let record = try Self.record(root, "minilm")
        XCTAssertEqual(record["model_class"], "BertModel")
        XCTAssertEqual(record["parity"]?["verdict"], "valid across the envelope batch [1,8], sequence [1,128]")
        XCTAssertEqual(record["input_signature"]?[0]?["shape"], [1, 128])
        // The folder's pipeline, as sentence-transformers builds it: token states, then the pooled, normalised sentence.
        XCTAssertEqual((record["output_signature"]?.arrayValue ?? []).compactMap { $0["name"]?.stringValue }, ["token_embeddings", "sentence_embedding"])
        XCTAssertEqual(record["output_signature"]?[1]?["shape"], [1, 384])
        XCTAssertEqual(record["library"]?["name"], "sentence-transformers")
        XCTAssertEqual(record["library"]?["modules"], ["Transformer", "Pooling", "Normalize"])
        let check = try XCTUnwrap(record["library"]?["encode_check"])
        XCTAssertEqual(check["passed"], .bool(true))
        let measured = (check["points"]?.arrayValue ?? []).filter { $0["skipped"] == nil }
        XCTAssertGreaterThanOrEqual(measured.count, 4, "the corners and interior points with room for text")
        for p in measured { XCTAssertGreaterThanOrEqual(p["min_cosine"]?.doubleValue ?? 0, 0.9999, "\(p)") }
        // Independently: model.pt on other real sentences equals the library's encode() across the envelope.
        let bundle = root.appendingPathComponent("build/minilm")
        let encoded = try Harness.pythonJSON([Harness.support.appendingPathComponent("st_encode.py").path, bundle.path, model,
                                              "[[1, 8], [3, 128], [8, 64], [2, 17], [8, 128]]"])
        XCTAssertEqual(encoded.arrayValue?.count, 5)
        for p in encoded.arrayValue ?? [] {
            XCTAssertEqual(p["outputs"], 2)
            XCTAssertGreaterThanOrEqual(p["min_cosine"]?.doubleValue ?? 0, 0.9999, "\(p)")
        }

        // An existing file is refused without --force, before Python starts; with --force it is rewritten.
        let (again, refused) = try Self.initCommand([model, "-o", file.path])
        XCTAssertEqual(again, 1)
        XCTAssertTrue(refused.stderr.contains("exists; pass --force"), refused.stderr)
        let (forced, _) = try Self.initCommand([model, "-o", file.path, "--name", "minilm", "--force"])
        XCTAssertEqual(forced, 0)
        XCTAssertEqual(try String(contentsOf: file, encoding: .utf8), text, "init is deterministic")

        // No -o: printed on stdout, pretrained relative to the current directory; --task picks the Auto class.
        let (printed, stdout) = try Self.initCommand([model, "--task", "text-classification"])
        XCTAssertEqual(printed, 0, stdout.stderr)
        XCTAssertTrue(stdout.stdout.contains("class: AutoModelForSequenceClassification"), stdout.stdout)
        XCTAssertTrue(stdout.stdout.contains("the task text-classification (Optimum's name); resolves to BertForSequenceClassification"), stdout.stdout)
    }

    func testTinyRandomFamiliesApplyAsWritten() throws {
        let dir = try Harness.tempDir("init-families")
        defer { try? FileManager.default.removeItem(at: dir) }
        let models = dir.appendingPathComponent("models")
        _ = try Harness.pythonJSON(["-c", Self.makeFolders, models.path, Harness.repo.appendingPathComponent("specs/tokenizers/tiny-bert").path])
        let manifests = dir.appendingPathComponent("manifests")
        try FileManager.default.createDirectory(at: manifests, withIntermediateDirectories: true)
        let expected: [(String, String, [String])] = [
            ("tiny-bert", "BertForSequenceClassification", ["input_ids", "attention_mask", "token_type_ids"]),
            ("tiny-distilbert", "DistilBertModel", ["input_ids", "attention_mask"]),
            ("tiny-gpt2", "GPT2LMHeadModel", ["input_ids", "attention_mask"]),
            ("tiny-bart", "BartForConditionalGeneration", ["input_ids", "attention_mask", "decoder_input_ids"]),
        ]
        for (name, _, _) in expected {
            let (code, out) = try Self.initCommand([models.appendingPathComponent(name).path, "-o", manifests.appendingPathComponent("\(name).yaml").path])
            XCTAssertEqual(code, 0, name + out.stderr)
        }
        let bert = try String(contentsOf: manifests.appendingPathComponent("tiny-bert.yaml"), encoding: .utf8)
        XCTAssertTrue(bert.contains("tokenizer: \"../models/tiny-bert\"") && bert.contains("pad_to: 64"), "the folder's tokenizer, padded to max positions: \(bert)")
        let gpt2 = try String(contentsOf: manifests.appendingPathComponent("tiny-gpt2.yaml"), encoding: .utf8)
        XCTAssertTrue(gpt2.contains("{name: attention_mask, from: ones, shape: [1, 64]}"), "a decoder-only model gets a mask: \(gpt2)")
        XCTAssertFalse(gpt2.contains("token_type_ids"), "GPT-2 has no segment embeddings")
        XCTAssertFalse(gpt2.contains("\n    tokenizer: "), "no tokenizer in the folder: random ids")
        XCTAssertTrue(gpt2.contains("{name: input_ids, from: random, shape: [1, 64]}"), gpt2)

        let root = dir.appendingPathComponent("out")
        let (code, out) = try Harness.apply([manifests.path, "--output-root", root.path, "--jobs", "2"])
        XCTAssertEqual(code, 0, out.stderr + out.stdout)
        for (name, cls, inputs) in expected {
            let record = try Self.record(root, name)
            XCTAssertEqual(record["model_class"], .string(cls), name)
            XCTAssertEqual((record["input_signature"]?.arrayValue ?? []).compactMap { $0["name"]?.stringValue }, inputs, name)
            let verdict = record["parity"]?["verdict"]?.stringValue ?? ""
            XCTAssertTrue(verdict.hasPrefix("valid across the envelope batch [1,8], sequence [1,64]"), "\(name): \(verdict)")
        }
    }

    func testRefusalsComeBeforePython() throws {
        let dir = try Harness.tempDir("init-refusals")
        defer { try? FileManager.default.removeItem(at: dir) }
        let empty = dir.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        let withConfig = dir.appendingPathComponent("model")
        try FileManager.default.createDirectory(at: withConfig, withIntermediateDirectories: true)
        try Data("{}".utf8).write(to: withConfig.appendingPathComponent("config.json"))
        let cases: [([String], String)] = [
            ([dir.appendingPathComponent("nowhere").path], "is not a folder"),
            ([empty.path], "has no config.json"),
            ([withConfig.path, "--task", "text-classification", "--class", "BertModel"], "not both"),
            ([withConfig.path, "--task", "text-clasification"], "did you mean text-classification?"),
            ([withConfig.path, "-o", dir.appendingPathComponent("missing/x.yaml").path], "does not exist"),
            ([withConfig.path, "--name", "Bad_Name"], "not a valid metadata.name"),
        ]
        for (args, message) in cases {
            // A Python that does not exist: each refusal must come before any interpreter is looked for.
            let cmd = try Init.parse(args + ["--python", "/nonexistent/python"])
            let (console, captured) = Harness.console()
            XCTAssertEqual(Init.execute(cmd, console: console), 1, "\(args)")
            XCTAssertTrue(captured.stderr.contains(message), "\(args): \(captured.stderr)")
        }
        XCTAssertEqual(Harness.tree(dir), ["empty", "model", "model/config.json"], "nothing written")
    }

    /// Tiny random models saved with save_pretrained (the BERT folder with the tiny WordPiece tokenizer).
    static let makeFolders = """
        import json, shutil, sys, os, torch, transformers as t
        out, tokenizer = sys.argv[1], sys.argv[2]
        torch.manual_seed(0)
        made = {
            "tiny-bert": t.BertForSequenceClassification(t.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, max_position_embeddings=64)),
            "tiny-distilbert": t.DistilBertModel(t.DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64)),
            "tiny-gpt2": t.GPT2LMHeadModel(t.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0)),
            "tiny-bart": t.BartForConditionalGeneration(t.BartConfig(vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64)),
        }
        for name, model in made.items():
            model.save_pretrained(os.path.join(out, name))
        for f in os.listdir(tokenizer):
            shutil.copy(os.path.join(tokenizer, f), os.path.join(out, "tiny-bert", f))
        print(json.dumps(sorted(made)))
        """
}

/// The managed runtime's creation output: one progress line per step with its elapsed time, the full venv/pip output in a
/// log file that a failure names (with `VenvPipDoubleRunner`, the venv/pip double of RuntimeResolverTests).
final class ManagedRuntimeProgressTests: XCTestCase {
    func environment(_ cache: URL) -> [String: String] {
        ["TSEXPORT_CACHE_DIR": cache.path, "PATH": "/usr/bin:/bin", "HOME": cache.path, "TSEXPORT_BASE_PYTHON": "/bin/true"]
    }

    func testOneLinePerStepAndTheFullLogInAFile() throws {
        let cache = try Harness.tempDir("rt-progress")
        defer { try? FileManager.default.removeItem(at: cache) }
        let lines = LineSink()
        let resolver = RuntimeResolver(runner: VenvPipDoubleRunner(), environment: environment(cache), progress: { lines.add($0) })
        _ = try resolver.resolve(flag: nil)
        let all = lines.all
        XCTAssertEqual(all.count, 4, "\(all)")
        let log = cache.appendingPathComponent("logs/runtime-\(try resolver.managedDirectory().lastPathComponent).log")
        XCTAssertTrue(all[0].hasPrefix("creating the managed Python runtime in ") && all[0].contains("log: \(log.path)"), all[0])
        XCTAssertTrue(all[1].hasPrefix("  [1/2] python3 -m venv: done in ") && all[1].hasSuffix(" s"), all[1])
        XCTAssertTrue(all[2].hasPrefix("  [2/2] pip install -r requirements.txt: 1 package installed in "), all[2])
        XCTAssertTrue(all[3].hasPrefix("managed Python runtime ready in "), all[3])
        let text = try String(contentsOf: log, encoding: .utf8)
        XCTAssertTrue(text.contains("Collecting torch==2.13.0 (from -r requirements.txt (line 3))"), "pip's lines, whole: \(text)")
        XCTAssertTrue(text.contains("--- exit 0 after "), text)
    }

    func testAFailedPipNamesItsLog() throws {
        let cache = try Harness.tempDir("rt-progress")
        defer { try? FileManager.default.removeItem(at: cache) }
        let runner = VenvPipDoubleRunner()
        runner.failPip = true
        let resolver = RuntimeResolver(runner: runner, environment: environment(cache), progress: { _ in })
        let log = cache.appendingPathComponent("logs/runtime-\(try resolver.managedDirectory().lastPathComponent).log")
        XCTAssertThrowsError(try resolver.resolve(flag: nil)) { e in
            XCTAssertTrue("\(e)".hasPrefix("creating the managed runtime failed at `pip install -r requirements.txt` (exit 1): the full log is \(log.path)"), "\(e)")
        }
        let text = try String(contentsOf: log, encoding: .utf8)
        XCTAssertTrue(text.contains("No matching distribution found") && text.contains("--- exit 1 after "), text)
    }
}
