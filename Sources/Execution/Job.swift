import Foundation
import JSON
import Manifest

/// Turns a validated manifest into the worker's `export` job: every path absolute, every default filled in.
public enum JobBuilder {
    /// The job object of docs/worker-protocol.md.
    public static func job(_ m: Manifest, stagingDir: URL, extraRecord: JSONValue) -> JSONValue {
        func opt(_ s: String?) -> JSONValue { s.map(JSONValue.string) ?? .null }
        func optInt(_ i: Int?) -> JSONValue { i.map(JSONValue.int) ?? .null }
        func optNum(_ d: Double?) -> JSONValue { d.map(JSONValue.double) ?? .null }
        let tensors: [JSONValue] = m.inputs.tensors.map { t in
            .object([
                ("name", .string(t.name)), ("from", .string(t.from.rawValue)), ("dtype", .string(t.dtype)),
                ("shape", t.shape.map { .array($0.map(JSONValue.int)) } ?? .null),
                ("values", t.values ?? .null), ("low", optNum(t.low)), ("high", optNum(t.high)),
            ])
        }
        return .object([
            ("name", .string(m.name)),
            ("model", .object([
                ("class", .string(m.model.className)),
                ("pretrained", opt(m.model.pretrained?.reference)),
                ("pretrained_is_local", .bool(m.model.pretrained?.isLocal ?? false)),
                ("revision", opt(m.model.revision)),
                ("config", .object(m.model.config)),
                ("torchscript", .bool(m.model.torchscript)),
                ("seed", .int(m.model.seed)),
                ("dtype", .string(m.model.dtype)),
                ("attn_implementation", .string(m.model.attnImplementation)),
                ("trust_remote_code", .bool(m.model.trustRemoteCode)),
                ("allow_pickle", .bool(m.model.allowPickle)),
            ])),
            ("inputs", .object([
                ("tokenizer", opt(m.inputs.tokenizer?.reference)),
                ("tokenizer_is_local", .bool(m.inputs.tokenizer?.isLocal ?? false)),
                ("text", opt(m.inputs.text)),
                ("add_special_tokens", .bool(m.inputs.addSpecialTokens)),
                ("mask", .array(m.inputs.mask.map(JSONValue.int))),
                ("pad_to", optInt(m.inputs.padTo)),
                ("tensors", .array(tensors)),
            ])),
            ("trace", .object([
                ("strict", .bool(m.trace.strict)),
                ("check_shapes", .array(m.trace.checkShapes.map { .array($0.map(JSONValue.int)) })),
                ("split", m.trace.split.map { .object([("kind", .string($0.kind)), ("max_length", .int($0.maxLength))]) } ?? .null),
            ])),
            ("target", .object([("hardware", .string(m.target.hardware)), ("optimize", .string(m.target.optimize))])),
            ("staging_dir", .string(stagingDir.path)),
            ("extra_record", extraRecord),
        ])
    }
}
