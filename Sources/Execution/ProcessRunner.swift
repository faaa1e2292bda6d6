import Foundation

/// A started child process with piped standard streams.
public protocol ChildProcess: AnyObject, Sendable {
    /// Writes bytes to its stdin.
    func write(_ data: Data) throws
    /// Reads the next line of its stdout (without the newline); nil at end of stream.
    func readLine() -> String?
    /// The last part of what it wrote to stderr (bounded), for error reports.
    var stderrTail: String { get }
    /// Closes its stdin (a worker exits at end of input).
    func closeInput()
    /// Sends a signal to it.
    func signal(_ sig: Int32)
    /// Waits for it to exit; returns the exit status, or 128 + signal when a signal killed it.
    func wait() -> Int32
    /// Its pid.
    var pid: Int32 { get }
}

/// Starts processes from an argv array — never through a shell. Injected, so tests can stand in for Python.
public protocol ProcessRunner: Sendable {
    /// Starts `argv[0]` with the rest as arguments.
    func start(_ argv: [String], environment: [String: String], directory: URL?) throws -> ChildProcess
}

/// Why a process could not start.
public struct ProcessStartError: Error, CustomStringConvertible {
    /// The program.
    public var program: String
    /// The underlying reason.
    public var reason: String
    /// A sentence for a user.
    public var description: String { "cannot start \(program): \(reason)" }
}

/// Every child process tsexport has started and not yet reaped, so an interrupt can stop them all.
public enum ChildRegistry {
    nonisolated(unsafe) private static var pids = Set<Int32>()
    private static let lock = NSLock()

    static func add(_ pid: Int32) { lock.lock(); pids.insert(pid); lock.unlock() }
    static func remove(_ pid: Int32) { lock.lock(); pids.remove(pid); lock.unlock() }

    /// Sends a signal to every live child.
    public static func signalAll(_ sig: Int32) {
        lock.lock()
        let all = pids
        lock.unlock()
        for pid in all { kill(pid, sig) }
    }
}

/// The real runner, over Foundation's `Process`.
public struct SystemProcessRunner: ProcessRunner {
    /// Creates the runner.
    public init() {}

    public func start(_ argv: [String], environment: [String: String], directory: URL?) throws -> ChildProcess {
        guard let program = argv.first else { throw ProcessStartError(program: "", reason: "empty command") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: program)
        p.arguments = Array(argv.dropFirst())
        p.environment = environment
        if let directory { p.currentDirectoryURL = directory }
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        p.standardInput = stdin
        p.standardOutput = stdout
        p.standardError = stderr
        do {
            try p.run()
        } catch {
            throw ProcessStartError(program: program, reason: (error as NSError).localizedDescription)
        }
        ChildRegistry.add(p.processIdentifier)
        return FoundationChild(process: p, stdin: stdin, stdout: stdout, stderr: stderr)
    }
}

/// A `Process` with a line reader on stdout and a bounded tail buffer on stderr.
final class FoundationChild: ChildProcess, @unchecked Sendable {
    private let process: Process
    private let stdin: FileHandle
    private let stdout: FileHandle
    private var buffer = Data()
    private let lock = NSLock()
    private var tail = Data()
    private let tailLimit = 16 * 1024
    private let stderrDone = DispatchSemaphore(value: 0)

    init(process: Process, stdin: Pipe, stdout: Pipe, stderr: Pipe) {
        self.process = process
        self.stdin = stdin.fileHandleForWriting
        self.stdout = stdout.fileHandleForReading
        let errHandle = stderr.fileHandleForReading
        let thread = Thread { [weak self] in
            while true {
                let chunk = errHandle.availableData
                if chunk.isEmpty { break }
                self?.appendTail(chunk)
            }
            self?.stderrDone.signal()
        }
        thread.start()
    }

    var pid: Int32 { process.processIdentifier }

    private func appendTail(_ d: Data) {
        lock.lock()
        defer { lock.unlock() }
        tail.append(d)
        if tail.count > tailLimit { tail = tail.suffix(tailLimit) }
        if ProcessInfo.processInfo.environment["TSEXPORT_WORKER_STDERR"] == "1" {
            FileHandle.standardError.write(d)
        }
    }

    var stderrTail: String {
        lock.lock()
        defer { lock.unlock() }
        return String(decoding: tail, as: UTF8.self)
    }

    func write(_ data: Data) throws {
        try stdin.write(contentsOf: data)
    }

    func readLine() -> String? {
        while true {
            if let nl = buffer.firstIndex(of: 0x0A) {
                let line = buffer[buffer.startIndex..<nl]
                buffer.removeSubrange(buffer.startIndex...nl)
                return String(decoding: line, as: UTF8.self)
            }
            let chunk = stdout.availableData
            if chunk.isEmpty {
                if buffer.isEmpty { return nil }
                defer { buffer.removeAll() }
                return String(decoding: buffer, as: UTF8.self)
            }
            buffer.append(chunk)
        }
    }

    func closeInput() { try? stdin.close() }

    func signal(_ sig: Int32) {
        guard process.isRunning else { return }
        kill(process.processIdentifier, sig)
    }

    func wait() -> Int32 {
        process.waitUntilExit()
        ChildRegistry.remove(process.processIdentifier)
        _ = stderrDone.wait(timeout: .now() + 2)
        if process.terminationReason == .uncaughtSignal { return 128 + process.terminationStatus }
        return process.terminationStatus
    }
}
