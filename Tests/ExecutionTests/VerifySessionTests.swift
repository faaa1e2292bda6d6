import Execution
import Plan
import Foundation
import XCTest

/// `tsexport verify`'s stops before any Python starts: no Python, no model.
final class VerifySessionTests: XCTestCase {
    final class Told: @unchecked Sendable {
        var messages: [ApplySession.Message] = []
    }

    func testNoCompilerAndNoBundleStopBeforeTheRuntimeIsResolved() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tsx-verify-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("empty"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        // --python names an interpreter that does not exist: resolving it would be an error of its own.
        var options = VerifySession.Options(dirs: ["empty"], cwd: dir, environment: ["PATH": dir.path])
        options.python = dir.appendingPathComponent("no-python").path
        options.native = true
        let told = Told()
        XCTAssertNil(VerifySession(options: options, runner: SystemProcessRunner()).run(message: { told.messages.append($0) }, verdict: { _, _ in XCTFail("no verdict") }))
        XCTAssertEqual(told.messages, [.error(NativeVerify.noCompilerMessage)], "the compiler is checked before the folders")

        options.native = false
        told.messages = []
        XCTAssertNil(VerifySession(options: options, runner: SystemProcessRunner()).run(message: { told.messages.append($0) }, verdict: { _, _ in XCTFail("no verdict") }))
        XCTAssertEqual(told.messages, [.detail("empty: error: not a tsexport bundle: record.json is missing or unreadable")],
                       "no bundle: it stops before the runtime is resolved")
    }
}

/// `tsexport bench`'s stop before any Python starts: no Python, no model.
final class BenchSessionTests: XCTestCase {
    func testNoBundleStopsBeforeTheRuntimeIsResolved() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tsx-bench-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("empty"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let settings = BenchRequests.Settings(lengths: nil, runs: 1, warmup: 0, threads: nil, report: false, manifestDir: nil,
                                              allowRemoteCode: false, allowPickle: false)
        let session = BenchSession(dirs: ["empty"], settings: settings, python: dir.appendingPathComponent("no-python").path, cwd: dir,
                                   runner: SystemProcessRunner())
        let told = VerifySessionTests.Told()
        XCTAssertNil(session.run(message: { told.messages.append($0) }, starting: { XCTFail("nothing starts: \($0)") },
                                 measured: { XCTFail("nothing measured: \($0.dir)") }))
        XCTAssertEqual(told.messages, [.detail("empty: error: not a tsexport bundle: record.json is missing or unreadable")])
    }
}
