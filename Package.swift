// swift-tools-version: 6.0
// iotcp: a TCP stack split between a host control plane and a NIC data plane (IO-TCP).
import PackageDescription

let package = Package(
    name: "iotcp",
    // Linux only: TAP devices, network namespaces, io_uring, openat2 and glibc are used throughout (every
    // module but IOTCPCommon imports Glibc), so no other platform is claimed.
    products: [
        .library(name: "IOTCPCommon", targets: ["IOTCPCommon"]),
        .library(name: "IOTCPChannels", targets: ["IOTCPChannels"]),
        .library(name: "IOTCPHost", targets: ["IOTCPHost"]),
        .library(name: "IOTCPNICCore", targets: ["IOTCPNICCore"]),
        .library(name: "IOTCPNIC", targets: ["IOTCPNIC"]),
        .library(name: "IOTCPRDMA", targets: ["IOTCPRDMA"]),
        .executable(name: "iotcp-channel-demo", targets: ["ChannelDemo"]),
        .executable(name: "iotcp-bench", targets: ["IOTCPBench"]),
        .executable(name: "iotcp-fileserver", targets: ["FileServer"]),
        .executable(name: "iotcp-proxy", targets: ["Proxy"]),
        .executable(name: "iotcp-nic", targets: ["NICServer"]),
        .library(name: "IOTCPEmbedded", targets: ["IOTCPEmbedded"]),
        .library(name: "IOTCPMetrics", targets: ["IOTCPMetrics"]),
        .library(name: "IOTCPLifecycle", targets: ["IOTCPLifecycle"]),
        .library(name: "IOTCPTLS", targets: ["IOTCPTLS"]),
        .library(name: "IOTCPHostTLS", targets: ["IOTCPHostTLS"]),
        // libiotcp: the host half for C programs (iotcp.h; scripts/install.sh installs it with a pkg-config file).
        .library(name: "iotcp", type: .dynamic, targets: ["IOTCPC"]),
        // The same as a static archive, for C programs that link it in (iotcp-static.pc).
        .library(name: "iotcp-static", type: .static, targets: ["IOTCPC"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.1.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.0"),
    ],
    targets: [
        // Wire formats, checksums, sequence arithmetic, the command protocol and the channel protocol.
        // No system calls and no dependencies, so it builds anywhere (and under libFuzzer with plain swiftc).
        .target(name: "IOTCPCommon"),

        // The small pieces of C that Swift cannot express: memfd and passing descriptors over a Unix socket.
        .target(name: "CIOTCPSystem"),
        // iotcp's one system-call style (retry on EINTR, the call's name with swift-system's Errno) and its
        // one monotonic clock, for every module that makes system calls.
        .target(
            name: "IOTCPSystem",
            dependencies: ["CIOTCPSystem", .product(name: "SystemPackage", package: "swift-system")]),

        // C libraries from Debian, each in a system-library target of its own so the protocol cores never
        // need them to build. Each is imported (with `internal import`) by exactly one Swift target: two of
        // these clang modules in one Swift module collide over glibc types they both include (`fd_set`).
        .systemLibrary(name: "CRDMA", path: "Sources/CRDMA",
                       providers: [.apt(["libibverbs-dev", "librdmacm-dev"])]),

        // Channel implementations: in-process and shared memory (slot rings, eventfd doorbells).
        .target(
            name: "IOTCPChannels",
            dependencies: [
                "IOTCPCommon", "CIOTCPSystem", "IOTCPSystem",
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]),

        // The channel over RDMA verbs (libibverbs, librdmacm): reliable-connected queue pairs set up with
        // rdma_cm. The channel logic it runs (credits, batching, closing) lives in IOTCPChannels.
        .target(name: "IOTCPRDMA", dependencies: ["CRDMA", "IOTCPChannels", "IOTCPCommon", "IOTCPSystem"]),

        .target(name: "IOTCPHost", dependencies: ["IOTCPCommon", "CIOTCPSystem", .product(name: "Logging", package: "swift-log")]),
        // The NIC half's logic without I/O: the command executor and I/O engine (`NICDataPlane`), the
        // retransmit store, segment building, the buffer pool, ARP/ICMP, fault injection, and the protocols
        // its platform implements (files, disk, wire), with in-memory versions for tests and simulations.
        .target(name: "IOTCPNICCore", dependencies: ["IOTCPCommon"]),
        // The NIC half's platform: the TAP, io_uring and pread disks, the export root's file table, libnvme,
        // network namespaces, and the runtime loop that ties them to the core.
        .target(
            name: "IOTCPNIC",
            dependencies: [
                "IOTCPCommon", "IOTCPNICCore", "CIOTCPSystem", "IOTCPSystem", "CIOTCPURing", "CIOTCPNVMe", "IOTCPTLS",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
            ]),

        // io_uring reads (liburing, Debian's liburing-dev) behind an opaque C handle: liburing's headers and
        // swift-system's both define the kernel's io_uring structures, which no one Swift module may see twice.
        .target(name: "CIOTCPURing", linkerSettings: [.linkedLibrary("uring")]),
        // The NVMe namespace under an opened file (libnvme, Debian's libnvme-dev), behind a plain C interface
        // for the same reason.
        .target(name: "CIOTCPNVMe", linkerSettings: [.linkedLibrary("nvme")]),

        // Both halves in one process over a TAP device: the embedded arrangement.
        .target(
            name: "IOTCPEmbedded",
            dependencies: ["IOTCPHost", "IOTCPNIC", "IOTCPChannels", .product(name: "Atomics", package: "swift-atomics")]),
        // The host stack's and the NIC runtime's counters through swift-metrics, for any metrics backend.
        .target(
            name: "IOTCPMetrics",
            dependencies: ["IOTCPHost", "IOTCPNIC", .product(name: "Metrics", package: "swift-metrics")]),
        // TLS record protection (AES-GCM, TLS 1.3 and 1.2), deterministic so the NIC can seal file bytes as it
        // sends them and seal them again for a retransmission; swift-crypto's AES-GCM underneath.
        // The server handshake on the host (OpenSSL over memory BIOs) and in-place record sealing for the NIC.
        .target(name: "IOTCPTLS", dependencies: ["CIOTCPTLS", "IOTCPCommon", .product(name: "Crypto", package: "swift-crypto")]),
        // TLS over an iotcp connection with the records sealed on the NIC: the host's side (`TLSConnection`).
        .target(name: "IOTCPHostTLS", dependencies: ["IOTCPHost", "IOTCPTLS", "IOTCPCommon"]),
        // OpenSSL (Debian's libssl-dev) behind a plain C interface: the handshake driven over memory, and
        // AES-GCM sealing in place. OpenSSL rather than swift-nio-ssl's BoringSSL: it is the distribution's
        // maintained library (the one nginx and lighttpd use here), it offers the key log, ticket and
        // renegotiation switches the split record layer needs, and it adds no minutes of C to every build.
        .target(name: "CIOTCPTLS", linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]),
        // The C interface: iotcp.h (a C target, so Swift sees the same declarations C does) and its
        // implementation in Swift, exported with @_cdecl.
        .target(name: "CIOTCPABI"),
        .target(
            name: "IOTCPC", dependencies: ["CIOTCPABI", "IOTCPEmbedded", "IOTCPRDMA"], exclude: ["libiotcp.map"],
            // libiotcp.so exports iotcp_* and nothing else (the version script says why).
            linkerSettings: [.unsafeFlags(["-Xlinker", "--version-script=\(Context.packageDirectory)/Sources/IOTCPC/libiotcp.map"])]),
        // swift-service-lifecycle services: the async stack's pump and the embedded NIC thread.
        .target(
            name: "IOTCPLifecycle",
            dependencies: ["IOTCPEmbedded", .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")]),
        // Command-line options shared by iotcp-nic and the file server: the wire, channel addresses, and the
        // Prometheus endpoint.
        .target(
            name: "IOTCPCommandLine",
            dependencies: [
                "IOTCPEmbedded", "IOTCPHost", "IOTCPRDMA", "IOTCPMetrics", "CIOTCPSystem", "IOTCPSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        .executableTarget(
            name: "FileServer",
            dependencies: [
                "IOTCPEmbedded", "IOTCPCommandLine", "IOTCPRDMA", "IOTCPMetrics", "IOTCPHostTLS", "IOTCPTLS",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Examples/FileServer"),
        .executableTarget(
            name: "Proxy",
            dependencies: [
                "IOTCPEmbedded", "IOTCPCommandLine",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Examples/Proxy"),
        .executableTarget(
            name: "NICServer",
            dependencies: [
                "IOTCPEmbedded", "IOTCPCommandLine", "IOTCPRDMA", "IOTCPMetrics",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(
            name: "ChannelDemo",
            dependencies: [
                "IOTCPCommon", "IOTCPChannels", "IOTCPRDMA",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Examples/ChannelDemo"),
        .executableTarget(
            name: "IOTCPBench",
            dependencies: [
                "IOTCPCommon", "IOTCPChannels", "IOTCPHost", "IOTCPNIC", "IOTCPEmbedded",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/IOTCPBench"),

        .testTarget(name: "FileServerTests", dependencies: ["FileServer"]),
        .testTarget(name: "IOTCPTLSTests", dependencies: ["IOTCPTLS", "IOTCPCommon"], exclude: ["Fixtures"]),
        .testTarget(name: "IOTCPCommonTests", dependencies: ["IOTCPCommon"],
                    exclude: ["Fixtures"]),
        .testTarget(name: "IOTCPChannelsTests", dependencies: ["IOTCPCommon", "IOTCPChannels", "CIOTCPSystem"]),
        .testTarget(name: "IOTCPHostTests", dependencies: ["IOTCPCommon", "IOTCPHost", "IOTCPNICCore"]),
        .testTarget(name: "IOTCPNICTests", dependencies: ["IOTCPCommon", "IOTCPNICCore", "IOTCPNIC", "IOTCPTLS", "IOTCPHost", "IOTCPChannels", "IOTCPEmbedded", "IOTCPMetrics", "IOTCPLifecycle"]),
    ],
    swiftLanguageModes: [.v6]
)
