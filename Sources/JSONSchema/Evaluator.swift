import Foundation
import JSON

/// Annotations an evaluation produces that `unevaluatedProperties`/`unevaluatedItems` consume.
struct Annotations {
    var properties: Set<String> = []
    var allItems = false
    var prefixItems = 0
    var itemIndices: Set<Int> = []

    mutating func merge(_ other: Annotations) {
        if !other.properties.isEmpty { properties.formUnion(other.properties) }
        if other.allItems { allItems = true }
        if other.prefixItems > prefixItems { prefixItems = other.prefixItems }
        if !other.itemIndices.isEmpty { itemIndices.formUnion(other.itemIndices) }
    }
}

/// A violation plus the data needed to merge alternatives (expected type names / allowed values).
struct Issue {
    var violation: SchemaViolation
    var expected: [String] = []
}

/// Mutable state of one validation run. `collect == false` is the fast "is it valid?" mode used inside
/// `anyOf`/`oneOf`/`not`/`if`/`contains`, which stops at the first failure and builds no messages.
struct EvaluationContext {
    var collect: Bool
    var issues: [Issue] = []
    var instancePath: [PathComponent] = []
    var schemaPath: [String] = []
    /// The dynamic scope: resource indices entered so far, outermost first.
    var scope: [Int] = []
    /// Nesting of evaluate calls overall, and since the last step down into the instance. A `$ref` cycle that makes
    /// no progress through the instance would otherwise recurse forever; it is reported instead.
    var depth = 0
    var depthAtThisLocation = 0
}

/// Evaluates compiled nodes against instances.
struct Evaluator {
    let program: CompiledProgram
    let track: Bool
    static let maxDepth = 400
    static let maxDepthAtOneLocation = 64

    init(program: CompiledProgram) {
        self.program = program
        self.track = program.tracksAnnotations
    }

    // MARK: Reporting

    private func schemaPointer(_ ctx: EvaluationContext, _ extra: [String]) -> String {
        var s = ""
        for seg in ctx.schemaPath { s += "/"; s += JSONPointer.escape(seg) }
        for seg in extra { s += "/"; s += JSONPointer.escape(seg) }
        return s
    }

    private func fail(_ ctx: inout EvaluationContext, _ keyword: String, _ message: @autoclosure () -> String,
                      schema extra: [String]? = nil, at instanceExtra: PathComponent? = nil,
                      offendingKey: String? = nil, allowedKeys: [String] = [], expected: [String] = []) {
        guard ctx.collect else { return }
        var path = ctx.instancePath
        if let instanceExtra { path.append(instanceExtra) }
        let v = SchemaViolation(instancePath: path, keyword: keyword, schemaPath: schemaPointer(ctx, extra ?? [keyword]),
                                message: message(), offendingKey: offendingKey, allowedKeys: allowedKeys)
        ctx.issues.append(Issue(violation: v, expected: expected))
    }

    // MARK: Evaluation

    func evaluate(_ node: SchemaNode, _ instance: JSONValue, _ ctx: inout EvaluationContext, _ ann: inout Annotations) -> Bool {
        if let b = node.boolean {
            if !b { fail(&ctx, "false", "no value is allowed here", schema: []) }
            return b
        }
        if ctx.depth >= Evaluator.maxDepth || ctx.depthAtThisLocation >= Evaluator.maxDepthAtOneLocation {
            fail(&ctx, "$ref", "schema recursion too deep (a $ref cycle that never moves into the value?)", schema: [])
            return false
        }
        ctx.depth += 1
        ctx.depthAtThisLocation += 1
        let pushed = ctx.scope.last != node.resource
        if pushed { ctx.scope.append(node.resource) }
        defer {
            ctx.depth -= 1
            ctx.depthAtThisLocation -= 1
            if pushed { ctx.scope.removeLast() }
        }
        var valid = true
        var typeFailed = false
        for check in node.checks {
            let ok: Bool
            // Pattern matches without bindings keep this frame small: it is on the stack once per nesting level.
            switch check {
            case .type, .const, .enumeration, .minLength, .maxLength, .pattern, .minimum, .maximum, .exclusiveMinimum,
                 .exclusiveMaximum, .multipleOf, .minItems, .maxItems, .uniqueItems, .minProperties, .maxProperties:
                ok = assertion(check, instance, &ctx, &typeFailed)
            default:
                ok = applicator(check, node, instance, &ctx, &ann)
            }
            if !ok {
                valid = false
                if !ctx.collect { return false }
            }
        }
        return valid
    }

