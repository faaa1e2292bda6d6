/// A loading failure, with the position libyaml or the loader found it at, so it can be printed compiler-style.
public struct YAMLError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What went wrong, as a stable category that callers and tests can match on without parsing messages.
    public enum Kind: String, Sendable, Hashable, Codable {
        /// libyaml rejected the text (scanner or parser error); the message is libyaml's own.
        case syntax
        /// Bytes that are not valid UTF-8/UTF-16, or characters YAML forbids (NUL and other control characters).
        case invalidEncoding
        /// The input is larger than `LoaderLimits.maxBytes`; checked before parsing.
        case tooLarge
        /// Sequences and mappings are nested deeper than `LoaderLimits.maxDepth`.
        case tooDeep
        /// Alias references would add more than `LoaderLimits.maxAliasExpansion` nodes ("billion laughs").
        case aliasBudget
        /// An alias was used while `LoaderLimits.allowAliases` is false.
        case aliasRefused
        /// An alias names no preceding anchor in its document, or names the node that contains it.
        case unknownAlias
        /// An explicit tag outside the YAML core schema under `TagPolicy.coreOnly` (e.g. `!!python/object`).
        case unsafeTag
        /// A core tag that does not fit its node: `!!int abc`, `!!bool 1`, `!!map` on a sequence, ...
        case invalidTaggedValue
        /// A mapping key equal (by resolved value) to an earlier key of the same mapping.
        case duplicateKey
        /// libyaml ran out of memory.
        case outOfMemory
    }

    /// A second position that helps explain the error (e.g. where a duplicated key was first defined).
    public struct Note: Equatable, Hashable, Sendable {
        /// What the position shows, e.g. "first defined here".
        public var message: String
        /// The position.
        public var mark: Mark

        /// Creates a note.
        public init(message: String, mark: Mark) {
            self.message = message
            self.mark = mark
        }
    }

    /// The error's category.
    public var kind: Kind
    /// A one-line description, e.g. `duplicate key 'name'` or libyaml's `did not find expected key`.
    public var message: String
    /// Where the problem is (1-based), or nil when it concerns the whole input (`tooLarge`).
    public var mark: Mark?
    /// An optional second position, e.g. the first definition of a duplicated key.
    public var note: Note?

    /// Creates an error.
    public init(kind: Kind, message: String, mark: Mark? = nil, note: Note? = nil) {
        self.kind = kind
        self.message = message
        self.mark = mark
        self.note = note
    }

    /// `line:column: message` (plus the note), for logs and test output; real diagnostics prefix the file name.
    public var description: String {
        var text = mark.map { "\($0): \(message)" } ?? message
        if let note { text += " (\(note.mark): note: \(note.message))" }
        return text
    }
}

/// Which explicit tags the loader accepts.
public enum TagPolicy: Sendable, Hashable {
    /// Refuse every explicit tag except the YAML core schema's (`!!str`, `!!int`, `!!float`, `!!bool`, `!!null`,
    /// `!!seq`, `!!map`) and the non-specific `!`: manifests never need others, and language-specific tags such as
    /// `!!python/object` are how YAML loaders get exploited.
    case coreOnly
    /// Keep other tags on the node as data (scalars with them are strings). Meant for conformance testing.
    case ignoreUnknown
}

/// Limits that make loading untrusted YAML safe: each one turns a resource attack into a positioned error.
public struct LoaderLimits: Sendable, Hashable {
    /// Largest accepted input in bytes, per file; checked before libyaml sees any byte.
    public var maxBytes: Int = 1 << 20
    /// Deepest accepted nesting of sequences and mappings (flow and block alike), checked at each collection start.
    /// Aliases do not count: they share an already-built node.
    public var maxDepth: Int = 64
    /// Total nodes that alias references may add when expanded: each alias use adds the node count of the (fully
    /// expanded) aliased subtree to a running total per file. Bounds the cost of any later walk of the tree.
    public var maxAliasExpansion: Int = 10_000
    /// Whether aliases (`*name`) are accepted at all.
    public var allowAliases: Bool = true
    /// Which explicit tags are accepted.
    public var tagPolicy: TagPolicy = .coreOnly

    /// Creates limits; every parameter defaults to the value safe for manifests.
    public init(
        maxBytes: Int = 1 << 20,
        maxDepth: Int = 64,
        maxAliasExpansion: Int = 10_000,
        allowAliases: Bool = true,
        tagPolicy: TagPolicy = .coreOnly
    ) {
        self.maxBytes = maxBytes
        self.maxDepth = maxDepth
        self.maxAliasExpansion = maxAliasExpansion
        self.allowAliases = allowAliases
        self.tagPolicy = tagPolicy
    }
}
