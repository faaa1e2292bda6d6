import Execution
import Foundation
import JSON
import TSExportCLI
import XCTest

/// Cached generation through `tsexport apply`: a tiny GPT-2, a grouped-query Llama and a Gemma 2 with a sliding
/// window (decoder-only), a tiny Marian and a grouped-query T5Gemma (encoder-decoder) with `split.cache: true`; the verifying process (no transformers) reproduces generate() from the artifacts alone, and
/// the C++ example (examples/generate, built with g++ against the runtime's torch) prints the same tokens.
final class GenerationApplyTests: XCTestCase {
    static let manifests = """
        apiVersion: tsexport/v1
        kind: Export
        metadata: {name: gpt2-cached}
        spec:
          model:
            class: GPT2LMHeadModel
            config: {vocab_size: 99, n_embd: 32, n_layer: 2, n_head: 4, n_positions: 128, eos_token_id: 98, bos_token_id: 98}
          inputs:
            tensors:
              - {name: input_ids, from: random, shape: [1, 8], low: 1}
              - {name: attention_mask, from: ones, shape: [1, 8]}
          trace:
            split: {kind: decoder-only, max_length: 32, cache: true}
        ---
        apiVersion: tsexport/v1
        kind: Export
        metadata: {name: marian-cached}
        spec:
          model:
            class: MarianMTModel
            config: {vocab_size: 99, d_model: 32, encoder_layers: 2, decoder_layers: 2, encoder_attention_heads: 4,
                     decoder_attention_heads: 4, encoder_ffn_dim: 37, decoder_ffn_dim: 37, max_position_embeddings: 128,
                     pad_token_id: 0, eos_token_id: 1, decoder_start_token_id: 0}
          inputs:
            tensors:
              - {name: input_ids, from: random, shape: [1, 8], low: 2}
              - {name: decoder_input_ids, from: zeros, shape: [1, 1]}
          trace:
            split: {kind: encoder-decoder, max_length: 16, cache: true}
        ---
        apiVersion: tsexport/v1
        kind: Export
        metadata: {name: llama-cached}
        spec:
          model:
            class: LlamaForCausalLM
            config: {vocab_size: 99, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
                     intermediate_size: 37, max_position_embeddings: 128, eos_token_id: 98, bos_token_id: 1, initializer_range: 0.5}
          inputs:
            tensors:
              - {name: input_ids, from: random, shape: [1, 8], low: 2}
              - {name: attention_mask, from: ones, shape: [1, 8]}
          trace:
            split: {kind: decoder-only, max_length: 32, cache: true}
        ---
        apiVersion: tsexport/v1
        kind: Export
        metadata: {name: gemma2-cached}
        spec:
          model:
            class: Gemma2ForCausalLM
            config: {vocab_size: 99, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
                     head_dim: 16, intermediate_size: 37, max_position_embeddings: 128, sliding_window: 4,
                     tie_word_embeddings: false, eos_token_id: 98, bos_token_id: 1, pad_token_id: 0, initializer_range: 0.5}
          inputs:
            tensors:
              - {name: input_ids, from: random, shape: [1, 8], low: 2}
              - {name: attention_mask, from: ones, shape: [1, 8]}
          trace:
            split: {kind: decoder-only, max_length: 32, cache: true}
        ---
        apiVersion: tsexport/v1
        kind: Export
        metadata: {name: t5gemma-cached}
        spec:
          model:
            class: T5GemmaForConditionalGeneration
            config:
              encoder: {vocab_size: 99, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
                        head_dim: 8, intermediate_size: 37, max_position_embeddings: 128, sliding_window: 2, initializer_range: 2.0}
              decoder: {vocab_size: 99, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
                        head_dim: 8, intermediate_size: 37, max_position_embeddings: 128, sliding_window: 2, initializer_range: 2.0}
              vocab_size: 99
              bos_token_id: 1
              eos_token_id: 82
              pad_token_id: 0
              decoder_start_token_id: 1
              tie_word_embeddings: false
          inputs:
            tensors:
              - {name: input_ids, from: random, shape: [1, 8], low: 2}
              - {name: decoder_input_ids, from: ones, shape: [1, 1]}
          trace:
            split: {kind: encoder-decoder, max_length: 16, cache: true}
        """

