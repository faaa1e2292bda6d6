import Execution
import Foundation
import JSON
import TSExportCLI
import XCTest

/// TSEXPORT_WARM: how it is read, the argv it gives, and two applies with real torch where the second is served by
/// a worker forked from the warm process.
final class WarmWorkerTests: XCTestCase {
    func testTheSettingAndTheArgv() throws {
        let cache = ["TSEXPORT_CACHE_DIR": "/c"]
        XCTAssertNil(WarmWorkers(environment: cache))
        for off in ["", "0", "off", "false", "no", "soon", "-5"] { XCTAssertNil(WarmWorkers(environment: cache.merging(["TSEXPORT_WARM": off]) { $1 }), off) }
        XCTAssertEqual(WarmWorkers(environment: cache.merging(["TSEXPORT_WARM": "1"]) { $1 })?.idleSeconds, 900)
        XCTAssertEqual(WarmWorkers(environment: cache.merging(["TSEXPORT_WARM": "On"]) { $1 })?.idleSeconds, 900)
        XCTAssertEqual(WarmWorkers(environment: cache.merging(["TSEXPORT_WARM": "60"]) { $1 })?.idleSeconds, 60)
        XCTAssertEqual(WarmWorkers(environment: cache.merging(["TSEXPORT_WARM": "1"]) { $1 })?.directory.path, "/c/warm")
        XCTAssertEqual(WorkerClient.argv(python: "py", environment: cache), ["py", "-u", "-m", "tsexport_worker", "serve"])
        XCTAssertEqual(WorkerClient.argv(python: "py", environment: cache.merging(["TSEXPORT_WARM": "60"]) { $1 }),
                       ["py", "-u", "-m", "tsexport_worker", "attach", "--dir", "/c/warm", "--idle", "60"])
    }

    func testASecondApplyIsServedByTheWarmProcess() throws {
        let dir = try Harness.tempDir("warm")
        let cache = dir.appendingPathComponent("cache")
        setenv("TSEXPORT_WARM", "60", 1)
        setenv("TSEXPORT_CACHE_DIR", cache.path, 1)
        var zygote: Int32?
        defer {
            unsetenv("TSEXPORT_WARM")
            unsetenv("TSEXPORT_CACHE_DIR")
            if let zygote { kill(zygote, SIGTERM) }
            try? FileManager.default.removeItem(at: dir)
        }
        let file = dir.appendingPathComponent("m.yaml")
        try """
            apiVersion: tsexport/v1
            kind: Export
            metadata: {name: warm-bert}
            spec:
              model:
                class: BertModel
                config: {vocab_size: 99, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 4, intermediate_size: 37}
              inputs:
                tensors: [{name: input_ids, from: random, shape: [1, 8]}]
            """.write(to: file, atomically: true, encoding: .utf8)
        let warm = cache.appendingPathComponent("warm")
        for (i, force) in [false, true].enumerated() {
            let (code, out) = try Harness.apply([file.path, "--output-root", dir.appendingPathComponent("out").path] + (force ? ["--force"] : []))
            XCTAssertEqual(code, 0, "apply \(i + 1): " + out.stderr + out.stdout)
            if i == 0 {
                // the first apply ran cold and started the warm process for the next one
                let deadline = Date().addingTimeInterval(60)
                while Date() < deadline, zygote == nil {
                    let logs = (try? FileManager.default.contentsOfDirectory(atPath: warm.path))?.filter { $0.hasSuffix(".log") } ?? []
                    for log in logs {
                        let text = (try? String(contentsOf: warm.appendingPathComponent(log), encoding: .utf8)) ?? ""
                        if let line = text.split(separator: "\n").first(where: { $0.contains(": ready on ") }),
                           let pid = Int32(line.split(separator: " ")[3].dropLast()) { zygote = pid }
                    }
                    if zygote == nil { Thread.sleep(forTimeInterval: 0.2) }
                }
                XCTAssertNotNil(zygote, "the warm process became ready")
            }
        }
        let attrs = try FileManager.default.attributesOfItem(atPath: warm.path)
        XCTAssertEqual((attrs[.posixPermissions] as? Int) ?? 0, 0o700)
        // the second apply's two workers (exporting, verifying) were forked by the warm process, which started once
        // One warm process serves plan's config-keys worker and apply's workers: they start with one environment.
        let logs = try FileManager.default.contentsOfDirectory(atPath: warm.path).filter { $0.hasSuffix(".log") }
        XCTAssertEqual(logs.count, 1, "one warm process, not one per worker environment: \(logs)")
        let log = try String(contentsOf: warm.appendingPathComponent(try XCTUnwrap(logs.first)), encoding: .utf8)
        XCTAssertEqual(log.components(separatedBy: ": ready on ").count - 1, 1, log)
        // Only the warm process's own lines count (a library may log lines of its own there).
        let forks = log.split(separator: "\n").filter { $0.hasPrefix("tsexport warm worker ") && $0.contains(": worker ") && $0.contains(" for a caller in ") }
        // The second apply's exporting and verifying workers, plus plan's config_keys worker on each cache miss.
        XCTAssertGreaterThanOrEqual(forks.count, 2, log)
        let record = try JSONValue(parsing: Data(contentsOf: dir.appendingPathComponent("out/build/warm-bert/record.json")))
        XCTAssertEqual(record["parity"]?["cases"]?.arrayValue?.allSatisfy { $0["passed"] == .bool(true) }, true)
    }
}
