import Foundation

/// Where apply reports what it is doing: stage starts and ends per manifest, and free-form messages.
public protocol ProgressSink: Sendable {
    /// A message for the user (a worker replaced, leftovers removed).
    func message(_ text: String)
    /// A manifest entered (`seconds` nil) or finished (`seconds` set) a stage.
    func stage(_ manifest: String, _ stage: String, seconds: Double?)
    /// A manifest is done (ok, failed, ...).
    func finished(_ manifest: String, status: String, seconds: Double)
}

/// Plain lines, one per event that matters: for CI logs and redirected output.
public struct PlainProgress: ProgressSink {
    let write: @Sendable (String) -> Void

    /// Creates a sink writing lines through `write`.
    public init(write: @escaping @Sendable (String) -> Void) { self.write = write }

    public func message(_ text: String) { write("tsexport: \(text)") }

    public func stage(_ manifest: String, _ stage: String, seconds: Double?) {
        if let s = seconds { write("[\(manifest)] \(stage) done in \(String(format: "%.2f", s)) s") } else if stage == "start" || stage == "verify" {
            write("[\(manifest)] \(stage == "start" ? "started" : "verify: reloading the saved artifact in a fresh process")")
        }
    }

    public func finished(_ manifest: String, status: String, seconds: Double) {
        write("[\(manifest)] \(status) in \(String(format: "%.1f", seconds)) s")
    }
}

/// On a terminal: one live line per running manifest with its stage and elapsed time, redrawn in place; finished
/// manifests and messages scroll above the live block.
public final class LiveProgress: ProgressSink, @unchecked Sendable {
    private let lock = NSLock()
    private let write: @Sendable (String) -> Void
    private var running: [(name: String, stage: String, since: Date, stageSince: Date)] = []
    private var drawn = 0
    private var timer: DispatchSourceTimer?

    /// Creates a live display writing raw text (with ANSI controls) through `write`.
    public init(write: @escaping @Sendable (String) -> Void) {
        self.write = write
        let t = DispatchSource.makeTimerSource(queue: .global())
        t.schedule(deadline: .now() + 0.5, repeating: 0.5)
        t.setEventHandler { [weak self] in self?.redraw(nil) }
        t.resume()
        timer = t
    }

    deinit { timer?.cancel() }

    /// Stops the timer and clears the live block.
    public func close() {
        timer?.cancel()
        redraw(nil, clearOnly: true)
    }

    public func message(_ text: String) { redraw("tsexport: \(text)") }

    public func stage(_ manifest: String, _ stage: String, seconds: Double?) {
        lock.lock()
        if let i = running.firstIndex(where: { $0.name == manifest }) {
            if seconds == nil { running[i].stage = stage; running[i].stageSince = Date() }
        } else {
            running.append((manifest, stage, Date(), Date()))
        }
        lock.unlock()
        redraw(nil)
    }

    public func finished(_ manifest: String, status: String, seconds: Double) {
        lock.lock()
        running.removeAll { $0.name == manifest }
        lock.unlock()
        redraw("[\(manifest)] \(status) in \(String(format: "%.1f", seconds)) s")
    }

    private func redraw(_ scrollLine: String?, clearOnly: Bool = false) {
        lock.lock()
        defer { lock.unlock() }
        var out = ""
        if drawn > 0 { out += "\u{1B}[\(drawn)A" }
        out += "\u{1B}[J"
        if let l = scrollLine { out += l + "\n" }
        drawn = 0
        if !clearOnly {
            for r in running {
                out += String(format: "  %@  %@  %.1f s\n", r.name, r.stage, Date().timeIntervalSince(r.since))
                drawn += 1
            }
        }
        write(out)
    }
}
