import Bundles
import JSON
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// How to reach registries.
public struct RegistryOptions: Sendable {
    /// Hosts (`host[:port]` as in the reference) reached over plain HTTP; every other host is HTTPS.
    public var insecureHosts: Set<String>
    /// Where credentials come from.
    public var credentials: DockerCredentials
    /// Blobs larger than this go up in PATCH chunks of this size; smaller ones in one PUT.
    public var chunkSize: Int
    /// Seconds without progress before a request fails.
    public var timeout: TimeInterval

    public init(insecureHosts: Set<String> = [], credentials: DockerCredentials = DockerCredentials(),
                chunkSize: Int = 64 << 20, timeout: TimeInterval = 60) {
        self.insecureHosts = insecureHosts
        self.credentials = credentials
        self.chunkSize = chunkSize
        self.timeout = timeout
    }
}

/// A content descriptor: media type, digest, size (and annotations for layers).
public struct Descriptor: Sendable, Equatable {
    public var mediaType: String
    public var digest: String
    public var size: Int
    public init(mediaType: String, digest: String, size: Int) {
        self.mediaType = mediaType
        self.digest = digest
        self.size = size
    }
}

/// The OCI distribution API (v1.1): ping, manifests, blobs (streamed to and from disk, digest-checked), uploads
/// (monolithic and chunked), cross-repository mounts, tags; anonymous, basic and bearer-token auth.
public final class RegistryClient: @unchecked Sendable {
    public let options: RegistryOptions
    let http: Transport
    private var authorization: [String: String] = [:]
    private var credentialCache: [String: Credential?] = [:]
    private let lock = NSLock()

