import Diagnostics

/// The policy for `spec.model.config` keys the model's config class does not declare, given the keys it does declare
/// (the worker's `config_keys` answer). A key one or two edits from a declared key (one for keys of four letters or
/// fewer) is a typo: an error at the key, naming the key it meant, because transformers would store it silently and
/// build the model without it. A key far from every declared key is a warning: it is passed to the config, which
/// stores it as an attribute, and a model that reads it (T5's `decoder_start_token_id`) uses it.
public enum ConfigKeyCheck {
    /// The most edits at which an undeclared key counts as a typo of a declared one.
    public static func typoLimit(_ key: String) -> Int { key.count <= 4 ? 1 : 2 }

    /// The declared key `key` most likely meant, when `key` is not declared itself and is within the typo limit.
    public static func intended(_ key: String, declared: Set<String>) -> String? {
        if declared.contains(key) || declared.contains("_" + key) { return nil }
        let limit = typoLimit(key)
        var best: (String, Int)?
        for candidate in declared.sorted() where !candidate.hasPrefix("_") {
            let d = Suggest.distance(key, candidate)
            if d <= limit, d < (best?.1 ?? .max) { best = (candidate, d) }
        }
        return best?.0
    }

    /// Errors for the typo'd keys of `manifest`'s `spec.model.config` (the worker warns about the other undeclared
    /// keys when it builds the config).
    public static func diagnostics(_ manifest: Manifest, configClass: String, declared: Set<String>) -> [Diagnostic] {
        var out: [Diagnostic] = []
        for (key, _) in manifest.model.config {
            let field = "spec.model.config.\(key)"
            let at = manifest.locations.keyLocation(of: field)
            if let meant = intended(key, declared: declared) {
                out.append(.error("config key '\(key)' is not a key of \(configClass); did you mean '\(meant)'?", at: at, field: field))
            }
        }
        return out
    }
}
