import ArgumentParser
import Bundles
import Execution
import Foundation
import JSON
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
    "the Python runtime \(runtime.python) (chosen by \(runtime.origin.rawValue)) cannot import \(missing.joined(separator: ", ")); "
        + "install the pinned versions with: \(runtime.python) -m pip install -r \(WorkerResources.requirements.path)"
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
            console.err("\(dir): error: not a tsexport bundle: \(RecordSummary.fileName) is missing or unreadable")
            bad = true
            continue
        }
        records.append(BundleRecord(dir: dir, url: url, record: record))
    }
    return (records, bad)
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
