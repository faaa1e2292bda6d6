import Foundation

/// The two workers of one export slot: a warm exporting worker, and a verifying worker that never traced the
/// model (a fresh process), started in the background once the first model is loaded so its imports overlap
/// tracing instead of competing with the exporter's own imports for the cores.
final class WorkerPair: @unchecked Sendable {
    let python: String
    let runner: ProcessRunner
    let progress: ProgressSink
    private(set) var exporter: WorkerClient?
    private var verifierStart: DispatchGroup?
    private var verifierResult: Result<WorkerClient, Error>?
    /// Exporting workers sent away early (see `retireExporter`), reaped in `stop()`.
    private var retiring: [WorkerClient] = []

    init(python: String, runner: ProcessRunner, progress: ProgressSink) {
        self.python = python
        self.runner = runner
        self.progress = progress
    }

    /// Starts the exporting worker and returns its hello.
    func start() throws -> WorkerHello {
        let w = try WorkerClient(python: python, runner: runner, environment: WorkerClient.applyEnvironment())
        exporter = w
        return w.hello
    }

    /// Starts the verifying worker only, and returns its hello: for a slot whose manifests all come from the cache,
    /// where no model is loaded and no exporting worker is needed (one starts if a cached entry is refused).
    func startVerifierOnly() throws -> WorkerHello {
        let w = try WorkerClient(python: python, runner: runner, environment: WorkerClient.applyEnvironment())
        verifierStart = DispatchGroup()
        verifierResult = .success(w)
        return w.hello
    }

    /// The exporting worker, started anew when the previous one died.
    func ensureExporter() throws -> WorkerClient {
        if let w = exporter { return w }
        progress.message("starting a new Python worker")
        let w = try WorkerClient(python: python, runner: runner, environment: WorkerClient.applyEnvironment())
        exporter = w
        return w
    }

    func startVerifierInBackground() {
        guard verifierStart == nil else { return }
        let group = DispatchGroup()
        group.enter()
        verifierStart = group
        let python = self.python, runner = self.runner
        DispatchQueue.global().async { [self] in
            let r = Result { try WorkerClient(python: python, runner: runner, environment: WorkerClient.applyEnvironment()) }
            self.verifierResult = r
            group.leave()
        }
    }

    /// The verifying worker (waits for its start).
    func verifier() throws -> WorkerClient {
        startVerifierInBackground()
        verifierStart?.wait()
        switch verifierResult {
        case .success(let w)?: return w
        case .failure(let e)?: throw e
        case nil: throw WorkerCrash(description: "the verifying worker did not start", stderrTail: "")
        }
    }

    /// Sends the exporting worker away now: the traced model's memory is gone before the saved one is loaded.
    func retireExporter() {
        guard let w = exporter else { return }
        w.beginShutdown()
        retiring.append(w)
        exporter = nil
    }

    /// After a worker crashed or spoke out of protocol: kills the exporting worker and drops the verifier when it is
    /// the one that died, so the next manifest gets a fresh one.
    func recoverFromCrash() {
        exporter?.kill()
        exporter = nil
        if let group = verifierStart {
            group.wait()
            if case .success(let v)? = verifierResult, v.crashed {
                v.kill()
                verifierResult = nil
                verifierStart = nil
            }
        }
    }

    /// Stops every worker.
    func stop() {
        exporter?.shutdown()
        exporter = nil
        retiring.forEach { $0.shutdown() }
        retiring = []
        if verifierStart != nil, let w = try? verifier() { w.shutdown() }
        verifierResult = nil
        verifierStart = nil
    }
}
