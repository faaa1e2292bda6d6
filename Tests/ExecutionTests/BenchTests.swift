import Execution
import Foundation
import JSON
import TSExportCLI
import XCTest

/// `tsexport bench` on bundles made by `tsexport apply`: both sides' percentiles in the JSON, the report in the
/// bundle with the same numbers, the padding comparison, and a bundle whose pretrained folder moved. Nothing here
/// depends on how fast anything ran.
final class BenchTests: XCTestCase {
    static let percentiles = ["p50_ms", "p90_ms", "p99_ms"]

    static func bench(_ args: [String]) throws -> (Int32, Harness.Captured) {
        let cmd = try Bench.parse(args + ["--python", Harness.python])
        let (console, captured) = Harness.console()
        return (Bench.execute(cmd, console: console), captured)
    }

    /// Runs the test Python (found on PATH when TSEXPORT_PYTHON is a bare name) and fails on a non-zero exit.
    static func python(_ args: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [Harness.python] + args
        var env = ProcessInfo.processInfo.environment
        env["HF_HUB_OFFLINE"] = "1"
        p.environment = env
        let err = Pipe()
        p.standardError = err
        try p.run()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        if p.terminationStatus != 0 {
            throw NSError(domain: "python", code: Int(p.terminationStatus), userInfo: [NSLocalizedDescriptionKey: String(decoding: errData.suffix(3000), as: UTF8.self)])
        }
    }

    /// The JSON block embedded in a report.
    static func embeddedData(_ html: String) throws -> JSONValue {
        let open = "<script type=\"application/json\" id=\"tsexport-bench-data\">"
        let start = try XCTUnwrap(html.range(of: open)), end = try XCTUnwrap(html.range(of: "</script>", range: start.upperBound..<html.endIndex))
        return try JSONValue(parsing: String(html[start.upperBound..<end.lowerBound]))
    }

