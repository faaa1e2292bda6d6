import ArgumentParser
import Bundles
import Execution
import Foundation
import JSON
import Manifest
import Plan

/// Options for commands that start Python.
public struct RuntimeOptions: ParsableArguments {
    /// The interpreter.
    @Option(name: .customLong("python"), help: "Python interpreter with torch and transformers (else $TSEXPORT_PYTHON, else the managed runtime).")
    public var python: String?
    public init() {}

    /// Resolves the runtime, reporting progress on stderr; nil (after reporting) when impossible.
    func resolve(console: Console) -> PythonRuntime? {
        do {
            return try RuntimeResolver(progress: { console.err("tsexport: " + $0) }).resolve(flag: python)
        } catch {
            console.err("error: \(error)")
            return nil
        }
    }
}

/// The error for a runtime that lacks torch or transformers: what is missing and the command that fixes it.
func missingPackagesMessage(_ runtime: PythonRuntime, missing: [String]) -> String {
    runtime.missingPackagesMessage(missing)
}

/// One bundle folder named on the command line and its parsed record.
struct BundleRecord {
    /// As the user wrote it.
    var dir: String
    /// Absolute.
    var url: URL
    /// record.json.
    var record: JSONValue
}

/// Reads every bundle's record.json before any Python starts, reporting folders that are not bundles.
func readBundleRecords(_ dirs: [String], console: Console) -> (records: [BundleRecord], bad: Bool) {
    let cwd = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
    var records: [BundleRecord] = []
    var bad = false
    for dir in dirs {
        let url = (dir.hasPrefix("/") ? URL(fileURLWithPath: dir) : cwd.appendingPathComponent(dir)).standardizedFileURL
        guard let record = RecordSummary.recordWithBuild(bundle: url) else {
            if let made = bundlesMadeBy(manifest: url, cwd: cwd) {
                console.err("\(dir): error: this is a manifest, not a bundle; \(made)")
            } else {
                console.err("\(dir): error: not a tsexport bundle: \(RecordSummary.fileName) is missing or unreadable")
            }
            bad = true
            continue
        }
        records.append(BundleRecord(dir: dir, url: url, record: record))
    }
    return (records, bad)
}

/// For a manifest file named where a bundle was expected: the bundle(s) it makes under the current directory as output
/// root (`makes build/x; run tsexport verify build/x`); nil when the path is not a readable manifest file.
func bundlesMadeBy(manifest url: URL, cwd: URL) -> String? {
    var isDirectory: ObjCBool = false
    guard ["yaml", "yml"].contains(url.pathExtension.lowercased()),
          FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), !isDirectory.boolValue else { return nil }
    // Only to name the bundles: the manifest's permissions are not the question here.
    let options = ValidationOptions(outputRoot: cwd, allowRemoteCode: true, allowPickle: true)
    let manifests = ManifestLoader(options: options).validate(paths: [url.path]).manifests
    guard !manifests.isEmpty else { return "it has no valid manifest (see tsexport validate \(url.path))" }
    let bundles = manifests.map { m -> String in
        let b = Planner.bundleURL(m, root: cwd).path
        return b.hasPrefix(cwd.path + "/") ? String(b.dropFirst(cwd.path.count + 1)) : b
    }
    let names = bundles.joined(separator: " ")
    return "it makes \(bundles.count == 1 ? "the bundle" : "the bundles") \(names) (with the current directory as output root); name \(bundles.count == 1 ? "that folder" : "those folders") instead"
}

extension RuntimeOptions {
    /// Resolves the runtime and starts a worker; nil (after reporting) when either fails or the runtime lacks one
    /// of `needs`.
    func startWorker(console: Console, runner: ProcessRunner, needs: [String]) -> (PythonRuntime, WorkerClient)? {
        guard let rt = resolve(console: console) else { return nil }
        let worker: WorkerClient
        do {
            worker = try WorkerClient(python: rt.python, runner: runner)
        } catch {
            console.err("error: \(error)")
            return nil
        }
        if worker.hello.missing.contains(where: needs.contains) {
            console.err("error: " + missingPackagesMessage(rt, missing: worker.hello.missing))
            worker.shutdown()
            return nil
        }
        return (rt, worker)
    }
}
