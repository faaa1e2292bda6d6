import Bundles
import Foundation
import JSON
@testable import Registry
import XCTest

/// The bearer-token flow against docker-registry's own `auth: token:` (JWTs checked against a certificate): the
/// registry answers 401 with `WWW-Authenticate: Bearer realm=…,service=…,scope=…`; the client asks the realm for a
/// token with the Docker config's credential as Basic, then retries with `Authorization: Bearer`. The token server is
/// a small Python program (test-only, standard library; RS256 signatures made by the openssl command) that checks
/// the credential, logs each scope asked for and signs the requested access.
final class BearerAuthTests: RegistryTestCase {
    static let tokenServer = #"""
    import base64, json, subprocess, sys, time, uuid
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from urllib.parse import parse_qs, urlparse

    key_file, cert_file, user, password, issuer, log = sys.argv[1:7]
    der = subprocess.run(["openssl", "x509", "-in", cert_file, "-outform", "DER"], capture_output=True, check=True).stdout
    x5c = base64.b64encode(der).decode()

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args): pass
        def do_GET(self):
            q = parse_qs(urlparse(self.path).query)
            expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            ok = self.headers.get("Authorization") == expected
            with open(log, "a") as f:
                f.write(json.dumps({"ok": ok, "service": q.get("service", [""])[0], "scope": q.get("scope", [])}) + "\n")
            if not ok:
                self.send_response(401)
                self.end_headers()
                return
            access = []
            for s in q.get("scope", []):
                kind, name, actions = s.split(":")
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
            now = int(time.time())
            header = {"typ": "JWT", "alg": "RS256", "x5c": [x5c]}
            claims = {"iss": issuer, "sub": user, "aud": q["service"][0], "exp": now + 300, "nbf": now - 10, "iat": now,
                      "jti": str(uuid.uuid4()), "access": access}
            signing = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
            signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key_file], input=signing.encode(),
                                       capture_output=True, check=True).stdout
            body = json.dumps({"token": signing + "." + b64(signature)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = HTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """#

    func testBearerTokenFlowWithDockerConfigCredentials() throws {
        guard let py = ProcessInfo.processInfo.environment["TSEXPORT_PYTHON"] else { throw missing("TSEXPORT_PYTHON names no Python") }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl") else { throw missing("openssl is not installed") }
        let keyFile = tmp.appendingPathComponent("token.key"), certFile = tmp.appendingPathComponent("token.crt")
        try LocalRegistry.run(["/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", keyFile.path, "-out", certFile.path,
                               "-days", "1", "-subj", "/CN=tsexport-test-token-issuer"])
        let log = tmp.appendingPathComponent("token.log")
        let script = tmp.appendingPathComponent("token_server.py")
        try Self.tokenServer.write(to: script, atomically: true, encoding: .utf8)

        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        server.arguments = ["--pdeathsig", "KILL", "--", py, script.path, keyFile.path, certFile.path, "ci", "t0ken-pass", "tsexport-test-issuer", log.path]
        let out = Pipe()
        server.standardOutput = out
        server.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try server.run()
        addTeardownBlock {
            server.terminate()
            server.waitUntilExit()
        }
        var portText = ""
        while let byte = try out.fileHandleForReading.read(upToCount: 1), let c = byte.first, c != UInt8(ascii: "\n") {
            portText.append(Character(UnicodeScalar(c)))
        }
        let tokenPort = try XCTUnwrap(Int(portText), "the token server printed \(portText)")

        let registry = try LocalRegistry(self, token: .init(realm: "http://127.0.0.1:\(tokenPort)/token", service: "tsexport-test-registry",
                                                            issuer: "tsexport-test-issuer", certificate: certFile.path))
        let bundle = try makeBundle("bert-tiny")
        let repo = try Reference(parsing: "\(registry.host)/team/models")
        let configDir = tmp.appendingPathComponent("docker")
        try FileManager.default.createDirectory(at: configDir, withIntermediateDirectories: true)
        func writeConfig(_ password: String) throws {
            let auth = Data("ci:\(password)".utf8).base64EncodedString()
            try Data("{\"auths\": {\"\(registry.host)\": {\"auth\": \"\(auth)\"}}}".utf8).write(to: configDir.appendingPathComponent("config.json"))
        }
        let env = ["DOCKER_CONFIG": configDir.path]

        // A wrong password: the token server refuses, and the error names the realm.
        try writeConfig("wrong")
        XCTAssertThrowsError(try BundleTransfer(client: client(registry, env: env)).push(bundle: bundle, to: repo, tags: ["bert-tiny"])) { e in
            XCTAssertTrue("\(e)".contains("token from http://127.0.0.1:\(tokenPort)/token"), "\(e)")
            XCTAssertTrue("\(e)".contains("HTTP 401"), "\(e)")
        }

        try writeConfig("t0ken-pass")
        let pushed = try BundleTransfer(client: client(registry, env: env)).push(bundle: bundle, to: repo, tags: ["bert-tiny"])
        let pulledDir = tmp.appendingPathComponent("pulled/bert-tiny")
        let pulled = try BundleTransfer(client: client(registry, env: env)).pull(repo.tagged("bert-tiny"), into: pulledDir)
        XCTAssertEqual(pulled.digest, pushed.digest)
        XCTAssertEqual(try contentFiles(pulledDir), try contentFiles(bundle))

        let asked = try String(contentsOf: log, encoding: .utf8).split(separator: "\n").map { try JSONValue(parsing: Data($0.utf8)) }
        XCTAssertEqual(asked.first?["ok"], .bool(false))
        XCTAssertTrue(asked.contains { $0["ok"] == .bool(true) && $0["service"]?.stringValue == "tsexport-test-registry"
                && ($0["scope"]?.arrayValue ?? []).contains(.string("repository:team/models:pull,push")) }, "\(asked)")
        XCTAssertTrue(asked.contains { $0["ok"] == .bool(true) && ($0["scope"]?.arrayValue ?? []).contains(.string("repository:team/models:pull")) }, "\(asked)")
        // Without credentials the registry's challenge is Bearer, and anonymous access is refused.
        XCTAssertThrowsError(try BundleTransfer(client: client(registry)).pull(repo.tagged("bert-tiny"), into: tmp.appendingPathComponent("anon"))) { e in
            XCTAssertTrue("\(e)".contains("401"), "\(e)")
        }
    }
}
