import Diagnostics
import Foundation
import JSON
import Manifest

/// What `tsexport init` was asked for, as written on the command line.
public struct ScaffoldRequest: Sendable {
    /// The pretrained folder, as the user wrote it.
    public var source: String
    /// The manifest file to write (nil: print it), as the user wrote it.
    public var output: String?
    public var task: String?
    public var className: String?
    /// `metadata.name` (nil: from the folder's name, then config.json).
    public var name: String?
    /// Overwrite `output` when it exists.
    public var force: Bool
    /// The folder relative paths are resolved against.
    public var cwd: URL

    public init(source: String, output: String? = nil, task: String? = nil, className: String? = nil, name: String? = nil,
                force: Bool = false, cwd: URL = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)) {
        self.source = source
        self.output = output
        self.task = task
        self.className = className
        self.name = name
        self.force = force
        self.cwd = cwd
    }
}

/// What init did.
public enum ScaffoldOutcome: Equatable, Sendable {
    /// The manifest, to print (no `-o`).
    case manifest(String)
    /// The manifest was written to `file` (as the user named it); `summary` is the class and inputs it chose.
    case wrote(file: String, summary: String)
}

/// Why init wrote nothing.
public enum ScaffoldFailure: Error, Equatable {
    /// A refusal, as one message.
    case refused(String)
    /// The scaffolded manifest does not validate (a tsexport bug): its diagnostics.
    case invalid([Diagnostic])
    /// The worker could not be started; whoever started it has already said why.
    case noWorker
}

/// `tsexport init`: checks the request, asks the worker's `inspect` op about the folder, renders the manifest
/// (`ManifestScaffold`), validates it as `validate` would, and prints or writes it. Every refusal that needs no Python
/// comes before `inspect` is called.
public enum Scaffolder {
    /// The refusals that need no Python, and the resolved paths and name.
    public struct Checked: Sendable {
        public var source: URL
        public var file: URL?
        public var name: String
        /// The class to ask for (from `--class`, or the Auto class of `--task`).
        public var requestedClass: String?
    }