    /// Keywords that look at the instance alone.
    private func assertion(_ check: Check, _ instance: JSONValue, _ ctx: inout EvaluationContext,
                           _ typeFailed: inout Bool) -> Bool {
        var ok = true
        switch check {
        case .type(let mask, let names):
            ok = mask.admits(instance)
            if !ok {
                typeFailed = true
                fail(&ctx, "type", "expected \(Messages.list(names, conjunction: "or")), got \(Messages.describe(instance))",
                     expected: names)
            }
        case .const(let expected):
            ok = instance == expected
            if !ok && !(typeFailed && ctx.collect) {
                fail(&ctx, "const", "value \(Messages.show(instance)) must be \(Messages.show(expected))",
                     expected: [Messages.option(expected)])
            }
        case .enumeration(let options):
            ok = options.contains(instance)
            if !ok && !(typeFailed && ctx.collect) {
                let shown = options.map(Messages.option)
                fail(&ctx, "enum", "value \(Messages.show(instance)) is not one of: \(shown.joined(separator: ", "))",
                     expected: shown)
            }
        case .minLength(let n):
            guard case .string(let s) = instance else { return true }
            ok = s.utf8.count >= n && s.unicodeScalars.count >= n
            if !ok { fail(&ctx, "minLength", "must be at least \(Messages.count(n, "character")) long") }
        case .maxLength(let n):
            guard case .string(let s) = instance else { return true }
            ok = s.utf8.count <= n || s.unicodeScalars.count <= n
            if !ok { fail(&ctx, "maxLength", "must be at most \(Messages.count(n, "character")) long") }
        case .pattern(let p):
            guard case .string(let s) = instance else { return true }
            ok = p.matches(s)
            if !ok { fail(&ctx, "pattern", "must match pattern \(p.source)") }
        case .minimum(let limit):
            guard let c = Evaluator.compare(instance, limit) else { return true }
            ok = c >= 0
            if !ok { fail(&ctx, "minimum", "must be >= \(limit.serialized())") }
        case .maximum(let limit):
            guard let c = Evaluator.compare(instance, limit) else { return true }
            ok = c <= 0
            if !ok { fail(&ctx, "maximum", "must be <= \(limit.serialized())") }
        case .exclusiveMinimum(let limit):
            guard let c = Evaluator.compare(instance, limit) else { return true }
            ok = c > 0
            if !ok { fail(&ctx, "exclusiveMinimum", "must be > \(limit.serialized())") }
        case .exclusiveMaximum(let limit):
            guard let c = Evaluator.compare(instance, limit) else { return true }
            ok = c < 0
            if !ok { fail(&ctx, "exclusiveMaximum", "must be < \(limit.serialized())") }
        case .multipleOf(let divisor):
            guard let r = Evaluator.isMultiple(instance, of: divisor) else { return true }
            ok = r
            if !ok { fail(&ctx, "multipleOf", "must be a multiple of \(divisor.serialized())") }
        case .minItems(let n):
            guard case .array(let items) = instance else { return true }
            ok = items.count >= n
            if !ok { fail(&ctx, "minItems", "must have at least \(Messages.count(n, "item"))") }
        case .maxItems(let n):
            guard case .array(let items) = instance else { return true }
            ok = items.count <= n
            if !ok { fail(&ctx, "maxItems", "must have at most \(Messages.count(n, "item"))") }
        case .uniqueItems:
            guard case .array(let items) = instance else { return true }
            if let (i, j) = Evaluator.firstDuplicate(items) {
                ok = false
                fail(&ctx, "uniqueItems", "must not contain duplicate items (items \(i) and \(j) are equal)")
            } else {
                ok = true
            }
        case .minProperties(let n):
            guard case .object(let pairs) = instance else { return true }
            ok = pairs.count >= n
            if !ok { fail(&ctx, "minProperties", "must have at least \(Messages.count(n, "field"))") }
        case .maxProperties(let n):
            guard case .object(let pairs) = instance else { return true }
            ok = pairs.count <= n
            if !ok { fail(&ctx, "maxProperties", "must have at most \(Messages.count(n, "field"))") }
        default:
            break
        }
        return ok
    }

