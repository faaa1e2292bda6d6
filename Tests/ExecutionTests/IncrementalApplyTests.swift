import Execution
import Foundation
import JSON
import Plan
import TSExportCLI
import XCTest

/// Incremental, concurrent and crash-safe apply, driven through the real `tsexport` binary where signals matter.
final class IncrementalApplyTests: XCTestCase {
    /// A tiny model that exports in a few seconds.
    static func tinyManifest(name: String, seed: Int = 7) -> String {
        """
        apiVersion: tsexport/v1
        kind: Export
        metadata: {name: \(name), labels: {group: tiny}}
        spec:
          model: {class: BertModel, seed: \(seed), config: {vocab_size: 100, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 37}}
          inputs:
            tensors:
              - {name: input_ids, from: random, shape: [1, 8]}
              - {name: token_type_ids, from: zeros, shape: [1, 8]}

        """
    }

    /// Starts the binary and waits (up to 120 s) until the output root's lock names its pid, or it ended.
    static func launchHoldingLock(_ args: [String], root: String) throws -> (Process, Pipe) {
        let (p, pipe) = try launch(args)
        let lockInfo = URL(fileURLWithPath: root).appendingPathComponent(".tsexport/lock.json")
        let deadline = Date().addingTimeInterval(120)
        while p.isRunning, Date() < deadline,
              (try? String(contentsOf: lockInfo, encoding: .utf8))?.contains("\"pid\": \(p.processIdentifier),") != true {
            Thread.sleep(forTimeInterval: 0.01)
        }
        return (p, pipe)
    }

