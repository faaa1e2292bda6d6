import ArgumentParser
import Bundles
import Execution
import Foundation
import JSON
import Plan

/// `tsexport bench BUNDLE...`: latency percentiles and peak memory of each bundle's artifact and of the eager model
/// it came from, at the traced shape and each check shape (or `--lengths`), with a report written into the bundle.
public struct Bench: ParsableCommand {
    public static let configuration = CommandConfiguration(
        abstract: "Measure latency (p50/p90/p99) and peak memory of bundles' artifacts against their eager models.")
    @Argument(help: "Bundle folders (each holds model.pt and record.json).")
    public var bundles: [String] = []
    @Option(help: "Timed runs per shape and side.")
    public var runs: Int = 50
    @Option(help: "Untimed warm-up runs before them.")
    public var warmup: Int = 5
    @Option(help: "torch threads (default: torch's default, stated in the output).")
    public var threads: Int?
    @Option(help: "Sequence lengths to measure, comma-separated (e.g. 8,16,32), at the traced batch size (default: the traced shape and each check shape).")
    public var lengths: String?
    @Option(name: .customLong("manifest-dir"), help: "The folder of the bundle's manifest, for a relative spec.model.pretrained (default: found from the record).")
    public var manifestDir: String?
    @Flag(name: .customLong("no-report"), help: "Do not write bench.html into the bundle.")
    public var noReport = false
    @Flag(name: .customLong("allow-remote-code"), help: "Allow rebuilding an eager model that sets trust_remote_code: true.")
    public var allowRemoteCode = false
    @Flag(name: .customLong("allow-pickle"), help: "Allow rebuilding an eager model that sets allow_pickle: true.")
    public var allowPickle = false
    @OptionGroup public var runtime: RuntimeOptions
    @Flag(help: "Print JSON instead of text.")
    public var json = false
    public init() {}

    /// The name of the report written into each bundle.
    public static let reportFile = BenchRequests.reportFile

    public func run() throws {
        let code = Bench.execute(self, console: .standard)
        if code != 0 { throw ExitCode(code) }
    }

    /// Runs bench and returns the exit code: 0 when every bundle was measured (an eager side that could not be
    /// rebuilt is reported, not a failure), 1 otherwise.
    public static func execute(_ cmd: Bench, console: Console, runner: ProcessRunner = SystemProcessRunner()) -> Int32 {
        guard !cmd.bundles.isEmpty else {
            console.err("error: name at least one bundle folder")
            return ExitStatus.failure
        }
        guard cmd.runs >= 1 else { console.err("error: --runs must be at least 1"); return ExitStatus.failure }
        guard cmd.warmup >= 0 else { console.err("error: --warmup must be 0 or more"); return ExitStatus.failure }
        if let t = cmd.threads, t < 1 { console.err("error: --threads must be at least 1"); return ExitStatus.failure }
        var lengths: [Int]?
        if let text = cmd.lengths {
            guard let parsed = BenchRequests.parseLengths(text) else {
                console.err("error: --lengths takes positive integers separated by commas (e.g. 8,16,32), not \(text)")
                return ExitStatus.failure
            }
            lengths = parsed
        }
        let settings = BenchRequests.Settings(
            lengths: lengths, runs: cmd.runs, warmup: cmd.warmup, threads: cmd.threads, report: !cmd.noReport,
            manifestDir: cmd.manifestDir, allowRemoteCode: cmd.allowRemoteCode, allowPickle: cmd.allowPickle)
        let session = BenchSession(dirs: cmd.bundles, settings: settings, python: cmd.runtime.python,
                                   cwd: URL(fileURLWithPath: FileManager.default.currentDirectoryPath), runner: runner)
        let done = session.run(
            message: { Apply.show($0, console: console) },
            starting: { console.err("tsexport: benchmarking \($0) (\(cmd.runs) runs after \(cmd.warmup) warm-up per shape and side)") },
            measured: { m in
                if let error = m.error { console.err("\(m.dir): error: \(error)") } else if !cmd.json, let result = m.result {
                    table(dir: m.dir, result).forEach(console.out)
                }
            })
        guard let done else { return ExitStatus.failure }
        if cmd.json {
            let reports = done.measured.map { m -> JSONValue in
                .object([("bundle", .string(m.dir)), ("ok", .bool(m.ok))] + (m.result.map { [("result", $0)] } ?? [("error", .string(m.error ?? ""))]))
            }
            console.out(JSONValue.object([("bundles", .array(reports)), ("ok", .bool(done.ok))]).serialized(pretty: true))
        }
        return done.ok ? ExitStatus.success : ExitStatus.failure
    }

    // MARK: the terminal table

    static func ms(_ v: JSONValue?) -> String {
        guard let d = v?.doubleValue else { return "—" }
        return d >= 100 ? String(format: "%.1f", d) : String(format: "%.3f", d)
    }

    static func mib(_ v: JSONValue?) -> String {
        guard let d = v?.doubleValue else { return "—" }
        return String(format: "%.1f MiB", d / 1_048_576)
    }

