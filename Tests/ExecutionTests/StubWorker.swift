import Bundles
import Execution
import Foundation
import JSON

/// A scripted, in-memory `ProcessRunner`: every child it "starts" is a `StubWorker` that speaks the worker protocol
/// (version 2) from a script instead of running Python (the idea of swift-driver's StubProcess). It records every
/// child and every request, so tests can assert what the executor sent and that every child ended.
final class StubProcessRunner: ProcessRunner, @unchecked Sendable {
    /// What a worker error answer carries.
    struct ScriptedError: Sendable {
        var stage: String
        var code: String
        var message: String
        var field: String?
    }

    /// What the children do, per manifest name (the export job's `name`; for `verify_bundle`, the staging folder's).
    struct Script: Sendable {
        /// `export` of these answers an `error`.
        var exportErrors: [String: ScriptedError] = [:]
        /// `export` of these kills the child mid-request: a progress line, then stdout ends and it exits with this
        /// signal.
        var dieDuringExport: [String: Int32] = [:]
        /// `export` of these never answers: the child blocks until a signal ends it (`hanging` is signalled).
        var hangDuringExport: Set<String> = []
        /// `verify_bundle` of these kills the (verifying) child mid-request with this signal.
        var dieDuringVerify: [String: Int32] = [:]
        /// `verify_bundle` of these reports the sha256 of other bytes than model.pt's.
        var wrongSHA: Set<String> = []
        /// `verify_bundle` of these reports the named case as not passed.
        var failVerifyCase: [String: String] = [:]
        /// Report the real sha256 of model.pt in `verify_bundle` (otherwise the key is omitted).
        var reportSHA = true
    }

    /// One request as a child received it.
    struct Received {
        var child: Int
        var request: JSONValue
        var op: String { request["op"]?.stringValue ?? "" }
        /// The manifest the request is about.
        var name: String? {
            if let n = request["job"]?["name"]?.stringValue { return n }
            if let dir = request["dir"]?.stringValue { return StubProcessRunner.name(ofStaging: dir) }
            return nil
        }
    }

    let script: Script
    /// The hello every child writes.
    let hello: JSONValue
    private let lock = NSLock()
    private var started: [StubWorker] = []
    private var log: [Received] = []
    private var exportedCases: [String: [JSONValue]] = [:]
    /// Signalled when a child starts blocking in a `hangDuringExport` export.
    let hanging = DispatchSemaphore(value: 0)

    init(script: Script = Script(), hello: JSONValue? = nil) {
        self.script = script
        self.hello = hello ?? StubProcessRunner.defaultHello
    }

    static let defaultHello: JSONValue = .object([
        ("type", "hello"), ("protocol", .int(2)), ("worker_version", "2.0.0"),
        ("python", "3.12.0"), ("torch", "2.5.1"), ("transformers", "4.46.3"), ("missing", .array([])),
        ("targets", .object([
            ("cpu", .object([("available", true), ("reason", .null), ("device", "cpu")])),
            ("cuda", .object([("available", false), ("reason", "no CUDA device is visible"), ("device", .null)])),
        ])),
    ])

    /// The manifest name of a staging folder `<root>/.tsexport/staging/<name>.staging`.
    static func name(ofStaging dir: String) -> String {
        let last = URL(fileURLWithPath: dir).lastPathComponent
        return last.hasSuffix(".staging") ? String(last.dropLast(".staging".count)) : last
    }

    func start(_ argv: [String], environment: [String: String], directory: URL?) throws -> ChildProcess {
        lock.lock()
        defer { lock.unlock() }
        let child = StubWorker(index: started.count, argv: argv, runner: self)
        started.append(child)
        startEnvironments.append(environment)
        return child
    }

    private var startEnvironments: [[String: String]] = []
    /// The environment each child was started with, in start order.
    var environments: [[String: String]] {
        lock.lock()
        defer { lock.unlock() }
        return startEnvironments
    }

    /// Every child started, in start order.
    var children: [StubWorker] {
        lock.lock()
        defer { lock.unlock() }
        return started
    }

    /// Every request received by any child, in arrival order.
    var requests: [Received] {
        lock.lock()
        defer { lock.unlock() }
        return log
    }

    func record(_ child: Int, _ request: JSONValue) {
        lock.lock()
        log.append(Received(child: child, request: request))
        lock.unlock()
    }