    /// Keywords that apply subschemas or need the whole object/array. Each case delegates to a small function so
    /// that recursion (one trip through here per nesting level) keeps stack frames small, even in debug builds.
    private func applicator(_ check: Check, _ node: SchemaNode, _ instance: JSONValue, _ ctx: inout EvaluationContext,
                            _ ann: inout Annotations) -> Bool {
        switch check {
        case .required(let names):
            guard case .object(let pairs) = instance else { return true }
            return checkRequired(names, pairs, &ctx)
        case .dependentRequired(let deps):
            guard case .object(let pairs) = instance else { return true }
            return checkDependentRequired(deps, pairs, &ctx)
        case .properties(let applicators):
            guard case .object(let pairs) = instance else { return true }
            return checkProperties(applicators, node, pairs, &ctx, &ann)
        case .propertyNames(let sub):
            guard case .object(let pairs) = instance else { return true }
            return checkPropertyNames(sub, pairs, &ctx)
        case .dependentSchemas(let deps):
            guard case .object(let pairs) = instance else { return true }
            return checkDependentSchemas(deps, pairs, instance, &ctx, &ann)
        case .items(let prefix, let rest):
            guard case .array(let items) = instance else { return true }
            return checkItems(prefix, rest, items, &ctx, &ann)
        case .contains(let sub, let minC, let maxC):
            guard case .array(let items) = instance else { return true }
            return checkContains(sub, minC, maxC, items, &ctx, &ann)
        case .allOf(let subs):
            return checkAllOf(subs, instance, &ctx, &ann)
        case .anyOf(let subs):
            return checkAnyOf(subs, instance, &ctx, &ann)
        case .oneOf(let subs):
            return checkOneOf(subs, instance, &ctx, &ann)
        case .not(let sub):
            return checkNot(sub, instance, &ctx)
        case .conditional(let ifNode, let thenNode, let elseNode):
            return checkConditional(ifNode, thenNode, elseNode, instance, &ctx, &ann)
        case .ref(let index):
            return follow(index, "$ref", instance, &ctx, &ann)
        case .dynamicRef(let index, let anchor):
            return followDynamic(index, anchor, instance, &ctx, &ann)
        case .unevaluatedProperties(let sub):
            guard case .object(let pairs) = instance else { return true }
            return checkUnevaluatedProperties(sub, node, pairs, &ctx, &ann)
        case .unevaluatedItems(let sub):
            guard case .array(let items) = instance else { return true }
            return checkUnevaluatedItems(sub, items, &ctx, &ann)
        default:
            return true
        }
    }

    // MARK: In-place applicators

    private func checkAllOf(_ subs: [SchemaNode], _ instance: JSONValue, _ ctx: inout EvaluationContext,
                            _ ann: inout Annotations) -> Bool {
        var ok = true
        for (i, sub) in subs.enumerated() {
            ctx.schemaPath.append("allOf"); ctx.schemaPath.append(String(i))
            let r = inPlace(sub, instance, &ctx, &ann)
            ctx.schemaPath.removeLast(2)
            if !r { ok = false; if !ctx.collect { break } }
        }
        return ok
    }

    private func checkDependentSchemas(_ deps: [(String, SchemaNode)], _ pairs: [(String, JSONValue)], _ instance: JSONValue,
                                       _ ctx: inout EvaluationContext, _ ann: inout Annotations) -> Bool {
        var ok = true
        for (trigger, sub) in deps where pairs.contains(where: { $0.0 == trigger }) {
            ctx.schemaPath.append("dependentSchemas"); ctx.schemaPath.append(trigger)
            let r = inPlace(sub, instance, &ctx, &ann)
            ctx.schemaPath.removeLast(2)
            if !r { ok = false; if !ctx.collect { break } }
        }
        return ok
    }