    static func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
    static func lpad(_ s: String, _ n: Int) -> String { s.count >= n ? " " + s : String(repeating: " ", count: n - s.count) + s }

    static func shapeText(_ v: JSONValue?) -> String {
        "[" + (v?.arrayValue ?? []).map { $0.intValue.map(String.init) ?? "?" }.joined(separator: ", ") + "]"
    }

    static func statsLine(_ label: String, _ side: String, _ stats: JSONValue?, note: String = "") -> String {
        let head = "  " + pad(label, 16) + pad(side, 10)
        guard let stats, stats != .null else { return head + "not measured" }
        if let error = stats["error"]?.stringValue { return head + "failed: \(error)" }
        return head + lpad(ms(stats["p50_ms"]), 9) + lpad(ms(stats["p90_ms"]), 9) + lpad(ms(stats["p99_ms"]), 9)
            + lpad(mib(stats["peak_rss_delta_bytes"]), 12) + (note.isEmpty ? "" : "  " + note)
    }

    static func ratio(_ a: JSONValue?, _ b: JSONValue?) -> String? {
        guard let x = a?["p50_ms"]?.doubleValue, let y = b?["p50_ms"]?.doubleValue, y > 0 else { return nil }
        return String(format: "%.2f×", x / y)
    }

    /// The text report of one bundle.
    public static func table(dir: String, _ r: JSONValue) -> [String] {
        let threads = "\(r["threads"]?.intValue ?? 0) thread\(r["threads"]?.intValue == 1 ? "" : "s")"
            + (r["threads_default"] == .bool(true) ? " (torch's default)" : "")
        var lines = [
            "\(dir): \(r["model_class"]?.stringValue ?? "?") traced at \(shapeText(r["traced_shape"])) on \(r["device"]?.stringValue ?? "cpu"); "
                + "\(r["runs"]?.intValue ?? 0) runs after \(r["warmup"]?.intValue ?? 0) warm-up, \(threads)",
        ]
        let eager = r["eager"]
        if eager?["available"] != .bool(true) {
            lines.append("  eager: not measured: \(eager?["reason"]?.stringValue ?? "unknown reason")")
        } else if let e = eager?["reference_max_abs_error"]?.doubleValue, e > 1e-3 {
            lines.append(String(format: "  warning: the rebuilt eager model differs from the recorded reference outputs (max abs error %.2e)", e))
        }
        let header = "  " + pad("shape", 16) + pad("side", 10) + lpad("p50 ms", 9) + lpad("p90 ms", 9) + lpad("p99 ms", 9) + lpad("peak RSS Δ", 12)
        lines.append(header)
        for row in r["shapes"]?.arrayValue ?? [] {
            let label = shapeText(row["shape"])
            let note = row["case"]?.stringValue.map { "sample \($0)" } ?? "drawn inputs"
            lines.append(statsLine(label, "artifact", row["artifact"], note: note))
            if let pt2 = row["aoti"], pt2 != .null {
                let speed = ratio(pt2, row["artifact"]).map { "model.pt2/model.pt p50 \($0)" } ?? ""
                lines.append(statsLine("", "model.pt2", pt2, note: speed))
            }
            if row["eager"] != nil, row["eager"] != .null {
                let speed = ratio(row["artifact"], row["eager"]).map { "artifact/eager p50 \($0)" } ?? ""
                lines.append(statsLine("", "eager", row["eager"], note: speed))
            }
        }
        if let g = r["generation"], g != .null {
            lines.append(String(format: "  generation (%@, max_length %d, %d thread%@): cached %.0f tok/s, uncached %.0f tok/s, %.2fx",
                                g["kind"]?.stringValue ?? "?", g["max_length"]?.intValue ?? 0, g["threads"]?.intValue ?? 1,
                                (g["threads"]?.intValue ?? 1) == 1 ? "" : "s",
                                g["cached_tokens_per_s"]?.doubleValue ?? 0, g["uncached_tokens_per_s"]?.doubleValue ?? 0, g["speedup"]?.doubleValue ?? 0))
        }
        if let p = r["padding"], p != .null {
            let traced = p["traced_length"]?.intValue ?? 0
            lines.append("  padding: traced padded to \(traced) tokens (\(p["real_tokens"]?.intValue ?? 0) real); the artifact runs at \(traced) whatever the real length, eager on the real tokens only")
            for row in p["rows"]?.arrayValue ?? [] {
                let label = "\(row["length"]?.intValue ?? 0) real"
                lines.append(statsLine(label, "artifact", row["artifact"], note: "padded to \(traced)"))
                if row["eager"] != nil, row["eager"] != .null {
                    let cost = ratio(row["artifact"], row["eager"]).map { "padded artifact/eager p50 \($0)" } ?? ""
                    lines.append(statsLine("", "eager", row["eager"], note: cost))
                }
            }
        }
        if let report = r["report"]?.stringValue { lines.append("  report: \(report)") }
        return lines
    }
}
