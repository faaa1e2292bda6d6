import ArgumentParser
import Diagnostics
import Foundation
import Manifest
import Plan

/// `tsexport`: YAML manifests in, verified TorchScript bundles out.
public struct TSExportCommand: ParsableCommand {
    /// The command tree.
    public static let configuration = CommandConfiguration(
        commandName: "tsexport",
        abstract: "Export Hugging Face Transformers models to verified TorchScript bundles, described by YAML manifests.",
        version: ToolInfo.version,
        subcommands: [Init.self, Validate.self, PlanCommand.self, Apply.self, Verify.self, Bench.self, Pull.self, Doctor.self, Schema.self])

    /// Creates the command.
    public init() {}
}

/// Exit codes, as the contract fixes them.
public enum ExitStatus {
    public static let success: Int32 = 0
    public static let failure: Int32 = 1
    public static let changesPending: Int32 = 2
    public static let interrupted: Int32 = 130
}

/// `tsexport validate PATH...`
public struct Validate: ParsableCommand {
    public static let configuration = CommandConfiguration(abstract: "Parse and validate manifests; every problem as file:line:column: error: message.")
    @OptionGroup public var options: ManifestOptions
    public init() {}

    public func run() throws {
        let code = Validate.execute(options, console: .standard)
        if code != 0 { throw ExitCode(code) }
    }

    /// Runs the command and returns its exit code.
    public static func execute(_ options: ManifestOptions, console: Console) -> Int32 {
        guard !options.paths.isEmpty else {
            let message = "name at least one manifest file or folder"
            if options.json {
                console.printJSON(["valid": false, "diagnostics": DiagnosticPrinter.json([.error(message)])] as [String: Any])
            } else {
                console.err("error: \(message)")
            }
            return ExitStatus.failure
        }
        let result = ManifestLoader(options: options.validationOptions).validate(paths: options.paths)
        if options.json {
            console.printJSON([
                "valid": result.isValid,
                "files": result.fileCount,
                "manifests": result.manifests.map { ["name": $0.name, "file": $0.file, "document": $0.documentIndex] as [String: Any] },
                "diagnostics": DiagnosticPrinter.json(result.diagnostics),
            ] as [String: Any])
        } else {
            console.report(result.diagnostics)
            if result.isValid {
                // Success is the command's result: stdout. Diagnostics and the error count go to stderr.
                console.out("\(result.manifests.count) manifest\(result.manifests.count == 1 ? "" : "s") in \(result.fileCount) file\(result.fileCount == 1 ? "" : "s"): valid")
            } else {
                let n = result.diagnostics.filter { $0.severity == .error }.count
                console.err("\(n) error\(n == 1 ? "" : "s") in \(result.fileCount) file\(result.fileCount == 1 ? "" : "s")")
            }
        }
        return result.isValid ? ExitStatus.success : ExitStatus.failure
    }
}

/// `tsexport plan PATH...`
public struct PlanCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "plan", abstract: "Validate, then show what apply would do for each manifest and why.")
    @OptionGroup public var options: ManifestOptions
    @OptionGroup public var selection: SelectionOptions
    @Flag(name: .customLong("detailed-exitcode"), help: "Exit 0 when nothing would change, 2 when changes are pending, 1 on errors.")
    public var detailedExitcode = false
    @OptionGroup public var runtime: RuntimeOptions
    @OptionGroup public var cache: CacheFlags
    @OptionGroup public var registry: RegistryFlags
    public init() {}

    public func run() throws {
        let setting: CacheSetting?
        switch cache.setting(registry: registry.options()) {
        case .success(let s): setting = s
        case .failure(let e):
            Console.standard.err("error: \(e.message)")
            throw ExitCode(ExitStatus.failure)
        }
        let code = PlanCommand.execute(options, selection: selection, detailedExitcode: detailedExitcode, python: runtime.python, console: .standard, cache: setting)
        if code != 0 { throw ExitCode(code) }
    }

    /// Runs the command and returns its exit code.
    public static func execute(_ options: ManifestOptions, selection: SelectionOptions, detailedExitcode: Bool, python: String? = nil, console: Console,
                               cache: CacheSetting? = nil) -> Int32 {
        guard let planned = Planning.build(options, selection: selection, python: python, console: console, cache: cache) else { return ExitStatus.failure }
        let (plan, diagnostics) = (planned.plan, planned.diagnostics)
        if options.json {
            console.out(PlanRenderer.json(plan))
        } else {
            console.report(diagnostics)
            console.out(PlanRenderer.text(plan, color: console.colorOut, relativeTo: FileManager.default.currentDirectoryPath))
        }
        return detailedExitcode && plan.hasChanges ? ExitStatus.changesPending : ExitStatus.success
    }
}

/// `tsexport schema`
public struct Schema: ParsableCommand {
    public static let configuration = CommandConfiguration(abstract: "Print the manifest JSON Schema (draft 2020-12).")
    public init() {}
    public func run() throws { Console.standard.out(ManifestSchema.text.trimmingCharacters(in: .newlines)) }
}
