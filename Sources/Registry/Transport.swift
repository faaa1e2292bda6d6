import Crypto
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// One HTTP response: status, headers (lowercased names) and a small body (blob bodies go to files instead).
public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [String: String]
    public var body: Data

    init(status: Int, headers: [String: String]) {
        self.status = status
        self.headers = headers
        body = Data()
    }

    /// The 401 a Basic challenge stood for (see `BasicChallengeCatcher`).
    static func basicChallenge(realm: String) -> HTTPResponse {
        HTTPResponse(status: 401, headers: ["www-authenticate": "Basic realm=\"\(realm)\""])
    }

    init(_ response: URLResponse?, body: Data) {
        let http = response as? HTTPURLResponse
        status = http?.statusCode ?? 0
        var h: [String: String] = [:]
        for (k, v) in http?.allHeaderFields ?? [:] {
            if let k = k as? String, let v = v as? String { h[k.lowercased()] = v }
        }
        headers = h
        self.body = body
    }

    /// The body as text, cut short, for error messages.
    var snippet: String { String(decoding: body.prefix(300), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) }
}

/// What a request sends.
enum RequestBody {
    case none
    case data(Data)
    /// Streamed from the file by URLSession, never read into memory.
    case file(URL)
}

/// A synchronous HTTP client over FoundationNetworking's URLSession (libcurl underneath; ships with the toolchain).
final class Transport: @unchecked Sendable {
    private let session: URLSession
    private let catcher = BasicChallengeCatcher()
    let timeout: TimeInterval

    init(timeout: TimeInterval = 60) {
        let config = URLSessionConfiguration.ephemeral
        config.requestCachePolicy = .reloadIgnoringLocalCacheData
        config.urlCache = nil
        config.httpCookieStorage = nil
        config.timeoutIntervalForRequest = timeout
        session = URLSession(configuration: config, delegate: catcher, delegateQueue: nil)
        self.timeout = timeout
    }

    deinit { session.finishTasksAndInvalidate() }

    /// Sends a request and waits for the whole (small) response.
    func send(_ request: URLRequest, body: RequestBody = .none) throws -> HTTPResponse {
        let box = ResultBox()
        let catcher = self.catcher
        let done: @Sendable (Data?, URLResponse?, Error?) -> Void = { data, response, error in
            if let realm = catcher.take(box) { return box.set(.success(.basicChallenge(realm: realm))) }
            box.set(error.map { .failure($0) } ?? .success(HTTPResponse(response, body: data ?? Data())))
        }
        let task: URLSessionTask
        switch body {
        case .none: task = session.dataTask(with: request, completionHandler: done)
        case .data(let d): task = session.uploadTask(with: request, from: d, completionHandler: done)
        case .file(let f): task = session.uploadTask(with: request, fromFile: f, completionHandler: done)
        }
        catcher.register(task, box)
        task.resume()
        return try box.wait(request)
    }

    /// GETs a body into `file`, hashing it while it streams; a non-2xx body is kept (small) for the error message.
    /// Returns the response, the body's `sha256:` digest and its size.
    func download(_ request: URLRequest, to file: URL) throws -> (HTTPResponse, String, Int) {
        let sink = DownloadSink(file: file)
        let queue = OperationQueue()
        queue.maxConcurrentOperationCount = 1
        let config = URLSessionConfiguration.ephemeral
        config.timeoutIntervalForRequest = timeout
        config.urlCache = nil
        let s = URLSession(configuration: config, delegate: sink, delegateQueue: queue)
        defer { s.finishTasksAndInvalidate() }
        s.dataTask(with: request).resume()
        sink.done.wait()
        if let realm = sink.basicRealm { return (.basicChallenge(realm: realm), "", 0) }
        if let error = sink.error { throw RegistryError("\(request.httpMethod ?? "GET") \(request.url?.absoluteString ?? ""): \(Self.describe(error))") }
        let response = HTTPResponse(sink.response, body: sink.errorBody)
        let digest = "sha256:" + sink.hasher.finalize().map { String(format: "%02x", $0) }.joined()
        return (response, digest, sink.size)
    }

