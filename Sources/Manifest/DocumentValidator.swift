import Diagnostics
import Foundation
import JSON
import JSONSchema
import YAML

/// Validates one YAML document: version and kind, then the schema, then the semantic checks; decodes it on success.
struct DocumentValidator {
    let options: ValidationOptions
    let file: String
    let directory: URL

    func validate(_ doc: Document) -> (Manifest?, [Diagnostic]) {
        var converter = NodeConverter(file: file)
        let value = converter.convert(doc.root)
        let locations = converter.locations

        if let d = versionCheck(value, locations) { return (nil, [d]) }

        let violations = ManifestSchema.validator.validate(value)
        if !violations.isEmpty {
            var seen = Set<String>()
            var out: [Diagnostic] = []
            for v in violations {
                let d = diagnostic(for: v, locations)
                let key = "\(d.location.map { "\($0.line):\($0.column)" } ?? "")|\(d.message)"
                if seen.insert(key).inserted { out.append(d) }
            }
            // The semantic checks whose inputs are valid still run, so one validate reports every problem.
            for d in checksAround(violations, value, locations, documentIndex: doc.index) {
                let key = "\(d.location.map { "\($0.line):\($0.column)" } ?? "")|\(d.message)"
                if seen.insert(key).inserted { out.append(d) }
            }
            return (nil, out.sorted { ($0.location ?? .init(file: "", line: 0, column: 0)) < ($1.location ?? .init(file: "", line: 0, column: 0)) })
        }

        let manifest = decode(value, locations, documentIndex: doc.index)
        var checker = SemanticChecker(manifest: manifest, options: options)
        let diagnostics = checker.check()
        return (manifest, diagnostics)
    }

    /// The semantic checks of a document the schema refused, on the fields the schema did not refuse: every refused
    /// value is replaced by null (its field then decodes to its default, or is left out), and a check's diagnostic
    /// about a refused field, or a field inside one, is dropped. A missing required field refuses nothing (its default
    /// stands in); a refused document root, or a root that is not a mapping, leaves nothing to check.
    func checksAround(_ violations: [SchemaViolation], _ value: JSONValue, _ locations: FieldLocations, documentIndex: Int) -> [Diagnostic] {
        guard value.objectValue != nil else { return [] }
        var refused: [[PathComponent]] = []
        for v in violations {
            switch v.keyword {
            case "required", "dependentRequired": continue
            case "additionalProperties", "unevaluatedProperties", "propertyNames":
                refused.append(v.instancePath + (v.offendingKey.map { [PathComponent.key($0)] } ?? []))
            default: refused.append(v.instancePath)
            }
        }
        // A refused element of a list of numbers or lists (a shape, a range, values) refuses the whole list: the
        // elements' positions carry their meaning. A refused mapping in a list (a tensor, a deploy) is that entry only.
        refused = refused.map { path in
            var p = path
            while case .index? = p.last, value.value(at: p)?.objectValue == nil { p.removeLast() }
            return p
        }
        if refused.contains(where: \.isEmpty) { return [] }
        var pruned = value
        for path in refused { pruned = Self.nulled(pruned, at: path[...]) }
        let refusedFields = Set(refused.map(fieldPath))
        func isRefused(_ field: String) -> Bool {
            var f: String? = field
            while let current = f, !current.isEmpty {
                if refusedFields.contains(current) { return true }
                f = FieldLocations.parent(of: current)
            }
            return false
        }
        var checker = SemanticChecker(manifest: decode(pruned, locations, documentIndex: documentIndex), options: options)
        return checker.check().filter { d in d.severity != .error || !(d.field.map(isRefused) ?? true) }
    }

    /// `value` with the node at `path` replaced by null (unchanged where the path does not lead anywhere).
    static func nulled(_ value: JSONValue, at path: ArraySlice<PathComponent>) -> JSONValue {
        guard let first = path.first else { return .null }
        switch (value, first) {
        case (.object(let pairs), .key(let k)):
            return .object(pairs.map { $0.0 == k ? ($0.0, nulled($0.1, at: path.dropFirst())) : $0 })
        case (.array(let items), .index(let i)) where items.indices.contains(i):
            var items = items
            items[i] = nulled(items[i], at: path.dropFirst())
            return .array(items)
        default:
            return value
        }
    }

    /// An unsupported apiVersion or kind makes the rest meaningless: say only that.
    private func versionCheck(_ value: JSONValue, _ locations: FieldLocations) -> Diagnostic? {
        guard value.objectValue != nil else { return nil }
        if let v = value["apiVersion"], v != .string("tsexport/v1") {
            return .error(
                "unsupported apiVersion \(Self.describe(v)); this tsexport reads apiVersion: tsexport/v1",
                at: locations.location(of: "apiVersion"), field: "apiVersion")
        }
        if let k = value["kind"], k != .string("Export") {
            return .error(
                "unsupported kind \(Self.describe(k)); the only kind is Export",
                at: locations.location(of: "kind"), field: "kind")
        }
        return nil
    }

    static func describe(_ v: JSONValue) -> String {
        switch v {
        case .string(let s): return "'\(s)'"
        default: return v.serialized(pretty: false)
        }
    }

