import ArgumentParser
import Execution
import Foundation

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

/// Reads every bundle's record.json before any Python starts (`BundleArguments.read`), reporting folders that are
/// not bundles.
func readBundleRecords(_ dirs: [String], console: Console) -> (records: [BundleArguments.Bundle], bad: Bool) {
    let (bundles, problems) = BundleArguments.read(dirs, cwd: URL(fileURLWithPath: FileManager.default.currentDirectoryPath))
    problems.forEach(console.err)
    return (bundles, !problems.isEmpty)
}

extension RuntimeOptions {
    /// Resolves the runtime and starts a worker; nil (after reporting) when either fails or the runtime lacks one
    /// of `needs`.
    func startWorker(console: Console, runner: ProcessRunner, needs: [String]) -> (PythonRuntime, WorkerClient)? {
        guard let rt = resolve(console: console),
              let worker = rt.startWorker(runner: runner, needs: needs, message: { Apply.show($0, console: console) }) else { return nil }
        return (rt, worker)
    }
}
