import Diagnostics
import Foundation
import JSON

/// The checks a schema cannot express, each reported at the field it is about.
struct SemanticChecker {
    let manifest: Manifest
    let options: ValidationOptions
    var out: [Diagnostic] = []

    init(manifest: Manifest, options: ValidationOptions) {
        self.manifest = manifest
        self.options = options
    }

    var loc: FieldLocations { manifest.locations }

    mutating func error(_ field: String, _ message: String, key: Bool = false) {
        out.append(.error(message, at: key ? loc.keyLocation(of: field) : loc.location(of: field), field: field))
    }

    mutating func check() -> [Diagnostic] {
        checkPermissions()
        checkSources()
        checkLibrary()
        let config = effectiveConfig()
        checkConfig(config)
        checkText()
        // A multimodal config (CLIP, SigLIP, …) states the text vocabulary in text_config.
        checkTensors(vocabSize: config["vocab_size"]?.intValue ?? config["text_config"]?["vocab_size"]?.intValue)
        let maxPositions = config["max_position_embeddings"]?.intValue ?? config["n_positions"]?.intValue
        checkTensorSizes()
        checkEnvelope(maxPositions: maxPositions)
        checkFixedAxes(config: config)
        checkForward()
        checkSplit(maxPositions: maxPositions, config: config)
        checkOutputPaths()
        checkTargetCombinations()
        return out.sorted { ($0.location ?? loc.location(of: "")) < ($1.location ?? loc.location(of: "")) }
    }

    // MARK: - Opt-ins that need the command line too

    private mutating func checkPermissions() {
        if manifest.model.trustRemoteCode && !options.allowRemoteCode {
            error("spec.model.trust_remote_code",
                  "trust_remote_code: true runs Python code from the model's repository; refused unless the command line also says --allow-remote-code")
        }
        if manifest.model.allowPickle && !options.allowPickle {
            error("spec.model.allow_pickle",
                  "allow_pickle: true lets pickle weights run code while loading; refused unless the command line also says --allow-pickle")
        }
    }

    // MARK: - Local folders

    private mutating func checkSources() {
        if case .local(let path) = manifest.model.pretrained {
            checkFolder(path, field: "spec.model.pretrained", what: "pretrained model folder")
            if manifest.model.revision != nil {
                error("spec.model.revision", "revision applies to hub ids only; spec.model.pretrained is a local folder")
            }
        }
        if case .local(let path) = manifest.inputs.tokenizer {
            checkFolder(path, field: "spec.inputs.tokenizer", what: "tokenizer folder")
        }
    }

    /// `library: sentence-transformers` takes its pipeline from a folder's modules.json, fed by token ids.
    private mutating func checkLibrary() {
        guard manifest.model.library == "sentence-transformers" else { return }
        guard let source = manifest.model.pretrained else {
            error("spec.model.library", "library: sentence-transformers builds the pipeline that a folder's modules.json lists; give spec.model.pretrained (a sentence-transformers folder or hub id)")
            return
        }
        if case .local(let path) = source, FileManager.default.fileExists(atPath: path),
           !FileManager.default.fileExists(atPath: path + "/modules.json") {
            error("spec.model.library", "library: sentence-transformers needs modules.json in the pretrained folder (\(path)); without it the folder is a plain transformers model: remove library")
        }
        if !manifest.inputs.tensors.contains(where: { $0.name == "input_ids" }) {
            error("spec.inputs.tensors", "library: sentence-transformers feeds the pipeline token ids: add an input_ids tensor (and attention_mask, which pooling uses)")
        }
        if manifest.trace.split != nil {
            error("spec.trace.split", "spec.trace.split is for generation; a sentence-transformers pipeline (library: sentence-transformers) has no decoder to split")
        }
    }

