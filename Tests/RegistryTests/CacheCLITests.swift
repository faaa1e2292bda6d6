import Bundles
import Foundation
import JSON
@testable import Registry
import TestSupport
import XCTest

/// `apply --cache oci://…` through the real executable, with real torch and a real registry: a hit in a second
/// output root (byte-identical files, no model loaded), a foreign and a corrupted entry (reported, built instead),
/// an unreachable cache (warning, or exit 1 with --cache-required), two applies pushing one fingerprint at once.
final class CacheCLITests: RegistryTestCase {
    func writeManifest(seed: Int = 0, file: String = "m.yaml", triton: Bool = false) throws {
        try """
        apiVersion: tsexport/v1
        kind: Export
        metadata:
          name: tiny-bert
        spec:
          model:
            class: BertModel
            seed: \(seed)
            config: {vocab_size: 64, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 37, max_position_embeddings: 64}
          inputs:
            tensors:
              - {name: input_ids, from: random, shape: [2, 8]}
              - {name: attention_mask, from: ones, shape: [2, 8]}
        \(triton ? "  trace:\n    envelope: {batch: [1, 4]}\n  output:\n    deploy:\n      - {kind: triton, repository: triton}\n" : "")
        """.write(to: tmp.appendingPathComponent(file), atomically: true, encoding: .utf8)
    }

    func cacheArgs(_ registry: LocalRegistry) -> [String] {
        ["--cache", "oci://\(registry.host)/team/cache", "--registry-insecure", registry.host]
    }

    func bundle(_ root: String) -> URL { tmp.appendingPathComponent("\(root)/build/tiny-bert") }

    func buildJSON(_ root: String) throws -> JSONValue {
        try JSONValue(parsing: Data(contentsOf: bundle(root).appendingPathComponent("build.json")))
    }

    /// A Python that logs its argv and every request line it is sent, then runs the real one.
    func loggingPython(log: URL) throws -> String {
        let real = ProcessInfo.processInfo.environment["TSEXPORT_PYTHON"] ?? ""
        let wrapper = tmp.appendingPathComponent("python-logging")
        try """
        #!/bin/bash
        echo "argv: $*" >> '\(log.path)'
        tee -a '\(log.path)' | exec '\(real)' "$@"

        """.write(to: wrapper, atomically: true, encoding: .utf8)
        chmod(wrapper.path, 0o755)
        return wrapper.path
    }

    func testHitInASecondRootIsByteIdenticalAndLoadsNoModel() throws {
        let registry = try LocalRegistry(self)
        try writeManifest(triton: true)
        let (built, builtText) = try tsexport(["apply", "m.yaml", "--output-root", "a"] + cacheArgs(registry))
        XCTAssertEqual(built, 0, builtText)
        XCTAssertTrue(builtText.contains("ok (pushed)"), builtText)
        let fingerprint = try XCTUnwrap(RecordSummary.read(bundle: bundle("a"))?.fingerprint)
        let tag = "fp-" + fingerprint.dropFirst("sha256:".count)
        XCTAssertEqual(try client(registry).tags(try Reference(parsing: "\(registry.host)/team/cache")), [tag])
        XCTAssertEqual(try buildJSON("a")["cache"]?["result"]?.stringValue, "pushed")

        let (planned, planText) = try tsexport(["plan", "m.yaml", "--output-root", "b", "--json"] + cacheArgs(registry))
        XCTAssertEqual(planned, 0, planText)
        let plan = try JSONValue(parsing: Data(planText.utf8))
        let cache = plan["entries"]?[0]?["cache"]
        XCTAssertEqual(cache?["status"]?.stringValue, "cached")
        XCTAssertEqual(cache?["tag"]?.stringValue, tag)
        XCTAssertEqual(plan["entries"]?[0]?["steps"]?[0]?["kind"]?.stringValue, "pull")

        // The second root runs a Python that logs every request: the manifest is served from the cache, so the
        // only requests are the verifying worker's.
        let log = tmp.appendingPathComponent("worker.log")
        let python = try loggingPython(log: log)
        let (served, servedText) = try tsexport(["apply", "m.yaml", "--output-root", "b"] + cacheArgs(registry), env: ["TSEXPORT_PYTHON": python])
        XCTAssertEqual(served, 0, servedText)
        XCTAssertTrue(servedText.contains("ok (pulled)"), servedText)
        XCTAssertEqual(try contentFiles(bundle("b")), try contentFiles(bundle("a")))
        XCTAssertEqual(BuildInfo.read(bundle: bundle("b"))?.contentDigest, BuildInfo.read(bundle: bundle("a"))?.contentDigest)
        // The Triton deploy, made from the pulled bundle with the recorded batch settings, is the built one.
        let triton = "triton/tiny-bert"
        for file in ["config.pbtxt", "1/model.pt"] {
            XCTAssertEqual(try Data(contentsOf: tmp.appendingPathComponent("b/\(triton)/\(file)")),
                           try Data(contentsOf: tmp.appendingPathComponent("a/\(triton)/\(file)")), file)
        }
        XCTAssertEqual(BuildInfo.read(bundle: bundle("b"))?.deployments, BuildInfo.read(bundle: bundle("a"))?.deployments)
        let build = try buildJSON("b")
        XCTAssertEqual(build["cache"]?["result"]?.stringValue, "pulled")
        XCTAssertEqual(build["cache"]?["digest"]?.stringValue, cache?["digest"]?.stringValue)
        let ops = try String(contentsOf: log, encoding: .utf8).split(separator: "\n").compactMap { line -> String? in
            (try? JSONValue(parsing: Data(line.utf8)))?["op"]?.stringValue
        }
        XCTAssertTrue(ops.contains("verify_bundle"), "\(ops)")
        XCTAssertFalse(ops.contains("export"), "a cached manifest was exported: \(ops)")
        // config_keys (plan's typo check: the config class's declared keys, no model) is asked once per new interpreter;
        // deploy makes the Triton entry from the pulled bundle.
        XCTAssertEqual(Set(ops).subtracting(["verify_bundle", "deploy", "config_keys", "shutdown"]), [], "\(ops)")

        // Installed as if built: the next plan is up to date, and verify accepts it.
        let (again, againText) = try tsexport(["plan", "m.yaml", "--output-root", "b"])
        XCTAssertEqual(again, 0, againText)
        XCTAssertTrue(againText.contains("Plan: 0 to create, 0 to rebuild, 1 up to date."), againText)
        let (verified, verifyText) = try tsexport(["verify", "b/build/tiny-bert"])
        XCTAssertEqual(verified, 0, verifyText)
    }