    private func checkNot(_ sub: SchemaNode, _ instance: JSONValue, _ ctx: inout EvaluationContext) -> Bool {
        var scratch = Annotations()
        let saved = ctx.collect
        ctx.collect = false
        ctx.schemaPath.append("not")
        let matched = evaluate(sub, instance, &ctx, &scratch)
        ctx.schemaPath.removeLast()
        ctx.collect = saved
        if matched { fail(&ctx, "not", "must not match the schema in 'not'") }
        return !matched
    }

    private func checkConditional(_ ifNode: SchemaNode, _ thenNode: SchemaNode?, _ elseNode: SchemaNode?, _ instance: JSONValue,
                                  _ ctx: inout EvaluationContext, _ ann: inout Annotations) -> Bool {
        var ifAnn = Annotations()
        let saved = ctx.collect
        ctx.collect = false
        ctx.schemaPath.append("if")
        let matched = evaluate(ifNode, instance, &ctx, &ifAnn)
        ctx.schemaPath.removeLast()
        ctx.collect = saved
        if matched && track { ann.merge(ifAnn) }
        guard let branch = matched ? thenNode : elseNode else { return true }
        ctx.schemaPath.append(matched ? "then" : "else")
        let ok = inPlace(branch, instance, &ctx, &ann)
        ctx.schemaPath.removeLast()
        return ok
    }

    private func follow(_ index: Int, _ keyword: String, _ instance: JSONValue, _ ctx: inout EvaluationContext,
                        _ ann: inout Annotations) -> Bool {
        ctx.schemaPath.append(keyword)
        let ok = inPlace(program.nodes[index], instance, &ctx, &ann)
        ctx.schemaPath.removeLast()
        return ok
    }

    private func followDynamic(_ index: Int, _ anchor: String?, _ instance: JSONValue, _ ctx: inout EvaluationContext,
                               _ ann: inout Annotations) -> Bool {
        var target = index
        if let anchor {
            // The outermost resource in the dynamic scope that declares this $dynamicAnchor wins.
            for r in ctx.scope {
                if let i = program.resources[r].dynamicAnchors[anchor] { target = i; break }
            }
        }
        return follow(target, "$dynamicRef", instance, &ctx, &ann)
    }

    /// Evaluates an in-place applicator's subschema and merges its annotations when it passed (or, in collect mode,
    /// whenever — the enclosing schema has failed anyway, and this keeps `unevaluated*` from piling on noise).
    private func inPlace(_ node: SchemaNode, _ instance: JSONValue, _ ctx: inout EvaluationContext, _ ann: inout Annotations) -> Bool {
        var sub = Annotations()
        let ok = evaluate(node, instance, &ctx, &sub)
        if track && (ok || ctx.collect) { ann.merge(sub) }
        return ok
    }

    /// Evaluates a child instance (array element / object member) with its own annotations.
    private func child(_ node: SchemaNode, _ value: JSONValue, _ component: PathComponent, _ schema: [String],
                       _ ctx: inout EvaluationContext) -> Bool {
        if node.boolean == true { return true }
        var scratch = Annotations()
        ctx.instancePath.append(component)
        ctx.schemaPath.append(contentsOf: schema)
        let savedDepth = ctx.depthAtThisLocation
        ctx.depthAtThisLocation = 0
        let ok = evaluate(node, value, &ctx, &scratch)
        ctx.depthAtThisLocation = savedDepth
        ctx.schemaPath.removeLast(schema.count)
        ctx.instancePath.removeLast()
        return ok
    }

    // MARK: Object keywords

    private static func keySet(_ pairs: [(String, JSONValue)]) -> Set<String>? {
        pairs.count > 12 ? Set(pairs.map { $0.0 }) : nil
    }

    private static func has(_ key: String, _ pairs: [(String, JSONValue)], _ set: Set<String>?) -> Bool {
        if let set { return set.contains(key) }
        return pairs.contains { $0.0 == key }
    }

