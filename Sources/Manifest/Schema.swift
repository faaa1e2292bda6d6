import Foundation
import JSON
import JSONSchema

/// The manifest schema: `schemas/export.schema.json`, the one source of truth, embedded into this module at build
/// time by the EmbedSchema plugin (Plugins/EmbedSchema), so there is no second copy to drift and nothing to install.
public enum ManifestSchema {
    /// The schema file's text, as embedded.
    public static let text: String = String(decoding: EmbeddedSchema.bytes, as: UTF8.self)

    /// The schema compiled once per process.
    public static let validator: JSONSchemaValidator = {
        do {
            let value = try JSONValue(parsing: Data(text.utf8))
            return try JSONSchemaValidator(schema: value)
        } catch {
            fatalError("schemas/export.schema.json does not compile: \(error)")
        }
    }()

    /// The `$id` editors use for completion (`# yaml-language-server: $schema=...`).
    public static let id = "https://tsexport.dev/schemas/export.schema.json"
}
