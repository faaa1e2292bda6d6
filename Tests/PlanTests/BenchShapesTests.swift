import Foundation
import JSON
import Plan
import XCTest

/// What `tsexport bench` measures, decided from the record alone (the disk is an in-memory map here).
final class BenchShapesTests: XCTestCase {
    /// Files by absolute path with their sha256; folders by path.
    static func disk(files: [String: String], folders: Set<String> = []) -> BenchRequests.Disk {
        BenchRequests.Disk(fileExists: { files[$0] != nil }, directoryExists: { folders.contains($0) }, sha256: { files[$0] })
    }

    static let settings = BenchRequests.Settings(lengths: nil, runs: 3, warmup: 1, threads: nil, report: true, manifestDir: nil,
                                                 allowRemoteCode: false, allowPickle: false)

    func testLengthsParse() {
        XCTAssertEqual(BenchRequests.parseLengths("8,16, 32"), [8, 16, 32])
        XCTAssertNil(BenchRequests.parseLengths("8,,16"))
        XCTAssertNil(BenchRequests.parseLengths("0"))
        XCTAssertNil(BenchRequests.parseLengths("eight"))
        XCTAssertNil(BenchRequests.parseLengths(""))
    }

    func testShapesFromTheRecordedCasesTheLengthsOrTheSignature() {
        let record: JSONValue = ["cases": [["case": "traced", "shape": [2, 14]], ["case": "check0", "shape": [1, 7]],
                                           ["case": "check1", "shape": [2, 14]], ["case": "image", "shape": [1, 3, 8]]]]
        XCTAssertEqual(BenchRequests.shapes(record: record, lengths: nil), [[2, 14], [1, 7]], "traced first, each shape once, two sizes only")
        XCTAssertEqual(BenchRequests.shapes(record: record, lengths: [8, 32, 8]), [[2, 8], [2, 32]], "at the traced batch size")
        let signature: JSONValue = ["input_signature": [["name": "input_ids", "shape": [3, 5]]]]
        XCTAssertEqual(BenchRequests.shapes(record: signature, lengths: nil), [[3, 5]])
        XCTAssertEqual(BenchRequests.shapes(record: signature, lengths: [4]), [[3, 4]])
        XCTAssertNil(BenchRequests.shapes(record: ["input_signature": [["shape": [5]]]], lengths: nil))
        XCTAssertEqual(BenchRequests.shapes(record: [:], lengths: [6]), [[1, 6]], "batch 1 when the record names none")
    }

    func testManifestFolderFromARelativeManifestFile() {
        let record: JSONValue = [
            "manifest_file": "specs/a.yaml",
            "fingerprint_inputs": ["manifest": ["metadata": ["name": "a"], "spec": ["output": ["dir": "./out/a"]]]],
        ]
        let bundle = URL(fileURLWithPath: "/r/out/a")
        let elsewhere = URL(fileURLWithPath: "/")
        let disk = Self.disk(files: ["/r/specs/a.yaml": "sha256:aa"])
        XCTAssertEqual(BenchRequests.outputRoot(record: record, bundle: bundle)?.path, "/r")
        XCTAssertEqual(BenchRequests.manifestDirectory(record: record, bundle: bundle, flag: nil, cwd: elsewhere, disk: disk), "/r/specs",
                       "found under the output root inferred from the bundle's path and spec.output.dir")
        XCTAssertEqual(BenchRequests.manifestDirectory(record: record, bundle: URL(fileURLWithPath: "/r/x/y"), flag: nil, cwd: elsewhere, disk: disk), nil)
        XCTAssertEqual(BenchRequests.manifestDirectory(record: record, bundle: bundle, flag: "/m", cwd: elsewhere, disk: disk), "/m")
        XCTAssertEqual(BenchRequests.manifestDirectory(record: record, bundle: bundle, flag: "m/n", cwd: URL(fileURLWithPath: "/w"), disk: disk), "/w/m/n")
        let recorded: JSONValue = ["manifest_dir": "/abs/specs", "manifest_file": "specs/a.yaml"]
        XCTAssertEqual(BenchRequests.manifestDirectory(record: recorded, bundle: bundle, flag: nil, cwd: elsewhere, disk: disk), "/abs/specs")
        XCTAssertEqual(BenchRequests.manifestDirectory(record: ["manifest_file": "/abs/m/x.yaml"], bundle: bundle, flag: nil, cwd: elsewhere, disk: disk), "/abs/m")

        // Both the current directory and the output root hold specs/a.yaml: the one with the recorded sha256 wins.
        var hashed = record.objectValue ?? []
        hashed.append(("manifest_sha256", "sha256:bb"))
        let both = Self.disk(files: ["/w/specs/a.yaml": "sha256:aa", "/r/specs/a.yaml": "sha256:bb"])
        XCTAssertEqual(BenchRequests.manifestDirectory(record: .object(hashed), bundle: bundle, flag: nil, cwd: URL(fileURLWithPath: "/w"), disk: both), "/r/specs")
        XCTAssertEqual(BenchRequests.manifestDirectory(record: record, bundle: bundle, flag: nil, cwd: URL(fileURLWithPath: "/w"), disk: both), "/w/specs",
                       "without a recorded sha256 the current directory comes first")
    }