    /// The cases an export reported, by staging folder: `verify_bundle` (in another child) answers the same cases,
    /// as the real worker reads them from the bundle's sample files.
    func exported(_ dir: String, _ cases: [JSONValue]? = nil) -> [JSONValue] {
        lock.lock()
        defer { lock.unlock() }
        if let cases { exportedCases[dir] = cases }
        return exportedCases[dir] ?? []
    }

    /// What an interrupt does to the real children (`ChildRegistry.signalAll`): a signal to every live child.
    func signalAll(_ sig: Int32) {
        for c in children { c.signal(sig) }
    }
}

/// One scripted worker "process". Lines it answers are queued at the time the request is written (a worker answers
/// in order); `readLine` blocks only when the child has nothing queued and has not ended (a hanging export).
final class StubWorker: ChildProcess, @unchecked Sendable {
    let index: Int
    let argv: [String]
    unowned let runner: StubProcessRunner
    /// How long a read or wait blocks before the stub gives up (a hang in the library, reported as a failure).
    static let patience: TimeInterval = 10

    private let cond = NSCondition()
    private var queued: [String] = []
    private var pending = Data()
    private var status: Int32?
    private var _received: [JSONValue] = []
    private var _inputClosed = false
    private var _signals: [Int32] = []
    private var _reaped = false
    private var _hangs: [String] = []

    init(index: Int, argv: [String], runner: StubProcessRunner) {
        self.index = index
        self.argv = argv
        self.runner = runner
        queued.append(CanonicalJSON.text(runner.hello))
    }

    var pid: Int32 { Int32(900_000 + index) }
    var stderrTail: String { status.map { "stub worker \(index) ended with status \($0)" } ?? "" }

    // MARK: What tests look at

    private func locked<T>(_ body: () -> T) -> T {
        cond.lock()
        defer { cond.unlock() }
        return body()
    }

    /// The requests it read, in order.
    var received: [JSONValue] { locked { _received } }
    var ops: [String] { received.compactMap { $0["op"]?.stringValue } }
    /// The ops without `guard`: the executor currently sends `guard` with `ranges: null` after every verification
    /// (see `OrchestrationTests.testNoGuardRequestWhenTheEnvelopeIsNotNarrowed`); the sequence tests look past it.
    var opsBesidesGuard: [String] { ops.filter { $0 != "guard" } }
    /// Its exit status once it ended (128 + signal when a signal ended it).
    var exitStatus: Int32? { locked { status } }
    var inputClosed: Bool { locked { _inputClosed } }
    var signals: [Int32] { locked { _signals } }
    /// Whether someone waited for it after it ended.
    var reaped: Bool { locked { _reaped } }
    /// Reads or waits that found it blocked for longer than `patience` (each one a hang in the library).
    var hangs: [String] { locked { _hangs } }

    // MARK: ChildProcess

    struct BrokenPipe: Error {}

    func write(_ data: Data) throws {
        cond.lock()
        if status != nil || _inputClosed {
            cond.unlock()
            throw BrokenPipe()
        }
        pending.append(data)
        var lines: [Data] = []
        while let nl = pending.firstIndex(of: 0x0A) {
            lines.append(Data(pending[pending.startIndex..<nl]))
            pending.removeSubrange(pending.startIndex...nl)
        }
        cond.unlock()
        for line in lines {
            guard locked({ status == nil }) else { break }
            handle(line)
        }
    }

    func readLine() -> String? {
        cond.lock()
        defer { cond.unlock() }
        let deadline = Date().addingTimeInterval(Self.patience)
        while queued.isEmpty && status == nil {
            if !cond.wait(until: deadline) {
                _hangs.append("readLine blocked for \(Self.patience) s")
                return nil
            }
        }
        if queued.isEmpty { return nil }
        return queued.removeFirst()
    }

    /// A worker exits at the end of its input.
    func closeInput() {
        cond.lock()
        _inputClosed = true
        end(status: 0)
        cond.unlock()
    }

    func signal(_ sig: Int32) {
        cond.lock()
        _signals.append(sig)
        end(status: 128 + sig)
        cond.unlock()
    }

    func wait() -> Int32 {
        cond.lock()
        defer { cond.unlock() }
        let deadline = Date().addingTimeInterval(Self.patience)
        while status == nil {
            if !cond.wait(until: deadline) {
                _hangs.append("wait() on a child that was neither told to exit nor killed")
                return -1
            }
        }
        _reaped = true
        return status!
    }

    // MARK: The script

    /// Ends the "process" (caller holds the lock): stdout ends after what is queued.
    private func end(status s: Int32) {
        guard status == nil else { return }
        status = s
        cond.broadcast()
    }