    /// Turns one schema violation into a diagnostic at the offending node (the key, for unknown fields).
    private func diagnostic(for v: SchemaViolation, _ locations: FieldLocations) -> Diagnostic {
        let path = fieldPath(v.instancePath)
        let context = path.isEmpty ? "" : "\(path): "
        if let key = v.offendingKey, v.keyword == "additionalProperties" || v.keyword == "unevaluatedProperties"
            || v.keyword == "propertyNames"
        {
            let keyPath = path.isEmpty ? key : "\(path).\(key)"
            if v.keyword == "propertyNames" {
                return .error("\(context)\(v.message)", at: locations.keyLocation(of: keyPath), field: keyPath)
            }
            var message = "unknown field '\(key)'" + (path.isEmpty ? "" : " in \(path)")
            if let suggestion = Suggest.closest(to: key, among: v.allowedKeys) {
                message += "; did you mean '\(suggestion)'?"
            } else if !v.allowedKeys.isEmpty {
                message += " (known fields: \(v.allowedKeys.joined(separator: ", ")))"
            }
            return .error(message, at: locations.keyLocation(of: keyPath), field: keyPath)
        }
        var message = "\(context)\(v.message)"
        if v.keyword == "pattern", let text = locations.entry(path)?.text {
            message = "\(context)'\(text)' is not \(Self.patternMeaning(path)) (pattern \(v.message.components(separatedBy: " ").last ?? ""))"
        }
        if v.keyword == "type", let entry = locations.entry(path), let text = entry.text {
            message += Self.typeHint(text: text, quoted: entry.quoted)
        }
        // A missing field is reported where its parent is named, which is where the user will add it.
        let location = v.keyword == "required" || v.keyword == "dependentRequired"
            ? locations.keyLocation(of: path) : locations.location(of: path)
        return .error(message, at: location, field: path.isEmpty ? nil : path)
    }

    /// What a pattern-checked field must look like, in words.
    static func patternMeaning(_ path: String) -> String {
        if path == "metadata.name" {
            return "a valid name: lowercase letters, digits and '-', starting and ending with a letter or digit"
        }
        if path == "spec.model.class" { return "a class name: a Python identifier such as BertModel" }
        if path.hasSuffix(".name") { return "a forward() parameter name: a Python identifier such as input_ids" }
        if path.hasPrefix("metadata.labels") { return "a valid label" }
        return "in the expected form"
    }

    /// Why a scalar that looks like a number or boolean is a string here.
    static func typeHint(text: String, quoted: Bool) -> String {
        let yaml11 = ["yes", "no", "on", "off", "y", "n", "Yes", "No", "On", "Off", "YES", "NO", "ON", "OFF", "Y", "N"]
        if quoted {
            if Double(text) != nil || ["true", "false"].contains(text.lowercased()) {
                return " (a quoted value is a string; remove the quotes)"
            }
        } else if yaml11.contains(text) {
            return " ('\(text)' is a string in YAML 1.2; write true or false)"
        }
        return ""
    }

    /// `trace.envelope` as written; the schema has checked its shape.
    static func envelope(_ v: JSONValue?) -> Envelope {
        func range(_ r: JSONValue?) -> SizeRange? {
            guard let a = r?.arrayValue, a.count == 2, let lo = a[0].intValue, let hi = a[1].intValue else { return nil }
            return SizeRange(lo, hi)
        }
        var dims: [String: [Int: SizeRange]] = [:]
        for (name, byIndex) in v?["dims"]?.objectValue ?? [] {
            for (index, r) in byIndex.objectValue ?? [] {
                if let i = Int(index), let r = range(r) { dims[name, default: [:]][i] = r }
            }
        }
        var e = Envelope(batch: range(v?["batch"]), sequence: range(v?["sequence"]), decoderSequence: range(v?["decoder_sequence"]), dims: dims)
        for (name, r) in v?.objectValue ?? [] where !["batch", "sequence", "decoder_sequence", "dims"].contains(name) {
            if let r = range(r) { e.named.append((name, r)) }
        }
        return e
    }