    func testForeignCorruptedAndForgedEntriesAreReportedAndBuiltInstead() throws {
        let registry = try LocalRegistry(self)
        let repo = try Reference(parsing: "\(registry.host)/team/cache")
        // Another manifest's bundle, pushed under this manifest's fingerprint tag: a foreign entry.
        try writeManifest(seed: 1, file: "other.yaml")
        let (other, otherText) = try tsexport(["apply", "other.yaml", "--output-root", "other"])
        XCTAssertEqual(other, 0, otherText)
        try writeManifest()
        let (planned, planText) = try tsexport(["plan", "m.yaml", "--output-root", "a", "--json"] + cacheArgs(registry))
        XCTAssertEqual(planned, 0, planText)
        let fingerprint = try XCTUnwrap(JSONValue(parsing: Data(planText.utf8))["entries"]?[0]?["fingerprint"]?.stringValue)
        let tag = "fp-" + fingerprint.dropFirst("sha256:".count)
        let foreign = try BundleTransfer(client: client(registry)).push(bundle: bundle("other"), to: repo, tags: [tag])

        let (a, aText) = try tsexport(["apply", "m.yaml", "--output-root", "a"] + cacheArgs(registry))
        XCTAssertEqual(a, 0, aText)
        let otherFingerprint = try XCTUnwrap(RecordSummary.read(bundle: bundle("other"))?.fingerprint)
        XCTAssertTrue(aText.contains("m.yaml:4:9: warning: tiny-bert: the cached entry \(registry.host)/team/cache@\(foreign.digest) was refused, not installed: \(registry.host)/team/cache@\(foreign.digest) (\(foreign.digest)): record.json has fingerprint \(otherFingerprint), expected \(fingerprint); building it instead"), aText)
        XCTAssertTrue(aText.contains("ok (pushed)"), aText)
        XCTAssertEqual(RecordSummary.read(bundle: bundle("a"))?.fingerprint, fingerprint)

        // The tag now names the good build; its model.pt blob is then corrupted in the registry's storage.
        let model = try Data(contentsOf: bundle("a").appendingPathComponent("model.pt"))
        let blob = "sha256:" + Digest.sha256(model)
        var bad = model
        bad[bad.count / 2] ^= 0xff
        try bad.write(to: registry.blobFile(blob))
        let (b, bText) = try tsexport(["apply", "m.yaml", "--output-root", "b"] + cacheArgs(registry))
        XCTAssertEqual(b, 0, bText)
        XCTAssertTrue(bText.contains("warning: tiny-bert: the cached entry \(registry.host)/team/cache@"), bText)
        XCTAssertTrue(bText.contains("blob \(blob) from \(registry.host)/team/cache is corrupt"), bText)
        XCTAssertTrue(bText.contains("building it instead"), bText)
        XCTAssertEqual(try Data(contentsOf: bundle("b").appendingPathComponent("model.pt")), model)
        XCTAssertEqual(try contentFiles(bundle("b")), try contentFiles(bundle("a")))
        let staging = tmp.appendingPathComponent("b/.tsexport/staging")
        XCTAssertEqual((try? FileManager.default.contentsOfDirectory(atPath: staging.path)) ?? [], [])

        // A consistent artifact with this fingerprint's record but another model.pt: every digest matches its
        // manifest, so only the verification in the fresh process catches it.
        let tampered = tmp.appendingPathComponent("tampered")
        try FileManager.default.createDirectory(at: tampered, withIntermediateDirectories: true)
        for (name, data) in try contentFiles(bundle("a")) { try data.write(to: tampered.appendingPathComponent(name)) }
        try FileManager.default.removeItem(at: tampered.appendingPathComponent("model.pt"))
        try FileManager.default.copyItem(at: bundle("other").appendingPathComponent("model.pt"), to: tampered.appendingPathComponent("model.pt"))
        let forged = try BundleTransfer(client: client(registry)).push(bundle: tampered, to: repo, tags: [tag])
        let (c, cText) = try tsexport(["apply", "m.yaml", "--output-root", "c"] + cacheArgs(registry))
        XCTAssertEqual(c, 0, cText)
        let otherSHA = Digest.sha256(try Data(contentsOf: bundle("other").appendingPathComponent("model.pt")))
        XCTAssertTrue(cText.contains("warning: tiny-bert: the cached entry \(registry.host)/team/cache@\(forged.digest) was refused, not installed: its verification in a fresh process failed: model.pt sha256 \(otherSHA) differs from the recorded \(Digest.sha256(model))"), cText)
        XCTAssertEqual(try contentFiles(bundle("c")), try contentFiles(bundle("a")))
    }