    /// Starts the binary; returns the process and its combined output pipe.
    static func launch(_ args: [String], python: String = Harness.python) throws -> (Process, Pipe) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try Harness.binary())
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["TSEXPORT_PYTHON"] = python
        env["NO_COLOR"] = "1"
        p.environment = env
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        return (p, pipe)
    }

    static func run(_ args: [String], python: String = Harness.python) throws -> (Int32, String) {
        let (p, pipe) = try launch(args, python: python)
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    func testNoOpApplyStartsNoPythonAndPlanGivesReasons() throws {
        let dir = try Harness.tempDir("noop")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("m.yaml")
        try Self.tinyManifest(name: "tiny-a").write(to: file, atomically: true, encoding: .utf8)
        let root = dir.appendingPathComponent("out").path
        let (code, out) = try Self.run(["apply", file.path, "--output-root", root])
        XCTAssertEqual(code, 0, out)

        // Up to date: apply must not start Python at all (/bin/false would fail it).
        let (noop, noopOut) = try Self.run(["apply", file.path, "--output-root", root], python: "/bin/false")
        XCTAssertEqual(noop, 0, noopOut)
        XCTAssertTrue(noopOut.contains("1 up to date"), noopOut)
        let (plan0, _) = try Self.run(["plan", file.path, "--output-root", root, "--detailed-exitcode"], python: "/bin/false")
        XCTAssertEqual(plan0, 0)

        // Reformatting and comments change nothing.
        try ("# a comment\n" + Self.tinyManifest(name: "tiny-a").replacingOccurrences(of: "{name: tiny-a, labels: {group: tiny}}", with: "\n  name: tiny-a\n  labels: {group: other}"))
            .write(to: file, atomically: true, encoding: .utf8)
        XCTAssertEqual(try Self.run(["plan", file.path, "--output-root", root, "--detailed-exitcode"], python: "/bin/false").0, 0)

        // A field change is a rebuild with the field, old and new value.
        try Self.tinyManifest(name: "tiny-a", seed: 8).write(to: file, atomically: true, encoding: .utf8)
        let (plan2, planOut) = try Self.run(["plan", file.path, "--output-root", root, "--detailed-exitcode"], python: "/bin/false")
        XCTAssertEqual(plan2, 2, planOut)
        XCTAssertTrue(planOut.contains("~ rebuild tiny-a"), planOut)
        XCTAssertTrue(planOut.contains("because spec.model.seed: 7 → 8"), planOut)

        // A version change is a reason too (the record says it was built by another worker version).
        let recordURL = URL(fileURLWithPath: root).appendingPathComponent("build/tiny-a/record.json")
        var text = try String(contentsOf: recordURL, encoding: .utf8)
        text = text.replacingOccurrences(of: "\"worker\": \"\(WorkerInfo.version)\"", with: "\"worker\": \"0.9.0\"")
        try text.write(to: recordURL, atomically: true, encoding: .utf8)
        let (_, planOut3) = try Self.run(["plan", file.path, "--output-root", root, "--json"], python: "/bin/false")
        let plan = try JSONValue(parsing: Data(planOut3.utf8))
        let reasons = plan["entries"]?[0]?["reasons"]
        XCTAssertEqual(reasons?[0]?["subject"], "spec.model.seed")
        XCTAssertEqual(reasons?[1]?["kind"], "version")
        XCTAssertEqual(reasons?[1]?["old"], "0.9.0")
    }

    func testSigkillAtAnyMomentLeavesOnlyCompleteBundlesAndTheNextRunRecovers() throws {
        let dir = try Harness.tempDir("sigkill")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("m.yaml")
        try (Self.tinyManifest(name: "tiny-k1") + "---\n" + Self.tinyManifest(name: "tiny-k2")).write(to: file, atomically: true, encoding: .utf8)
        let root = dir.appendingPathComponent("out")
        // Each round kills apply at one moment of its work, seen on disk (files written by this round only: a killed
        // round leaves its staging behind): as soon as it started, once it holds the lock, while a bundle is being
        // written in staging, once staging holds a model.pt, and once this round installed its first bundle.
        let staging = root.appendingPathComponent(".tsexport/staging")
        let lockInfo = root.appendingPathComponent(".tsexport/lock.json")
        let moments: [(String, (Int32, Date) -> Bool)] = [
            ("started", { _, _ in true }),
            ("locked", { pid, _ in (try? String(contentsOf: lockInfo, encoding: .utf8))?.contains("\"pid\": \(pid),") == true }),
            ("staging", { _, since in !Self.files(under: staging, since: since).isEmpty }),
            ("model.pt staged", { _, since in Self.files(under: staging, since: since).contains { $0.hasSuffix("/model.pt") } }),
            ("one bundle installed", { _, since in
                Self.files(under: root.appendingPathComponent("build"), since: since).contains { $0.hasSuffix("/record.json") } }),
        ]
        for (round, (moment, reached)) in moments.enumerated() {
            let args = ["apply", file.path, "--output-root", root.path, "--jobs", "1"] + (round % 2 == 1 ? ["--force"] : [])
            let since = Date()
            let (p, _) = try Self.launch(args)
            let deadline = Date().addingTimeInterval(300)
            while p.isRunning, !reached(p.processIdentifier, since), Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
            XCTAssertTrue(p.isRunning, "round \(round): apply ended before the moment \(moment)")
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            try assertEveryVisibleBundleIsComplete(root)
        }
        let (code, out) = try Self.run(["apply", file.path, "--output-root", root.path, "--force"])
        XCTAssertEqual(code, 0, out)
        try assertEveryVisibleBundleIsComplete(root)
        XCTAssertFalse(FileManager.default.fileExists(atPath: root.appendingPathComponent(".tsexport/staging").path), "leftover staging was removed")
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent("build").path)), ["tiny-k1", "tiny-k2"])
    }

    /// The paths under a folder modified at or after `since` (empty when the folder does not exist).
    static func files(under dir: URL, since: Date) -> [String] {
        guard let e = FileManager.default.enumerator(at: dir, includingPropertiesForKeys: [.contentModificationDateKey]) else { return [] }
        return e.compactMap { item in
            guard let url = item as? URL, let date = try? url.resourceValues(forKeys: [.contentModificationDateKey]).contentModificationDate,
                  date >= since else { return nil }
            return url.path
        }
    }

    /// Every bundle folder that exists is complete: its model.pt has the recorded sha256 and loads with torch.
    func assertEveryVisibleBundleIsComplete(_ root: URL, file: StaticString = #filePath, line: UInt = #line) throws {
        let build = root.appendingPathComponent("build")
        for name in (try? FileManager.default.contentsOfDirectory(atPath: build.path)) ?? [] {
            let bundle = build.appendingPathComponent(name)
            XCTAssertEqual(Set(Harness.tree(bundle)), ["build.json", "model.pt", "record.json", "reference_outputs.safetensors", "sample_inputs.safetensors"], name, file: file, line: line)
            let record = try JSONValue(parsing: Data(contentsOf: bundle.appendingPathComponent("record.json")))
            let check = try Harness.pythonJSON(["-c", """
                import hashlib, json, sys, torch
                p = sys.argv[1] + '/model.pt'
                torch.jit.load(p)
                print(json.dumps(hashlib.sha256(open(p, 'rb').read()).hexdigest()))
                """, bundle.path])
            XCTAssertEqual(check, record["model_sha256"], name, file: file, line: line)
        }
    }

    func testTwoConcurrentAppliesOnOneRoot() throws {
        let dir = try Harness.tempDir("lock")
        defer { try? FileManager.default.removeItem(at: dir) }
        let a = dir.appendingPathComponent("a.yaml"), b = dir.appendingPathComponent("b.yaml")
        try Self.tinyManifest(name: "tiny-a").write(to: a, atomically: true, encoding: .utf8)
        try Self.tinyManifest(name: "tiny-b").write(to: b, atomically: true, encoding: .utf8)
        let root = dir.appendingPathComponent("out").path
        let (first, firstPipe) = try Self.launchHoldingLock(["apply", a.path, "--output-root", root], root: root)
        let (busy, busyOut) = try Self.run(["apply", b.path, "--output-root", root])
        XCTAssertEqual(busy, 1, busyOut)
        XCTAssertTrue(busyOut.contains("is locked by tsexport pid \(first.processIdentifier), running since"), busyOut)
        let (waited, waitedOut) = try Self.run(["apply", b.path, "--output-root", root, "--lock-timeout", "120"])
        _ = firstPipe.fileHandleForReading.readDataToEndOfFile()
        first.waitUntilExit()
        XCTAssertEqual(first.terminationStatus, 0)
        XCTAssertEqual(waited, 0, waitedOut)
        try assertEveryVisibleBundleIsComplete(URL(fileURLWithPath: root))
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: root + "/build")), ["tiny-a", "tiny-b"])
    }

    /// Two applies of one manifest: the one that waited for the lock plans again holding it, finds the bundle the
    /// other made, and builds nothing.
    func testAnApplyThatWaitedForTheLockActsOnThePlanMadeUnderIt() throws {
        let dir = try Harness.tempDir("relock")
        defer { try? FileManager.default.removeItem(at: dir) }
        let a = dir.appendingPathComponent("a.yaml")
        try Self.tinyManifest(name: "tiny-a").write(to: a, atomically: true, encoding: .utf8)
        let root = dir.appendingPathComponent("out").path
        let (first, firstPipe) = try Self.launchHoldingLock(["apply", a.path, "--output-root", root], root: root)
        XCTAssertTrue(first.isRunning, "the first apply holds the lock while it exports")
        let (waited, waitedOut) = try Self.run(["apply", a.path, "--output-root", root, "--lock-timeout", "120"])
        let firstOut = String(decoding: firstPipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        first.waitUntilExit()
        XCTAssertEqual(first.terminationStatus, 0, firstOut)
        XCTAssertTrue(firstOut.contains("Apply: 1 created, 0 rebuilt, 0 up to date"), firstOut)
        XCTAssertEqual(waited, 0, waitedOut)
        XCTAssertTrue(waitedOut.contains("Apply: 0 created, 0 rebuilt, 1 up to date, 0 failed, 0 not run"), waitedOut)
        try assertEveryVisibleBundleIsComplete(URL(fileURLWithPath: root))
    }

    func testSigintStopsWorkersRemovesStagingAndExits130() throws {
        let dir = try Harness.tempDir("sigint")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("m.yaml")
        try Self.tinyManifest(name: "tiny-int").write(to: file, atomically: true, encoding: .utf8)
        let root = dir.appendingPathComponent("out")
        let (p, pipe) = try Self.launch(["apply", file.path, "--output-root", root.path])
        // Wait until a worker is running (a staging folder exists), then interrupt.
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, ((try? FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent(".tsexport/staging").path)) ?? []).isEmpty {
            Thread.sleep(forTimeInterval: 0.05)
        }
        // The workers this apply started (its children), to check afterwards that none survives.
        var workerPIDs: [Int32] = []
        while Date() < deadline, workerPIDs.isEmpty {
            workerPIDs = try Self.shell("pgrep -P \(p.processIdentifier)").1.split(separator: "\n").compactMap { Int32($0) }
            if workerPIDs.isEmpty { Thread.sleep(forTimeInterval: 0.05) }
        }
        XCTAssertFalse(workerPIDs.isEmpty, "the apply started its workers")
        kill(p.processIdentifier, SIGINT)
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 130, out)
        XCTAssertTrue(out.contains("interrupted"), out)
        XCTAssertEqual(Harness.tree(root), [], "nothing is left in the output root")
        // A killed worker may linger a moment as a zombie until init reaps it; a zombie runs nothing.
        func running(_ pid: Int32) -> Bool {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return false }
            return !stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
        }
        let until = Date().addingTimeInterval(5)
        while Date() < until, workerPIDs.contains(where: running) { Thread.sleep(forTimeInterval: 0.1) }
        XCTAssertEqual(workerPIDs.filter(running), [], "no worker of the interrupted apply is left running")
    }

    static func shell(_ command: String) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", command]
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