    /// Decodes a document the schema accepted; defaults come from the contract.
    private func decode(_ v: JSONValue, _ locations: FieldLocations, documentIndex: Int) -> Manifest {
        let metadata = v["metadata"]
        let spec = v["spec"]
        let model = spec?["model"]
        let inputs = spec?["inputs"]
        let trace = spec?["trace"]
        let target = spec?["target"]
        let output = spec?["output"]
        let name = metadata?["name"]?.stringValue ?? ""
        var labels: [String: String] = [:]
        for (k, lv) in metadata?["labels"]?.objectValue ?? [] { labels[k] = lv.stringValue ?? "" }

        let dtype = model?["dtype"]?.stringValue ?? ManifestDefaults.dtype
        let formats = output?["formats"]?.arrayValue?.compactMap(\.stringValue) ?? ManifestDefaults.formats
        let compiledInt8 = (spec?["target"]?["quantize"]?.stringValue ?? ManifestDefaults.quantize) != "none" && !formats.contains("torchscript")
        let defaults = ManifestDefaults.tolerance(dtype: dtype, compiledInt8: compiledInt8)
        let tensors: [TensorSpec] = (inputs?["tensors"]?.arrayValue ?? []).map { t in
            TensorSpec(
                name: t["name"]?.stringValue ?? "",
                from: TensorSpec.Source(rawValue: t["from"]?.stringValue ?? "") ?? .values,
                values: t["values"],
                shape: t["shape"]?.arrayValue?.compactMap(\.intValue),
                dtype: t["dtype"]?.stringValue ?? ManifestDefaults.tensorDtype,
                low: t["low"]?.doubleValue,
                high: t["high"]?.doubleValue,
                axes: t["axes"]?.arrayValue?.map(\.stringValue))
        }
        let deploy: [DeployTarget] = (output?["deploy"]?.arrayValue ?? []).compactMap { d in
            switch d["kind"]?.stringValue {
            case "directory": return .directory
            case "triton": return .triton(repository: d["repository"]?.stringValue ?? "", format: d["format"]?.stringValue ?? "torchscript")
            case "torchserve": return .torchserve(store: d["store"]?.stringValue ?? "")
            case "oci": return .oci(repository: d["repository"]?.stringValue ?? "")
            default: return nil
            }
        }
        return Manifest(
            file: file, documentIndex: documentIndex, name: name, labels: labels,
            model: .init(
                className: model?["class"]?.stringValue ?? "",
                pretrained: model?["pretrained"]?.stringValue.map { SourceResolver.classify($0, relativeTo: directory) },
                revision: model?["revision"]?.stringValue,
                config: model?["config"]?.objectValue ?? [],
                torchscript: model?["torchscript"]?.boolValue ?? ManifestDefaults.torchscript,
                seed: model?["seed"]?.intValue ?? ManifestDefaults.seed,
                dtype: dtype,
                attnImplementation: model?["attn_implementation"]?.stringValue ?? ManifestDefaults.attnImplementation,
                trustRemoteCode: model?["trust_remote_code"]?.boolValue ?? false,
                allowPickle: model?["allow_pickle"]?.boolValue ?? false,
                library: model?["library"]?.stringValue ?? ManifestDefaults.library,
                forward: model?["forward"]?.objectValue ?? []),
            inputs: .init(
                tokenizer: inputs?["tokenizer"]?.stringValue.map { SourceResolver.classify($0, relativeTo: directory) },
                text: inputs?["text"]?.stringValue,
                addSpecialTokens: inputs?["add_special_tokens"]?.boolValue ?? false,
                mask: inputs?["mask"]?.arrayValue?.compactMap(\.intValue) ?? [],
                padTo: inputs?["pad_to"]?.intValue,
                tensors: tensors),
            trace: .init(
                strict: trace?["strict"]?.boolValue ?? ManifestDefaults.strict,
                envelope: Self.envelope(trace?["envelope"]),
                checkShapes: trace?["check_shapes"]?.arrayValue?.map { $0.arrayValue?.compactMap(\.intValue) ?? [] } ?? [],
                atol: trace?["tolerance"]?["atol"]?.doubleValue ?? defaults.atol,
                rtol: trace?["tolerance"]?["rtol"]?.doubleValue ?? defaults.rtol,
                minCosine: trace?["tolerance"]?["min_cosine"]?.doubleValue
                    ?? ManifestDefaults.minCosine(dtype: dtype, quantize: target?["quantize"]?.stringValue ?? ManifestDefaults.quantize),
                split: trace?["split"].map { ($0["kind"]?.stringValue ?? "encoder-decoder", $0["max_length"]?.intValue ?? 64, $0["cache"]?.boolValue ?? false) }),
            target: .init(
                hardware: target?["hardware"]?.stringValue ?? ManifestDefaults.hardware,
                optimize: target?["optimize"]?.stringValue ?? ManifestDefaults.optimize,
                quantize: target?["quantize"]?.stringValue ?? ManifestDefaults.quantize),
            output: .init(
                dir: output?["dir"]?.stringValue ?? ManifestDefaults.outputDir(name: name),
                formats: formats,
                deploy: deploy),
            document: v, locations: locations, directory: directory)
    }
}

/// "Did you mean" suggestions by edit distance.
public enum Suggest {
    /// The closest candidate within a distance that still looks like a typo, if any.
    public static func closest(to word: String, among candidates: [String]) -> String? {
        let limit = word.count <= 3 ? 1 : (word.count <= 8 ? 2 : 3)
        var best: (String, Int)?
        for c in candidates {
            let d = distance(word.lowercased(), c.lowercased())
            if d <= limit, d < (best?.1 ?? .max) { best = (c, d) }
        }
        return best?.0
    }

    /// Edit distance where swapping two neighbouring letters counts as one edit (optimal string alignment), since
    /// `modle` for `model` is one slip of the fingers.
    public static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var d = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
        for i in 0...a.count { d[i][0] = i }
        for j in 0...b.count { d[0][j] = j }
        for i in 1...a.count {
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] { d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1) }
            }
        }
        return d[a.count][b.count]
    }
}