    private func checkRequired(_ names: [String], _ pairs: [(String, JSONValue)], _ ctx: inout EvaluationContext) -> Bool {
        let set = Evaluator.keySet(pairs)
        var ok = true
        for name in names where !Evaluator.has(name, pairs, set) {
            ok = false
            if !ctx.collect { return false }
            fail(&ctx, "required", "missing required field '\(name)'")
        }
        return ok
    }

    private func checkDependentRequired(_ deps: [(String, [String])], _ pairs: [(String, JSONValue)],
                                        _ ctx: inout EvaluationContext) -> Bool {
        let set = Evaluator.keySet(pairs)
        var ok = true
        for (trigger, names) in deps where Evaluator.has(trigger, pairs, set) {
            for name in names where !Evaluator.has(name, pairs, set) {
                ok = false
                if !ctx.collect { return false }
                fail(&ctx, "dependentRequired", "field '\(name)' is required when '\(trigger)' is present",
                     schema: ["dependentRequired", trigger])
            }
        }
        return ok
    }

    private func checkProperties(_ a: PropertyApplicators, _ node: SchemaNode, _ pairs: [(String, JSONValue)],
                                 _ ctx: inout EvaluationContext, _ ann: inout Annotations) -> Bool {
        var ok = true
        for (key, value) in pairs {
            var matched = false
            if let sub = a.properties[key] {
                matched = true
                if track { ann.properties.insert(key) }
                if sub.isFalse {
                    ok = false
                    if !ctx.collect { return false }
                    fail(&ctx, "properties", "field '\(key)' is not allowed", schema: ["properties", key], offendingKey: key)
                } else if !child(sub, value, .key(key), ["properties", key], &ctx) {
                    ok = false
                    if !ctx.collect { return false }
                }
            }
            for (pattern, sub) in a.patterns where pattern.matches(key) {
                matched = true
                if track { ann.properties.insert(key) }
                if sub.isFalse {
                    ok = false
                    if !ctx.collect { return false }
                    fail(&ctx, "patternProperties", "field '\(key)' is not allowed", schema: ["patternProperties", pattern.source],
                         offendingKey: key)
                } else if !child(sub, value, .key(key), ["patternProperties", pattern.source], &ctx) {
                    ok = false
                    if !ctx.collect { return false }
                }
            }
            if !matched, let sub = a.additional {
                if track { ann.properties.insert(key) }
                if sub.isFalse {
                    ok = false
                    if !ctx.collect { return false }
                    fail(&ctx, "additionalProperties", "unknown field '\(key)'", offendingKey: key, allowedKeys: node.propertyKeys)
                } else if !child(sub, value, .key(key), ["additionalProperties"], &ctx) {
                    ok = false
                    if !ctx.collect { return false }
                }
            }
        }
        return ok
    }

    private func checkPropertyNames(_ sub: SchemaNode, _ pairs: [(String, JSONValue)], _ ctx: inout EvaluationContext) -> Bool {
        var ok = true
        for (key, _) in pairs {
            var scratch = Annotations()
            let before = ctx.issues.count
            ctx.schemaPath.append("propertyNames")
            let r = evaluate(sub, .string(key), &ctx, &scratch)
            ctx.schemaPath.removeLast()
            if r { continue }
            ok = false
            if !ctx.collect { return false }
            for i in before..<ctx.issues.count {
                ctx.issues[i].violation.offendingKey = key
                let m = ctx.issues[i].violation.message
                ctx.issues[i].violation.message = sub.isFalse ? "field '\(key)' is not allowed" : "invalid field name '\(key)': \(m)"
            }
        }
        return ok
    }

