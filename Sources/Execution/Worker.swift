import Foundation
import JSON
import Plan

/// Warm workers (opt-in, `TSEXPORT_WARM`): each worker is forked from a long-lived Python process that has imported
/// torch and transformers already, instead of a new interpreter importing them (about 3 s per command on 2 cores).
/// `TSEXPORT_WARM=1` (or `on`, `true`) keeps that process 900 s after its last caller; a number sets the seconds;
/// `0`, `off` or unset: every worker is a fresh process. The sockets live in a private folder of tsexport's cache
/// (`warm/`, mode 0700); see `tsexport_worker/runtime/warm.py` (Sources/Worker) for the rules that keep it safe.
public struct WarmWorkers: Sendable, Equatable {
    /// How long the warm process outlives its last caller.
    public var idleSeconds: Int
    /// Where its socket, lock and log live.
    public var directory: URL

    /// The default idle time.
    public static let defaultIdleSeconds = 900

    /// nil when warm workers are not asked for (or the value is not understood).
    public init?(environment: [String: String]) {
        guard let raw = environment["TSEXPORT_WARM"]?.trimmingCharacters(in: .whitespaces).lowercased(), !raw.isEmpty else { return nil }
        switch raw {
        case "1", "on", "true", "yes": idleSeconds = Self.defaultIdleSeconds
        case "0", "off", "false", "no": return nil
        default:
            guard let n = Int(raw), n > 0 else { return nil }
            idleSeconds = n
        }
        directory = RuntimeCache.folder(environment: environment).appendingPathComponent("warm")
    }
}

/// What the worker says about itself in its first line.
public struct WorkerHello: Sendable {
    /// The protocol version it speaks.
    public var protocolVersion: Int
    /// Its code version.
    public var workerVersion: String
    /// python, torch, transformers (absent when not importable).
    public var versions: [String: String]
    /// Import names that failed (`torch`, `transformers`).
    public var missing: [String]
    /// Hardware name → nil when available, else the reason it is not.
    public var targets: [String: String?]
    /// The raw message.
    public var raw: JSONValue
}

/// One failed request, as the worker reported it.
public struct WorkerFailure: Error, Sendable {
    /// The stage it failed in (load, inputs, trace, serialize, reference, verify).
    public var stage: String
    /// The error code (unknown_class, bad_config, ...).
    public var code: String
    /// A sentence for a user.
    public var message: String
    /// The manifest field it is about, if any.
    public var field: String?
    /// Exception type and traceback tail, for --verbose.
    public var detail: String?

    /// Creates a failure.
    public init(stage: String, code: String, message: String, field: String?, detail: String?) {
        self.stage = stage
        self.code = code
        self.message = message
        self.field = field
        self.detail = detail
    }
}

/// The worker died or spoke out of protocol.
public struct WorkerCrash: Error, Sendable, CustomStringConvertible {
    /// What happened, with the exit status or signal.
    public var description: String
    /// The tail of its stderr.
    public var stderrTail: String
}

/// A progress event.
public struct WorkerProgress: Sendable {
    /// The stage.
    public var stage: String
    /// start or done.
    public var status: String
    /// Milliseconds, for done.
    public var elapsedMs: Double?
}

/// A warm Python worker speaking the JSON-lines protocol (docs/worker-protocol.md), started with an argv array.
public final class WorkerClient: @unchecked Sendable {
    private let child: ChildProcess
    private var nextID = 1
    private var shuttingDown = false
    /// What it said at start.
    public let hello: WorkerHello

    /// The argv that starts a worker: `serve`, or `attach` to a warm zygote when TSEXPORT_WARM opts in.
    public static func argv(python: String, environment: [String: String] = ProcessInfo.processInfo.environment) -> [String] {
        guard let warm = WarmWorkers(environment: environment) else { return [python, "-u", "-m", "tsexport_worker", "serve"] }
        return [python, "-u", "-m", "tsexport_worker", "attach", "--dir", warm.directory.path, "--idle", String(warm.idleSeconds)]
    }

    /// The environment a worker runs with: the caller's, plus the worker folder on PYTHONPATH.
    public static func environment(base: [String: String] = ProcessInfo.processInfo.environment) -> [String: String] {
        var env = base
        let dir = WorkerResources.directory.path
        env["PYTHONPATH"] = [dir, base["PYTHONPATH"]].compactMap { $0 }.filter { !$0.isEmpty }.joined(separator: ":")
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["TOKENIZERS_PARALLELISM"] = env["TOKENIZERS_PARALLELISM"] ?? "false"
        env["HF_HUB_DISABLE_TELEMETRY"] = "1"
        // AOTInductor's compile cache lives with tsexport's: a repeated .pt2 compile of the same graph is reused.
        env["TORCHINDUCTOR_CACHE_DIR"] = env["TORCHINDUCTOR_CACHE_DIR"] ?? RuntimeCache.folder(environment: base).appendingPathComponent("inductor").path
        return env
    }

    /// What apply's workers (the exporting and the verifying one) add to `environment`: OpenMP threads that wait
    /// passively (a futex) instead of spinning between parallel regions, unless the caller chose a policy. An apply
    /// runs two workers on the same cores (the verifier imports torch while the exporter computes), and on a busy
    /// machine a spinning thread team waits for a preempted member: the MiniLM's first TorchScript call took
    /// 0.57–2.3 s spinning against 0.25 s passive on 2 shared cores. Numerics are unchanged (same threads, same
    /// splits); bench's workers keep the default, as a served model would.
    public static func applyEnvironment(base: [String: String] = ProcessInfo.processInfo.environment) -> [String: String] {
        var env = environment(base: base)
        env["OMP_WAIT_POLICY"] = base["OMP_WAIT_POLICY"] ?? "PASSIVE"
        return env
    }

