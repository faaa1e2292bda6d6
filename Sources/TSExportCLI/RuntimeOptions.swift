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

/// The error for a runtime that lacks torch or transformers: what is missing and the command that fixes it.
func missingPackagesMessage(_ runtime: PythonRuntime, missing: [String]) -> String {
    "the Python runtime \(runtime.python) (chosen by \(runtime.origin.rawValue)) cannot import \(missing.joined(separator: ", ")); "
        + "install the pinned versions with: \(runtime.python) -m pip install -r \(WorkerResources.requirements.path)"
}
