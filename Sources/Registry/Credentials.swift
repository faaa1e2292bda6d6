import Foundation
import JSON

/// A user name and secret for one registry.
public struct Credential: Sendable, Equatable {
    public var username: String
    public var password: String
    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }
}

/// Credentials as docker, skopeo and oras read them: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`;
/// `credHelpers[host]`, else `credsStore`, run as `docker-credential-<name> get` (argv, the host on stdin); else the
/// `auths` entry (`auth` = base64 `user:password`, or `username`/`password`).
public struct DockerCredentials: Sendable {
    /// The config file read (absent file: anonymous everywhere).
    public var configPath: String
    /// The search path for credential helpers.
    public var searchPath: String

    /// The config file the environment names.
    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        if let dir = environment["DOCKER_CONFIG"], !dir.isEmpty {
            configPath = (dir as NSString).appendingPathComponent("config.json")
        } else {
            let home = environment["HOME"] ?? NSHomeDirectory()
            configPath = (home as NSString).appendingPathComponent(".docker/config.json")
        }
        searchPath = environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    }

    /// The credential for a registry host (as named in the reference), or nil for anonymous access.
    public func credential(for registry: String) throws -> Credential? {
        guard let data = FileManager.default.contents(atPath: configPath) else { return nil }
        let config: JSONValue
        do { config = try JSONValue(parsing: data) } catch {
            throw RegistryError("\(configPath): not valid JSON (\(error))")
        }
        let keys = Self.keys(for: registry)
        if let helpers = config["credHelpers"]?.objectValue,
           let helper = helpers.first(where: { keys.contains($0.0) })?.1.stringValue {
            return try runHelper(helper, host: registry)
        }
        if let auths = config["auths"]?.objectValue, let entry = auths.first(where: { keys.contains($0.0) })?.1 {
            if let auth = entry["auth"]?.stringValue, !auth.isEmpty {
                guard let raw = Data(base64Encoded: auth), let text = String(data: raw, encoding: .utf8),
                      let colon = text.firstIndex(of: ":") else {
                    throw RegistryError("\(configPath): auths[\"\(registry)\"].auth is not base64 of user:password")
                }
                return Credential(username: String(text[..<colon]), password: String(text[text.index(after: colon)...]))
            }
            if let u = entry["username"]?.stringValue, let p = entry["password"]?.stringValue {
                return Credential(username: u, password: p)
            }
        }
        if let store = config["credsStore"]?.stringValue, !store.isEmpty {
            return try runHelper(store, host: registry)
        }
        return nil
    }

    /// The keys a config may use for a host: the bare host, with a scheme, Docker Hub's legacy index URL.
    static func keys(for registry: String) -> Set<String> {
        var keys: Set<String> = [registry, "https://\(registry)", "http://\(registry)", "https://\(registry)/v1/", "https://\(registry)/v2/"]
        if registry == "docker.io" {
            keys.formUnion(["https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io"])
        }
        return keys
    }

    /// Runs `docker-credential-<name> get` with the host on stdin; `{"Username","Secret"}` on stdout.
    func runHelper(_ name: String, host: String) throws -> Credential? {
        guard name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }) else {
            throw RegistryError("\(configPath): credential helper name \"\(name)\" is not a plain program name")
        }
        let program = "docker-credential-\(name)"
        guard let exe = searchPath.split(separator: ":").map({ "\($0)/\(program)" })
            .first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw RegistryError("\(configPath) names the credential helper \(program), which is not on PATH")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = ["get"]
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        p.standardInput = stdin
        p.standardOutput = stdout
        p.standardError = stderr
        try p.run()
        stdin.fileHandleForWriting.write(Data(host.utf8))
        try? stdin.fileHandleForWriting.close()
        let out = stdout.fileHandleForReading.readDataToEndOfFile()
        let err = stderr.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let errText = String(decoding: err + out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if p.terminationStatus != 0 {
            if errText.contains("credentials not found") { return nil }
            throw RegistryError("\(program) get \(host) exited with status \(p.terminationStatus): \(errText.prefix(200))")
        }
        guard let v = try? JSONValue(parsing: out), let u = v["Username"]?.stringValue, let s = v["Secret"]?.stringValue else {
            throw RegistryError("\(program) get \(host) did not print {\"Username\", \"Secret\"}")
        }
        return Credential(username: u, password: s)
    }
}
