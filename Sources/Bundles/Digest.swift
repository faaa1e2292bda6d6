import Crypto
import Foundation

/// SHA-256 helpers.
public enum Digest {
    /// Hex SHA-256 of bytes.
    public static func sha256(_ data: Data) -> String {
        SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
    }

    /// Hex SHA-256 of a string's UTF-8.
    public static func sha256(_ s: String) -> String { sha256(Data(s.utf8)) }

    /// Hex SHA-256 of a file, streamed in 1 MiB chunks.
    public static func sha256(file path: String) throws -> String {
        guard let h = FileHandle(forReadingAtPath: path) else {
            throw CocoaError(.fileReadNoSuchFile, userInfo: [NSFilePathErrorKey: path])
        }
        defer { try? h.close() }
        var hasher = SHA256()
        while true {
            let chunk = h.readData(ofLength: 1 << 20)
            if chunk.isEmpty { break }
            hasher.update(data: chunk)
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }
}
