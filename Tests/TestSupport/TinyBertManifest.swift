/// The manifest most Swift tests plan or apply: a `BertModel` initialised at random from a tiny config (nothing is
/// downloaded; it traces in about a second).
public enum TinyBertManifest {
    /// The config: 100 tokens, hidden size 32, 4 heads (the other sizes are transformers' defaults).
    public static let config = "{vocab_size: 100, hidden_size: 32, num_attention_heads: 4}"
    /// One random `input_ids` tensor of shape [1, 4].
    public static let inputIDs = "{name: input_ids, from: random, shape: [1, 4]}"

    /// One manifest document named `name`: `spec.model` holds `class: BertModel`, `config` (a YAML flow mapping) and
    /// then the `model` lines (already indented by four spaces, each ending in a newline); `spec.inputs.tensors`
    /// holds `tensors` (YAML flow mappings); `spec` lines follow (indented by two spaces, each ending in a newline).
    public static func text(_ name: String, config: String = config, model: String = "", tensors: [String] = [inputIDs], spec: String = "") -> String {
        """
        apiVersion: tsexport/v1
        kind: Export
        metadata: {name: \(name)}
        spec:
          model:
            class: BertModel
            config: \(config)

        """ + model + """
          inputs:
            tensors:

        """ + tensors.map { "      - \($0)\n" }.joined() + spec
    }

    /// Several documents in one file, in order.
    public static func stream(_ documents: [String]) -> String { documents.joined(separator: "---\n") }
}
