import Foundation

// Writes a Swift file holding the schema's bytes, for the EmbedSchema build plugin.
let args = CommandLine.arguments
guard args.count == 3, let data = FileManager.default.contents(atPath: args[1]) else {
    FileHandle.standardError.write(Data("usage: EmbedSchemaTool SCHEMA.json OUTPUT.swift\n".utf8))
    exit(1)
}
let bytes = data.map { String($0) }.joined(separator: ",")
let source = """
    // Generated at build time from schemas/export.schema.json by the EmbedSchema plugin. Do not edit.
    enum EmbeddedSchema {
        static let bytes: [UInt8] = [\(bytes)]
    }

    """
try source.write(toFile: args[2], atomically: true, encoding: .utf8)
