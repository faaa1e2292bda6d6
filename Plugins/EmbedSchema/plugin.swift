import Foundation
import PackagePlugin

/// Embeds `schemas/export.schema.json` — the one source of truth — into the Manifest module at build time, so the
/// binary carries the schema without a second copy in the tree. Rebuilds whenever the schema file changes.
@main
struct EmbedSchema: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let input = context.package.directoryURL.appending(path: "schemas/export.schema.json")
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedSchema.swift")
        return [
            .buildCommand(
                displayName: "Embedding schemas/export.schema.json",
                executable: try context.tool(named: "EmbedSchemaTool").url,
                arguments: [input.path, output.path],
                inputFiles: [input],
                outputFiles: [output])
        ]
    }
}
