import ArgumentParser
import Diagnostics
import Foundation
import Manifest
import YAML

/// Options every manifest-reading command shares.
public struct ManifestOptions: ParsableArguments {
    /// Files and folders of manifests.
    @Argument(help: "Manifest files or folders (searched recursively for *.yaml and *.yml).")
    public var paths: [String] = []

    /// The output root.
    @Option(name: .customLong("output-root"), help: "Folder that output paths resolve against; nothing is written outside it. Default: the current directory.")
    public var outputRoot: String?

    /// Allows trust_remote_code.
    @Flag(name: .customLong("allow-remote-code"), help: "Allow manifests that set trust_remote_code: true.")
    public var allowRemoteCode = false

    /// Allows pickle weights.
    @Flag(name: .customLong("allow-pickle"), help: "Allow manifests that set allow_pickle: true to load pickle (.bin) weights.")
    public var allowPickle = false

    /// The per-file size limit.
    @Option(name: .customLong("max-manifest-bytes"), help: "Refuse manifest files larger than this (default 1 MiB).")
    public var maxManifestBytes: Int = 1 << 20

    /// Machine-readable output.
    @Flag(help: "Print JSON instead of text.")
    public var json = false

    /// Creates the defaults.
    public init() {}

    /// The validation options these flags mean.
    public var validationOptions: ValidationOptions {
        var limits = LoaderLimits()
        limits.maxBytes = maxManifestBytes
        return ValidationOptions(outputRoot: resolvedOutputRoot, allowRemoteCode: allowRemoteCode, allowPickle: allowPickle, limits: limits)
    }

    /// `--output-root`, else the current directory, as an absolute URL.
    public var resolvedOutputRoot: URL {
        let cwd = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
        guard let r = outputRoot else { return cwd.standardizedFileURL }
        return (r.hasPrefix("/") ? URL(fileURLWithPath: r) : cwd.appendingPathComponent(r)).standardizedFileURL
    }
}

/// Where output goes; injectable so tests capture it.
public final class Console: @unchecked Sendable {
    /// Standard output.
    public var out: (String) -> Void
    /// Standard error.
    public var err: (String) -> Void
    /// Colour on stderr.
    public var color: Bool
    /// Colour on stdout.
    public var colorOut: Bool
    /// Whether this is the process's own stdout/stderr (live progress only then).
    public var isStandard = false

    /// Creates a console.
    public init(out: @escaping (String) -> Void, err: @escaping (String) -> Void, color: Bool, colorOut: Bool, isStandard: Bool = false) {
        self.isStandard = isStandard
        self.out = out
        self.err = err
        self.color = color
        self.colorOut = colorOut
    }

    /// The process's own stdout and stderr, colour decided per stream.
    nonisolated(unsafe) public static var standard = Console(
        out: { s in FileHandle.standardOutput.write(Data((s + "\n").utf8)) },
        err: { s in FileHandle.standardError.write(Data((s + "\n").utf8)) },
        color: DiagnosticPrinter.wantsColor(fileDescriptor: 2),
        colorOut: DiagnosticPrinter.wantsColor(fileDescriptor: 1), isStandard: true)

    /// Prints diagnostics compiler-style on stderr.
    public func report(_ ds: [Diagnostic]) {
        guard !ds.isEmpty else { return }
        err(DiagnosticPrinter(color: color).render(ds))
    }

    /// Prints a JSON value on stdout.
    public func printJSON(_ object: Any) {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) ?? Data()
        out(String(decoding: data, as: UTF8.self))
    }
}
