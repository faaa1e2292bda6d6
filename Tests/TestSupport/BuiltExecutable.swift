import Foundation

/// Finds the `tsexport` executable that `swift build --build-tests` put beside the test bundle. Every test that runs
/// the real binary (CLITests, ExecutionTests) asks here, so there is one rule for finding it.
///
/// The search walks up from the test bundle, the test process's executable (`/proc/self/exe`) and `argv[0]` to the
/// first folder that holds a regular executable file named `tsexport`, so any `--scratch-path` works and a checkout
/// folder that is itself named `tsexport` is never mistaken for the binary. `TSEXPORT_EXECUTABLE` overrides the search.
public enum BuiltExecutable {
    /// The executable, or nil when it was not built.
    public static let tsexport: URL? = locate("tsexport")

    /// A message for tests to fail with when `tsexport` is nil.
    public static let notFound = "the tsexport executable was not found beside the test bundle (set TSEXPORT_EXECUTABLE, or build with `swift build --build-tests`)"

    /// The first regular executable file named `name` in a folder above one of the start points.
    public static func locate(_ name: String, environment: [String: String] = ProcessInfo.processInfo.environment,
                              extraStarts: [URL] = []) -> URL? {
        let fm = FileManager.default
        if let env = environment["TSEXPORT_EXECUTABLE"], !env.isEmpty, isExecutableFile(env) {
            return URL(fileURLWithPath: env)
        }
        var starts: [URL] = extraStarts + [Bundle.main.bundleURL]
        if let e = Bundle.main.executableURL { starts.append(e) }
        if let exe = try? fm.destinationOfSymbolicLink(atPath: "/proc/self/exe") { starts.append(URL(fileURLWithPath: exe)) }
        if let arg0 = CommandLine.arguments.first, arg0.contains("/") {
            starts.append(URL(fileURLWithPath: arg0, relativeTo: URL(fileURLWithPath: fm.currentDirectoryPath)).absoluteURL)
        }
        for start in starts {
            var dir = start.standardizedFileURL
            for _ in 0..<6 {
                let candidate = dir.appendingPathComponent(name)
                if isExecutableFile(candidate.path) { return candidate }
                let parent = dir.deletingLastPathComponent()
                if parent.path == dir.path { break }
                dir = parent
            }
        }
        return nil
    }

    /// True for an executable regular file (a folder with the execute bit is not one).
    public static func isExecutableFile(_ path: String) -> Bool {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && !isDir.boolValue
            && FileManager.default.isExecutableFile(atPath: path)
    }
}
