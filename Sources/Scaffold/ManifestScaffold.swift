import Foundation
import JSON
import Manifest
import Plan

/// The manifest text init writes, from the inspected facts. Pure: every choice is made here.
public enum ManifestScaffold {
    /// The schema's `$id`, for manifests outside a tsexport checkout.
    public static let schemaURL = "https://tsexport.dev/schemas/export.schema.json"
    /// The envelope's batch range.
    public static let batchRange = (1, 8)
    /// The longest sequence the envelope covers (capped by the model's positions).
    public static let sequenceCap = 128

    /// Folder names that say nothing about the model (what `save_pretrained` targets are often called).
    static let genericFolderNames: Set<String> = [
        "model", "models", "checkpoint", "checkpoints", "pretrained", "weights", "final", "output", "outputs", "export",
        "hf", "snapshot", "snapshots", "main", "latest", "best", "saved-model", "hf-model",
    ]

    /// metadata.name for a pretrained folder: its name, lower case, other characters to `-`, at most 63; when that
    /// says nothing (`model`, `checkpoint`, a commit hash), the model's own name from config.json: the last part of
    /// `_name_or_path` when it names a hub model, else the first architecture (`BertForMaskedLM` → `bert-for-masked-lm`).
    public static func defaultName(folder: URL, config: JSONValue? = nil) -> String {
        let fromFolder = slug(folder.lastPathComponent)
        let isHash = fromFolder.count >= 12 && fromFolder.allSatisfy { $0.isHexDigit }
        guard fromFolder.isEmpty || genericFolderNames.contains(fromFolder) || isHash else { return fromFolder }
        if let path = config?["_name_or_path"]?.stringValue, !path.isEmpty, !path.hasPrefix("/"), !path.hasPrefix("."),
           let last = path.split(separator: "/").last {
            let s = slug(String(last))
            if !s.isEmpty && !genericFolderNames.contains(s) { return s }
        }
        if let arch = config?["architectures"]?[0]?.stringValue {
            var words = ""
            for (i, ch) in arch.enumerated() {
                let prev = i > 0 ? Array(arch)[i - 1] : ch
                if i > 0 && ch.isUppercase && (prev.isLowercase || prev.isNumber) { words.append("-") }
                words.append(ch)
            }
            let s = slug(words)
            if !s.isEmpty { return s }
        }
        return fromFolder.isEmpty ? "model" : fromFolder
    }

    /// Lower case, characters other than ASCII letters and digits to one `-`, trimmed, at most 63.
    static func slug(_ text: String) -> String {
        var s = ""
        for ch in text.lowercased() {
            if ch.isASCII && (ch.isLetter || ch.isNumber) { s.append(ch) } else if !s.hasSuffix("-") { s.append("-") }
        }
        s = String(s.prefix(63))
        while s.hasPrefix("-") { s.removeFirst() }
        while s.hasSuffix("-") { s.removeLast() }
        return s
    }

    public static func isValidName(_ s: String) -> Bool {
        guard !s.isEmpty, s.count <= 63, let f = s.first, let l = s.last else { return false }
        let ok = s.allSatisfy { ($0.isASCII && ($0.isLowercase || $0.isNumber)) || $0 == "-" }
        return ok && f != "-" && l != "-"
    }

    /// The forward parameters the manifest gives a tensor, in forward's order: input_ids, and attention_mask with
    /// them, when forward takes them (a decoder-only model traced without a mask serves batch 1 only), token_type_ids when the
    /// config has segment embeddings (type_vocab_size), decoder_input_ids for encoder-decoder models, pixel_values
    /// when there are no input_ids.
    public static func chosenInputs(_ f: InitFacts) -> [String] {
        f.inputs.filter { name in
            switch name {
            case "input_ids": return true
            case "attention_mask": return f.inputs.contains("input_ids")
            case "token_type_ids": return (f.typeVocabSize ?? 0) > 0
            case "decoder_input_ids": return f.isEncoderDecoder
            case "pixel_values": return !f.inputs.contains("input_ids")
            default: return false
            }
        }
    }