    private mutating func checkFolder(_ path: String, field: String, what: String) {
        var isDir: ObjCBool = false
        let written = loc.entry(field)?.text ?? path
        if !FileManager.default.fileExists(atPath: path, isDirectory: &isDir) {
            error(field, "\(what) '\(written)' does not exist (looked in \(path))")
        } else if !isDir.boolValue {
            error(field, "\(what) '\(written)' is not a folder (\(path))")
        }
    }

    // MARK: - Config

    /// The config as the model will see it: the local pretrained config.json (when there is one) with the manifest's
    /// overrides on top.
    private func effectiveConfig() -> [String: JSONValue] {
        var config: [String: JSONValue] = [:]
        if case .local(let path) = manifest.model.pretrained,
           let data = FileManager.default.contents(atPath: path + "/config.json"),
           let v = try? JSONValue(parsing: data), let o = v.objectValue
        {
            for (k, val) in o { config[k] = val }
        }
        for (k, val) in manifest.model.config { config[k] = val }
        return config
    }

    private mutating func checkConfig(_ config: [String: JSONValue]) {
        if let h = config["hidden_size"]?.intValue, let n = config["num_attention_heads"]?.intValue {
            let written = manifest.model.config.contains { $0.0 == "hidden_size" } ? "spec.model.config.hidden_size"
                : "spec.model.config.num_attention_heads"
            if n < 1 {
                error("spec.model.config.num_attention_heads", "num_attention_heads must be at least 1, got \(n)")
            } else if h % n != 0 {
                error(written, "hidden_size \(h) is not a multiple of num_attention_heads \(n)")
            }
        }
        for key in ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"] {
            if let v = manifest.model.config.first(where: { $0.0 == key })?.1, let i = v.intValue, i < 1 {
                error("spec.model.config.\(key)", "\(key) must be at least 1, got \(i)")
            }
        }
    }

    // MARK: - Text

    private mutating func checkText() {
        let inputs = manifest.inputs
        let textTensors = inputs.tensors.enumerated().filter { $0.element.from == .text }
        for (i, _) in textTensors {
            if inputs.text == nil {
                error("spec.inputs.tensors[\(i)].from", "from: text needs spec.inputs.text")
            }
            if inputs.tokenizer == nil {
                error("spec.inputs.tensors[\(i)].from", "from: text needs spec.inputs.tokenizer (a local folder or hub id)")
            }
        }
        if textTensors.isEmpty {
            if inputs.padTo != nil { error("spec.inputs.pad_to", "pad_to applies to tensors from text, and no tensor comes from text", key: true) }
            if !inputs.mask.isEmpty { error("spec.inputs.mask", "mask applies to tensors from text, and no tensor comes from text", key: true) }
        }
        guard let text = inputs.text else { return }
        // Every whitespace-separated word becomes at least one token, so this is a lower bound on the length.
        let words = text.split(whereSeparator: { $0.isWhitespace }).count
        if let pad = inputs.padTo, pad < words, !textTensors.isEmpty {
            error("spec.inputs.pad_to", "pad_to \(pad) is shorter than the text, which has at least \(words) tokens (\(words) words)")
        }
        if let pad = inputs.padTo {
            for (j, m) in inputs.mask.enumerated() where m >= pad {
                error("spec.inputs.mask[\(j)]", "mask position \(m) is past the padded length \(pad)")
            }
        }
    }

    // MARK: - Tensors

    /// Shapes of nested `values`, or the first place they are not rectangular.
    struct Ragged: Error {
        var field: String
        var what: String
    }

    static func shape(of v: JSONValue, path: String) -> Result<[Int], Ragged> {
        guard let items = v.arrayValue else { return .success([]) }
        var childShape: [Int]?
        for (i, item) in items.enumerated() {
            switch shape(of: item, path: "\(path)[\(i)]") {
            case .failure(let f): return .failure(f)
            case .success(let s):
                if let c = childShape, c != s {
                    let what = c.isEmpty || s.isEmpty ? "mixes numbers and lists"
                        : "is not rectangular: \(path)[\(i)] has \(s[0]) elements, \(path)[0] has \(c[0])"
                    return .failure(Ragged(field: "\(path)[\(i)]", what: what))
                }
                childShape = s
            }
        }
        return .success([items.count] + (childShape ?? []))
    }

    private mutating func checkTensors(vocabSize: Int?) {
        let inputs = manifest.inputs
        var seenNames: [String: Int] = [:]
        // (tensor index, its stated sizes, the field that states them)
        var dims: [(index: Int, sizes: [Int?], field: String)] = []
        for (i, t) in inputs.tensors.enumerated() {
            let base = "spec.inputs.tensors[\(i)]"
            if let first = seenNames[t.name] {
                out.append(.error("tensor '\(t.name)' is given twice; each forward() parameter gets one tensor",
                                  at: loc.location(of: "\(base).name"), field: "\(base).name",
                                  notes: [.init(message: "first given here", location: loc.location(of: "spec.inputs.tensors[\(first)].name"))]))
            } else {
                seenNames[t.name] = i
            }
            switch t.from {
            case .values:
                guard let v = t.values else { continue }
                switch Self.shape(of: v, path: "\(base).values") {
                case .failure(let r):
                    error(r.field, "values of tensor '\(t.name)' \(r.what)")
                case .success(let s):
                    dims.append((i, s.map { Optional($0) }, "\(base).values"))
                    checkValues(v, tensor: t, path: "\(base).values", vocabSize: vocabSize)
                }
            case .random, .zeros, .ones:
                if let s = t.shape {
                    dims.append((i, s.map { Optional($0) }, "\(base).shape"))
                }
                if t.from == .random {
                    checkRandomBounds(t, base: base, vocabSize: vocabSize)
                }
            case .text:
                dims.append((i, [1, inputs.padTo], inputs.padTo != nil ? "spec.inputs.pad_to" : "\(base).from"))
            }
        }
        checkAxes()
        // Dimensions that share an axis name agree in size, in every tensor (AxisNames gives each dimension's axis).
        let axes = StaticShapes(manifest).axes
        var reference: [String: (index: Int, value: Int, field: String)] = [:]
        for d in dims {
            for (dim, axis) in axes[d.index].enumerated() {
                guard let axis, dim < d.sizes.count, let value = d.sizes[dim] else { continue }
                guard let r = reference[axis] else {
                    reference[axis] = (d.index, value, d.field)
                    continue
                }
                guard r.value != value else { continue }
                let a = inputs.tensors[d.index].name, b = inputs.tensors[r.index].name
                let what: String, rule: String
                switch axis {
                case "batch": (what, rule) = ("batch size", "all tensors must agree")
                case "sequence": (what, rule) = ("sequence length", "all tensors must agree")
                case "decoder_sequence": (what, rule) = ("decoder sequence length", "all decoder_* tensors must agree")
                default: (what, rule) = ("\(axis) size", "dimensions that share the axis '\(axis)' must agree")
                }
                out.append(.error(
                    "tensor '\(a)' has \(what) \(value), but '\(b)' has \(r.value); \(rule)",
                    at: loc.location(of: d.field), field: d.field,
                    notes: [.init(message: "'\(b)' has \(what) \(r.value) here", location: loc.location(of: r.field))]))
            }
        }
    }

    /// `axes` as long as the tensor's rank, and envelope ranges only for axes some tensor uses.
    private mutating func checkAxes() {
        let traced = StaticShapes(manifest)
        for (i, t) in manifest.inputs.tensors.enumerated() {
            guard let written = t.axes, let shape = traced.shapes[i] ?? (t.from == .text ? [1, 0] : nil) else { continue }
            if written.count != shape.count {
                let stated = t.from == .text ? "2 dimensions ([batch, sequence] from text)" : "\(shape.count) dimension\(shape.count == 1 ? "" : "s") (shape \(shape))"
                error("spec.inputs.tensors[\(i)].axes", "tensor '\(t.name)' has \(stated), but axes names \(written.count); give one axis name (or null) per dimension")
            }
        }
        let used = traced.used
        for (name, _) in manifest.trace.envelope.named where !used.contains(name) {
            let candidates = Array(Set(used + AxisNames.builtIn)).filter { !$0.contains(".") }.sorted()
            let hint = Suggest.closest(to: name, among: candidates).map { "; did you mean '\($0)'?" } ?? ""
            error("spec.trace.envelope.\(name)", "the envelope ranges axis '\(name)', which no input tensor's axes name (axes in use: \(used.filter { !$0.contains(".") }.joined(separator: ", ")))\(hint)", key: true)
        }
    }

    private static let integerDtypes: Set<String> = ["int64", "int32"]
    private static let tokenIdNames: Set<String> = ["input_ids", "decoder_input_ids"]

    /// Element checks: integers for integer tensors, 0/1 or booleans for bool, token ids inside the vocabulary.
    private mutating func checkValues(_ v: JSONValue, tensor t: TensorSpec, path: String, vocabSize: Int?) {
        var stack: [(JSONValue, String)] = [(v, path)]
        var reported = 0
        while let (node, p) = stack.popLast(), reported < 5 {
            if let items = node.arrayValue {
                for (i, item) in items.enumerated().reversed() { stack.append((item, "\(p)[\(i)]")) }
                continue
            }
            if Self.integerDtypes.contains(t.dtype) {
                guard let n = node.intValue, node.boolValue == nil else {
                    error(p, "tensor '\(t.name)' has dtype \(t.dtype), but \(DocumentValidator.describe(node)) is not an integer")
                    reported += 1
                    continue
                }
                if Self.tokenIdNames.contains(t.name), let vocab = vocabSize, n < 0 || n >= vocab {
                    error(p, "token id \(n) in '\(t.name)' is outside the vocabulary (vocab_size \(vocab): ids 0...\(vocab - 1))")
                    reported += 1
                }
            } else if t.dtype == "bool" {
                if node.boolValue == nil, node.intValue != 0, node.intValue != 1 {
                    error(p, "tensor '\(t.name)' has dtype bool, but \(DocumentValidator.describe(node)) is neither true/false nor 0/1")
                    reported += 1
                }
            } else if node.doubleValue == nil {
                error(p, "tensor '\(t.name)' has dtype \(t.dtype), but \(DocumentValidator.describe(node)) is not a number")
                reported += 1
            }
        }
    }

    private mutating func checkRandomBounds(_ t: TensorSpec, base: String, vocabSize: Int?) {
        let isInt = Self.integerDtypes.contains(t.dtype)
        if let low = t.low, let high = t.high, low >= high {
            error("\(base).high", "random tensor '\(t.name)' needs low < high, got low \(Self.num(low)) and high \(Self.num(high))")
        }
        let configKnown: Bool
        if case .hub = manifest.model.pretrained { configKnown = false } else { configKnown = true }
        if isInt && t.high == nil && vocabSize == nil && configKnown {
            error("\(base).from", "random integer tensor '\(t.name)' needs `high`, or a config that states vocab_size")
        }
        if isInt, Self.tokenIdNames.contains(t.name), let vocab = vocabSize, let high = t.high, high > Double(vocab) {
            error("\(base).high", "high \(Self.num(high)) would draw token ids outside the vocabulary (vocab_size \(vocab))")
        }
    }

    static func num(_ d: Double) -> String { d.rounded() == d && abs(d) < 1e15 ? String(Int(d)) : String(d) }

    // MARK: - Target combinations

    /// Combinations that cannot work on the target, refused before any Python starts.
    private mutating func checkTargetCombinations() {
        let hw = manifest.target.hardware
        let neuron = hw == "inf1" || hw == "inf2"
        let formats = manifest.output.formats
        let aotiOnly = !formats.contains("torchscript")
        if aotiOnly && !formats.contains("aoti") {
            error("spec.output.formats", "formats must include torchscript (model.pt) or aoti (model.pt2)")
        }
        if aotiOnly && formats.contains("aoti") {
            if manifest.trace.split != nil {
                error("spec.output.formats", "formats: [aoti] alone cannot serve spec.trace.split: the split artifacts are TorchScript (add torchscript: [torchscript, aoti])")
            }
            for (i, d) in manifest.output.deploy.enumerated() {
                switch d {
                case .triton(_, let format) where format != "aoti":
                    error("spec.output.deploy[\(i)].format", "format: \(format) serves model.pt, which formats: [aoti] does not build; use format: aoti, or add torchscript to spec.output.formats")
                case .torchserve:
                    error("spec.output.deploy[\(i)].kind", "torchserve serves model.pt, which formats: [aoti] does not build; add torchscript to spec.output.formats")
                default: break
                }
            }
        }
        if formats.contains("aoti") && neuron {
            error("spec.output.formats", "aoti compiles with AOTInductor for CPU and CUDA; target \(hw) is compiled by the Neuron SDK (remove aoti, or use hardware cpu or cuda)")
        }
        for (i, d) in manifest.output.deploy.enumerated() {
            if case .triton(_, let format) = d, format == "aoti", !formats.contains("aoti") {
                error("spec.output.deploy[\(i)].format", "format: aoti serves model.pt2, which spec.output.formats does not build; add aoti there")
            }
        }
        if manifest.target.quantize != "none" {
            let q = manifest.target.quantize
            if hw != "cpu" {
                error("spec.target.quantize", "quantize: \(q) is dynamic quantization, whose int8 kernels (fbgemm/oneDNN) run on the CPU only; target \(hw) cannot run it (use hardware cpu, or quantize: none)")
            } else if manifest.model.dtype != "float32" {
                error("spec.target.quantize", "quantize: \(q) quantizes a float32 model; spec.model.dtype is \(manifest.model.dtype) (use dtype float32 with quantize, or quantize: none)")
            } else if formats.contains("aoti") && formats.contains("torchscript") {
                error("spec.target.quantize", "quantize: \(q) makes one int8 artifact: formats: [torchscript] quantizes with torch.ao for model.pt, formats: [aoti] with torchao for model.pt2 (the faster one); list one of them, not both")
            } else if manifest.trace.split != nil {
                error("spec.target.quantize", "quantize: \(q) is not supported with spec.trace.split yet: only the single traced model is quantized and verified (remove split, or use quantize: none)")
            }
        }
        if neuron && manifest.target.optimize != "none" {
            error("spec.target.optimize",
                  "optimize: \(manifest.target.optimize) works on torch.jit traces; target \(hw) is compiled by the Neuron SDK, which optimises its own graph (use optimize: none)")
        }
        for (i, d) in manifest.output.deploy.enumerated() {
            if case .triton = d, neuron {
                error("spec.output.deploy[\(i)].kind",
                      "a triton deploy serves the artifact with Triton's pytorch_libtorch backend, which cannot run an \(hw) (Neuron) artifact; deploy it with kind: torchserve or directory")
            }
        }
    }

    // MARK: - Output paths

    private mutating func checkOutputPaths() {
        let root = options.outputRoot
        let dirField = loc.entry("spec.output.dir") != nil ? "spec.output.dir" : "metadata.name"
        if case .failure(let r) = OutputPaths.resolve(manifest.output.dir, root: root, realRoot: options.realOutputRoot) {
            error(dirField, "output.dir " + OutputPaths.explain(r, path: manifest.output.dir))
        }
        for (i, d) in manifest.output.deploy.enumerated() {
            let field: String, path: String
            switch d {
            case .directory, .oci: continue
            case .triton(let repo, _): (field, path) = ("spec.output.deploy[\(i)].repository", repo)
            case .torchserve(let store): (field, path) = ("spec.output.deploy[\(i)].store", store)
            }
            if case .failure(let r) = OutputPaths.resolve(path, root: root, realRoot: options.realOutputRoot) {
                error(field, "\(d.kind) deploy path " + OutputPaths.explain(r, path: path))
            }
        }
    }
}
