import Bundles
import Foundation
import JSON
import TestSupport
@testable import Registry
import XCTest

/// Temporary folders, bundles and clients for the registry tests.
class RegistryTestCase: XCTestCase {
    var tmp: URL!

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("tsx-oci-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(at: tmp) }

    /// A tool or runtime the test needs is missing: skipped on a developer's machine, a failure where CI is set
    /// (`.ci/run` installs everything, so a missing tool there is a broken setup, never a pass).
    func missing(_ what: String) -> Error {
        if ProcessInfo.processInfo.environment["CI"].map({ !$0.isEmpty }) ?? false {
            XCTFail("\(what) (CI is set: scripts/bootstrap --test installs it)")
            return RegistryError("\(what)")
        }
        return XCTSkip(what)
    }

    /// The built tsexport, started in `cwd` (the test's folder unless given) with no Docker credentials, the hub
    /// offline and no cache from the caller's environment; `extra` is added last. Needs a runtime with torch.
    func process(_ args: [String], cwd: URL? = nil, env extra: [String: String] = [:]) throws -> Process {
        guard let exe = BuiltExecutable.tsexport else {
            XCTFail(BuiltExecutable.notFound)
            throw RegistryError(BuiltExecutable.notFound)
        }
        guard ProcessInfo.processInfo.environment["TSEXPORT_PYTHON"] != nil else { throw missing("TSEXPORT_PYTHON names no runtime with torch") }
        let folder = cwd ?? tmp!
        let p = Process()
        p.executableURL = exe
        p.arguments = args
        p.currentDirectoryURL = folder
        var env = ProcessInfo.processInfo.environment
        env["DOCKER_CONFIG"] = folder.appendingPathComponent("no-docker-config").path
        env["HF_HUB_OFFLINE"] = "1"
        env.removeValue(forKey: "TSEXPORT_CACHE")
        for (k, v) in extra { env[k] = v }
        p.environment = env
        return p
    }

    /// Runs the built tsexport to its end: the exit status and stdout and stderr together.
    func tsexport(_ args: [String], cwd: URL? = nil, env extra: [String: String] = [:]) throws -> (Int32, String) {
        let p = try process(args, cwd: cwd, env: extra)
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// A bundle folder of the layout tsexport writes (files of arbitrary content: these tests are about transport),
    /// plus a build.json that is not content.
    func makeBundle(_ name: String, modelBytes: Int = 300_000, seed: UInt8 = 1, fingerprint: String = String(repeating: "ab", count: 32)) throws -> URL {
        let dir = tmp.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var model = Data(count: modelBytes)
        model.withUnsafeMutableBytes { (p: UnsafeMutableRawBufferPointer) in for i in 0..<modelBytes { p[i] = UInt8(truncatingIfNeeded: i &* 31 &+ Int(seed)) } }
        try model.write(to: dir.appendingPathComponent("model.pt"))
        try Data("inputs-\(seed)".utf8).write(to: dir.appendingPathComponent("sample_inputs.safetensors"))
        try Data("outputs-\(seed)".utf8).write(to: dir.appendingPathComponent("reference_outputs.safetensors"))
        let record: JSONValue = .object([
            ("format", "tsexport-bundle/1"), ("name", .string(name)), ("fingerprint", .string(fingerprint)),
            ("versions", .object([("torch", "2.13.0+cpu"), ("tsexport", "0.2.0")])), ("dtype", "float32"),
            ("target", .object([("quantize", "dynamic_int8")])), ("model_class", "BertModel"),
            ("envelope", .object([("verified", .object([("batch", [1, 8]), ("sequence", [1, 128])]))])),
            ("model_bytes", .int(modelBytes)),
        ])
        try Data(record.serialized(pretty: true).utf8).write(to: dir.appendingPathComponent("record.json"))
        try Data("{\"built_at\": \"now\"}".utf8).write(to: dir.appendingPathComponent("build.json"))
        return dir
    }

    func client(_ registry: LocalRegistry, chunk: Int = 64 << 20, env: [String: String]? = nil) -> RegistryClient {
        var environment = ProcessInfo.processInfo.environment
        environment["DOCKER_CONFIG"] = tmp.appendingPathComponent("no-docker-config").path
        for (k, v) in env ?? [:] { environment[k] = v }
        return RegistryClient(options: RegistryOptions(insecureHosts: [registry.host], credentials: DockerCredentials(environment: environment),
                                                       chunkSize: chunk, timeout: 10))
    }

    func contentFiles(_ dir: URL) throws -> [String: Data] {
        var out: [String: Data] = [:]
        for f in try FileManager.default.contentsOfDirectory(atPath: dir.path) where f != "build.json" {
            out[f] = try Data(contentsOf: dir.appendingPathComponent(f))
        }
        return out
    }

}

/// The ModelPack manifest, references, and push/pull against a real registry (docker-registry on loopback).
final class RegistryTests: RegistryTestCase {
    func testManifestIsModelPackAndDeterministic() throws {
        let bundle = try makeBundle("bert-tiny")
        let a = try ModelPack.artifact(bundle: bundle)
        let b = try ModelPack.artifact(bundle: bundle)
        XCTAssertEqual(a.manifest, b.manifest)
        let m = try JSONValue(parsing: a.manifest)
        XCTAssertEqual(m["artifactType"]?.stringValue, "application/vnd.cncf.model.manifest.v1+json")
        XCTAssertEqual(m["config"]?["mediaType"]?.stringValue, "application/vnd.cncf.model.config.v1+json")
        let layers = m["layers"]?.arrayValue ?? []
        XCTAssertEqual(layers.compactMap { $0["annotations"]?["org.cncf.model.filepath"]?.stringValue },
                       ["model.pt", "record.json", "reference_outputs.safetensors", "sample_inputs.safetensors"])
        XCTAssertEqual(layers.compactMap { $0["mediaType"]?.stringValue }, [
            "application/vnd.cncf.model.weight.v1.raw", "application/vnd.cncf.model.weight.config.v1.raw",
            "application/vnd.cncf.model.weight.v1.raw", "application/vnd.cncf.model.weight.v1.raw",
        ])
        for l in layers {
            let path = l["annotations"]!["org.cncf.model.filepath"]!.stringValue!
            XCTAssertEqual(l["digest"]?.stringValue, "sha256:" + (try Digest.sha256(file: bundle.appendingPathComponent(path).path)))
            XCTAssertEqual(l["annotations"]?["org.opencontainers.image.title"]?.stringValue, path)
        }
        XCTAssertEqual(m["annotations"]?["dev.tsexport.fingerprint"]?.stringValue, String(repeating: "ab", count: 32))
        XCTAssertEqual(m["annotations"]?["dev.tsexport.envelope"]?.stringValue, "{\"batch\":[1,8],\"sequence\":[1,128]}")
        let config = try JSONValue(parsing: a.config)
        XCTAssertEqual(config["descriptor"]?["name"]?.stringValue, "bert-tiny")
        XCTAssertEqual(config["descriptor"]?["family"]?.stringValue, "bert")
        XCTAssertEqual(config["config"]?["format"]?.stringValue, "torchscript")
        XCTAssertEqual(config["config"]?["precision"]?.stringValue, "float32")
        XCTAssertEqual(config["config"]?["quantization"]?.stringValue, "dynamic_int8")
        XCTAssertEqual(config["modelfs"]?["diffIds"]?.arrayValue?.count, 4)
        // build.json changes nothing.
        try Data("{\"built_at\": \"later\"}".utf8).write(to: bundle.appendingPathComponent("build.json"))
        XCTAssertEqual(try ModelPack.artifact(bundle: bundle).manifest, a.manifest)
    }

    func testReferencesAndUnsafePaths() throws {
        let r = try Reference(parsing: "oci://localhost:5000/team/models:bert-base")
        XCTAssertEqual(r, Reference(registry: "localhost:5000", repository: "team/models", tag: "bert-base"))
        XCTAssertEqual(try Reference(parsing: "ubuntu").description, "docker.io/library/ubuntu")
        let d = "sha256:" + String(repeating: "0", count: 64)
        XCTAssertEqual(try Reference(parsing: "ghcr.io/a/b@\(d)").digest, d)
        XCTAssertThrowsError(try Reference(parsing: "ghcr.io/A/b:x")) { XCTAssertTrue("\($0)".contains("repository component \"A\"")) }
        XCTAssertThrowsError(try Reference(parsing: "ghcr.io/a/b@sha256:12"))
        for bad in ["../x", "/etc/passwd", "a/../../b", "a//b", "./a", "a\\b", ""] { XCTAssertFalse(ModelPack.isSafePath(bad), bad) }
        XCTAssertTrue(ModelPack.isSafePath("tokenizer/vocab.txt"))
        let c = Challenge("Bearer realm=\"https://auth.example/token\",service=\"registry.example\",scope=\"repository:a/b:pull\"")
        XCTAssertEqual(c?.scheme, "bearer")
        XCTAssertEqual(c?.params["realm"], "https://auth.example/token")
        XCTAssertEqual(c?.params["scope"], "repository:a/b:pull")
    }

    func testPushPullByteIdenticalMonolithicAndChunked() throws {
        let registry = try LocalRegistry(self)
        let bundle = try makeBundle("bert-tiny")
        let repo = try Reference(parsing: "\(registry.host)/team/models")
        let pushed = try BundleTransfer(client: client(registry)).push(bundle: bundle, to: repo, tags: ["bert-tiny", "bert-tiny-abababababab"])
        XCTAssertEqual(Set(pushed.blobs.values), ["uploaded"])
        // Again: every blob is found by HEAD and skipped.
        let again = try BundleTransfer(client: client(registry)).push(bundle: bundle, to: repo, tags: ["bert-tiny"])
        XCTAssertEqual(Set(again.blobs.values), ["exists"])
        XCTAssertEqual(again.digest, pushed.digest)
        XCTAssertEqual(Set(try client(registry).tags(repo)), ["bert-tiny", "bert-tiny-abababababab"])

        let out = tmp.appendingPathComponent("pulled/bert-tiny")
        let pulled = try BundleTransfer(client: client(registry)).pull(repo.tagged("bert-tiny-abababababab"), into: out)
        XCTAssertEqual(pulled.digest, pushed.digest)
        XCTAssertEqual(try contentFiles(out), try contentFiles(bundle))
        // build.json: the content as checked (the layers' digests) and where it came from; not content itself.
        let build = try XCTUnwrap(BuildInfo.read(bundle: out))
        XCTAssertEqual(build.contentDigest, try BundleContent.digest(of: out))
        XCTAssertEqual(build.contentDigest, pulled.contentDigest)
        XCTAssertEqual(Set(build.files.map(\.path)), ["model.pt", "record.json", "reference_outputs.safetensors", "sample_inputs.safetensors"])
        let pulledFact = try JSONValue(parsing: Data(contentsOf: out.appendingPathComponent("build.json")))["pulled"]
        XCTAssertEqual(pulledFact?["digest"]?.stringValue, pushed.digest)
        XCTAssertEqual(pulledFact?["reference"]?.stringValue, "\(registry.host)/team/models:bert-tiny-abababababab")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.deletingLastPathComponent().appendingPathComponent(".tsexport").path))

        // Chunked upload (PATCH with Content-Range) into another repository, pulled back by digest.
        let chunkedRepo = try Reference(parsing: "\(registry.host)/team/chunked")
        let big = try makeBundle("bert-chunked", modelBytes: 1_000_003, seed: 7)
        let c = try BundleTransfer(client: client(registry, chunk: 100_000)).push(bundle: big, to: chunkedRepo, tags: ["v1"])
        XCTAssertEqual(c.blobs["model.pt"], "uploaded")
        var byDigest = chunkedRepo
        byDigest.digest = c.digest
        let out2 = tmp.appendingPathComponent("pulled/chunked")
        _ = try BundleTransfer(client: client(registry)).pull(byDigest, into: out2)
        XCTAssertEqual(try contentFiles(out2), try contentFiles(big))

        // Cross-repository mount: the same bundle into a third repository, its blobs mounted, none uploaded.
        let mounted = try BundleTransfer(client: client(registry)).push(bundle: bundle, to: try Reference(parsing: "\(registry.host)/deploy/models"),
                                                                        tags: ["bert-tiny"], mountFrom: repo)
        XCTAssertEqual(Set(mounted.blobs.values), ["mounted"])
    }
}
