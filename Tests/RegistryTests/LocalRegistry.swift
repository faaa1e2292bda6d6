import Foundation
import XCTest

/// A real CNCF distribution registry (Debian's `docker-registry`, distribution 2.8) on a loopback port, with
/// filesystem storage in a temporary folder; optionally behind htpasswd basic auth. Started by a test and stopped in
/// its teardown (whether it passed or failed); started under `setpriv --pdeathsig KILL`, so a test process that dies
/// takes its registry with it.
final class LocalRegistry: @unchecked Sendable {
    /// Bearer-token auth (`auth: token:`): where the token server is, the service and issuer it signs for, and the
    /// certificate whose key signs the tokens.
    struct TokenAuth {
        var realm: String
        var service: String
        var issuer: String
        var certificate: String
    }

    let dir: URL
    let port: Int
    let htpasswd: (user: String, password: String)?
    private var process: Process?

    var host: String { "127.0.0.1:\(port)" }
    /// Where the registry keeps blobs: `<storage>/docker/registry/v2/blobs/sha256/<2>/<64>/data`.
    var storage: URL { dir.appendingPathComponent("data") }

    init(_ test: XCTestCase, htpasswd: (user: String, password: String)? = nil, token: TokenAuth? = nil) throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/docker-registry") else {
            throw (test as? RegistryTestCase)?.missing("docker-registry is not installed") ?? XCTSkip("docker-registry is not installed")
        }
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("tsx-registry-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        port = LocalRegistry.freePort()
        self.htpasswd = htpasswd
        var config = """
        version: 0.1
        log:
          level: error
          accesslog:
            disabled: true
        storage:
          filesystem:
            rootdirectory: \(storage.path)
          delete:
            enabled: true
        http:
          addr: 127.0.0.1:\(port)
        """
        if let h = htpasswd {
            let file = dir.appendingPathComponent("htpasswd")
            let out = try LocalRegistry.run(["/usr/bin/htpasswd", "-Bbn", h.user, h.password])
            try out.write(to: file, atomically: true, encoding: .utf8)
            config += "\nauth:\n  htpasswd:\n    realm: tsexport-test\n    path: \(file.path)"
        }
        if let t = token {
            config += "\nauth:\n  token:\n    realm: \(t.realm)\n    service: \(t.service)\n    issuer: \(t.issuer)\n    rootcertbundle: \(t.certificate)"
        }
        try (config + "\n").write(to: dir.appendingPathComponent("config.yml"), atomically: true, encoding: .utf8)
        test.addTeardownBlock { [self] in
            stop()
            try? FileManager.default.removeItem(at: dir)
        }
        try start()
    }

    func start() throws {
        let p = Process()
        let serve = ["/usr/bin/docker-registry", "serve", dir.appendingPathComponent("config.yml").path]
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") {
            p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            p.arguments = ["--pdeathsig", "KILL", "--"] + serve
        } else {
            p.executableURL = URL(fileURLWithPath: serve[0])
            p.arguments = Array(serve.dropFirst())
        }
        p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        p.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try p.run()
        process = p
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if accepts() { return }
            usleep(50_000)
        }
        stop()
        XCTFail("docker-registry did not answer on \(host) within 20 s")
    }

    /// Kills the registry (SIGKILL: no graceful end for requests in flight).
    func kill() {
        guard let p = process else { return }
        Foundation.kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        process = nil
    }

    func stop() {
        guard let p = process else { return }
        p.terminate()
        p.waitUntilExit()
        process = nil
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: dir)
    }

    /// The stored file of a blob.
    func blobFile(_ digest: String) -> URL {
        let hex = String(digest.dropFirst("sha256:".count))
        return storage.appendingPathComponent("docker/registry/v2/blobs/sha256/\(hex.prefix(2))/\(hex)/data")
    }

    /// Whether something accepts TCP connections on the port (an HTTP probe would meet the htpasswd registry's
    /// Basic challenge, which FoundationNetworking's default handling never completes).
    func accepts() -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        let len = socklen_t(MemoryLayout<sockaddr_in>.size)
        return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, len) } } == 0
    }

    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// Runs argv, returns stdout; throws with stderr on a non-zero exit.
    @discardableResult
    static func run(_ argv: [String], environment: [String: String]? = nil) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: argv[0])
        p.arguments = Array(argv.dropFirst())
        if let environment { p.environment = environment }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw NSError(domain: "run", code: Int(p.terminationStatus), userInfo: [NSLocalizedDescriptionKey: "\(argv.joined(separator: " ")): \(String(decoding: e, as: UTF8.self))"])
        }
        return String(decoding: o, as: UTF8.self)
    }
}