    func testTheRequestOrWhyThereIsNothingToMeasure() throws {
        let bundle = URL(fileURLWithPath: "/r/build/a")
        let none = BenchRequests.request(record: [:], bundle: bundle, settings: Self.settings, cwd: URL(fileURLWithPath: "/"), disk: Self.disk(files: [:]))
        XCTAssertEqual(none.failure, BenchRefusal(message: BenchRequests.noShapeMessage))

        let record: JSONValue = [
            "cases": [["case": "traced", "shape": [1, 4]]],
            "fingerprint_inputs": ["manifest": ["spec": ["model": ["class": "BertModel", "pretrained": "./models/tiny"]]]],
            "manifest_dir": "/r/specs",
        ]
        let fields = try XCTUnwrap(try? BenchRequests.request(record: record, bundle: bundle, settings: Self.settings,
                                                               cwd: URL(fileURLWithPath: "/"), disk: Self.disk(files: [:])).get())
        let request = JSONValue.object(fields)
        XCTAssertEqual(request["dir"], "/r/build/a")
        XCTAssertEqual(request["shapes"], [[1, 4]])
        XCTAssertEqual(request["runs"], 3)
        XCTAssertEqual(request["warmup"], 1)
        XCTAssertEqual(request["threads"], .null)
        XCTAssertEqual(request["report"], "/r/build/a/bench.html")
        XCTAssertEqual(request["eager"], .null)
        XCTAssertEqual(request["eager_missing"]?.stringValue?.hasPrefix("the pretrained folder /r/specs/models/tiny (spec.model.pretrained './models/tiny', resolved against /r/specs) does not exist"), true,
                       request["eager_missing"]?.stringValue ?? "")

        var noReport = Self.settings
        noReport.report = false
        let present = Self.disk(files: [:], folders: ["/r/specs/models/tiny"])
        let found = JSONValue.object(try BenchRequests.request(record: record, bundle: bundle, settings: noReport, cwd: URL(fileURLWithPath: "/"), disk: present).get())
        XCTAssertEqual(found["report"], .null)
        XCTAssertEqual(found["eager"]?["model"]?["pretrained"], "/r/specs/models/tiny")
        XCTAssertEqual(found["eager_missing"], .null)
    }

    func testFailedShapesAreTheArtifactsErrors() {
        let result: JSONValue = ["shapes": [
            ["shape": [1, 4], "artifact": ["p50_ms": 1.0], "eager": ["error": "eager failed"]],
            ["shape": [1, 512], "artifact": ["error": "outside the envelope"]],
            ["shape": [2, 8], "artifact": ["p50_ms": 1.0], "aoti": ["error": "model.pt2 refused"]],
        ]]
        XCTAssertEqual(BenchRequests.failedShapes(result), [[1, 512], [2, 8]], "an eager side that failed does not fail the command")
        XCTAssertEqual(BenchRequests.failedShapes([:]), [])
    }
}

extension Result {
    /// The error, when this is a failure.
    var failure: Failure? {
        if case .failure(let e) = self { return e }
        return nil
    }
}
