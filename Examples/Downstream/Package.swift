// swift-tools-version: 6.0
// A package of its own that uses iotcp as a library, as Docs/using.md shows. scripts/downstream.sh copies
// it beside a fresh clone of iotcp named `iotcp` (a path dependency's package name is its folder's name),
// builds it and serves a file through it. In your package, point the path at your iotcp checkout.
import PackageDescription

let package = Package(
    name: "HelloOffload",
    dependencies: [
        .package(path: "../iotcp"),
    ],
    targets: [
        .executableTarget(
            name: "HelloOffload",
            dependencies: [
                .product(name: "IOTCPHost", package: "iotcp"),
                .product(name: "IOTCPNIC", package: "iotcp"),
                .product(name: "IOTCPEmbedded", package: "iotcp"),
            ]),
    ]
)