    private func emit(_ lines: [JSONValue], thenEnd endStatus: Int32? = nil) {
        cond.lock()
        if status == nil {
            queued += lines.map(CanonicalJSON.text)
            if let endStatus { end(status: endStatus) }
        }
        cond.broadcast()
        cond.unlock()
    }

    private func handle(_ line: Data) {
        guard let request = try? JSONValue(parsing: line) else {
            emit([.object([("type", "error"), ("id", .null), ("ok", false), ("stage", .null), ("code", "bad_request"),
                           ("message", "unreadable line"), ("field", .null), ("detail", .null)])])
            return
        }
        cond.lock()
        _received.append(request)
        cond.unlock()
        runner.record(index, request)
        let id = request["id"] ?? .null
        func result(_ data: JSONValue) -> JSONValue { .object([("type", "result"), ("id", id), ("ok", true), ("data", data)]) }
        func progress(_ stage: String, _ status: String) -> JSONValue {
            .object([("type", "progress"), ("id", id), ("stage", .string(stage)), ("status", .string(status))]
                + (status == "done" ? [("elapsed_ms", .double(1))] : []))
        }
        let script = runner.script
        switch request["op"]?.stringValue {
        case "export":
            let job = request["job"] ?? .null
            let name = job["name"]?.stringValue ?? "?"
            if let sig = script.dieDuringExport[name] {
                emit([progress("load", "start")], thenEnd: 128 + sig)
                return
            }
            if script.hangDuringExport.contains(name) {
                emit([progress("load", "start")])
                runner.hanging.signal()
                return
            }
            if let e = script.exportErrors[name] {
                emit([progress("load", "start"), .object([
                    ("type", "error"), ("id", id), ("ok", false), ("stage", .string(e.stage)), ("code", .string(e.code)),
                    ("message", .string(e.message)), ("field", e.field.map(JSONValue.string) ?? .null), ("detail", "StubError: scripted"),
                ])])
                return
            }
            do {
                let data = try Self.export(job)
                _ = runner.exported(job["staging_dir"]?.stringValue ?? "", data["cases"]?.arrayValue ?? [])
                emit([progress("load", "start"), progress("load", "done"), progress("trace", "start"), progress("trace", "done"), result(data)])
            } catch {
                emit([.object([("type", "error"), ("id", id), ("ok", false), ("stage", "serialize"), ("code", "serialize_failed"),
                               ("message", .string("stub could not write the staging files: \(error)")), ("field", .null), ("detail", .null)])])
            }
        case "verify_bundle":
            let dir = request["dir"]?.stringValue ?? ""
            let manifest = StubProcessRunner.name(ofStaging: dir)
            if let sig = script.dieDuringVerify[manifest] {
                emit([progress("verify", "start")], thenEnd: 128 + sig)
                return
            }
            let failing = script.failVerifyCase[manifest]
            let cases = runner.exported(dir).map { c -> JSONValue in
                let name = c["case"]?.stringValue ?? "?"
                let passed = name != failing
                return .object([("case", .string(name)), ("shape", c["shape"] ?? .null), ("passed", .bool(passed)),
                                ("max_abs_error", .double(passed ? 0 : 0.5)), ("max_rel_error", .double(passed ? 0 : 0.5))])
            }
            var data: [(String, JSONValue)] = [("cases", .array(cases)), ("passed", .bool(failing == nil))]
            let hasPT2 = FileManager.default.fileExists(atPath: dir + "/model.pt2")
            let pt2SHA = (try? Digest.sha256(file: dir + "/model.pt2")).map(JSONValue.string) ?? .null
            if hasPT2 && !FileManager.default.fileExists(atPath: dir + "/model.pt") {
                // formats: [aoti] alone: the cases are model.pt2's, answered as both
                data += [("artifact", "model.pt2"), ("sha256", pt2SHA), ("aoti", .object([("cases", .array(cases)), ("sha256", pt2SHA)]))]
            } else if hasPT2 {
                // model.pt2 beside model.pt: its cases answer like model.pt's
                data.append(("aoti", .object([("cases", .array(cases)), ("sha256", pt2SHA)])))
            }
            if hasPT2 && !FileManager.default.fileExists(atPath: dir + "/model.pt") {
                // the sha256 above is model.pt2's
            } else if script.wrongSHA.contains(manifest) {
                data.append(("sha256", .string(Digest.sha256("not the bytes of model.pt"))))
            } else if script.reportSHA, let sha = try? Digest.sha256(file: dir + "/model.pt") {
                data.append(("sha256", .string(sha)))
            }
            emit([progress("verify", "start"), progress("verify", "done"), result(.object(data))])
        case "guard", "deploy", "probe":
            emit([result(.object([]))])
        case "shutdown":
            emit([result(.object([]))], thenEnd: 0)
        default:
            emit([.object([("type", "error"), ("id", id), ("ok", false), ("stage", .null), ("code", "bad_request"),
                           ("message", "unknown op"), ("field", .null), ("detail", .null)])])
        }
    }

