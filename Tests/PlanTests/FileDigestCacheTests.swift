import Bundles
import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The digest cache answers from the stat of a file alone while device, inode, size, mtime and ctime are unchanged,
/// and reads the file again when any of them changes (a same-size rewrite with its mtime put back changes ctime).
final class FileDigestCacheTests: XCTestCase {
    func testAWarmCacheReadsNothingAndASameSizeRewriteWithTheOldMtimeIsHashedAgain() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("tsexport-digests-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: root) }
        try FileManager.default.createDirectory(at: root.appendingPathComponent(".tsexport"), withIntermediateDirectories: true)
        let file = root.appendingPathComponent("model.pt")
        try Data(repeating: 7, count: 1 << 20).write(to: file)
        Thread.sleep(forTimeInterval: 2.2)  // digests of files changed in the last 2 s are not remembered

        let cold = FileDigestCache(root: root)
        let first = try XCTUnwrap(cold.digest(path: file.path))
        XCTAssertEqual(first.sha256, try Digest.sha256(file: file.path))
        XCTAssertEqual(first.size, 1 << 20)
        XCTAssertEqual(cold.hashed, 1)
        cold.save()

        let warm = FileDigestCache(root: root)
        XCTAssertEqual(warm.digest(path: file.path)?.sha256, first.sha256)
        XCTAssertEqual(warm.hashed, 0, "answered from the stat alone")

        // One byte changed in place (same inode, same size) and the old mtime put back: only ctime tells.
        var bytes = Data(repeating: 7, count: 1 << 20)
        bytes[1000] = 8
        let before = try XCTUnwrap(FileStamp.of(file.path))
        let handle = try FileHandle(forWritingTo: file)
        try handle.seek(toOffset: 1000)
        try handle.write(contentsOf: Data([8]))
        try handle.close()
        // The exact old mtime, to the nanosecond, so the stamp cannot differ in it.
        let old = timespec(tv_sec: Int(before.mtimeNs / 1_000_000_000), tv_nsec: Int(before.mtimeNs % 1_000_000_000))
        var times = [old, old]
        XCTAssertEqual(utimensat(AT_FDCWD, file.path, &times, 0), 0)
        let changed = try XCTUnwrap(FileStamp.of(file.path))
        XCTAssertEqual([changed.device, changed.inode], [before.device, before.inode])
        XCTAssertEqual(changed.size, before.size)
        XCTAssertEqual(changed.mtimeNs, before.mtimeNs, "the stamp differs in ctime alone")
        XCTAssertNotEqual(changed.ctimeNs, before.ctimeNs)
        let after = FileDigestCache(root: root)
        XCTAssertEqual(after.digest(path: file.path)?.sha256, Digest.sha256(bytes))
        XCTAssertEqual(after.hashed, 1)
        XCTAssertNil(after.digest(path: root.appendingPathComponent("missing").path))
    }

    func testTheContentDigestIsOverSortedLinesOfShaSizeAndPath() throws {
        let a = ContentEntry(path: "b.bin", sha256: String(repeating: "1", count: 64), size: 3)
        let b = ContentEntry(path: "a/x.bin", sha256: String(repeating: "2", count: 64), size: 10)
        let lines = "\(b.sha256) 10 a/x.bin\n\(a.sha256) 3 b.bin\n"
        XCTAssertEqual(BundleContent.digest([a, b]), "sha256:" + Digest.sha256(lines))
        XCTAssertEqual(BundleContent.digest([b, a]), BundleContent.digest([a, b]))
    }
}
