import Foundation

/// A registry reference, `host[:port]/path[:tag|@digest]`, parsed the way docker, skopeo and oras read it: a first
/// component without a dot, a colon or `localhost` is a Docker Hub path (`docker.io`, `library/` for one component).
public struct Reference: Sendable, Equatable, CustomStringConvertible {
    /// The registry as named (`localhost:5000`, `ghcr.io`, `docker.io`).
    public var registry: String
    /// The repository path (`team/models`).
    public var repository: String
    /// The tag, when the reference names one.
    public var tag: String?
    /// The digest (`sha256:<64 hex>`), when the reference names one.
    public var digest: String?

    /// Creates a reference from its parts.
    public init(registry: String, repository: String, tag: String? = nil, digest: String? = nil) {
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest
    }

    /// The host that serves the HTTP API (Docker Hub's API lives at `registry-1.docker.io`).
    public var apiHost: String { registry == "docker.io" ? "registry-1.docker.io" : registry }

    /// The digest if named, else the tag, else `latest`.
    public var manifestReference: String { digest ?? tag ?? "latest" }

    /// The same repository with another tag.
    public func tagged(_ tag: String) -> Reference { Reference(registry: registry, repository: repository, tag: tag) }

    public var description: String {
        var s = "\(registry)/\(repository)"
        if let tag { s += ":\(tag)" }
        if let digest { s += "@\(digest)" }
        return s
    }

    /// Parses a reference; the error says which part is wrong.
    public init(parsing text: String) throws {
        var rest = text
        if rest.hasPrefix("oci://") { rest.removeFirst("oci://".count) }
        guard !rest.isEmpty else { throw RegistryError("empty registry reference") }
        var digest: String?
        if let at = rest.firstIndex(of: "@") {
            digest = String(rest[rest.index(after: at)...])
            rest = String(rest[..<at])
            guard let d = digest, Reference.isDigest(d) else {
                throw RegistryError("reference \(text): the digest must be sha256: and 64 lowercase hex digits")
            }
        }
        var tag: String?
        if let colon = rest.lastIndex(of: ":"), !rest[colon...].contains("/") {
            tag = String(rest[rest.index(after: colon)...])
            rest = String(rest[..<colon])
            guard let t = tag, Reference.isTag(t) else {
                throw RegistryError("reference \(text): a tag is 1 to 128 of [A-Za-z0-9_.-], not starting with . or -")
            }
        }
        var parts = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        var registry = "docker.io"
        if parts.count > 1, parts[0].contains(".") || parts[0].contains(":") || parts[0] == "localhost" {
            registry = parts.removeFirst()
        } else if parts.count == 1 {
            parts.insert("library", at: 0)
        }
        guard Reference.isHost(registry) else { throw RegistryError("reference \(text): \(registry) is not a host[:port]") }
        for p in parts where !Reference.isPathComponent(p) {
            throw RegistryError("reference \(text): repository component \"\(p)\" must be lowercase letters and digits, separated by ., _, __ or -")
        }
        self.init(registry: registry, repository: parts.joined(separator: "/"), tag: tag, digest: digest)
    }

    /// `sha256:` and 64 lowercase hex digits (the only algorithm tsexport writes or accepts).
    public static func isDigest(_ s: String) -> Bool {
        guard s.hasPrefix("sha256:") else { return false }
        let hex = s.dropFirst(7)
        return hex.count == 64 && hex.allSatisfy { ("0"..."9").contains($0) || ("a"..."f").contains($0) }
    }

    /// The distribution spec's tag grammar, `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
    public static func isTag(_ s: String) -> Bool {
        guard let first = s.first, s.count <= 128, first.isASCII, first.isLetter || first.isNumber || first == "_" else { return false }
        return s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }
    }

    static func isHost(_ s: String) -> Bool {
        let hostPort = s.split(separator: ":", omittingEmptySubsequences: false)
        guard (1...2).contains(hostPort.count), !hostPort[0].isEmpty,
              hostPort[0].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || ".-".contains($0)) }) else { return false }
        if hostPort.count == 2 { return UInt16(hostPort[1]) != nil }
        return true
    }

    /// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
    static func isPathComponent(_ s: String) -> Bool {
        let chars = Array(s)
        guard let f = chars.first, let l = chars.last, isAlnum(f), isAlnum(l) else { return false }
        var i = 0
        while i < chars.count {
            if isAlnum(chars[i]) { i += 1; continue }
            var j = i
            while j < chars.count, !isAlnum(chars[j]) { j += 1 }
            let sep = String(chars[i..<j])
            guard sep == "." || sep == "_" || sep == "__" || sep.allSatisfy({ $0 == "-" }) else { return false }
            i = j
        }
        return true
    }

    private static func isAlnum(_ c: Character) -> Bool { ("a"..."z").contains(c) || ("0"..."9").contains(c) }
}

/// A registry operation that failed, in one sentence.
public struct RegistryError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
