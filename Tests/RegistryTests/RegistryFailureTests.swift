import Bundles
import Foundation
import JSON
@testable import Registry
import XCTest

/// Independent clients, corrupted storage, basic auth and a registry that dies mid-transfer.
final class RegistryFailureTests: RegistryTestCase {
    func testSkopeoAndOrasReadTheModelPackArtifact() throws {
        let registry = try LocalRegistry(self)
        let bundle = try makeBundle("bert-tiny")
        let repo = try Reference(parsing: "\(registry.host)/team/models")
        _ = try BundleTransfer(client: client(registry)).push(bundle: bundle, to: repo, tags: ["bert-tiny"])
        let shas = try Dictionary(uniqueKeysWithValues: contentFiles(bundle).map { ($0.key, "sha256:" + Digest.sha256($0.value)) })

        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/skopeo") else { throw missing("skopeo is not installed") }
        let raw = try LocalRegistry.run(["/usr/bin/skopeo", "inspect", "--tls-verify=false", "--raw", "docker://\(registry.host)/team/models:bert-tiny"])
        let m = try JSONValue(parsing: raw)
        XCTAssertEqual(m["artifactType"]?.stringValue, ModelPack.artifactType)
        XCTAssertEqual(m["config"]?["mediaType"]?.stringValue, ModelPack.configMediaType)
        var seen: [String: String] = [:]
        for l in m["layers"]?.arrayValue ?? [] { seen[l["annotations"]!["org.cncf.model.filepath"]!.stringValue!] = l["digest"]?.stringValue }
        XCTAssertEqual(seen, shas)
        // skopeo fetches the config blob by its digest and checks it.
        let configText = try LocalRegistry.run(["/usr/bin/skopeo", "inspect", "--tls-verify=false", "--raw", "--config", "docker://\(registry.host)/team/models:bert-tiny"])
        XCTAssertEqual(try JSONValue(parsing: configText)["descriptor"]?["family"]?.stringValue, "bert")

        guard let py = ProcessInfo.processInfo.environment["TSEXPORT_PYTHON"] ?? ProcessInfo.processInfo.environment["PY"] else {
            throw missing("TSEXPORT_PYTHON names no Python with the oras SDK")
        }
        let outdir = tmp.appendingPathComponent("oras-out")
        let script = """
        import hashlib, json, os, sys
        import oras.client
        c = oras.client.OrasClient(hostname="\(registry.host)", insecure=True)
        m = c.get_manifest("\(registry.host)/team/models:bert-tiny")
        assert m["artifactType"] == "\(ModelPack.artifactType)", m.get("artifactType")
        files = c.pull(target="\(registry.host)/team/models:bert-tiny", outdir="\(outdir.path)")
        out = {}
        for f in files:
            out[os.path.relpath(f, "\(outdir.path)")] = "sha256:" + hashlib.sha256(open(f, "rb").read()).hexdigest()
        print(json.dumps(out))
        """
        let printed = try LocalRegistry.run([py, "-c", script])
        let oras = try JSONValue(parsing: printed.split(separator: "\n").last.map(String.init) ?? "")
        var orasShas: [String: String] = [:]
        for (k, v) in oras.objectValue ?? [] { orasShas[k] = v.stringValue }
        XCTAssertEqual(orasShas, shas)
    }

