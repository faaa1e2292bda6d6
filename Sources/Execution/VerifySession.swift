import Foundation
import JSON

/// `tsexport verify` as one library call: the named folders are read before any Python starts, then one checker
/// is made (a fresh Python worker, or the libtorch checker built once for the runtime's torch) and each bundle gets
/// its `BundleVerifier.verify` verdict, in the order named. The caller renders.
public struct VerifySession {
    /// What the flags ask for.
    public struct Options {
        /// The bundle folders, as the user wrote them.
        public var dirs: [String]
        /// `--native`: the libtorch checker instead of Python.
        public var native = false
        /// `--python`.
        public var python: String?
        /// Where relative folders are resolved.
        public var cwd: URL
        /// The environment the compiler and the checker see.
        public var environment: [String: String]

        public init(dirs: [String], cwd: URL, environment: [String: String]) {
            self.dirs = dirs
            self.cwd = cwd
            self.environment = environment
        }
    }

    /// What verify found.
    public struct Summary {
        /// Each bundle read and its verdict, in the order named.
        public var verdicts: [(dir: String, verdict: BundleVerdict)] = []
        /// The libtorch checker used (`--native`).
        public var native: NativeVerify.Built?
        /// Every named folder was a bundle and every bundle verified.
        public var ok: Bool
    }

    public let options: Options
    /// Starts the worker and the checker.
    public let runner: ProcessRunner

    public init(options: Options, runner: ProcessRunner) {
        self.options = options
        self.runner = runner
    }

    /// Runs verify: nil when it stopped before any bundle was checked (told through `message`); `verdict` is called
    /// as each bundle's verdict is known.
    public func run(message: @escaping @Sendable (ApplySession.Message) -> Void, verdict: (String, BundleVerdict) -> Void) -> Summary? {
        if options.native && NativeVerify.compiler(environment: options.environment) == nil {
            message(.error(NativeVerify.noCompilerMessage))
            return nil
        }
        // Every folder is read before Python starts.
        let (bundles, problems) = BundleArguments.read(options.dirs, cwd: options.cwd)
        problems.forEach { message(.detail($0)) }
        if bundles.isEmpty { return nil }
        let rt: PythonRuntime
        do {
            rt = try RuntimeResolver(progress: { message(.note($0)) }).resolve(flag: options.python)
        } catch {
            message(.error("\(error)"))
            return nil
        }
        var summary = Summary(ok: problems.isEmpty)
        let checker: BundleVerifier.Checker
        var stop: () -> Void = {}
        if options.native {
            do {
                let built = try NativeVerify.prepare(python: rt.python, environment: options.environment, runner: runner,
                                                     progress: { message(.note($0)) })
                if let s = built.buildSeconds { message(.note(String(format: "built the native checker in %.1f s", s))) }
                summary.native = built
                checker = .native(binary: built.binary, environment: options.environment, runner: runner)
            } catch {
                message(.error("verify --native: \(error)"))
                return nil
            }
        } else {
            guard let worker = rt.startWorker(runner: runner, needs: ["torch", "safetensors"], message: message) else { return nil }
            checker = .python(worker)
            stop = { worker.shutdown() }
        }
        defer { stop() }
        for b in bundles {
            let v = BundleVerifier.verify(bundle: b.url, record: b.record, with: checker)
            summary.ok = summary.ok && v.ok
            summary.verdicts.append((b.dir, v))
            verdict(b.dir, v)
        }
        return summary
    }
}