    /// The manifest media types asked for.
    public static let manifestAccept = [
        "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ].joined(separator: ", ")
    /// The largest manifest read (the distribution spec's suggested limit).
    static let manifestLimit = 4 << 20

    public init(options: RegistryOptions = RegistryOptions()) {
        self.options = options
        http = Transport(timeout: options.timeout)
    }

    func base(_ ref: Reference) -> String {
        "\(options.insecureHosts.contains(ref.registry) ? "http" : "https")://\(ref.apiHost)/v2/"
    }

    func url(_ ref: Reference, _ path: String) -> URL { URL(string: base(ref) + "\(ref.repository)/\(path)")! }

    /// `GET /v2/`: the registry answers (200, or 401 with a challenge that credentials then satisfy).
    public func ping(_ ref: Reference) throws {
        let r = try perform(ref, actions: "pull", request: URLRequest(url: URL(string: base(ref))!))
        guard r.status == 200 else { throw failure("GET \(base(ref))", r) }
    }

    /// HEAD of a manifest: its descriptor, or nil when the registry has none under that reference.
    public func headManifest(_ ref: Reference) throws -> Descriptor? {
        var req = URLRequest(url: url(ref, "manifests/\(ref.manifestReference)"))
        req.httpMethod = "HEAD"
        req.setValue(Self.manifestAccept, forHTTPHeaderField: "Accept")
        let r = try perform(ref, actions: "pull", request: req)
        if r.status == 404 { return nil }
        guard r.status == 200, let digest = r.headers["docker-content-digest"] else { throw failure("HEAD manifest \(ref)", r) }
        return Descriptor(mediaType: r.headers["content-type"] ?? "", digest: digest, size: Int(r.headers["content-length"] ?? "") ?? 0)
    }

    /// GET of a manifest, its bytes checked against the digest named in the reference (and the one the registry
    /// reports). Nil when the registry has none.
    public func getManifest(_ ref: Reference) throws -> (data: Data, descriptor: Descriptor)? {
        var req = URLRequest(url: url(ref, "manifests/\(ref.manifestReference)"))
        req.setValue(Self.manifestAccept, forHTTPHeaderField: "Accept")
        let r = try perform(ref, actions: "pull", request: req)
        if r.status == 404 { return nil }
        guard r.status == 200 else { throw failure("GET manifest \(ref)", r) }
        guard r.body.count <= Self.manifestLimit else { throw RegistryError("manifest \(ref) is over \(Self.manifestLimit) bytes") }
        let digest = "sha256:" + Digest.sha256(r.body)
        for expected in [ref.digest, r.headers["docker-content-digest"]].compactMap({ $0 }) where expected != digest {
            throw RegistryError("manifest \(ref): expected digest \(expected), the bytes received have \(digest)")
        }
        return (r.body, Descriptor(mediaType: r.headers["content-type"] ?? "", digest: digest, size: r.body.count))
    }

    /// PUT of a manifest under a tag or its digest; returns its digest.
    @discardableResult
    public func putManifest(_ data: Data, mediaType: String, at ref: Reference) throws -> String {
        var req = URLRequest(url: url(ref, "manifests/\(ref.manifestReference)"))
        req.httpMethod = "PUT"
        req.setValue(mediaType, forHTTPHeaderField: "Content-Type")
        let r = try perform(ref, actions: "pull,push", request: req, body: .data(data))
        guard r.status == 201 || r.status == 200 else { throw failure("PUT manifest \(ref)", r) }
        return "sha256:" + Digest.sha256(data)
    }

    /// Whether the repository has a blob (HEAD).
    public func hasBlob(_ ref: Reference, digest: String) throws -> Bool {
        var req = URLRequest(url: url(ref, "blobs/\(digest)"))
        req.httpMethod = "HEAD"
        let r = try perform(ref, actions: "pull", request: req)
        if r.status == 404 { return false }
        guard r.status == 200 else { throw failure("HEAD blob \(digest) in \(ref.registry)/\(ref.repository)", r) }
        return true
    }

    /// Streams a blob into `file`, hashing as it arrives; a blob whose digest or size differs is deleted and refused.
    public func pullBlob(_ ref: Reference, _ d: Descriptor, to file: URL) throws {
        guard Reference.isDigest(d.digest) else { throw RegistryError("blob digest \(d.digest) is not sha256:<64 hex>") }
        let req = URLRequest(url: url(ref, "blobs/\(d.digest)"))
        var (r, digest, size) = (HTTPResponse(nil, body: Data()), "", 0)
        for attempt in 0..<2 {
            (r, digest, size) = try http.download(authorized(ref, req), to: file)
            if r.status == 401, attempt == 0, try authenticate(ref, actions: "pull", challenge: r) { continue }
            break
        }
        guard (200..<300).contains(r.status) else {
            try? FileManager.default.removeItem(at: file)
            throw failure("GET blob \(d.digest) from \(ref.registry)/\(ref.repository)", r)
        }
        guard digest == d.digest, size == d.size else {
            try? FileManager.default.removeItem(at: file)
            throw RegistryError("blob \(d.digest) from \(ref.registry)/\(ref.repository) is corrupt: its bytes have digest \(digest) and size \(size), the manifest says \(d.digest) and \(d.size)")
        }
    }

    /// Uploads a blob from a file unless the repository has it; mounts it from `mountFrom` (same registry) when
    /// that repository has it. Returns "exists", "mounted" or "uploaded".
    @discardableResult
    public func pushBlob(_ ref: Reference, file: URL, descriptor d: Descriptor, mountFrom: Reference? = nil) throws -> String {
        if try hasBlob(ref, digest: d.digest) { return "exists" }
        var start = URLRequest(url: url(ref, "blobs/uploads/"))
        start.httpMethod = "POST"
        start.setValue("0", forHTTPHeaderField: "Content-Length")
        var actions = "pull,push"
        if let from = mountFrom, from.registry == ref.registry, from.repository != ref.repository {
            start.url = URL(string: base(ref) + "\(ref.repository)/blobs/uploads/?mount=\(d.digest)&from=\(from.repository)")
            actions += ";repository:\(from.repository):pull"
        }
        let r = try perform(ref, actions: actions, request: start)
        if r.status == 201 { return "mounted" }
        guard r.status == 202, var location = r.headers["location"] else { throw failure("POST upload to \(ref.registry)/\(ref.repository)", r) }
        if d.size > options.chunkSize {
            location = try uploadChunks(ref, file: file, size: d.size, location: location)
            try finishUpload(ref, location: location, digest: d.digest, body: .none, size: 0)
        } else {
            try finishUpload(ref, location: location, digest: d.digest, body: .file(file), size: d.size)
        }
        return "uploaded"
    }

    /// Uploads small bytes (a config blob) unless the repository has them.
    public func pushBlob(_ ref: Reference, data: Data, descriptor d: Descriptor) throws {
        if try hasBlob(ref, digest: d.digest) { return }
        var start = URLRequest(url: url(ref, "blobs/uploads/"))
        start.httpMethod = "POST"
        start.setValue("0", forHTTPHeaderField: "Content-Length")
        let r = try perform(ref, actions: "pull,push", request: start)
        guard r.status == 202, let location = r.headers["location"] else { throw failure("POST upload to \(ref.registry)/\(ref.repository)", r) }
        try finishUpload(ref, location: location, digest: d.digest, body: .data(data), size: data.count)
    }

    private func uploadChunks(_ ref: Reference, file: URL, size: Int, location: String) throws -> String {
        guard let h = FileHandle(forReadingAtPath: file.path) else { throw RegistryError("cannot read \(file.path)") }
        defer { try? h.close() }
        var location = location
        var offset = 0
        while offset < size {
            let chunk = h.readData(ofLength: min(options.chunkSize, size - offset))
            guard !chunk.isEmpty else { throw RegistryError("\(file.path) is shorter than \(size) bytes") }
            var req = URLRequest(url: resolve(ref, location))
            req.httpMethod = "PATCH"
            req.setValue("application/octet-stream", forHTTPHeaderField: "Content-Type")
            req.setValue("\(offset)-\(offset + chunk.count - 1)", forHTTPHeaderField: "Content-Range")
            req.setValue("\(chunk.count)", forHTTPHeaderField: "Content-Length")
            let r = try perform(ref, actions: "pull,push", request: req, body: .data(chunk))
            guard r.status == 202, let next = r.headers["location"] else { throw failure("PATCH chunk at \(offset) of \(file.lastPathComponent)", r) }
            location = next
            offset += chunk.count
        }
        return location
    }

    private func finishUpload(_ ref: Reference, location: String, digest: String, body: RequestBody, size: Int) throws {
        let u = resolve(ref, location)
        var req = URLRequest(url: URL(string: u.absoluteString + (u.query == nil ? "?" : "&") + "digest=\(digest)")!)
        req.httpMethod = "PUT"
        req.setValue("application/octet-stream", forHTTPHeaderField: "Content-Type")
        req.setValue("\(size)", forHTTPHeaderField: "Content-Length")
        let r = try perform(ref, actions: "pull,push", request: req, body: body)
        guard r.status == 201 else { throw failure("PUT blob \(digest) to \(ref.registry)/\(ref.repository)", r) }
    }

    /// The repository's tags (`GET /v2/<name>/tags/list`); empty when the repository does not exist.
    public func tags(_ ref: Reference) throws -> [String] {
        let r = try perform(ref, actions: "pull", request: URLRequest(url: url(ref, "tags/list")))
        if r.status == 404 { return [] }
        guard r.status == 200 else { throw failure("GET tags of \(ref.registry)/\(ref.repository)", r) }
        let v = try? JSONValue(parsing: r.body)
        return (v?["tags"]?.arrayValue ?? []).compactMap { $0.stringValue }
    }

    /// A relative `Location` resolved against the registry.
    func resolve(_ ref: Reference, _ location: String) -> URL {
        URL(string: location, relativeTo: URL(string: base(ref)))!.absoluteURL
    }

    func failure(_ what: String, _ r: HTTPResponse) -> RegistryError {
        var text = "\(what): HTTP \(r.status)"
        if let v = try? JSONValue(parsing: r.body), let e = v["errors"]?[0] {
            text += " \(e["code"]?.stringValue ?? ""): \(e["message"]?.stringValue ?? "")"
        } else if !r.snippet.isEmpty {
            text += ": \(r.snippet)"
        }
        if r.status == 401, let challenge = r.headers["www-authenticate"] { text += " (the registry asks: \(challenge))" }
        if r.status == 401 || r.status == 403 { text += "; credentials come from \(options.credentials.configPath)" }
        return RegistryError(text)
    }

    // MARK: auth

    private func authorized(_ ref: Reference, _ request: URLRequest) -> URLRequest {
        var req = request
        req.timeoutInterval = options.timeout
        lock.lock()
        defer { lock.unlock() }
        if let a = authorization[ref.registry] { req.setValue(a, forHTTPHeaderField: "Authorization") }
        return req
    }

    /// Sends a request with the current authorization; on 401 answers the challenge once and retries.
    func perform(_ ref: Reference, actions: String, request: URLRequest, body: RequestBody = .none) throws -> HTTPResponse {
        let r = try http.send(authorized(ref, request), body: body)
        if r.status == 401, try authenticate(ref, actions: actions, challenge: r) {
            return try http.send(authorized(ref, request), body: body)
        }
        return r
    }

    private func credential(_ registry: String) throws -> Credential? {
        lock.lock()
        if let c = credentialCache[registry] { lock.unlock(); return c }
        lock.unlock()
        let c = try options.credentials.credential(for: registry)
        lock.lock()
        credentialCache[registry] = c
        lock.unlock()
        return c
    }

    /// Answers a `WWW-Authenticate` challenge: Basic with the config's credential, Bearer by fetching a token from the
    /// realm (with the credential, if any, as Basic). False when there is nothing new to try.
    private func authenticate(_ ref: Reference, actions: String, challenge r: HTTPResponse) throws -> Bool {
        guard let header = r.headers["www-authenticate"], let c = Challenge(header) else { return false }
        let cred = try credential(ref.registry)
        let basic = cred.map { "Basic " + Data("\($0.username):\($0.password)".utf8).base64EncodedString() }
        let value: String
        if c.scheme == "basic" {
            guard let basic else { return false }
            value = basic
        } else if c.scheme == "bearer", let realm = c.params["realm"], var comps = URLComponents(string: realm) {
            var items = comps.queryItems ?? []
            if let service = c.params["service"] { items.append(URLQueryItem(name: "service", value: service)) }
            var scopes = actions.split(separator: ";").enumerated().map { i, s in i == 0 ? "repository:\(ref.repository):\(s)" : String(s) }
            if let s = c.params["scope"], !scopes.contains(s) { scopes.append(s) }
            items += scopes.map { URLQueryItem(name: "scope", value: $0) }
            comps.queryItems = items
            guard let tokenURL = comps.url else { return false }
            if tokenURL.scheme != "https", !options.insecureHosts.contains(tokenURL.host ?? "") && !options.insecureHosts.contains(ref.registry) {
                throw RegistryError("\(ref.registry) sends tokens from \(realm), which is not HTTPS")
            }
            var req = URLRequest(url: tokenURL)
            req.timeoutInterval = options.timeout
            if let basic { req.setValue(basic, forHTTPHeaderField: "Authorization") }
            let t = try http.send(req)
            guard t.status == 200, let v = try? JSONValue(parsing: t.body),
                  let token = v["token"]?.stringValue ?? v["access_token"]?.stringValue else {
                throw failure("token from \(realm)", t)
            }
            value = "Bearer \(token)"
        } else {
            return false
        }
        lock.lock()
        defer { lock.unlock() }
        if authorization[ref.registry] == value, c.scheme == "basic" { return false }
        authorization[ref.registry] = value
        return true
    }
}

/// A parsed `WWW-Authenticate` header: `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
struct Challenge {
    var scheme: String
    var params: [String: String]

    init?(_ header: String) {
        let trimmed = header.trimmingCharacters(in: .whitespaces)
        guard let space = trimmed.firstIndex(of: " ") else {
            if trimmed.isEmpty { return nil }
            scheme = trimmed.lowercased()
            params = [:]
            return
        }
        scheme = trimmed[..<space].lowercased()
        params = [:]
        var rest = Substring(trimmed[trimmed.index(after: space)...])
        while !rest.isEmpty {
            rest = rest.drop(while: { $0 == " " || $0 == "," })
            guard let eq = rest.firstIndex(of: "=") else { break }
            let key = rest[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
            rest = rest[rest.index(after: eq)...]
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                while let ch = rest.first, ch != "\"" {
                    if ch == "\\" { rest = rest.dropFirst() }
                    if let c = rest.first { value.append(c); rest = rest.dropFirst() }
                }
                rest = rest.dropFirst()
            } else {
                let end = rest.firstIndex(of: ",") ?? rest.endIndex
                value = String(rest[..<end]).trimmingCharacters(in: .whitespaces)
                rest = rest[end...]
            }
            params[key] = value
        }
    }
}