    func testCachedDecodersAndMarianReproduceGenerateInTheVerifierAndInCpp() throws {
        let dir = try Harness.tempDir("generation")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("gen.yaml")
        try Self.manifests.write(to: file, atomically: true, encoding: .utf8)
        let root = dir.appendingPathComponent("out")
        let (code, out) = try Harness.apply([file.path, "--output-root", root.path, "--jobs", "1"])
        XCTAssertEqual(code, 0, out.stderr)

        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        // examples/generate, built once and shared with pytest (Tests/python/nativekit.py keys it by its sources and torch).
        let build = try Harness.run([Harness.python, repo.appendingPathComponent("Tests/python/nativekit.py").path, "generate"])
        XCTAssertEqual(build.status, 0, build.stderr)
        let binary = build.stdout.trimmingCharacters(in: .whitespacesAndNewlines)

        let decoderOnly = ["prefill.pt", "step.pt", "full.pt", "generation.json"]
        for (name, files) in [("gpt2-cached", decoderOnly), ("llama-cached", decoderOnly), ("gemma2-cached", decoderOnly),
                              ("marian-cached", ["encoder.pt", "step.pt", "full.pt", "generation.json"]),
                              ("t5gemma-cached", ["encoder.pt", "step.pt", "full.pt", "generation.json"])] {
            let bundle = root.appendingPathComponent("build/\(name)")
            XCTAssertEqual(Harness.tree(bundle), (ApplyEndToEndTests.bundleFiles + files).sorted(), name)
            let record = try JSONValue(parsing: Data(contentsOf: bundle.appendingPathComponent("record.json")))
            let check = try XCTUnwrap(record["generation_check"], name)
            XCTAssertEqual(check["passed"], .bool(true), name)
            XCTAssertLessThan(check["max_drift"]?.doubleValue ?? 1, 1e-4, "\(name): the cached step follows the uncached model")
            let prompts = check["prompts"]?.arrayValue ?? []
            XCTAssertEqual(prompts.count, 3, name)
            for p in prompts {
                XCTAssertEqual(p["tokens"], p["expected"], "\(name): the verifier's loop equals generate()")
                // The C++ example prints exactly generate()'s tokens for the same prompt.
                let ids = (p["prompt"]?.arrayValue ?? []).compactMap(\.intValue).map(String.init)
                let n = String(record["generation"]?["reference"]?.arrayValue?.first { $0["prompt"] == p["prompt"] }?["max_new_tokens"]?.intValue ?? 0)
                let run = try Harness.run([binary, bundle.path, n] + ids)
                XCTAssertEqual(run.status, 0, run.stderr)
                let expected = (p["expected"]?.arrayValue ?? []).compactMap(\.intValue).map(String.init).joined(separator: " ")
                XCTAssertEqual(run.stdout, expected + "\n", "\(name) prompt \(ids): C++ must print generate()'s tokens, one line")
            }
            XCTAssertEqual(record["generation"]?["kind"]?.stringValue, name == "marian-cached" || name == "t5gemma-cached" ? "encoder-decoder" : "decoder-only")
            if name == "llama-cached" || name == "gemma2-cached" || name == "t5gemma-cached" {
                // The buffer holds the 2 key/value heads, not the 4 query heads.
                XCTAssertEqual(record["generation"]?["heads"]?.intValue, 2, name)
            }
        }
        let gemma = try JSONValue(parsing: Data(contentsOf: root.appendingPathComponent("build/gemma2-cached/record.json")))
        XCTAssertEqual(gemma["generation"]?["sliding_windows"], .array([.int(4), .null]))
        // T5Gemma: grouped-query encoder-decoder; the nested decoder config states the heads, head_dim and windows,
        // and its float initializer_range (2.0) reaches the strict config class as a float.
        let t5gemma = try JSONValue(parsing: Data(contentsOf: root.appendingPathComponent("build/t5gemma-cached/record.json")))
        XCTAssertEqual(t5gemma["generation"]?["sliding_windows"], .array([.int(2), .null]))
        XCTAssertEqual(t5gemma["generation"]?["head_dim"], .int(8))
    }

    func testRefusalsAtTheirPositions() throws {
        let dir = try Harness.tempDir("generation-bad")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("bad.yaml")
        try """
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: gpt2-bad}
            spec:
              model:
                class: GPT2LMHeadModel
                config: {vocab_size: 99, n_embd: 32, n_layer: 2, n_head: 4, n_positions: 64, do_sample: true}
              inputs:
                tensors:
                  - {name: input_ids, from: random, shape: [1, 8]}
              trace:
                split: {kind: decoder-only, max_length: 128, cache: true}
            """.write(to: file, atomically: true, encoding: .utf8)
        let (code, out) = try Harness.apply([file.path, "--output-root", dir.appendingPathComponent("out").path])
        XCTAssertEqual(code, 1)
        let errors = out.stderr.split(separator: "\n").filter { $0.contains("error:") }.map(String.init)
        XCTAssertEqual(errors, [
            "\(file.path):7:93: error: do_sample is a generation setting the exported greedy loop does not apply (do_sample false, num_beams 1, no penalties); remove it, or it would differ from generate()",
            "\(file.path):12:45: error: max_length 128 is beyond the model's 64 positions (max_position_embeddings); the cache cannot hold longer sequences",
        ], out.stderr)
    }
}

extension GenerationApplyTests {
    /// A failure of the cached trace is the split's: reported at `spec.trace.split`, not at the manifest's name.
    func testAWorkerErrorAboutTheSplitIsReportedAtTheSplit() throws {
        let dir = try Harness.tempDir("generation-split-error")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("short.yaml")
        try """
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: llama-short}
            spec:
              model:
                class: LlamaForCausalLM
                config: {vocab_size: 99, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 4, num_key_value_heads: 2,
                         intermediate_size: 37, max_position_embeddings: 64}
              inputs:
                tensors:
                  - {name: input_ids, from: random, shape: [1, 8], low: 2}
              trace:
                split: {kind: decoder-only, max_length: 8, cache: true}
            """.write(to: file, atomically: true, encoding: .utf8)
        let root = dir.appendingPathComponent("out")
        let (code, out) = try Harness.apply([file.path, "--output-root", root.path])
        XCTAssertEqual(code, 1)
        let errors = out.stderr.split(separator: "\n").filter { $0.contains("error:") }.map(String.init)
        XCTAssertEqual(errors, [
            "\(file.path):13:12: error: llama-short: trace failed: spec.trace.split: the example prompt (8 tokens) must be shorter than max_length 8",
        ], out.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: root.appendingPathComponent("build/llama-short").path))
    }
}

extension Harness {
    /// Runs a program (an argv array) and returns its exit status and output.
    static func run(_ argv: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: argv[0])
        p.arguments = Array(argv.dropFirst())
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }
}
