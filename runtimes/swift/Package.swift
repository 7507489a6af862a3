// swift-tools-version:5.5
// libkbpack (runtimes/c) for Swift: Swift imports C directly, so this package is libkbpack's own
// sources and kbpack.h behind a module map, the C API unchanged (`import CKbpack`, then kbp_open,
// kbp_search, ... as kbpack.h documents them). No Swift wrapper code: none can be compiled here.
//
// UNTESTED with Swift: no Swift toolchain is installed on the machines this project is built on.
// What is checked (tests/test_runtime_swift.py): every path below exists, every C file of
// runtimes/c is compiled or excluded on purpose, and clang (Swift's C importer) compiles a C file
// that imports the module map as a module and calls the API.
//
// Layout: Sources/CKbpack/src is a symbolic link to runtimes/c (one copy of the sources) and
// Sources/CKbpack/include/kbpack.h one to runtimes/c/kbpack.h. zstd comes from the system
// (pkg-config libzstd: Linux packages, Homebrew); iOS has no system zstd: add zstd's sources to the
// app (make -C runtimes/c zstd-src writes zstd.c and zstd.h) - see docs/runtimes/swift.md.
import PackageDescription

let package = Package(
    name: "Kbpack",
    products: [
        .library(name: "CKbpack", targets: ["CKbpack"]),
    ],
    targets: [
        .systemLibrary(
            name: "CZstd",
            path: "Sources/CZstd",
            pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"]), .brew(["zstd"])]
        ),
        .target(
            name: "CKbpack",
            dependencies: ["CZstd"],
            path: "Sources/CKbpack",
            // runtimes/c's files that are not library units: the command-line tool and the fuzz
            // target (each has a main), the Makefile and the fuzzer's dictionary
            exclude: [
                "src/kbpack_cli.c",
                "src/fuzz_kbpack.c",
                "src/fuzz_kbpack.dict",
                "src/Makefile",
            ],
            sources: ["src"],
            publicHeadersPath: "include",
            linkerSettings: [
                .linkedLibrary("zstd"),
                .linkedLibrary("m", .when(platforms: [.linux])),
            ]
        ),
    ],
    cLanguageStandard: .c99
)