    func testCorruptBlobIsRefusedWithItsDigestAndNothingInstalled() throws {
        let registry = try LocalRegistry(self)
        let bundle = try makeBundle("bert-tiny")
        let repo = try Reference(parsing: "\(registry.host)/team/models")
        let artifact = try ModelPack.artifact(bundle: bundle)
        _ = try BundleTransfer(client: client(registry)).push(artifact, to: repo, tags: ["bert-tiny"])
        let model = artifact.layers.first { $0.path == "model.pt" }!.descriptor
        // Flip bytes in the registry's own storage (same size: only the digest can tell).
        let stored = registry.blobFile(model.digest)
        var bytes = try Data(contentsOf: stored)
        bytes[1000] ^= 0xff
        try bytes.write(to: stored)

        let out = tmp.appendingPathComponent("pulled/bert-tiny")
        XCTAssertThrowsError(try BundleTransfer(client: client(registry)).pull(repo.tagged("bert-tiny"), into: out)) { e in
            XCTAssertTrue("\(e)".contains("blob \(model.digest) from \(registry.host)/team/models is corrupt"), "\(e)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out.deletingLastPathComponent().path), [])

        // An existing bundle at the destination stays as it was.
        let old = try makeBundle("old", seed: 9)
        let before = try contentFiles(old)
        XCTAssertThrowsError(try BundleTransfer(client: client(registry)).pull(repo.tagged("bert-tiny"), into: old))
        XCTAssertEqual(try contentFiles(old), before)
    }

    func testBasicAuthWithDockerConfig() throws {
        let registry = try LocalRegistry(self, htpasswd: (user: "ci", password: "s3cret-pass"))
        let bundle = try makeBundle("bert-tiny")
        let repo = try Reference(parsing: "\(registry.host)/team/models")

        XCTAssertThrowsError(try BundleTransfer(client: client(registry)).push(bundle: bundle, to: repo, tags: ["bert-tiny"])) { e in
            XCTAssertTrue("\(e)".contains("HTTP 401 (the registry asks: Basic realm=\"tsexport-test\")"), "\(e)")
            XCTAssertTrue("\(e)".contains("credentials come from"), "\(e)")
        }
        let configDir = tmp.appendingPathComponent("docker")
        try FileManager.default.createDirectory(at: configDir, withIntermediateDirectories: true)
        let auth = Data("ci:s3cret-pass".utf8).base64EncodedString()
        try Data("{\"auths\": {\"\(registry.host)\": {\"auth\": \"\(auth)\"}}}".utf8).write(to: configDir.appendingPathComponent("config.json"))
        let env = ["DOCKER_CONFIG": configDir.path]
        let pushed = try BundleTransfer(client: client(registry, env: env)).push(bundle: bundle, to: repo, tags: ["bert-tiny"])
        let out = tmp.appendingPathComponent("pulled/bert-tiny")
        XCTAssertEqual(try BundleTransfer(client: client(registry, env: env)).pull(repo.tagged("bert-tiny"), into: out).digest, pushed.digest)
        XCTAssertEqual(try contentFiles(out), try contentFiles(bundle))

        // skopeo reads the same config file.
        let raw = try LocalRegistry.run(["/usr/bin/skopeo", "inspect", "--tls-verify=false", "--raw", "--authfile", configDir.appendingPathComponent("config.json").path,
                                         "docker://\(registry.host)/team/models:bert-tiny"])
        XCTAssertEqual("sha256:" + Digest.sha256(raw), pushed.digest)
    }

    func testRegistryKilledMidPushLeavesTagsAndDestinationsAsTheyWere() throws {
        let registry = try LocalRegistry(self)
        let repo = try Reference(parsing: "\(registry.host)/team/models")
        let v1 = try makeBundle("v1", modelBytes: 10_000, seed: 1)
        let first = try BundleTransfer(client: client(registry)).push(bundle: v1, to: repo, tags: ["bert"])
        // A large second version, uploaded in small chunks; the registry is killed while it goes up.
        let v2 = try makeBundle("v2", modelBytes: 96 << 20, seed: 2)
        let artifact = try ModelPack.artifact(bundle: v2)
        let killer = Thread { usleep(400_000); registry.kill() }
        killer.start()
        XCTAssertThrowsError(try BundleTransfer(client: client(registry, chunk: 256 << 10)).push(artifact, to: repo, tags: ["bert"])) { e in
            let text = "\(e)"
            XCTAssertTrue(text.contains(registry.host) && (text.contains("PATCH") || text.contains("POST") || text.contains("PUT") || text.contains("HEAD")), text)
        }
        try registry.start()
        XCTAssertEqual(try client(registry).headManifest(repo.tagged("bert"))?.digest, first.digest)

        // A pull cut off by the registry's death installs nothing.
        let full = try BundleTransfer(client: client(registry)).push(artifact, to: repo, tags: ["bert-v2"])
        XCTAssertNotEqual(full.digest, first.digest)
        let out = tmp.appendingPathComponent("pulled/bert")
        // Killed once model.pt has started to arrive in staging.
        let partial = out.deletingLastPathComponent().appendingPathComponent(".tsexport/staging/bert.pull.staging/model.pt").path
        let killer2 = Thread {
            let deadline = Date().addingTimeInterval(20)
            while Date() < deadline, ((try? FileManager.default.attributesOfItem(atPath: partial)[.size] as? Int) ?? 0) < (1 << 20) { usleep(500) }
            registry.kill()
        }
        killer2.start()
        XCTAssertThrowsError(try BundleTransfer(client: client(registry)).pull(repo.tagged("bert-v2"), into: out)) { e in
            XCTAssertTrue("\(e)".contains(registry.host), "\(e)")
        }
        Thread.sleep(forTimeInterval: 0.2)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out.deletingLastPathComponent().path), [])
    }
}