    private func checkUnevaluatedProperties(_ sub: SchemaNode, _ node: SchemaNode, _ pairs: [(String, JSONValue)],
                                            _ ctx: inout EvaluationContext, _ ann: inout Annotations) -> Bool {
        var ok = true
        var allowed: [String]? = nil
        for (key, value) in pairs where !ann.properties.contains(key) {
            if sub.isFalse {
                ok = false
                if !ctx.collect { return false }
                if allowed == nil { allowed = knownKeys(node) }
                fail(&ctx, "unevaluatedProperties", "unknown field '\(key)'", offendingKey: key, allowedKeys: allowed!)
            } else if !child(sub, value, .key(key), ["unevaluatedProperties"], &ctx) {
                ok = false
                if !ctx.collect { return false }
            }
        }
        if track { for (key, _) in pairs { ann.properties.insert(key) } }
        return ok
    }

    /// Property names declared (via `properties`) by a node and the schemas it applies in place, for hints.
    private func knownKeys(_ node: SchemaNode) -> [String] {
        var seen = Set<Int>()
        var keys: [String] = []
        var keySet = Set<String>()
        func visit(_ n: SchemaNode) {
            guard seen.insert(n.index).inserted else { return }
            for k in n.propertyKeys where keySet.insert(k).inserted { keys.append(k) }
            for check in n.checks {
                switch check {
                case .allOf(let s), .anyOf(let s), .oneOf(let s): s.forEach(visit)
                case .dependentSchemas(let d): d.forEach { visit($0.1) }
                case .conditional(let i, let t, let e): visit(i); t.map(visit); e.map(visit)
                case .ref(let i), .dynamicRef(let i, _): visit(program.nodes[i])
                default: break
                }
            }
        }
        visit(node)
        return keys
    }

    // MARK: Array keywords

    private func checkItems(_ prefix: [SchemaNode], _ rest: SchemaNode?, _ items: [JSONValue],
                            _ ctx: inout EvaluationContext, _ ann: inout Annotations) -> Bool {
        var ok = true
        let n = min(prefix.count, items.count)
        for i in 0..<n where !child(prefix[i], items[i], .index(i), ["prefixItems", String(i)], &ctx) {
            ok = false
            if !ctx.collect { return false }
        }
        if track && n > ann.prefixItems { ann.prefixItems = n }
        guard let rest, items.count > prefix.count else { return ok }
        if track { ann.allItems = true }
        if rest.isFalse {
            if !ctx.collect { return false }
            fail(&ctx, "items", prefix.isEmpty ? "must be empty" : "must have at most \(Messages.count(prefix.count, "item"))")
            return false
        }
        for i in prefix.count..<items.count where !child(rest, items[i], .index(i), ["items"], &ctx) {
            ok = false
            if !ctx.collect { return false }
        }
        return ok
    }

    private func checkContains(_ sub: SchemaNode, _ minC: Int, _ maxC: Int?, _ items: [JSONValue],
                               _ ctx: inout EvaluationContext, _ ann: inout Annotations) -> Bool {
        let saved = ctx.collect
        ctx.collect = false
        var count = 0
        for (i, item) in items.enumerated() {
            var scratch = Annotations()
            ctx.instancePath.append(.index(i))
            let savedDepth = ctx.depthAtThisLocation
            ctx.depthAtThisLocation = 0
            let r = evaluate(sub, item, &ctx, &scratch)
            ctx.depthAtThisLocation = savedDepth
            ctx.instancePath.removeLast()
            if r {
                count += 1
                if track { ann.itemIndices.insert(i) }
                else if maxC == nil && count >= minC { break }
            }
        }
        ctx.collect = saved
        if count < minC {
            fail(&ctx, minC == 1 ? "contains" : "minContains",
                 "must contain at least \(Messages.count(minC, "item")) matching the 'contains' schema")
            return false
        }
        if let maxC, count > maxC {
            fail(&ctx, "maxContains", "must contain at most \(Messages.count(maxC, "item")) matching the 'contains' schema")
            return false
        }
        return true
    }

    private func checkUnevaluatedItems(_ sub: SchemaNode, _ items: [JSONValue],
                                       _ ctx: inout EvaluationContext, _ ann: inout Annotations) -> Bool {
        if ann.allItems { return true }
        var ok = true
        for i in ann.prefixItems..<max(ann.prefixItems, items.count) where !ann.itemIndices.contains(i) {
            if sub.isFalse {
                ok = false
                if !ctx.collect { return false }
                fail(&ctx, "unevaluatedItems", "unexpected item at index \(i)", at: .index(i))
            } else if !child(sub, items[i], .index(i), ["unevaluatedItems"], &ctx) {
                ok = false
                if !ctx.collect { return false }
            }
        }
        if track { ann.allItems = true }
        return ok
    }