    /// The sequence length the envelope reaches.
    public static func sequenceMax(_ f: InitFacts) -> Int { min(sequenceCap, f.maxPositions ?? sequenceCap) }

    /// A YAML double-quoted scalar.
    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 || u.value == 0x7f { out += String(format: "\\x%02x", u.value) } else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }

    /// The manifest. `pretrained` is the folder relative to the manifest's folder; `schema` the `$schema` value.
    public static func render(_ f: InitFacts, name: String, pretrained: String, schema: String) throws -> String {
        let inputs = chosenInputs(f)
        guard !inputs.isEmpty else {
            throw ScaffoldError(description: "\(f.resolvedClass).forward() takes none of input_ids, pixel_values (it takes \(f.forwardParameters.joined(separator: ", "))); write the manifest's tensors by hand")
        }
        guard f.safetensors || !f.pickle.isEmpty else {
            throw ScaffoldError(description: "\(pretrained) holds no weights (*.safetensors, or pickle *.bin); save the model with save_pretrained, or write a manifest with spec.model.config for a random initialisation")
        }
        let seqMax = sequenceMax(f)
        let tokens = inputs.contains { $0 != "pixel_values" }
        // Text through the folder's tokenizer when it has one and the sample sentence fits; padded to the envelope's
        // longest sequence when the tokenizer can pad (trace at the largest length expected).
        let fits = f.sampleTokens.map { $0 <= seqMax } ?? false
        let useText = f.tokenizer && inputs.contains("input_ids") && fits
        let padTo: Int? = useText && f.tokenizerPad ? seqMax : nil
        let length = useText ? (padTo ?? f.sampleTokens!) : seqMax

        var y: [String] = []
        y.append("# yaml-language-server: $schema=\(schema)")
        y.append("#")
        y.append("# Scaffolded by `tsexport init` (tsexport \(versionString)) from")
        y.append("#   \(pretrained)")
        y.append("# Every choice init made is explained beside it; edit to taste, then `tsexport plan` and `tsexport apply` this file.")
        y.append("apiVersion: tsexport/v1")
        y.append("kind: Export")
        y.append("metadata:")
        y.append("  name: \(name)\u{1F}names the bundle folder: \(ManifestDefaults.outputDir(name: name)) under the output root")
        y.append("spec:")
        y.append("  model:")
        let classNote: String
        switch f.classOrigin {
        case "task": classNote = "the task \(f.task ?? "?") (Optimum's name); resolves to \(f.resolvedClass) for this config"
        case "architectures": classNote = "config.json's architectures[0]"
        case "default": classNote = "config.json names no architectures: the bare model (resolves to \(f.resolvedClass))"
        default: classNote = f.className == f.resolvedClass ? "given with --class" : "given with --class; resolves to \(f.resolvedClass)"
        }
        y.append("    class: \(f.className)\u{1F}\(classNote)")
        y.append("    pretrained: \(quote(pretrained))\u{1F}config and weights, relative to this file's folder")
        if let pipeline = f.pipeline {
            let steps = pipeline.isEmpty ? "" : " (\(pipeline.joined(separator: " → ")))"
            y.append("    library: sentence-transformers\u{1F}the folder's modules.json pipeline\(steps) is the model")
            y.append("    # Outputs token_embeddings and sentence_embedding; apply checks sentence_embedding against the library's")
            y.append("    # encode() on real text at every envelope point.")
        }
        if !f.safetensors {
            y.append("    # The folder has only pickle weights (\(f.pickle.joined(separator: ", "))), which can run code when loaded:")
            y.append("    # apply needs --allow-pickle too. Converting them to safetensors is safer.")
            y.append("    allow_pickle: true")
        }
        y.append("    # torchscript: \(ManifestDefaults.torchscript) (the default) gives tuple outputs and unties tied weights, as the guide promises;")
        y.append("    # dtype: \(ManifestDefaults.dtype) (the default); attn_implementation: \(ManifestDefaults.attnImplementation) (the default; sdpa traces too).")
        let receiver = f.pipeline == nil ? "\(f.resolvedClass).forward()" : "the pipeline (its \(f.resolvedClass))"
        y.append("  inputs:\u{1F}bound BY NAME to \(receiver); the artifact takes them in this order")
        if useText {
            y.append("    tokenizer: \(quote(pretrained))\u{1F}the folder's own tokenizer")
            y.append("    text: \(quote(f.sampleText))\u{1F}a sample sentence; any text in the model's language")
            y.append("    add_special_tokens: true\u{1F}the tokenizer adds its own special tokens ([CLS] … [SEP] for BERT)")
            if let padTo {
                y.append("    pad_to: \(padTo)\u{1F}trace at the longest sequence the envelope serves (padding masked out)")
            } else {
                y.append("    # no pad_to: the tokenizer has no pad token, so the trace has the sentence's \(length) tokens")
            }
        } else if inputs.contains("input_ids") {
            y.append("    # Random token ids, drawn in [0, vocab_size) with spec.model.seed: \(f.tokenizer ? "the sample sentence does not fit the model's positions" : "the folder has no tokenizer").")
            y.append("    # Give `tokenizer:` and `text:` (and `from: text` below) to trace on real text.")
        }
        y.append("    tensors:")
        for n in inputs {
            switch n {
            case "input_ids":
                y.append(useText ? "      - {name: input_ids, from: text}"
                    : "      - {name: input_ids, from: random, shape: [1, \(length)]}")
            case "attention_mask":
                y.append(useText ? "      - {name: attention_mask, from: text}\u{1F}1 for tokens, 0 for padding"
                    : "      - {name: attention_mask, from: ones, shape: [1, \(length)]}\u{1F}with a mask the trace serves every batch size")
            case "token_type_ids":
                y.append("      - {name: token_type_ids, from: zeros, shape: [1, \(length)]}\u{1F}one segment; 1s mark a second one")
            case "decoder_input_ids":
                y.append("      - {name: decoder_input_ids, from: random, shape: [1, \(length)]}\u{1F}the decoder's tokens so far")
            case "pixel_values":
                let c = f.numChannels ?? 3, s = f.imageSize ?? 224
                y.append("      - {name: pixel_values, from: random, dtype: float32, shape: [1, \(c), \(s), \(s)]}\u{1F}one normalised image")
            default: break
            }
        }
        y.append("  trace:")
        y.append("    # The shapes model.pt serves: apply verifies the artifact against the eager model at the corners and at")
        y.append("    # seeded points inside, records them, and model.pt refuses inputs outside. Narrow or widen it to your traffic.")
        if tokens {
            let why = f.maxPositions.map { $0 < sequenceCap ? "\u{1F}at most the model's \($0) positions" : "" } ?? ""
            y.append("    envelope: {batch: [\(batchRange.0), \(batchRange.1)], sequence: [1, \(seqMax)]}\(why)")
        } else {
            y.append("    envelope: {batch: [\(batchRange.0), \(batchRange.1)]}\u{1F}the image size stays the traced one")
        }
        y.append("    # strict: \(ManifestDefaults.strict) (the default): tracer warnings fail apply unless the artifact matched at every envelope point.")
        y.append("  # target: {hardware: \(ManifestDefaults.hardware), optimize: \(ManifestDefaults.optimize)} (the defaults); output: {dir: \(ManifestDefaults.outputDir(name: name))} (the default)")
        return y.map(align).joined(separator: "\n") + "\n"
    }

    static var versionString: String { ToolInfo.version }

    /// `code\u{1F}comment` → the code, then the comment from column 40 (or two spaces after longer code).
    static func align(_ line: String) -> String {
        guard let sep = line.firstIndex(of: "\u{1F}") else { return line }
        let code = String(line[..<sep]), comment = String(line[line.index(after: sep)...])
        let pad = max(2, commentColumn - code.count)
        return code + String(repeating: " ", count: pad) + "# " + comment
    }

    static let commentColumn = 40
}
