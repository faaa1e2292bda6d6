// swift-tools-version:6.0
// tsexport: YAML manifests in, verified TorchScript bundles out.
// The pipeline is visible in the targets: YAML → Manifest → Plan → Execution, with the CLI a thin shell.
import PackageDescription

let package = Package(
    name: "tsexport",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "tsexport", targets: ["tsexport"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: [
        // The system libyaml (pkg-config yaml-0.1, Debian package libyaml-dev). Only the YAML target imports it.
        .systemLibrary(
            name: "CYAML",
            pkgConfig: "yaml-0.1",
            providers: [.apt(["libyaml-dev"])]
        ),
        // Owns every libyaml object; yields positioned nodes resolved by the YAML 1.2 core schema.
        .target(name: "YAML", dependencies: ["CYAML"]),
        // A small JSON Schema (draft 2020-12) validator over a plain JSON value type.
        .target(name: "JSONSchema"),
        // Positions, severities and the compiler-style and JSON printers.
        .target(name: "Diagnostics"),
        // Typed manifests: load, schema-validate, semantic checks. Embeds schemas/export.schema.json at build time.
        .target(
            name: "Manifest",
            dependencies: ["YAML", "JSONSchema", "Diagnostics"],
            plugins: ["EmbedSchema"]
        ),
        // Build-time embedding of schemas/export.schema.json into Manifest (one source of truth, no copy).
        .executableTarget(name: "EmbedSchemaTool"),
        .plugin(name: "EmbedSchema", capability: .buildTool(), dependencies: ["EmbedSchemaTool"]),
        // The pure planner: manifests (and existing bundles) in, a Plan value out.
        .target(
            name: "Plan",
            dependencies: ["Manifest", "JSONSchema", "Diagnostics", .product(name: "Crypto", package: "swift-crypto")]
        ),
        // Two Linux system calls Foundation does not offer: renameat2(RENAME_EXCHANGE) and flock.
        .target(name: "CSystem"),
        // Runs a plan: the Python runtime, the JSON-lines worker and the bundle.
        .target(
            name: "Execution",
            dependencies: [
                "Plan", "Manifest", "Diagnostics", "CSystem",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            resources: [.copy("Resources/worker")]
        ),
        // The commands, as a library so tests can drive them in-process.
        .target(
            name: "TSExportCLI",
            dependencies: [
                "Manifest", "Plan", "Execution", "Diagnostics",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "tsexport",
            dependencies: ["TSExportCLI", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .testTarget(name: "YAMLTests", dependencies: ["YAML"]),
        .testTarget(name: "JSONSchemaTests", dependencies: ["JSONSchema"]),
        .testTarget(name: "ManifestTests", dependencies: ["Manifest", "Diagnostics", "YAML"], exclude: ["Fixtures"]),
        .testTarget(name: "PlanTests", dependencies: ["Plan", "Manifest"]),
        .testTarget(name: "ExecutionTests", dependencies: ["Execution", "Plan", "Manifest", "TSExportCLI", "JSONSchema"], exclude: ["Support"]),
        .testTarget(name: "CLITests", dependencies: ["TSExportCLI"]),
    ]
)
