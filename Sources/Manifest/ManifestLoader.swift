import Diagnostics
import Foundation
import YAML

/// What the command line decides about validation.
public struct ValidationOptions: Sendable {
    /// Output paths resolve against it and must stay inside it.
    public var outputRoot: URL
    /// `--allow-remote-code`: lets `trust_remote_code: true` through.
    public var allowRemoteCode: Bool
    /// `--allow-pickle`: lets `allow_pickle: true` through.
    public var allowPickle: Bool
    /// YAML loader limits (size, depth, aliases).
    public var limits: LoaderLimits
    /// The output root with symbolic links resolved, computed once for every path check.
    public var realOutputRoot: String

    /// Creates options; the output root defaults to the current directory.
    public init(
        outputRoot: URL = URL(fileURLWithPath: FileManager.default.currentDirectoryPath),
        allowRemoteCode: Bool = false, allowPickle: Bool = false, limits: LoaderLimits = LoaderLimits()
    ) {
        self.outputRoot = outputRoot.standardizedFileURL
        self.realOutputRoot = outputRoot.resolvingSymlinksInPath().standardizedFileURL.path
        self.allowRemoteCode = allowRemoteCode
        self.allowPickle = allowPickle
        self.limits = limits
    }
}

/// The outcome of validating a set of files: the valid manifests and every problem found.
public struct ValidationResult: Sendable {
    /// Manifests that passed every check, in file order then document order.
    public var manifests: [Manifest]
    /// Every problem, in reading order per file.
    public var diagnostics: [Diagnostic]
    /// How many files were read.
    public var fileCount: Int
    /// Whether the whole set is usable (no errors anywhere).
    public var isValid: Bool { !diagnostics.hasErrors }
}

/// Loads manifest files: YAML → positioned nodes → schema → typed manifests → semantic checks, gathering every
/// problem in every file in one run.
public struct ManifestLoader: Sendable {
    /// The options in force.
    public var options: ValidationOptions

    /// Creates a loader.
    public init(options: ValidationOptions) { self.options = options }

    /// Validates files and folders (folders are searched recursively for `*.yaml` and `*.yml`).
    public func validate(paths: [String]) -> ValidationResult {
        var diagnostics: [Diagnostic] = []
        let files = Self.expand(paths: paths, diagnostics: &diagnostics)
        var manifests: [Manifest] = []
        for file in files {
            let (ms, ds) = load(file: file)
            manifests += ms
            diagnostics += ds
        }
        diagnostics += crossManifestChecks(manifests)
        return ValidationResult(manifests: manifests, diagnostics: diagnostics, fileCount: files.count)
    }

    /// Expands folders into their manifest files (sorted, so output is stable); a missing path is an error.
    static func expand(paths: [String], diagnostics: inout [Diagnostic]) -> [String] {
        var out: [String] = []
        let fm = FileManager.default
        for path in paths {
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: path, isDirectory: &isDir) else {
                diagnostics.append(.error("no such file or directory: \(path)"))
                continue
            }
            if !isDir.boolValue {
                out.append(path)
                continue
            }
            var found: [String] = []
            if let e = fm.enumerator(atPath: path) {
                while let rel = e.nextObject() as? String {
                    let name = (rel as NSString).lastPathComponent
                    if name.hasPrefix(".") {
                        if (e.fileAttributes?[.type] as? FileAttributeType) == .typeDirectory { e.skipDescendants() }
                        continue
                    }
                    if rel.hasSuffix(".yaml") || rel.hasSuffix(".yml") {
                        found.append(path.hasSuffix("/") ? path + rel : path + "/" + rel)
                    }
                }
            }
            if found.isEmpty { diagnostics.append(.warning("no *.yaml or *.yml files in \(path)")) }
            out += found.sorted()
        }
        return out
    }

    /// Loads one file: every document in it, each validated; the file's problems in reading order.
    public func load(file: String) -> ([Manifest], [Diagnostic]) {
        let start = SourceLocation(file: file, line: 1, column: 1)
        let url = URL(fileURLWithPath: file)
        if let size = (try? FileManager.default.attributesOfItem(atPath: file))?[.size] as? Int, size > options.limits.maxBytes {
            return ([], [.error("file is \(size) bytes, over the limit of \(options.limits.maxBytes) bytes per manifest", at: start)])
        }
        guard let data = FileManager.default.contents(atPath: file) else {
            return ([], [.error("cannot read file", at: start)])
        }
        return load(bytes: data, file: file, directory: url.deletingLastPathComponent().standardizedFileURL)
    }

    /// Loads manifest text already in memory (tests, stdin).
    public func load(bytes: Data, file: String, directory: URL) -> ([Manifest], [Diagnostic]) {
        let documents: [Document]
        do {
            documents = try YAMLLoader(limits: options.limits).load(bytes)
        } catch {
            return ([], [Self.diagnostic(for: error, file: file)])
        }
        guard !documents.isEmpty else {
            return ([], [.error("file holds no manifest: it is empty", at: SourceLocation(file: file, line: 1, column: 1))])
        }
        var manifests: [Manifest] = []
        var diagnostics: [Diagnostic] = []
        for doc in documents {
            let (m, ds) = DocumentValidator(options: options, file: file, directory: directory).validate(doc)
            diagnostics += ds
            if let m, !ds.hasErrors { manifests.append(m) }
        }
        return (manifests, diagnostics)
    }

    static func diagnostic(for error: YAMLError, file: String) -> Diagnostic {
        let loc = error.mark.map { SourceLocation(file: file, line: $0.line, column: $0.column) }
            ?? SourceLocation(file: file, line: 1, column: 1)
        var notes: [Diagnostic.Note] = []
        if let n = error.note {
            notes.append(.init(message: n.message, location: SourceLocation(file: file, line: n.mark.line, column: n.mark.column)))
        }
        return .error(error.message, at: loc, notes: notes)
    }

    /// Checks that span manifests: unique names, distinct output folders.
    func crossManifestChecks(_ manifests: [Manifest]) -> [Diagnostic] {
        var out: [Diagnostic] = []
        var names: [String: Manifest] = [:]
        var dirs: [String: Manifest] = [:]
        for m in manifests {
            if let first = names[m.name] {
                out.append(.error(
                    "metadata.name '\(m.name)' is already used by another manifest; names must be unique",
                    at: m.locations.location(of: "metadata.name"), field: "metadata.name",
                    notes: [.init(message: "first used here", location: first.locations.location(of: "metadata.name"))]))
                continue
            }
            names[m.name] = m
            let dir = OutputPaths.normalise(m.output.dir)
            if let first = dirs[dir] {
                out.append(.error(
                    "output.dir '\(m.output.dir)' is also the output folder of '\(first.name)'; each manifest needs its own",
                    at: m.locations.location(of: "spec.output.dir"), field: "spec.output.dir",
                    notes: [.init(message: "'\(first.name)' writes there", location: first.locations.location(of: "spec.output.dir"))]))
            }
            dirs[dir] = m
        }
        return out
    }
}
