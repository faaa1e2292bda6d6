import Bundles
import Foundation
import JSON
import Plan

/// `tsexport bench` as one library call: the named folders are read before any Python starts, one worker is
/// started, and each bundle gets the request `BenchRequests` builds and is measured, in the order named. A shape the
/// artifact failed at fails the bundle. The caller renders.
public struct BenchSession {
    /// One bundle's measurement: the worker's result, or why there is none.
    public struct Measured {
        /// As the user wrote it.
        public var dir: String
        /// The worker's `bench` result.
        public var result: JSONValue?
        /// Why the bundle was not measured (a refusal, a worker failure).
        public var error: String?
        /// Measured, and at no shape did the artifact fail.
        public var ok: Bool
    }

    /// The bundle folders, as the user wrote them.
    public var dirs: [String]
    /// What to measure and how (`--lengths`, `--runs`, ...).
    public var settings: BenchRequests.Settings
    /// `--python`.
    public var python: String?
    /// Where relative folders are resolved.
    public var cwd: URL
    /// Starts the worker.
    public var runner: ProcessRunner

    public init(dirs: [String], settings: BenchRequests.Settings, python: String?, cwd: URL, runner: ProcessRunner) {
        self.dirs = dirs
        self.settings = settings
        self.python = python
        self.cwd = cwd
        self.runner = runner
    }

    /// Bench's looks at the disk: files, folders and a manifest's sha256.
    public static let disk = BenchRequests.Disk(
        fileExists: { FileManager.default.fileExists(atPath: $0) },
        directoryExists: { path in
            var isDir: ObjCBool = false
            return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
        },
        sha256: { try? Digest.sha256(file: $0) })

    /// Runs bench: nil when it stopped before any bundle was measured (told through `message`); `measured` is called
    /// as each bundle's measurement is known (`starting` before each one starts). The Bool is whether every folder
    /// was a bundle and every bundle was measured at every shape.
    public func run(message: @escaping @Sendable (ApplySession.Message) -> Void, starting: (String) -> Void,
                    measured: (Measured) -> Void) -> (measured: [Measured], ok: Bool)? {
        let (bundles, problems) = BundleArguments.read(dirs, cwd: cwd)
        problems.forEach { message(.detail($0)) }
        if bundles.isEmpty { return nil }
        let rt: PythonRuntime
        do {
            rt = try RuntimeResolver(progress: { message(.note($0)) }).resolve(flag: python)
        } catch {
            message(.error("\(error)"))
            return nil
        }
        guard let worker = rt.startWorker(runner: runner, needs: ["torch", "safetensors"], message: message) else { return nil }
        defer { worker.shutdown() }
        var all: [Measured] = []
        var ok = problems.isEmpty
        for b in bundles {
            var m = Measured(dir: b.dir, ok: false)
            switch BenchRequests.request(record: b.record, bundle: b.url, settings: settings, cwd: cwd, disk: Self.disk) {
            case .failure(let refusal):
                m.error = refusal.message
            case .success(let fields):
                starting(b.dir)
                do {
                    let result = try worker.request("bench", fields)
                    m.result = result
                    // A shape the artifact failed at (one outside its envelope, say) fails the command.
                    m.ok = BenchRequests.failedShapes(result).isEmpty
                } catch let f as WorkerFailure {
                    m.error = f.message
                } catch {
                    m.error = "\(error)"
                    all.append(m)
                    measured(m)
                    return (all, false)  // the worker is gone
                }
            }
            ok = ok && m.ok
            all.append(m)
            measured(m)
        }
        return (all, ok)
    }
}
