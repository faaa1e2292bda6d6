import Execution
import Foundation
import TestSupport
import XCTest

/// The folders named to `verify` and `bench`, read before Python: no Python, no model.
final class BundleArgumentsTests: XCTestCase {
    func testAManifestNamedInsteadOfABundleNamesTheBundlesItMakesAndAnEmptyFolderIsNotABundle() throws {
        let cwd = FileManager.default.temporaryDirectory.appendingPathComponent("tsx-args-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: cwd.appendingPathComponent("empty"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: cwd) }
        try TinyBertManifest.stream([TinyBertManifest.text("one"), TinyBertManifest.text("two")])
            .write(to: cwd.appendingPathComponent("m.yaml"), atomically: true, encoding: .utf8)
        try "kind: nothing\n".write(to: cwd.appendingPathComponent("bad.yml"), atomically: true, encoding: .utf8)

        let (bundles, problems) = BundleArguments.read(["m.yaml", "empty", cwd.appendingPathComponent("bad.yml").path], cwd: cwd)
        XCTAssertTrue(bundles.isEmpty)
        XCTAssertEqual(problems, [
            "m.yaml: error: this is a manifest, not a bundle; it makes the bundles build/one build/two (with the current directory as output root); name those folders instead",
            "empty: error: not a tsexport bundle: record.json is missing or unreadable",
            "\(cwd.path)/bad.yml: error: this is a manifest, not a bundle; it has no valid manifest (see tsexport validate \(cwd.path)/bad.yml)",
        ])
    }
}