    func testUnreachableCacheWarnsOrWithCacheRequiredExitsOne() throws {
        let registry = try LocalRegistry(self)
        registry.stop()
        try writeManifest()
        let (required, requiredText) = try tsexport(["apply", "m.yaml", "--output-root", "req", "--cache-required"] + cacheArgs(registry))
        XCTAssertEqual(required, 1, requiredText)
        XCTAssertTrue(requiredText.contains("error: the cache \(registry.host)/team/cache could not be reached and --cache-required is set: "), requiredText)
        XCTAssertFalse(requiredText.contains("Traceback"), requiredText)
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp.appendingPathComponent("req").path))

        let (plain, plainText) = try tsexport(["apply", "m.yaml", "--output-root", "plain"] + cacheArgs(registry))
        XCTAssertEqual(plain, 0, plainText)
        XCTAssertTrue(plainText.contains("warning: tiny-bert: the push to the cache \(registry.host)/team/cache failed: "), plainText)
        XCTAssertTrue(plainText.contains("the bundle is installed"), plainText)
        XCTAssertTrue(plainText.contains("ok (push failed)"), plainText)
        XCTAssertEqual(try buildJSON("plain")["cache"]?["result"]?.stringValue, "push failed")

        // TSEXPORT_CACHE names the cache when --cache is not given; plan says why it builds.
        let (env, envText) = try tsexport(["plan", "m.yaml", "--output-root", "envroot", "--registry-insecure", registry.host],
                                          env: ["TSEXPORT_CACHE": "oci://\(registry.host)/team/cache"])
        XCTAssertEqual(env, 0, envText)
        XCTAssertTrue(envText.contains("    cache: build (the cache could not be reached: "), envText)
        XCTAssertTrue(envText.contains("(0 from the cache)."), envText)

        let (flag, flagText) = try tsexport(["apply", "m.yaml", "--output-root", "x", "--cache", "https://\(registry.host)/team/cache"])
        XCTAssertEqual(flag, 1, flagText)
        XCTAssertTrue(flagText.contains("error: --cache 'https://\(registry.host)/team/cache' is not oci://HOST[:PORT]/PATH"), flagText)
    }

    func testTwoAppliesPushingOneFingerprintAtOnceBothSucceed() throws {
        let registry = try LocalRegistry(self)
        try writeManifest()
        let procs = try ["a", "b"].map { root -> (Process, Pipe) in
            let p = try process(["apply", "m.yaml", "--output-root", root] + cacheArgs(registry))
            let out = Pipe()
            p.standardOutput = out
            p.standardError = out
            return (p, out)
        }
        for (p, _) in procs { try p.run() }
        var texts: [String] = []
        for (p, out) in procs {
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            let text = String(decoding: data, as: UTF8.self)
            texts.append(text)
            XCTAssertEqual(p.terminationStatus, 0, text)
            XCTAssertTrue(text.contains("ok (pushed)"), text)
        }
        XCTAssertEqual(try contentFiles(bundle("a")), try contentFiles(bundle("b")))
        XCTAssertEqual(try buildJSON("a")["cache"]?["digest"], try buildJSON("b")["cache"]?["digest"])
        let (pulled, pullText) = try tsexport(["apply", "m.yaml", "--output-root", "c"] + cacheArgs(registry))
        XCTAssertEqual(pulled, 0, pullText)
        XCTAssertTrue(pullText.contains("ok (pulled)"), pullText)
        XCTAssertEqual(try contentFiles(bundle("c")), try contentFiles(bundle("a")))
    }
}
