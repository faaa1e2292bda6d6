import Diagnostics
import Foundation
import JSON
import Manifest
import XCTest

/// The loader in-process: typed decoding with the contract's defaults, cross-manifest checks, output paths and
/// source classification.
final class LoaderBehaviourTests: XCTestCase {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let specs = repo.appendingPathComponent("specs")
    var root: URL!

    override func setUpWithError() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("tsexport-loader-\(UUID().uuidString)").resolvingSymlinksInPath()
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: root)
    }

    func load(_ text: String, file: String = "m.yaml") -> ([Manifest], [Diagnostic]) {
        ManifestLoader(options: ValidationOptions(outputRoot: root)).load(bytes: Data(text.utf8), file: file, directory: Self.specs)
    }

    static func minimal(_ name: String, extra: String = "") -> String {
        """
        apiVersion: tsexport/v1
        kind: Export
        metadata: {name: \(name)}
        spec:
          model: {class: BertModel}
          inputs:
            tensors: [{name: input_ids, from: random, shape: [1, 4], high: 10}]

        """ + extra
    }

    func testDefaultsFromTheContract() throws {
        let (ms, ds) = load(Self.minimal("defaults"))
        XCTAssertEqual(ds, [])
        let m = try XCTUnwrap(ms.first)
        XCTAssertEqual(m.name, "defaults")
        XCTAssertEqual(m.labels, [:])
        XCTAssertNil(m.model.pretrained)
        XCTAssertTrue(m.model.torchscript)
        XCTAssertEqual(m.model.seed, 0)
        XCTAssertEqual(m.model.dtype, "float32")
        XCTAssertFalse(m.model.trustRemoteCode)
        XCTAssertFalse(m.model.allowPickle)
        XCTAssertFalse(m.inputs.addSpecialTokens)
        XCTAssertEqual(m.inputs.mask, [])
        XCTAssertNil(m.inputs.padTo)
        XCTAssertEqual(m.inputs.tensors.map(\.dtype), ["int64"])
        XCTAssertEqual(m.inputs.tensors.map(\.shape), [[1, 4]])
        XCTAssertEqual(m.inputs.tensors.first?.high, 10)
        XCTAssertTrue(m.trace.strict)
        XCTAssertEqual(m.trace.checkShapes, [])
        XCTAssertEqual(m.trace.atol, 1e-5)
        XCTAssertEqual(m.trace.rtol, 1e-4)
        XCTAssertEqual(m.target.hardware, "cpu")
        XCTAssertEqual(m.target.optimize, "none")
        XCTAssertEqual(m.output.dir, "build/defaults")
        XCTAssertEqual(m.output.deploy, [])
        XCTAssertEqual(m.documentIndex, 0)

        let (h, _) = load(Self.minimal("half").replacingOccurrences(of: "{class: BertModel}", with: "{class: BertModel, dtype: float16}"))
        XCTAssertEqual(h.first?.trace.atol, 1e-2)
        XCTAssertEqual(h.first?.trace.rtol, 1e-2)
        let (b, _) = load(Self.minimal("bf").replacingOccurrences(of: "{class: BertModel}", with: "{class: BertModel, dtype: bfloat16}"))
        XCTAssertEqual(b.first?.trace.atol, 5e-2)
    }

    func testTheGuideSpecDecodes() throws {
        let result = ManifestLoader(options: ValidationOptions(outputRoot: root)).validate(paths: [Self.specs.appendingPathComponent("bert-base-guide.yaml").path])
        XCTAssertTrue(result.isValid, "\(result.diagnostics)")
        XCTAssertEqual(result.fileCount, 1)
        let m = try XCTUnwrap(result.manifests.first)
        XCTAssertEqual(m.name, "bert-base-guide")
        XCTAssertEqual(m.model.className, "BertModel")
        XCTAssertEqual(m.inputs.tensors.map(\.name), ["input_ids", "token_type_ids"])
        XCTAssertEqual(m.inputs.tensors.map(\.from), [.values, .values])
        XCTAssertEqual(m.inputs.tensors[1].values, .array([.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1].map { JSONValue.int($0) })]))
        XCTAssertEqual(m.inputs.tensors[0].values?.arrayValueForTest?.first?.arrayValueForTest?.count, 14)
        XCTAssertEqual(m.trace.checkShapes, [[1, 7], [2, 14]])
        XCTAssertEqual(m.output.dir, "build/bert-base-guide")
        XCTAssertEqual(m.model.config.first { $0.0 == "vocab_size" }?.1, .int(32000))
        let text = try String(contentsOf: Self.specs.appendingPathComponent("bert-base-guide.yaml"), encoding: .utf8)
        let line = try XCTUnwrap(text.split(separator: "\n", omittingEmptySubsequences: false).firstIndex { $0 == "  name: bert-base-guide" }) + 1
        XCTAssertEqual(m.locations.location(of: "metadata.name"), SourceLocation(file: m.file, line: line, column: 9))
    }

    func testTokenizerFolderOfTheTextSpecIsLocalAndAbsolute() throws {
        let result = ManifestLoader(options: ValidationOptions(outputRoot: root)).validate(paths: [Self.specs.appendingPathComponent("tiny-bert-text.yaml").path])
        XCTAssertTrue(result.isValid, "\(result.diagnostics)")
        let m = try XCTUnwrap(result.manifests.first)
        XCTAssertEqual(m.inputs.tokenizer, .local(Self.specs.path + "/tokenizers/tiny-bert"))
        XCTAssertEqual(m.inputs.padTo, 16)
        XCTAssertEqual(m.inputs.mask, [8])
        XCTAssertEqual(m.output.deploy, [.directory, .triton(repository: "build/triton"), .torchserve(store: "build/model-store")])
    }

    func testSourceClassification() {
        let dir = Self.specs
        XCTAssertEqual(SourceResolver.classify("./models/x", relativeTo: dir), .local(dir.path + "/models/x"))
        XCTAssertEqual(SourceResolver.classify("../up", relativeTo: dir), .local(Self.repo.path + "/up"))
        XCTAssertEqual(SourceResolver.classify("/abs/path", relativeTo: dir), .local("/abs/path"))
        XCTAssertEqual(SourceResolver.classify("tokenizers/tiny-bert", relativeTo: dir), .local(dir.path + "/tokenizers/tiny-bert"),
                       "an existing folder next to the manifest is local even without ./")
        XCTAssertEqual(SourceResolver.classify("prajjwal1/bert-tiny", relativeTo: dir), .hub("prajjwal1/bert-tiny"))
        XCTAssertEqual(SourceResolver.classify("bert-base-uncased", relativeTo: dir), .hub("bert-base-uncased"))
        XCTAssertFalse(SourceResolver.isHubID("a/b/c"))
        XCTAssertFalse(SourceResolver.isHubID("org/.."))
        XCTAssertFalse(SourceResolver.isHubID("-org/name"))
    }

    func testMultiDocumentFilesAndDuplicateNamesWithinOneFile() throws {
        let text = Self.minimal("one") + "---\n" + Self.minimal("two") + "---\n" + Self.minimal("one")
        let path = root.appendingPathComponent("multi.yaml")
        try text.write(to: path, atomically: true, encoding: .utf8)
        let r = ManifestLoader(options: ValidationOptions(outputRoot: root)).validate(paths: [path.path])
        XCTAssertEqual(r.manifests.map(\.name), ["one", "two", "one"])
        XCTAssertEqual(r.manifests.map(\.documentIndex), [0, 1, 2])
        XCTAssertEqual(r.diagnostics, [
            .error("metadata.name 'one' is already used by another manifest; names must be unique",
                   at: SourceLocation(file: path.path, line: 19, column: 18), field: "metadata.name",
                   notes: [.init(message: "first used here", location: SourceLocation(file: path.path, line: 3, column: 18))]),
        ])
    }

    func testTwoManifestsWritingTheSameFolderAreRefused() throws {
        let a = Self.minimal("a", extra: "  output: {dir: build/shared}\n")
        let b = Self.minimal("b", extra: "  output: {dir: build/./x/../shared/}\n")
        let fa = root.appendingPathComponent("a.yaml"), fb = root.appendingPathComponent("b.yaml")
        try a.write(to: fa, atomically: true, encoding: .utf8)
        try b.write(to: fb, atomically: true, encoding: .utf8)
        let r = ManifestLoader(options: ValidationOptions(outputRoot: root)).validate(paths: [fa.path, fb.path])
        XCTAssertEqual(r.diagnostics, [
            .error("output.dir 'build/./x/../shared/' is also the output folder of 'a'; each manifest needs its own",
                   at: SourceLocation(file: fb.path, line: 8, column: 17), field: "spec.output.dir",
                   notes: [.init(message: "'a' writes there", location: SourceLocation(file: fa.path, line: 8, column: 17))]),
        ])
    }

    func testOutputPathRules() throws {
        XCTAssertEqual(OutputPaths.normalise("a/./b/../c/"), "a/c")
        XCTAssertEqual(OutputPaths.normalise("./"), "")
        XCTAssertEqual(OutputPaths.normalise("a/../../b"), "../b")
        XCTAssertEqual(OutputPaths.resolve("/abs", root: root), .failure(.absolute))
        XCTAssertEqual(OutputPaths.resolve("~/x", root: root), .failure(.absolute))
        XCTAssertEqual(OutputPaths.resolve("a/../..", root: root), .failure(.escapes))
        XCTAssertEqual(OutputPaths.resolve(".", root: root), .failure(.empty))
        XCTAssertEqual(OutputPaths.resolve("x/../.tsexport/lock", root: root), .failure(.reserved))
        XCTAssertEqual(OutputPaths.resolve("build/x", root: root), .success(root.appendingPathComponent("build/x")))

        let outside = root.deletingLastPathComponent().appendingPathComponent("tsexport-outside-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: outside, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: outside) }
        try FileManager.default.createDirectory(at: root.appendingPathComponent("real/inner"), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: root.appendingPathComponent("real/out").path, withDestinationPath: outside.path)
        try FileManager.default.createSymbolicLink(atPath: root.appendingPathComponent("in").path, withDestinationPath: "real/inner")
        XCTAssertEqual(OutputPaths.resolve("real/out/bundle", root: root), .failure(.symlinkEscapes(outside.path)))
        XCTAssertEqual(OutputPaths.resolve("in/bundle", root: root), .success(root.appendingPathComponent("in/bundle")))
        XCTAssertEqual(OutputPaths.explain(.symlinkEscapes(outside.path), path: "real/out/bundle"),
                       "'real/out/bundle' goes through a symbolic link to \(outside.path), outside the output root")

        let (_, ds) = load(Self.minimal("sym", extra: "  output:\n    deploy:\n      - kind: triton\n        repository: real/out/triton\n"))
        XCTAssertEqual(ds.map(\.message), ["triton deploy path 'real/out/triton' goes through a symbolic link to \(outside.path), outside the output root"])
        XCTAssertEqual(ds.first?.location, SourceLocation(file: "m.yaml", line: 11, column: 21))
        XCTAssertEqual(ds.first?.field, "spec.output.deploy[0].repository")
    }
}

extension JSONValue {
    fileprivate var arrayValueForTest: [JSONValue]? { if case .array(let a) = self { return a } else { return nil } }
}
