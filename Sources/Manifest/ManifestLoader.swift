import Diagnostics
import Dispatch
import Foundation
import YAML

#if canImport(Glibc)
import Glibc
#endif

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

    /// Loads files one after another instead of in parallel. Only the tests set it, to compare both paths.
    var sequential = false

    /// Validates files and folders (folders are searched recursively for `*.yaml` and `*.yml`). Files are
    /// independent, so they are parsed and checked in parallel on every core; the manifests and diagnostics keep
    /// input order (file order, then reading order within a file), exactly as a sequential run gives them. The
    /// cross-file checks (unique names, distinct output folders) run after every file is loaded.
    public func validate(paths: [String]) -> ValidationResult {
        var diagnostics: [Diagnostic] = []
        let files = Self.expand(paths: paths, diagnostics: &diagnostics)
        var manifests: [Manifest] = []
        for (ms, ds) in loadAll(files: files) {
            manifests += ms
            diagnostics += ds
        }
        diagnostics += crossManifestChecks(manifests)
        return ValidationResult(manifests: manifests, diagnostics: diagnostics, fileCount: files.count)
    }

    /// Every file's result, in the order of `files`: in parallel over the cores unless `sequential` is set or there
    /// is only one file or one core.
    func loadAll(files: [String]) -> [([Manifest], [Diagnostic])] {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        guard !sequential, files.count > 1, cores > 1 else { return files.map { load(file: $0) } }
        // Warm the compiled schema once here rather than inside the first iterations.
        _ = ManifestSchema.validator
        let slots = ResultSlots(count: files.count)
        // Each iteration takes a small run of files (a few per core's share) to keep dispatch overhead low while
        // still balancing uneven files across the cores.
        let chunk = max(1, min(16, files.count / (cores * 8)))
        let chunks = (files.count + chunk - 1) / chunk
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            for i in (c * chunk)..<min(files.count, (c + 1) * chunk) {
                slots.store(load(file: files[i]), at: i)
            }
        }
        return slots.take()
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
                    if isManifestName(rel) {
                        found.append(path.hasSuffix("/") ? path + rel : path + "/" + rel)
                    }
                }
            }
            if found.isEmpty { diagnostics.append(.warning("no *.yaml or *.yml files in \(path)")) }
            out += found.sorted()
        }
        return out
    }

    /// The manifest files that validating `paths` reads (`expand`, its diagnostics left out).
    public static func manifestFiles(paths: [String]) -> [String] {
        var ignored: [Diagnostic] = []
        return expand(paths: paths, diagnostics: &ignored)
    }

    /// Whether a path found inside a given folder (relative to it) is a manifest file the expansion picks up: no
    /// hidden component, a `.yaml` or `.yml` name.
    static func isManifestName(_ rel: String) -> Bool {
        !rel.split(separator: "/").contains { $0.hasPrefix(".") } && (rel.hasSuffix(".yaml") || rel.hasSuffix(".yml"))
    }

    /// Whether loading `paths` covers the manifest file `file` (absolute, standardized): exactly the files `expand`
    /// gives for them when the file exists, and for a file that is gone, the files `expand` would have given (given
    /// itself, or under a given folder with a manifest name and no symbolic link or hidden folder on the way).
    /// Pruning judges only what this covers, so a bundle is never orphaned by a manifest the loader did not read.
    public static func coverage(paths: [String]) -> (String) -> Bool {
        let given = paths.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
        let expanded = Set(manifestFiles(paths: given.filter { FileManager.default.fileExists(atPath: $0) })
            .map { URL(fileURLWithPath: $0).standardizedFileURL.path })
        return { file in
            let file = URL(fileURLWithPath: file).standardizedFileURL.path
            var st = stat()
            if lstat(file, &st) == 0 { return expanded.contains(file) }
            for p in given {
                if file == p { return true }
                let base = p.hasSuffix("/") ? p : p + "/"
                guard file.hasPrefix(base) else { continue }
                let rel = String(file.dropFirst(base.count))
                guard isManifestName(rel) else { continue }
                // A folder on the way that is a symbolic link or not a folder is one the expansion does not enter.
                var dir = p, entered = true
                for part in rel.split(separator: "/").dropLast() {
                    dir += "/" + part
                    if lstat(dir, &st) == 0, (st.st_mode & S_IFMT) != S_IFDIR { entered = false }
                }
                if entered { return true }
            }
            return false
        }
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

/// One result slot per file for the parallel load. Each slot is written exactly once, by the one iteration that
/// owns its index, and read only after `concurrentPerform` has returned, so no lock is needed.
private final class ResultSlots: @unchecked Sendable {
    private let base: UnsafeMutablePointer<([Manifest], [Diagnostic])>
    private let count: Int

    init(count: Int) {
        self.count = count
        base = .allocate(capacity: count)
    }

    func store(_ result: ([Manifest], [Diagnostic]), at index: Int) {
        (base + index).initialize(to: result)
    }

    /// Moves every result out (all slots must have been stored) and frees the storage.
    func take() -> [([Manifest], [Diagnostic])] {
        let out = Array(UnsafeBufferPointer(start: base, count: count))
        base.deinitialize(count: count)
        base.deallocate()
        return out
    }
}
