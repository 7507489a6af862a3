"""The Swift package (runtimes/swift): a manifest and module maps exposing libkbpack's C API as the
module CKbpack, no Swift code. No Swift toolchain is installed here, so what is checked is what can
be without one: every path Package.swift names exists and leads to runtimes/c, every file of
runtimes/c is compiled or excluded on purpose (a new unit is picked up, a new tool would not be
compiled into the library unnoticed), and clang, whose importer Swift uses for C modules, builds a
C program against the module map with modules on and runs it on a bundle."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

SWIFT = ROOT / "runtimes" / "swift"
C_DIR = ROOT / "runtimes" / "c"
MANIFEST = (SWIFT / "Package.swift").read_text(encoding="utf-8")


def quoted_list(field: str) -> list[str]:
    m = re.search(rf"{field}:\s*\[(.*?)\]", MANIFEST, re.S)
    assert m, field
    return re.findall(r'"([^"]+)"', m.group(1))


def makefile_units() -> list[str]:
    m = re.search(r"^UNITS\s*:=\s*(.*)$", (C_DIR / "Makefile").read_text(encoding="utf-8"), re.M)
    assert m
    return m.group(1).split()


def test_every_path_in_the_manifest_exists_and_leads_to_runtimes_c():
    paths = re.findall(r'path:\s*"([^"]+)"', MANIFEST)
    assert paths == ["Sources/CZstd", "Sources/CKbpack"]
    for p in paths:
        assert (SWIFT / p).is_dir(), p
    target = SWIFT / "Sources" / "CKbpack"
    assert (target / "src").resolve() == C_DIR.resolve()
    assert (target / "include" / "kbpack.h").resolve() == (C_DIR / "kbpack.h").resolve()
    assert quoted_list("sources") == ["src"]
    for excluded in quoted_list("exclude"):
        assert (target / excluded).exists(), excluded
    modulemap = (target / "include" / "module.modulemap").read_text()
    assert re.search(r'module CKbpack \{\s*header "kbpack.h"', modulemap) and 'link "zstd"' in modulemap
    assert 'header "shim.h"' in (SWIFT / "Sources" / "CZstd" / "module.modulemap").read_text()
    assert (SWIFT / "Sources" / "CZstd" / "shim.h").is_file()


def test_every_file_of_runtimes_c_is_a_unit_a_header_or_excluded():
    excluded = {Path(e).name for e in quoted_list("exclude")}
    units = {f"{u}.c" for u in makefile_units()}
    files = {p.name for p in C_DIR.iterdir() if p.is_file() and not p.name.startswith(".")}  # SwiftPM skips dotfiles
    assert units <= files  # the Makefile's units are there, so SwiftPM compiles them all
    unaccounted = files - units - excluded - {"kbpack.h", "kbpack_internal.h"}
    assert not unaccounted, f"runtimes/c files neither a library unit nor excluded in Package.swift: {unaccounted}"
    assert not (excluded & units)


def test_clang_builds_a_program_against_the_module_map(libkbpack, tiny_encoder_bundle, tmp_path):
    clang = next((c for c in ("clang", "clang-19", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14")
                  if shutil.which(c)), None)
    if clang is None:
        pytest.skip("the Swift module map: no clang on this machine to check it with")
    program = tmp_path / "uses_module.c"
    # with -fmodules, #include of a header a module map covers imports the module, as Swift's importer does.
    # (Not -Wnon-modular-include-in-module: Linux's libc headers have no module map outside Swift's.)
    program.write_text('#include <stdio.h>\n#include <kbpack.h>\n'
                       'int main(int argc, char **argv) {\n  kbp_bundle *kb; kbp_error err;\n'
                       '  if (argc < 2 || kbp_open(argv[1], &kb, &err) != KBP_OK) return 1;\n'
                       '  printf("%llu %zu\\n", (unsigned long long)kbp_count(kb), kbp_dim(kb));\n'
                       '  kbp_close(kb);\n  return 0;\n}\n')
    include = SWIFT / "Sources" / "CKbpack" / "include"
    exe = tmp_path / "uses_module"
    build = subprocess.run([clang, "-std=c99", "-fmodules", f"-fmodules-cache-path={tmp_path / 'modules'}",
                            f"-I{include}", "-o", str(exe), str(program),
                            str(libkbpack.build / "libkbpack.a"), "-lzstd", "-lm"], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    assert list((tmp_path / "modules").rglob("CKbpack-*.pcm")), "clang did not build the module"
    from kbc.format.bundle import Bundle

    with Bundle(tiny_encoder_bundle) as b:
        expected = f"{b.count} {b.dim}\n"
    run = subprocess.run([str(exe), str(tiny_encoder_bundle)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout == expected, run.stderr
