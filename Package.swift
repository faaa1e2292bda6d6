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
        // The JSON value type, its parser and the canonical form used for fingerprints.
        .target(name: "JSON"),
        // A small JSON Schema (draft 2020-12) validator over JSON values. Only the Manifest module validates.
        .target(name: "JSONSchema", dependencies: ["JSON"]),
        // Positions, severities and the compiler-style and JSON printers.
        .target(name: "Diagnostics"),
        // Typed manifests: load, schema-validate, semantic checks. Embeds schemas/export.schema.json at build time.
        .target(
            name: "Manifest",
            dependencies: ["YAML", "JSON", "JSONSchema", "Diagnostics"],
            plugins: ["EmbedSchema"]
        ),
        // Build-time embedding of schemas/export.schema.json into Manifest (one source of truth, no copy).
        .executableTarget(name: "EmbedSchemaTool"),
        .plugin(name: "EmbedSchema", capability: .buildTool(), dependencies: ["EmbedSchemaTool"]),
        // Two Linux system calls Foundation does not offer: renameat2(RENAME_EXCHANGE) and flock.
        .target(name: "CSystem"),
        // The bundle on disk: its layout, the record, reading it, hashing inputs, staging and the atomic install.
        .target(
            name: "Bundles",
            dependencies: ["JSON", "Manifest", "CSystem", .product(name: "Crypto", package: "swift-crypto")]
        ),
        // The OCI distribution client (FoundationNetworking, streamed blobs, Docker-config credentials) and the bundle
        // as a CNCF ModelPack artifact: push, pull.
        .target(
            name: "Registry",
            dependencies: ["JSON", "Bundles", .product(name: "Crypto", package: "swift-crypto")]
        ),
        // The pure planner: manifests and observed bundles in, a Plan value (with the exact worker requests) out.
        .target(name: "Plan", dependencies: ["Manifest", "JSON", "Bundles", "Diagnostics"]),
        // The Python worker, a Python project of its own in Sources/Worker, shipped as this target's resources.
        .target(
            name: "WorkerPackage",
            path: "Sources/Worker",
            exclude: ["README.md"],
            sources: ["WorkerPackage.swift"],
            resources: [.copy("tsexport_worker"), .copy("native"), .copy("requirements.txt"), .copy("pyproject.toml")]
        ),
        // Runs a plan: the Python runtime, the JSON-lines worker and the bundle.
        .target(
            name: "Execution",
            dependencies: [
                "Plan", "Bundles", "Manifest", "JSON", "Diagnostics", "CSystem", "WorkerPackage", "Registry",
            ]
        ),
        // `tsexport init`: a first manifest from a pretrained folder's facts, with the defaults the loader fills in.
        .target(name: "Scaffold", dependencies: ["Manifest", "Plan", "JSON", "Diagnostics"]),
        // The commands, as a library so tests can drive them in-process.
        .target(
            name: "TSExportCLI",
            dependencies: [
                "Manifest", "Plan", "Bundles", "Execution", "JSON", "YAML", "Diagnostics", "Registry", "Scaffold",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "tsexport",
            dependencies: ["TSExportCLI", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .testTarget(name: "YAMLTests", dependencies: ["YAML"]),
        .testTarget(name: "JSONTests", dependencies: ["JSON"]),
        .testTarget(name: "JSONSchemaTests", dependencies: ["JSONSchema", "JSON"]),
        .testTarget(name: "ManifestTests", dependencies: ["Manifest", "Diagnostics", "YAML", "JSON"], exclude: ["Fixtures"]),
        .testTarget(name: "PlanTests", dependencies: ["Plan", "Manifest", "Bundles", "JSON", "Diagnostics"]),
        .testTarget(name: "ExecutionTests", dependencies: ["Execution", "Plan", "Bundles", "Manifest", "TSExportCLI", "JSON", "TestSupport"], exclude: ["Support"]),
        .testTarget(name: "RegistryTests", dependencies: ["Registry", "Bundles", "JSON", "TSExportCLI", "TestSupport", "Execution", "Plan"]),
        .testTarget(name: "ScaffoldTests", dependencies: ["Scaffold", "Manifest", "JSON"]),
        .testTarget(name: "CLITests", dependencies: ["TSExportCLI", "Plan", "Bundles", "TestSupport"]),
        // What several test targets share: finding the built tsexport executable. Not part of the product.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
    ]
)
