import ArgumentParser
import Diagnostics
import Execution
import Foundation
import JSON
import Manifest
import Plan
import Scaffold

/// `tsexport init SOURCE [-o FILE] [--task TASK] [--class NAME]`: a first manifest for a local pretrained folder.
///
/// Flags → `Scaffold.Scaffolder.run` → the manifest printed or a line saying where it was written. The worker's
/// `inspect` op reports the folder's facts; every choice the manifest makes from them is `Scaffold.ManifestScaffold`'s.
public struct Init: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Scaffold a manifest for a local pretrained model folder (printed, or written to -o FILE).",
        discussion: """
            The class comes from config.json's `architectures`, from --task (an Optimum task name, mapped to its \
            AutoModel* class) or from --class. Input tensors are named from the class's forward() signature; with a \
            tokenizer in the folder they come from a sample sentence, else they are random. The result validates and \
            applies as written; edit it to taste.
            """)

    @Argument(help: "A local folder holding config.json and weights (as save_pretrained writes them).", completion: .directory)
    public var source: String

    @Option(name: [.customShort("o"), .customLong("output")], help: ArgumentHelp("Write the manifest to FILE (default: print it). pretrained: is written relative to FILE's folder.", valueName: "file"),
            completion: .file(extensions: ["yaml", "yml"]))
    public var output: String?

    @Option(help: ArgumentHelp("A task, which picks the Auto class: \(InitTasks.names.joined(separator: ", ")).", valueName: "task"),
            completion: .list(InitTasks.names))
    public var task: String?

    @Option(name: .customLong("class"), help: "A transformers model class to use instead of config.json's architectures.")
    public var className: String?

    @Option(help: "metadata.name (default: from the folder's name).")
    public var name: String?

    @Flag(help: "Overwrite FILE when it exists.")
    public var force = false

    @OptionGroup public var runtime: RuntimeOptions

    public init() {}

    public func run() throws {
        let code = Init.execute(self, console: .standard)
        if code != 0 { throw ExitCode(code) }
    }

    /// Runs init and returns the exit code. Every refusal that needs no Python comes before the worker starts.
    public static func execute(_ cmd: Init, console: Console, runner: ProcessRunner = SystemProcessRunner()) -> Int32 {
        let request = ScaffoldRequest(source: cmd.source, output: cmd.output, task: cmd.task, className: cmd.className,
                                      name: cmd.name, force: cmd.force)
        let outcome: ScaffoldOutcome
        do throws(ScaffoldFailure) {
            outcome = try Scaffolder.run(request) { fields in
                guard let (_, worker) = cmd.runtime.startWorker(console: console, runner: runner, needs: ["torch", "transformers"]) else {
                    return nil
                }
                defer { worker.shutdown() }
                do {
                    return try worker.request("inspect", fields)
                } catch let f as WorkerFailure {
                    throw ScaffoldFailure.refused(f.message)
                }
            }
        } catch {
            switch error {
            case .noWorker:
                break
            case .invalid(let diagnostics):
                console.report(diagnostics)
                console.err("error: the scaffolded manifest does not validate (a tsexport bug; please report it with the folder's config.json)")
            case .refused(let message):
                console.err("error: \(message)")
            }
            return ExitStatus.failure
        }
        switch outcome {
        case .manifest(let text):
            console.out(text.hasSuffix("\n") ? String(text.dropLast()) : text)
        case .wrote(let file, let summary):
            console.err("wrote \(file): \(summary); next: tsexport plan \(file)")
        }
        return ExitStatus.success
    }
}
