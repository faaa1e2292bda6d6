import Foundation
import JSON

/// Optimum's task names and the Auto class each one means.
public enum InitTasks {
    public static let table: [(task: String, autoClass: String)] = [
        ("feature-extraction", "AutoModel"),
        ("text-classification", "AutoModelForSequenceClassification"),
        ("token-classification", "AutoModelForTokenClassification"),
        ("question-answering", "AutoModelForQuestionAnswering"),
        ("fill-mask", "AutoModelForMaskedLM"),
        ("text-generation", "AutoModelForCausalLM"),
        ("text2text-generation", "AutoModelForSeq2SeqLM"),
        ("image-classification", "AutoModelForImageClassification"),
    ]
    public static var names: [String] { table.map(\.task) }
    public static func autoClass(_ task: String) -> String? { table.first { $0.task == task }?.autoClass }
}

/// What the worker's `inspect` op reported about the folder.
public struct InitFacts: Sendable {
    public var className: String
    public var classOrigin: String
    public var task: String?
    public var resolvedClass: String
    public var modelType: String?
    public var isEncoderDecoder: Bool
    /// Forward parameters among input_ids, attention_mask, token_type_ids, decoder_input_ids, pixel_values, in
    /// forward's order.
    public var inputs: [String]
    public var forwardParameters: [String]
    public var maxPositions: Int?
    public var vocabSize: Int?
    public var typeVocabSize: Int?
    public var imageSize: Int?
    public var numChannels: Int?
    public var tokenizer: Bool
    public var tokenizerPad: Bool
    public var sampleText: String
    public var sampleTokens: Int?
    public var safetensors: Bool
    public var pickle: [String]
    /// The module types a sentence-transformers folder's modules.json lists (nil: no modules.json).
    public var pipeline: [String]?

    /// The last component of each module type in `folder/modules.json` (Transformer, Pooling, Normalize, ...), or nil
    /// when the folder has none: such a folder is a sentence-transformers pipeline.
    public static func sentenceTransformersModules(folder: URL) -> [String]? {
        guard let data = FileManager.default.contents(atPath: folder.appendingPathComponent("modules.json").path) else { return nil }
        let modules = (try? JSONValue(parsing: data))?.arrayValue ?? []
        return modules.compactMap { $0["type"]?.stringValue?.split(separator: ".").last.map(String.init) }
    }

    /// Reads the `inspect` result.
    public init(_ v: JSONValue) throws {
        guard let cls = v["class"]?.stringValue, let resolved = v["resolved_class"]?.stringValue else {
            throw ScaffoldError(description: "the worker's inspect answer lacks the class")
        }
        className = cls
        classOrigin = v["class_origin"]?.stringValue ?? "class"
        task = v["task"]?.stringValue
        resolvedClass = resolved
        modelType = v["model_type"]?.stringValue
        isEncoderDecoder = v["is_encoder_decoder"]?.boolValue ?? false
        inputs = (v["inputs"]?.arrayValue ?? []).compactMap(\.stringValue)
        forwardParameters = (v["forward_parameters"]?.arrayValue ?? []).compactMap(\.stringValue)
        maxPositions = v["max_position_embeddings"]?.intValue
        vocabSize = v["vocab_size"]?.intValue
        typeVocabSize = v["type_vocab_size"]?.intValue
        imageSize = v["image_size"]?.intValue
        numChannels = v["num_channels"]?.intValue
        tokenizer = v["tokenizer"]?["present"]?.boolValue ?? false
        tokenizerPad = v["tokenizer"]?["pad_token"]?.boolValue ?? false
        sampleText = v["tokenizer"]?["sample_text"]?.stringValue ?? "Who was Jim Henson? Jim Henson was a puppeteer."
        sampleTokens = v["tokenizer"]?["sample_tokens"]?.intValue
        safetensors = v["weights"]?["safetensors"]?.boolValue ?? false
        pickle = (v["weights"]?["pickle"]?.arrayValue ?? []).compactMap(\.stringValue)
    }
}

/// Why no manifest can be scaffolded.
public struct ScaffoldError: Error, CustomStringConvertible {
    public var description: String
}