    public static func check(_ r: ScaffoldRequest) throws(ScaffoldFailure) -> Checked {
        let fm = FileManager.default
        let source = absolute(r.source, cwd: r.cwd)
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: source.path, isDirectory: &isDir), isDir.boolValue else {
            throw .refused("\(r.source) is not a folder (init scaffolds from a local pretrained folder, as save_pretrained writes it)")
        }
        guard fm.fileExists(atPath: source.appendingPathComponent("config.json").path) else {
            throw .refused("\(r.source) has no config.json")
        }
        if r.task != nil && r.className != nil { throw .refused("give --task or --class, not both") }
        var requestedClass = r.className
        if let task = r.task {
            guard let auto = InitTasks.autoClass(task) else {
                let hint = Suggest.closest(to: task, among: InitTasks.names).map { "; did you mean \($0)?" } ?? ""
                throw .refused("unknown task \(task)\(hint) (one of \(InitTasks.names.joined(separator: ", ")))")
            }
            requestedClass = auto
        }
        let file = r.output.map { absolute($0, cwd: r.cwd) }
        if let file, let output = r.output {
            if fm.fileExists(atPath: file.path) && !r.force { throw .refused("\(output) exists; pass --force to overwrite it") }
            var parentIsDir: ObjCBool = false
            guard fm.fileExists(atPath: file.deletingLastPathComponent().path, isDirectory: &parentIsDir), parentIsDir.boolValue else {
                throw .refused("the folder of \(output) does not exist (init writes only the file -o names)")
            }
        }
        let config = fm.contents(atPath: source.appendingPathComponent("config.json").path).flatMap { try? JSONValue(parsing: $0) }
        let name = r.name ?? ManifestScaffold.defaultName(folder: source, config: config)
        guard ManifestScaffold.isValidName(name) else {
            throw .refused("\(name) is not a valid metadata.name ([a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63 characters); pass --name")
        }
        return Checked(source: source, file: file, name: name, requestedClass: requestedClass)
    }

    /// The `inspect` request's fields for a checked request.
    public static func inspectRequest(_ r: ScaffoldRequest, _ c: Checked) -> [(String, JSONValue)] {
        [
            ("source", .string(c.source.path)),
            ("class", c.requestedClass.map(JSONValue.string) ?? .null),
            ("task", r.task.map(JSONValue.string) ?? .null),
        ]
    }

    /// Runs init. `inspect` sends the `inspect` request to a worker and returns its answer, or nil when no worker
    /// could be started (it reports why itself); it is called only after every check that needs no Python passed.
    /// Its errors other than `ScaffoldFailure` become a refusal with their description.
    public static func run(_ r: ScaffoldRequest,
                           inspect: ([(String, JSONValue)]) throws -> JSONValue?) throws(ScaffoldFailure) -> ScaffoldOutcome {
        let c = try check(r)
        var facts: InitFacts
        do {
            guard let answer = try inspect(inspectRequest(r, c)) else { throw ScaffoldFailure.noWorker }
            facts = try InitFacts(answer)
        } catch let f as ScaffoldFailure {
            throw f
        } catch let e as ScaffoldError {
            throw .refused(e.description)
        } catch {
            throw .refused(String(describing: error))
        }
        // A sentence-transformers folder is exported as its pipeline, unless a task names a transformers head.
        if r.task == nil { facts.pipeline = InitFacts.sentenceTransformersModules(folder: c.source) }

        let folder = c.file?.deletingLastPathComponent() ?? r.cwd
        let text: String
        do {
            text = try ManifestScaffold.render(facts, name: c.name, pretrained: relativePath(from: folder, to: c.source),
                                               schema: schemaReference(from: folder))
        } catch {
            throw .refused((error as? ScaffoldError)?.description ?? String(describing: error))
        }
        // What init writes must load as written: check it against the schema and the semantic rules first.
        let (_, diagnostics) = ManifestLoader(options: ValidationOptions(outputRoot: folder, allowPickle: true)).load(
            bytes: Data(text.utf8), file: c.file?.path ?? "<init>", directory: folder)
        if diagnostics.contains(where: { $0.severity == .error }) { throw .invalid(diagnostics) }

        guard let file = c.file, let output = r.output else { return .manifest(text) }
        do {
            try Data(text.utf8).write(to: file, options: .atomic)
        } catch {
            throw .refused("could not write \(output): \(error.localizedDescription)")
        }
        let cls = facts.className == facts.resolvedClass ? facts.className : "\(facts.className) (\(facts.resolvedClass))"
        return .wrote(file: output, summary: "\(cls), inputs \(ManifestScaffold.chosenInputs(facts).joined(separator: ", "))")
    }

    static func absolute(_ path: String, cwd: URL) -> URL {
        let expanded = (path as NSString).expandingTildeInPath
        return (expanded.hasPrefix("/") ? URL(fileURLWithPath: expanded) : cwd.appendingPathComponent(expanded)).standardizedFileURL
    }

    /// `to` relative to the folder `from`, starting with `./` or `../` (so the manifest reads it as a local path).
    public static func relativePath(from: URL, to: URL) -> String {
        let a = from.resolvingSymlinksInPath().standardizedFileURL.pathComponents
        let b = to.resolvingSymlinksInPath().standardizedFileURL.pathComponents
        var common = 0
        while common < a.count, common < b.count, a[common] == b[common] { common += 1 }
        let ups = Array(repeating: "..", count: a.count - common)
        let rest = Array(b[common...])
        if ups.isEmpty { return rest.isEmpty ? "." : "./" + rest.joined(separator: "/") }
        return (ups + rest).joined(separator: "/")
    }

    /// The `$schema` of the yaml-language-server line: the repository's schemas/export.schema.json relative to the
    /// manifest's folder when the folder is inside a checkout that has it, else the schema's published `$id`.
    public static func schemaReference(from folder: URL) -> String {
        var dir = folder.resolvingSymlinksInPath().standardizedFileURL
        for _ in 0..<32 {
            let candidate = dir.appendingPathComponent("schemas/export.schema.json")
            if FileManager.default.fileExists(atPath: candidate.path) { return relativePath(from: folder, to: candidate) }
            let parent = dir.deletingLastPathComponent()
            if parent.path == dir.path { break }
            dir = parent
        }
        return ManifestScaffold.schemaURL
    }
}