    /// Starts a worker and reads its hello (`environment`: the worker's, `environment()` when nil).
    public init(python: String, runner: ProcessRunner, environment: [String: String]? = nil) throws {
        child = try runner.start(Self.argv(python: python), environment: environment ?? Self.environment(), directory: nil)
        guard let line = child.readLine() else {
            let status = child.wait()
            throw WorkerCrash(description: "the Python worker (\(python)) exited before saying hello (\(Self.describe(status: status)))", stderrTail: child.stderrTail)
        }
        guard let v = try? JSONValue(parsing: Data(line.utf8)), v["type"] == .string("hello") else {
            child.signal(SIGKILL)
            _ = child.wait()
            throw WorkerCrash(description: "the Python worker (\(python)) did not speak the tsexport protocol; it printed: \(line.prefix(200))", stderrTail: child.stderrTail)
        }
        var versions: [String: String] = [:]
        for k in ["python", "torch", "transformers"] { if case .string(let s)? = v[k] { versions[k] = s } }
        var targets: [String: String?] = [:]
        if case .object(let o)? = v["targets"] {
            for (k, t) in o {
                let available = t["available"] == .bool(true)
                var reason: String? = nil
                if case .string(let r)? = t["reason"] { reason = r }
                targets[k] = available ? nil : (reason ?? "not available")
            }
        }
        hello = WorkerHello(
            protocolVersion: v["protocol"]?.intValue ?? 0,
            workerVersion: v["worker_version"]?.stringValue ?? "?",
            versions: versions,
            missing: v["missing"]?.arrayValue?.compactMap(\.stringValue) ?? [],
            targets: targets, raw: v)
        if hello.protocolVersion != WorkerInfo.protocolVersion {
            shutdown()
            throw WorkerCrash(description: "the worker speaks protocol \(hello.protocolVersion), this tsexport speaks \(WorkerInfo.protocolVersion)", stderrTail: "")
        }
    }

    /// The worker's pid.
    public var pid: Int32 { child.pid }

    /// Sends one request and waits for its result, passing progress events on. Throws `WorkerFailure` for an error
    /// answer and `WorkerCrash` when the worker dies.
    public func request(_ op: String, _ fields: [(String, JSONValue)], progress: (WorkerProgress) -> Void = { _ in }) throws -> JSONValue {
        let id = nextID
        nextID += 1
        let message = JSONValue.object([("id", .int(id)), ("op", .string(op))] + fields)
        do {
            // serialized() keeps a float written as 2.0 a float (canonical JSON would write 2): strict config
            // classes (T5Gemma's) refuse an int for a float field.
            try child.write(Data((message.serialized() + "\n").utf8))
        } catch {
            throw crash("the worker stopped reading its input")
        }
        while let line = child.readLine() {
            guard let v = try? JSONValue(parsing: Data(line.utf8)) else { continue }
            guard v["id"]?.intValue == id else { continue }
            switch v["type"]?.stringValue {
            case "progress":
                progress(WorkerProgress(stage: v["stage"]?.stringValue ?? "", status: v["status"]?.stringValue ?? "",
                                        elapsedMs: v["elapsed_ms"]?.doubleValue))
            case "result":
                return v["data"] ?? .null
            case "error":
                throw WorkerFailure(
                    stage: v["stage"]?.stringValue ?? op, code: v["code"]?.stringValue ?? "internal",
                    message: v["message"]?.stringValue ?? "the worker reported an error",
                    field: v["field"]?.stringValue, detail: v["detail"]?.stringValue)
            default:
                continue
            }
        }
        throw crash("the Python worker died during \(op)")
    }

    /// Whether this worker died or spoke out of protocol (it is not used again).
    public private(set) var crashed = false

    private func crash(_ what: String) -> WorkerCrash {
        crashed = true
        let status = child.wait()
        return WorkerCrash(description: "\(what) (\(Self.describe(status: status)))", stderrTail: child.stderrTail)
    }

    /// `exit 1` or `killed by signal 9 (SIGKILL)`.
    public static func describe(status: Int32) -> String {
        guard status > 128 else { return "exit status \(status)" }
        let sig = status - 128
        let names: [Int32: String] = [9: "SIGKILL", 15: "SIGTERM", 2: "SIGINT", 11: "SIGSEGV", 6: "SIGABRT"]
        return "killed by signal \(sig)" + (names[sig].map { " (\($0))" } ?? "")
    }

    /// Asks the worker to exit and waits for it.
    public func shutdown() {
        beginShutdown()
        _ = child.wait()
    }

    /// Asks the worker to exit without waiting for it: it exits once it reads the request (or end of input), while
    /// the caller goes on. `shutdown()` later reaps it.
    public func beginShutdown() {
        guard !shuttingDown else { return }
        shuttingDown = true
        _ = try? child.write(Data("{\"id\":\(nextID),\"op\":\"shutdown\"}\n".utf8))
        nextID += 1
        child.closeInput()
    }

    /// Kills the worker.
    public func kill() {
        child.signal(SIGKILL)
        _ = child.wait()
    }
}
