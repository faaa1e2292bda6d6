import Foundation

/// The Python worker as SwiftPM ships it: this target's resource bundle (`tsexport_WorkerPackage.resources` beside
/// the executable) holds copies of `tsexport_worker/`, `native/`, `requirements.txt` and `pyproject.toml` from
/// `Sources/Worker`, the worker's own Python project.
public enum WorkerPackage {
    /// The resource bundle's folder: put it on PYTHONPATH and `python -m tsexport_worker` runs the copied package.
    /// Nil when the bundle lacks the worker's files.
    public static var resourceDirectory: URL? {
        Bundle.module.url(forResource: "requirements", withExtension: "txt")?.deletingLastPathComponent()
    }
}