    // MARK: anyOf / oneOf

    private func checkAnyOf(_ subs: [SchemaNode], _ instance: JSONValue, _ ctx: inout EvaluationContext,
                            _ ann: inout Annotations) -> Bool {
        let saved = ctx.collect
        ctx.collect = false
        var anyValid = false
        for (i, sub) in subs.enumerated() {
            var a = Annotations()
            ctx.schemaPath.append("anyOf"); ctx.schemaPath.append(String(i))
            let r = evaluate(sub, instance, &ctx, &a)
            ctx.schemaPath.removeLast(2)
            if r {
                anyValid = true
                if !track { break }
                ann.merge(a)
            }
        }
        ctx.collect = saved
        if anyValid { return true }
        if ctx.collect { reportAlternatives("anyOf", subs, instance, &ctx, &ann) }
        return false
    }

    private func checkOneOf(_ subs: [SchemaNode], _ instance: JSONValue, _ ctx: inout EvaluationContext,
                            _ ann: inout Annotations) -> Bool {
        let saved = ctx.collect
        ctx.collect = false
        var validIndices: [Int] = []
        var firstAnn = Annotations()
        for (i, sub) in subs.enumerated() {
            var a = Annotations()
            ctx.schemaPath.append("oneOf"); ctx.schemaPath.append(String(i))
            let r = evaluate(sub, instance, &ctx, &a)
            ctx.schemaPath.removeLast(2)
            if r {
                validIndices.append(i)
                if validIndices.count == 1 { firstAnn = a } else { break }
            }
        }
        ctx.collect = saved
        if validIndices.count == 1 {
            if track { ann.merge(firstAnn) }
            return true
        }
        if ctx.collect {
            if validIndices.isEmpty {
                reportAlternatives("oneOf", subs, instance, &ctx, &ann)
            } else {
                fail(&ctx, "oneOf", "must match exactly one of the allowed alternatives, but matches more than one "
                     + "(alternatives \(validIndices.map(String.init).joined(separator: " and ")))")
            }
        }
        return false
    }