    /// The traced sizes: dims 0 and 1 of the first input tensor (its shape, else its values).
    static func tracedSizes(_ job: JSONValue) -> (batch: Int, sequence: Int) {
        let t = job["inputs"]?["tensors"]?[0]
        if let shape = t?["shape"]?.arrayValue?.compactMap(\.intValue), shape.count >= 2 { return (shape[0], shape[1]) }
        if let rows = t?["values"]?.arrayValue { return (rows.count, rows.first?.arrayValue?.count ?? 1) }
        return (1, 1)
    }

    /// The export result: one case per envelope point, sizes from the point (null → the traced size), and the three
    /// staging files written as small placeholder files.
    static func export(_ job: JSONValue) throws -> JSONValue {
        let staging = URL(fileURLWithPath: job["staging_dir"]?.stringValue ?? "/nonexistent")
        try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: true)
        let traced = tracedSizes(job)
        let axes = job["trace"]?["envelope"]?["axes"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? []
        var points = job["trace"]?["envelope"]?["points"]?.arrayValue ?? []
        if points.isEmpty { points = [.object([("case", "traced"), ("sizes", .object([]))])] }
        let cases: [JSONValue] = points.map { p in
            var sizes: [(String, JSONValue)] = []
            let names = axes.isEmpty ? (p["sizes"]?.objectValue?.map(\.0) ?? []) : axes
            for a in names {
                let given = p["sizes"]?[a]?.intValue
                sizes.append((a, .int(given ?? (a == "batch" ? traced.batch : a == "sequence" ? traced.sequence : 1))))
            }
            let b = sizes.first { $0.0 == "batch" }?.1.intValue ?? traced.batch
            let s = sizes.first { $0.0 == "sequence" }?.1.intValue ?? traced.sequence
            return .object([("case", p["case"] ?? "traced"), ("shape", .array([.int(b), .int(s)])), ("sizes", .object(sizes))])
        }
        let name = job["name"]?.stringValue ?? "model"
        // formats: [aoti] alone: model.pt2 is the artifact; with aoti, model.pt2 is compiled for the envelope's ranges
        let formats = job["formats"]?.arrayValue ?? [.string("torchscript")]
        let aotiOnly = formats == [.string("aoti")]
        let withAOTI = formats.contains(.string("aoti"))
        let envelopeRanges = (job["trace"]?["envelope"]?["axes"]?.arrayValue ?? []).compactMap { a -> (String, JSONValue)? in
            guard let n = a["name"]?.stringValue, let lo = a["min"]?.intValue, let hi = a["max"]?.intValue, hi > lo else { return nil }
            return (n, .array([.int(lo), .int(hi)]))
        }
        if withAOTI {
            try Data("stub AOTInductor package for \(name), dims \(CanonicalJSON.text(.object(envelopeRanges)))\n".utf8)
                .write(to: staging.appendingPathComponent("model.pt2"))
        }
        if !aotiOnly {
            try Data("stub torchscript archive for \(name)\n".utf8).write(to: staging.appendingPathComponent("model.pt"))
        }
        try Data("stub sample inputs\n".utf8).write(to: staging.appendingPathComponent("sample_inputs.safetensors"))
        try Data("stub reference outputs\n".utf8).write(to: staging.appendingPathComponent("reference_outputs.safetensors"))
        let names = job["inputs"]?["tensors"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? []
        return .object([
            ("model_class", job["model"]?["class"] ?? .null),
            ("input_signature", .array(names.map { .object([("name", .string($0)), ("dtype", "int64"), ("shape", .array([.int(traced.batch), .int(traced.sequence)]))]) })),
            ("output_signature", .array([.object([("name", "output_0"), ("dtype", "float32"), ("shape", .array([.int(traced.batch), .int(traced.sequence), .int(32)]))])])),
            ("cases", .array(cases)), ("tracer_warnings", .array([])), ("timings_ms", .object([])),
            ("aoti", withAOTI ? .object([("path", .string(staging.appendingPathComponent("model.pt2").path)), ("dynamic_dims", .object(envelopeRanges))]) : .null),
        ])
    }
}
