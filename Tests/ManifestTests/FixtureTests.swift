import Diagnostics
import Foundation
import Manifest
import XCTest

/// Every bad-input fixture is a manifest beside the exact diagnostics it must produce (`NAME.expected`, as
/// `tsexport validate` prints them, paths relative to the Fixtures folder). Regenerate deliberately with
/// `TSEXPORT_UPDATE_FIXTURES=1 swift test --filter FixtureTests`, then review the diff.
final class FixtureTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    func render(_ file: URL, root: URL) -> String {
        let result = ManifestLoader(options: ValidationOptions(outputRoot: root)).validate(paths: [file.path])
        let text = DiagnosticPrinter(color: false).render(result.diagnostics)
        return text.replacingOccurrences(of: Self.fixtures.path + "/", with: "")
    }

    func testEveryFixtureProducesItsExpectedDiagnostics() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("tsexport-fixture-root-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root) }
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.fixtures.path).filter { $0.hasSuffix(".yaml") }.sorted()
        XCTAssertGreaterThanOrEqual(files.count, 15)
        let update = ProcessInfo.processInfo.environment["TSEXPORT_UPDATE_FIXTURES"] == "1"
        for name in files {
            let file = Self.fixtures.appendingPathComponent(name)
            let expectedURL = file.deletingPathExtension().appendingPathExtension("expected")
            let actual = render(file, root: root)
            if update {
                try (actual + "\n").write(to: expectedURL, atomically: true, encoding: .utf8)
                continue
            }
            let expected = try String(contentsOf: expectedURL, encoding: .utf8).trimmingCharacters(in: .newlines)
            XCTAssertEqual(actual, expected, "diagnostics for \(name)")
            XCTAssertTrue(actual.contains("error:"), "\(name) must be rejected")
        }
    }
}
