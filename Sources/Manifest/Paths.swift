import Foundation

/// Decides whether a `pretrained` or `tokenizer` string names a local folder or a hub id.
///
/// Rule (documented in the README): a string starting with `/`, `./`, `../` or `~`, or one that names an existing
/// folder next to the manifest, is local; otherwise a string shaped like `org/name` or `name` is a hub id.
public enum SourceResolver {
    /// Classifies a string; local paths come back absolute and standardised.
    public static func classify(_ s: String, relativeTo directory: URL) -> ModelSource {
        let explicitLocal = s.hasPrefix("/") || s.hasPrefix("./") || s.hasPrefix("../") || s.hasPrefix("~") || s == "." || s == ".."
        let expanded = s.hasPrefix("~") ? (s as NSString).expandingTildeInPath : s
        let url = expanded.hasPrefix("/") ? URL(fileURLWithPath: expanded) : directory.appendingPathComponent(expanded)
        let path = url.standardizedFileURL.path
        var isDir: ObjCBool = false
        if explicitLocal || (FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue) {
            return .local(path)
        }
        if isHubID(s) { return .hub(s) }
        return .local(path)
    }

    /// `name` or `org/name`, in the characters the hub allows.
    public static func isHubID(_ s: String) -> Bool {
        let parts = s.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count) else { return false }
        return parts.allSatisfy { p in
            guard let first = p.first, first.isLetter || first.isNumber, p.count <= 96 else { return false }
            return p.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) } && !p.contains("..")
        }
    }
}

/// Output paths: relative to the output root, and never outside it.
public enum OutputPaths {
    /// Why a path is refused.
    public enum Refusal: Error, Equatable {
        case absolute, escapes, symlinkEscapes(String), empty, reserved
    }

    /// Lexically normalises `a/./b/../c` to `a/c` (no file system access); "" for the root itself.
    public static func normalise(_ rel: String) -> String {
        var parts: [String] = []
        for p in rel.split(separator: "/") where p != "." {
            if p == "..", let last = parts.last, last != ".." { parts.removeLast() } else { parts.append(String(p)) }
        }
        return parts.joined(separator: "/")
    }

    /// The folder the staging areas and the lock live in, inside the output root; manifests may not write there.
    public static let reservedFolder = ".tsexport"

    /// Resolves a root-relative path, refusing absolute paths, `..` escapes and symbolic links that lead outside.
    public static func resolve(_ rel: String, root: URL, realRoot: String? = nil) -> Result<URL, Refusal> {
        if rel.hasPrefix("/") || rel.hasPrefix("~") { return .failure(.absolute) }
        let norm = normalise(rel)
        if norm == "" { return .failure(.empty) }
        if norm == ".." || norm.hasPrefix("../") { return .failure(.escapes) }
        if norm == reservedFolder || norm.hasPrefix(reservedFolder + "/") { return .failure(.reserved) }
        let realRoot = realRoot ?? root.resolvingSymlinksInPath().standardizedFileURL.path
        // Walk the components that exist; any symbolic link among them must stay inside the root.
        var current = root.standardizedFileURL
        for comp in norm.split(separator: "/") {
            current.appendPathComponent(String(comp))
            var st = stat()
            guard lstat(current.path, &st) == 0 else { break }
            if (st.st_mode & S_IFMT) == S_IFLNK {
                let real = current.resolvingSymlinksInPath().standardizedFileURL.path
                if real != realRoot && !real.hasPrefix(realRoot + "/") { return .failure(.symlinkEscapes(real)) }
            }
        }
        return .success(root.standardizedFileURL.appendingPathComponent(norm))
    }

    /// A user-facing reason for a refusal.
    public static func explain(_ r: Refusal, path: String) -> String {
        switch r {
        case .absolute: return "'\(path)' is an absolute path; output paths are relative to the output root"
        case .escapes: return "'\(path)' leaves the output root through '..'; output paths must stay inside it"
        case .symlinkEscapes(let real): return "'\(path)' goes through a symbolic link to \(real), outside the output root"
        case .empty: return "'\(path)' is the output root itself; name a folder inside it"
        case .reserved: return "'\(path)' is inside \(reservedFolder)/, which tsexport keeps for staging and locks"
        }
    }
}