    /// The plotted points: "plot/series/batch/length" → [p50, p90, p99].
    static func plottedPoints(_ html: String) throws -> [String: [Double]] {
        let regex = try NSRegularExpression(pattern: #"<circle class="point"[^>]*? data-plot="(\w+)" data-series="(\w+)" data-batch="(\d+)" data-length="(\d+)" data-p50="([^"]+)" data-p90="([^"]+)" data-p99="([^"]+)""#)
        var out: [String: [Double]] = [:]
        let ns = html as NSString
        for m in regex.matches(in: html, range: NSRange(location: 0, length: ns.length)) {
            let g = (1...7).map { ns.substring(with: m.range(at: $0)) }
            out["\(g[0])/\(g[1])/\(g[2])/\(g[3])"] = g[4...].map { Double($0) ?? .nan }
        }
        return out
    }

    /// Every measured point of the bench JSON, keyed like `plottedPoints`.
    static func measuredPoints(_ r: JSONValue) -> [String: [Double]] {
        var out: [String: [Double]] = [:]
        for row in r["shapes"]?.arrayValue ?? [] {
            let shape = row["shape"]?.arrayValue?.compactMap(\.intValue) ?? []
            for side in ["artifact", "eager"] {
                guard let s = row[side], s["p50_ms"] != nil else { continue }
                out["latency/\(side)/\(shape[0])/\(shape[1])"] = percentiles.map { s[$0]?.doubleValue ?? .nan }
            }
        }
        for row in r["padding"]?["rows"]?.arrayValue ?? [] {
            for side in ["artifact", "eager"] {
                guard let s = row[side], s["p50_ms"] != nil else { continue }
                out["padding/\(side)/\(row["batch"]?.intValue ?? 0)/\(row["length"]?.intValue ?? 0)"] = percentiles.map { s[$0]?.doubleValue ?? .nan }
            }
        }
        return out
    }

    func assertReportMatches(_ report: URL, _ result: JSONValue, file: StaticString = #filePath, line: UInt = #line) throws {
        let html = try String(contentsOf: report, encoding: .utf8)
        XCTAssertFalse(html.contains("<script src") || html.contains("<link") || html.contains("@import"), "the report fetches nothing", file: file, line: line)
        let embedded = try Self.embeddedData(html)
        XCTAssertEqual(embedded["shapes"], result["shapes"], file: file, line: line)
        XCTAssertEqual(embedded["padding"], result["padding"], file: file, line: line)
        let plotted = try Self.plottedPoints(html), measured = Self.measuredPoints(result)
        XCTAssertFalse(measured.isEmpty, file: file, line: line)
        XCTAssertEqual(Set(plotted.keys), Set(measured.keys), file: file, line: line)
        for (key, values) in measured {
            for (i, v) in values.enumerated() {
                XCTAssertEqual(plotted[key]?[i] ?? .nan, v, accuracy: abs(v) * 1e-12, "\(key) \(Self.percentiles[i])", file: file, line: line)
            }
        }
    }

    func testPaddedTinyBundleBothSidesJSONAndReport() throws {
        let root = try Harness.tempDir("bench")
        defer { try? FileManager.default.removeItem(at: root) }
        // Like specs/tiny-bert-text.yaml (the guide's sentence, 14 tokens padded to 16), kept here so that changes
        // to the example do not change this test.
        let tokenizer = Harness.repo.appendingPathComponent("specs/tokenizers/tiny-bert").path
        let manifest = """
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: tiny-bert-text}
            spec:
              model:
                class: BertForMaskedLM
                config: {vocab_size: 64, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 64, max_position_embeddings: 64}
                seed: 7
              inputs:
                tokenizer: \(tokenizer)
                text: "[CLS] Who was Jim Henson ? [SEP] Jim Henson was a puppeteer [SEP]"
                mask: [8]
                pad_to: 16
                tensors:
                  - {name: input_ids, from: text}
                  - {name: attention_mask, from: text}
              trace:
                strict: false
                check_shapes: [[2, 16]]
            """
        let spec = root.appendingPathComponent("tiny-bert-text.yaml")
        try manifest.write(to: spec, atomically: true, encoding: .utf8)
        let (code, out) = try Harness.apply([spec.path, "--output-root", root.path])
        XCTAssertEqual(code, 0, out.stderr)
        let bundle = root.appendingPathComponent("build/tiny-bert-text")

        let (rc, captured) = try Self.bench([bundle.path, "--runs", "3", "--warmup", "1", "--threads", "1", "--lengths", "8,16", "--json"])
        XCTAssertEqual(rc, 0, captured.stderr)
        let json = try JSONValue(parsing: captured.stdout)
        XCTAssertEqual(json["ok"], true)
        let r = try XCTUnwrap(json["bundles"]?[0]?["result"])
        XCTAssertEqual(r["threads"], 1)
        XCTAssertEqual(r["threads_default"], false)
        XCTAssertEqual(r["eager"]?["available"], true, "\(r["eager"] ?? .null)")
        XCTAssertEqual(r["eager"]?["attn_implementation"], "eager")
        XCTAssertLessThan(r["eager"]?["reference_max_abs_error"]?.doubleValue ?? 1, 1e-4)
        let shapes = r["shapes"]?.arrayValue ?? []
        XCTAssertEqual(shapes.map { $0["shape"] }, [[1, 8], [1, 16]])
        XCTAssertEqual(shapes.map { $0["inputs"] }, ["drawn", "sample"])
        for row in shapes {
            for side in ["artifact", "eager"] {
                let s = try XCTUnwrap(row[side])
                let p = Self.percentiles.compactMap { s[$0]?.doubleValue }
                XCTAssertEqual(p.count, 3, "\(side): \(s)")
                XCTAssertTrue(p[0] <= p[1] && p[1] <= p[2], "\(p)")
                XCTAssertEqual(s["runs"], 3)
            }
        }
        // The guide's sentence is 14 tokens padded to 16: what the padding costs at 8, 14 and 16 real tokens.
        XCTAssertEqual(r["padding"]?["traced_length"], 16)
        XCTAssertEqual(r["padding"]?["real_tokens"], 14)
        XCTAssertEqual(r["padding"]?["rows"]?.arrayValue?.map { $0["length"] }, [8, 14, 16])

        let report = bundle.appendingPathComponent(Bench.reportFile)
        XCTAssertEqual(r["report"]?.stringValue, report.path)
        try assertReportMatches(report, r)
        XCTAssertFalse(Harness.tree(bundle).contains { $0.hasPrefix(".bench") }, "no temporary file is left in the bundle")

        // The bundle is still up to date and verifies: the report is an addition, not a change.
        let (again, out2) = try Harness.apply([spec.path, "--output-root", root.path])
        XCTAssertEqual(again, 0, out2.stderr)
        XCTAssertTrue(out2.stdout.contains("up to date"), out2.stdout)

        // The terminal table.
        let (rc2, text) = try Self.bench([bundle.path, "--runs", "2", "--warmup", "0", "--no-report"])
        XCTAssertEqual(rc2, 0, text.stderr)
        XCTAssertTrue(text.stdout.contains("torch's default"), text.stdout)
        XCTAssertTrue(text.stdout.contains("p50 ms"), text.stdout)
        XCTAssertTrue(text.stdout.contains("padding: traced padded to 16 tokens (14 real)"), text.stdout)
        XCTAssertFalse(text.stdout.contains("report:"), text.stdout)

        // A length outside the verified envelope (sequence 1–16) fails at the guard, and so does the command.
        let (rc3, outside) = try Self.bench([bundle.path, "--runs", "1", "--warmup", "0", "--no-report", "--lengths", "8,32"])
        XCTAssertEqual(rc3, 1, outside.stdout + outside.stderr)
        XCTAssertTrue(outside.stdout.contains("failed:"), outside.stdout)
    }

    func testMovedPretrainedFolderBenchesTheArtifactAlone() throws {
        let dir = try Harness.tempDir("bench-moved")
        defer { try? FileManager.default.removeItem(at: dir) }
        let models = dir.appendingPathComponent("models")
        try Self.python(["-c", """
            import json, sys, torch
            from transformers import BertConfig, BertModel
            torch.manual_seed(0)
            BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20, max_position_embeddings=32)).save_pretrained(sys.argv[1])
            """, models.appendingPathComponent("tiny").path])
        let manifest = """
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: tiny-pretrained}
            spec:
              model: {class: BertModel, pretrained: ./models/tiny}
              inputs:
                tensors: [{name: input_ids, from: random, shape: [1, 6], high: 50}]
              trace: {check_shapes: [[1, 4]]}
            """
        let file = dir.appendingPathComponent("tiny.yaml")
        try manifest.write(to: file, atomically: true, encoding: .utf8)
        let root = dir.appendingPathComponent("out")
        let (code, out) = try Harness.apply([file.path, "--output-root", root.path])
        XCTAssertEqual(code, 0, out.stderr)
        let bundle = root.appendingPathComponent("build/tiny-pretrained")

        let (rc, before) = try Self.bench([bundle.path, "--runs", "2", "--warmup", "0", "--json", "--no-report"])
        XCTAssertEqual(rc, 0, before.stderr)
        XCTAssertEqual(try JSONValue(parsing: before.stdout)["bundles"]?[0]?["result"]?["eager"]?["available"], true, before.stdout)

        try FileManager.default.moveItem(at: models, to: dir.appendingPathComponent("moved"))
        let (rc2, after) = try Self.bench([bundle.path, "--runs", "2", "--warmup", "0", "--json"])
        XCTAssertEqual(rc2, 0, after.stderr)
        let r = try XCTUnwrap(try JSONValue(parsing: after.stdout)["bundles"]?[0]?["result"])
        XCTAssertEqual(r["eager"]?["available"], false)
        let reason = r["eager"]?["reason"]?.stringValue ?? ""
        XCTAssertTrue(reason.contains("does not exist") && reason.contains("models/tiny"), reason)
        for row in r["shapes"]?.arrayValue ?? [] {
            XCTAssertEqual(row["eager"], .null)
            XCTAssertNotNil(row["artifact"]?["p50_ms"]?.doubleValue)
        }
        let report = bundle.appendingPathComponent(Bench.reportFile)
        try assertReportMatches(report, r)
        let html = try String(contentsOf: report, encoding: .utf8)
        XCTAssertTrue(html.contains("eager model not measured"), "the report says why the eager side is missing")

        let (_, text) = try Self.bench([bundle.path, "--runs", "2", "--warmup", "0", "--no-report"])
        XCTAssertTrue(text.stdout.contains("eager: not measured: the pretrained folder"), text.stdout)
    }

    func testOptionsAreCheckedBeforePythonStarts() throws {
        for args in [["--runs", "0"], ["--threads", "0"], ["--lengths", "8,x"], ["--warmup=-1"]] {
            let (rc, out) = try Self.bench(["/nonexistent"] + args)
            XCTAssertEqual(rc, 1, args.joined(separator: " "))
            XCTAssertTrue(out.stderr.contains("error:"), out.stderr)
        }
        let (rc, out) = try Self.bench(["/nonexistent/bundle"])
        XCTAssertEqual(rc, 1)
        XCTAssertTrue(out.stderr.contains("not a tsexport bundle"), out.stderr)
    }
}
