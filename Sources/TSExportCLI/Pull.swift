import ArgumentParser
import Foundation
import Registry

/// Registry flags shared by commands that talk to registries.
public struct RegistryFlags: ParsableArguments {
    /// Hosts reached over plain HTTP.
    @Option(name: .customLong("registry-insecure"), help: "Allow plain HTTP for this registry host[:port] (repeatable); every other host is HTTPS.")
    public var insecure: [String] = []
    public init() {}

    /// The client options: these hosts, credentials from the Docker config of the environment.
    public func options(environment: [String: String] = ProcessInfo.processInfo.environment) -> RegistryOptions {
        RegistryOptions(insecureHosts: Set(insecure), credentials: DockerCredentials(environment: environment))
    }
}

/// `tsexport pull REFERENCE DIR`
public struct Pull: ParsableCommand {
    public static let configuration = CommandConfiguration(
        abstract: "Fetch a published or cached bundle from an OCI registry, check every digest, and write it as a bundle folder.")
    @Argument(help: "The artifact: host[:port]/path:tag or host[:port]/path@sha256:….")
    public var reference: String
    @Argument(help: "The bundle folder to write (replaced atomically if it holds a bundle; created if absent).")
    public var dir: String
    @OptionGroup public var registry: RegistryFlags
    @Flag(help: "Print JSON instead of text.")
    public var json = false
    public init() {}

    public func run() throws {
        let code = Pull.execute(self, console: .standard)
        if code != 0 { throw ExitCode(code) }
    }

    /// Runs the command and returns its exit code.
    public static func execute(_ cmd: Pull, console: Console, environment: [String: String] = ProcessInfo.processInfo.environment) -> Int32 {
        do {
            let ref = try Reference(parsing: cmd.reference)
            let cwd = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
            let dir = cmd.dir.hasPrefix("/") ? URL(fileURLWithPath: cmd.dir) : cwd.appendingPathComponent(cmd.dir)
            let client = RegistryClient(options: cmd.registry.options(environment: environment))
            let result = try BundleTransfer(client: client).pull(ref, into: dir)
            if cmd.json {
                console.printJSON(["reference": ref.description, "digest": result.digest, "fingerprint": result.fingerprint,
                                   "dir": dir.standardizedFileURL.path, "files": result.files] as [String: Any])
            } else {
                console.err("pulled \(ref) (\(result.digest)) into \(dir.standardizedFileURL.path): \(result.files.count) files, every digest checked")
            }
            return ExitStatus.success
        } catch {
            console.err("error: \(error)")
            return ExitStatus.failure
        }
    }
}
