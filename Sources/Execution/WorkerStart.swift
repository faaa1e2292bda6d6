import Foundation

extension PythonRuntime {
    /// Starts a worker on this runtime; nil (after telling why through `message`) when it cannot start or the
    /// runtime lacks one of `needs` (then the message names the command that installs the pinned versions).
    public func startWorker(runner: ProcessRunner, needs: [String], message: (ApplySession.Message) -> Void) -> WorkerClient? {
        let worker: WorkerClient
        do {
            worker = try WorkerClient(python: python, runner: runner)
        } catch {
            message(.error("\(error)"))
            return nil
        }
        if worker.hello.missing.contains(where: needs.contains) {
            message(.error(missingPackagesMessage(worker.hello.missing)))
            worker.shutdown()
            return nil
        }
        return worker
    }
}
