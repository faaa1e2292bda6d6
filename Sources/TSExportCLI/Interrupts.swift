import Execution
import Foundation

/// The first SIGINT (or SIGTERM) during apply stops every worker, removes staging folders, releases the lock and
/// exits 130.
enum Interrupts {
    nonisolated(unsafe) static var sources: [DispatchSourceSignal] = []

    static func install(lock: OutputRootLock, console: Console) {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                console.err("tsexport: interrupted; stopping the workers and removing staging folders")
                ChildRegistry.signalAll(SIGKILL)
                _ = lock.removeLeftoverStaging()
                lock.release()
                exit(ExitStatus.interrupted)
            }
            source.resume()
            sources.append(source)
        }
    }

    static func uninstall() {
        sources.forEach { $0.cancel() }
        sources = []
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
    }
}