    /// Turns a failed `anyOf`/`oneOf` into one focused report instead of every branch's errors:
    /// 1. every alternative rejects the value's type → one "expected A or B, got …" violation;
    /// 2. every alternative rejects the same value with `const`/`enum` (a discriminator typo) → one
    ///    "value 'x' is not one of: …" violation listing all allowed values;
    /// 3. otherwise the errors of the alternative that matched best: alternatives whose discriminator
    ///    (`type` here, `const`/`enum` here or one level down) failed are set aside; among the rest (or all, if
    ///    none is left) the one whose errors lie deepest in the instance, then the one with the fewest errors.
    private func reportAlternatives(_ keyword: String, _ subs: [SchemaNode], _ instance: JSONValue,
                                    _ ctx: inout EvaluationContext, _ ann: inout Annotations) {
        let saved = ctx.issues
        var results: [(issues: [Issue], ann: Annotations)] = []
        for (i, sub) in subs.enumerated() {
            ctx.issues = []
            var a = Annotations()
            ctx.schemaPath.append(keyword); ctx.schemaPath.append(String(i))
            _ = evaluate(sub, instance, &ctx, &a)
            ctx.schemaPath.removeLast(2)
            results.append((ctx.issues, a))
        }
        ctx.issues = saved
        let here = ctx.instancePath

        // 1. Type mismatch in every alternative.
        let typeIssues = results.map { r in r.issues.first { $0.violation.keyword == "type" && $0.violation.instancePath == here } }
        if typeIssues.allSatisfy({ $0 != nil }) {
            var names: [String] = []
            for issue in typeIssues { for n in issue!.expected where !names.contains(n) { names.append(n) } }
            fail(&ctx, "type", "expected \(Messages.list(names, conjunction: "or")), got \(Messages.describe(instance))",
                 schema: [keyword], expected: names)
            return
        }

        // 2. The same value rejected by const/enum in every alternative.
        func isValueMismatch(_ v: SchemaViolation) -> Bool {
            (v.keyword == "const" || v.keyword == "enum") && v.instancePath.count <= here.count + 1
                && v.instancePath.starts(with: here)
        }
        let firstMismatches = results[0].issues.filter { isValueMismatch($0.violation) }
        for candidate in firstMismatches.sorted(by: { $0.violation.instancePath.count < $1.violation.instancePath.count }) {
            let path = candidate.violation.instancePath
            let perBranch = results.map { r in r.issues.first { isValueMismatch($0.violation) && $0.violation.instancePath == path } }
            if perBranch.allSatisfy({ $0 != nil }) {
                var allowed: [String] = []
                for issue in perBranch { for o in issue!.expected where !allowed.contains(o) { allowed.append(o) } }
                let value = instance.value(at: Array(path.dropFirst(here.count))) ?? instance
                let v = SchemaViolation(instancePath: path, keyword: "enum", schemaPath: schemaPointer(ctx, [keyword]),
                                        message: "value \(Messages.show(value)) is not one of: \(allowed.joined(separator: ", "))")
                ctx.issues.append(Issue(violation: v, expected: allowed))
                return
            }
        }

        // 3. Best alternative.
        func isDiscriminatorMismatch(_ issues: [Issue]) -> Bool {
            issues.contains { i in
                (i.violation.keyword == "type" && i.violation.instancePath == here) || isValueMismatch(i.violation)
            }
        }
        var pool = results.indices.filter { !isDiscriminatorMismatch(results[$0].issues) }
        if pool.isEmpty { pool = Array(results.indices) }
        var best = pool[0]
        func score(_ i: Int) -> (Int, Int) {
            let depth = results[i].issues.map { $0.violation.instancePath.count }.max() ?? 0
            return (depth, -results[i].issues.count)
        }
        for i in pool.dropFirst() where score(i) > score(best) { best = i }
        if results[best].issues.isEmpty {
            // Should not happen (the alternative failed in fast mode), but never report "invalid" with no reason.
            fail(&ctx, keyword, "must match \(keyword == "oneOf" ? "exactly one" : "at least one") of the allowed alternatives")
        } else {
            ctx.issues.append(contentsOf: results[best].issues)
        }
        if track { ann.merge(results[best].ann) }
    }

    // MARK: Numbers and equality helpers

    /// Three-way comparison of a numeric instance with a numeric limit; `nil` when the instance is not a number.
    static func compare(_ value: JSONValue, _ limit: JSONValue) -> Int? {
        switch (value, limit) {
        case (.int(let a), .int(let b)): return a < b ? -1 : (a > b ? 1 : 0)
        default:
            guard let a = value.numberValue, let b = limit.numberValue else { return nil }
            return a < b ? -1 : (a > b ? 1 : 0)
        }
    }

    /// Whether `value` is an integer multiple of `divisor`; `nil` when the instance is not a number.
    static func isMultiple(_ value: JSONValue, of divisor: JSONValue) -> Bool? {
        if case .int(let a) = value, case .int(let b) = divisor { return a % b == 0 }
        guard let a = value.numberValue, let b = divisor.numberValue else { return nil }
        let q = a / b
        guard q.isFinite else { return false }
        let r = q.rounded()
        return abs(q - r) <= Swift.max(1e-9, q.magnitude.ulp * 4)
    }

    /// Indices of the first pair of equal elements (JSON Schema equality), or `nil`.
    static func firstDuplicate(_ items: [JSONValue]) -> (Int, Int)? {
        if items.count <= 16 {
            for i in items.indices {
                for j in (i + 1)..<items.count where items[i] == items[j] { return (i, j) }
            }
            return nil
        }
        var seen: [JSONValue: Int] = [:]
        seen.reserveCapacity(items.count)
        for (j, item) in items.enumerated() {
            if let i = seen[item] { return (i, j) }
            seen[item] = j
        }
        return nil
    }
}