    static func describe(_ error: Error) -> String {
        if let e = error as? URLError { return "\(e.localizedDescription) (URLError \(e.code.rawValue))" }
        return "\(error)"
    }
}

/// FoundationNetworking answers a 401 with `WWW-Authenticate: Basic` through the session's challenge callback and
/// never hands the response to the caller (default handling waits forever). The catcher cancels such a task and
/// records the realm, so the caller sees an ordinary 401 with its challenge and answers it with its own header.
private final class BasicChallengeCatcher: NSObject, URLSessionTaskDelegate, @unchecked Sendable {
    private let lock = NSLock()
    private var boxes: [Int: ResultBox] = [:]
    private var realms: [ObjectIdentifier: String] = [:]

    func register(_ task: URLSessionTask, _ box: ResultBox) {
        lock.lock()
        boxes[task.taskIdentifier] = box
        lock.unlock()
    }

    func take(_ box: ResultBox) -> String? {
        lock.lock()
        defer { lock.unlock() }
        boxes = boxes.filter { $0.value !== box }
        return realms.removeValue(forKey: ObjectIdentifier(box))
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didReceive challenge: URLAuthenticationChallenge,
                    completionHandler: @escaping (URLSession.AuthChallengeDisposition, URLCredential?) -> Void) {
        lock.lock()
        if let box = boxes.removeValue(forKey: task.taskIdentifier) {
            realms[ObjectIdentifier(box)] = challenge.protectionSpace.realm ?? ""
        }
        lock.unlock()
        completionHandler(.cancelAuthenticationChallenge, nil)
    }
}

/// Waits for one completion handler.
private final class ResultBox: @unchecked Sendable {
    private let sem = DispatchSemaphore(value: 0)
    private var result: Result<HTTPResponse, Error>?

    func set(_ r: Result<HTTPResponse, Error>) {
        result = r
        sem.signal()
    }

    func wait(_ request: URLRequest) throws -> HTTPResponse {
        sem.wait()
        switch result! {
        case .success(let r): return r
        case .failure(let e):
            throw RegistryError("\(request.httpMethod ?? "GET") \(request.url?.absoluteString ?? ""): \(Transport.describe(e))")
        }
    }
}

/// Writes a 2xx body to a file and hashes it chunk by chunk as URLSession delivers it.
private final class DownloadSink: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    let file: URL
    let done = DispatchSemaphore(value: 0)
    var handle: FileHandle?
    var hasher = SHA256()
    var size = 0
    var response: URLResponse?
    var errorBody = Data()
    var error: Error?
    var basicRealm: String?

    init(file: URL) { self.file = file }

    func urlSession(_ session: URLSession, task: URLSessionTask, didReceive challenge: URLAuthenticationChallenge,
                    completionHandler: @escaping (URLSession.AuthChallengeDisposition, URLCredential?) -> Void) {
        basicRealm = challenge.protectionSpace.realm ?? ""
        completionHandler(.cancelAuthenticationChallenge, nil)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                    completionHandler: @escaping (URLSession.ResponseDisposition) -> Void) {
        self.response = response
        if let http = response as? HTTPURLResponse, (200..<300).contains(http.statusCode) {
            FileManager.default.createFile(atPath: file.path, contents: nil, attributes: [.posixPermissions: 0o644])
            handle = FileHandle(forWritingAtPath: file.path)
            if handle == nil {
                error = RegistryError("cannot write \(file.path)")
                completionHandler(.cancel)
                return
            }
        }
        completionHandler(.allow)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        guard error == nil else { return }
        if let handle {
            do { try handle.write(contentsOf: data) } catch {
                self.error = error
                dataTask.cancel()
                return
            }
            hasher.update(data: data)
            size += data.count
        } else if errorBody.count < 65536 {
            errorBody.append(data)
        }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
        if self.error == nil { self.error = error }
        try? handle?.close()
        done.signal()
    }
}
