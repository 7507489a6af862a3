"""libkbpack in units: runtimes/c's library is a set of C files a reviewer can hold, each saying its job
at its top, behind one private header (kbpack_internal.h); and `make amalgamation` concatenates them
into one kbpack_amalgamation.c, SQLite's way, for embedders who want one file. That file must compile
alone with -Wall -Wextra -Werror into the same library: a `kbpack` tool linked from it answers verify,
info, chunk and a lexical search exactly as the tool the Makefile links from the units, and both
export only kbpack.h's functions."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import LIBKBPACK_SRC

UNIT_MAX_LINES = 900  # about what one reviewer holds at once
STRICT = ("-std=c99", "-Wall", "-Wextra", "-Werror")
NOT_UNITS = {"kbpack_cli", "fuzz_kbpack"}  # the tool and the fuzz target use the library; they are not in it


def makefile_units() -> list[str]:
    """UNITS, the Makefile's list of the library's C files."""
    m = re.search(r"^UNITS\s*:=\s*(.+)$", (LIBKBPACK_SRC / "Makefile").read_text(), re.M)
    assert m, "runtimes/c/Makefile has no UNITS list"
    return m.group(1).split()


def run(*args, cwd: Path | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def test_every_unit_is_built_small_and_says_its_job():
    units = makefile_units()
    on_disk = {p.stem for p in LIBKBPACK_SRC.glob("*.c")} - NOT_UNITS
    assert sorted(units) == sorted(on_disk), "a C file in runtimes/c the library does not build, or the reverse"
    assert len(units) == len(set(units))
    for name in units:
        text = (LIBKBPACK_SRC / f"{name}.c").read_text()
        lines = text.count("\n")
        assert lines <= UNIT_MAX_LINES, f"{name}.c has {lines} lines; split it (at most ~{UNIT_MAX_LINES})"
        assert text.startswith(f"/* libkbpack, {name}.c: "), f"{name}.c does not open with its job"
        includes = re.findall(r"^#\s*include\s*(\S+)", text, re.M)
        assert includes == ['"kbpack_internal.h"'], f"{name}.c: units include the private header, and only it"
    header = (LIBKBPACK_SRC / "kbpack_internal.h").read_text()
    for name in units:  # the header's map of the units names each one
        assert re.search(rf"^ \*   {re.escape(name)}\.c ", header, re.M), f"kbpack_internal.h does not list {name}.c"


def test_an_edit_to_either_header_rebuilds_every_unit(libkbpack):
    for header, cli in (("kbpack_internal.h", False), ("kbpack.h", True)):
        proc = run("make", "-n", "-C", LIBKBPACK_SRC, f"BUILD={libkbpack.build}", f"CC={libkbpack.cc}", "-W", header)
        assert proc.returncode == 0, proc.stderr
        compiled = set(re.findall(r"-c (?:\./)?(\w+)\.c\b", proc.stdout))
        assert compiled == set(makefile_units()) | ({"kbpack_cli"} if cli else set()), (header, compiled)


@pytest.fixture(scope="module")
def amalgamation(libkbpack, tmp_path_factory) -> Path:
    """`make amalgamation`, the file copied alone into an empty folder (no kbpack.h beside it)."""
    proc = run("make", "-s", "-C", LIBKBPACK_SRC, f"BUILD={libkbpack.build}", f"CC={libkbpack.cc}", "amalgamation")
    assert proc.returncode == 0, f"make amalgamation failed:\n{proc.stdout}\n{proc.stderr}"
    alone = tmp_path_factory.mktemp("amalgamation") / "kbpack_amalgamation.c"
    shutil.copyfile(libkbpack.build / "kbpack_amalgamation.c", alone)
    return alone


@pytest.fixture(scope="module")
def amalgamated(libkbpack, amalgamation) -> tuple[Path, Path]:
    """(the amalgamation's object, a `kbpack` tool linked from it and kbpack_cli.c)."""
    flags = (*libkbpack.cflags, *STRICT)
    obj = amalgamation.with_suffix(".o")
    proc = run(libkbpack.cc, *flags, "-c", amalgamation.name, "-o", obj.name, cwd=amalgamation.parent)
    assert proc.returncode == 0, f"kbpack_amalgamation.c does not compile alone:\n{proc.stderr}"
    assert proc.stderr == "", proc.stderr
    tool = amalgamation.parent / "kbpack"
    proc = run(libkbpack.cc, *flags, f"-I{LIBKBPACK_SRC}", "-o", tool, LIBKBPACK_SRC / "kbpack_cli.c", obj,
               "-lzstd", "-lm")
    assert proc.returncode == 0, f"kbpack_cli.c does not link with the amalgamation:\n{proc.stderr}"
    return obj, tool


def test_the_amalgamation_holds_every_unit_once(amalgamation):
    text = amalgamation.read_text()
    public = (LIBKBPACK_SRC / "kbpack.h").read_text()
    assert public in text, "kbpack.h is not inlined whole"
    assert text.count("#define KBPACK_H") == 1 and text.count("#define KBPACK_INTERNAL_H") == 1
    assert not re.search(r'^#\s*include\s*"', text, re.M), "the amalgamation still includes a file of ours"
    for name in makefile_units():
        body = (LIBKBPACK_SRC / f"{name}.c").read_text().replace('#include "kbpack_internal.h"\n', "")
        assert text.count(body) == 1, f"{name}.c is not in the amalgamation exactly once"


def test_the_amalgamation_tool_answers_as_the_units_tool(amalgamated, kbpack_tool, sample_bundle, tmp_path):
    _, one_file = amalgamated
    damaged = tmp_path / "damaged.kbpack"
    data = bytearray(sample_bundle.read_bytes())
    data[len(data) // 2] ^= 0x40  # inside some section: verify names it
    damaged.write_bytes(bytes(data))
    question = "How do I insert a value into a HashMap?"
    cases = [("verify", sample_bundle), ("verify", damaged), ("info", sample_bundle), ("chunk", sample_bundle, 3),
             ("search", sample_bundle, "--mode", "lexical", "--unit", "chunk", "-k", 10, "--", question),
             ("search", sample_bundle, "--mode", "lexical", "--unit", "page", "-k", 3, "--", question)]
    for args in cases:
        units, single = run(kbpack_tool, *args), run(one_file, *args)
        assert (single.returncode, single.stdout, single.stderr) == (units.returncode, units.stdout, units.stderr), args
    assert run(kbpack_tool, "verify", sample_bundle).stdout == "intact\n"
    assert run(kbpack_tool, "verify", damaged).returncode == 3
    assert len(json.loads(run(kbpack_tool, *cases[4][:2], "--json", *cases[4][2:]).stdout)["hits"]) == 10


def defined_globals(path: Path, *nm_args: str) -> set[str]:
    proc = run("nm", "-g", "--defined-only", *nm_args, path)
    assert proc.returncode == 0, proc.stderr
    names = {line.split()[-1] for line in proc.stdout.splitlines() if len(line.split()) == 3}
    return {n for n in names if not n.startswith("_")}  # a sanitizer's own symbols


def test_only_the_api_is_exported(libkbpack, amalgamated):
    """The units lend each other kbpi_ functions; no program linking the library sees them as its own
    names would be, and the shared library and the amalgamation export kbpack.h's kbp_ functions only."""
    if shutil.which("nm") is None or "GNU" not in run("nm", "--version").stdout:
        pytest.skip("no GNU nm (binutils) on this machine")
    obj, _ = amalgamated
    declared = set(re.findall(r"\b(kbp_\w+)\s*\(", (LIBKBPACK_SRC / "kbpack.h").read_text()))
    api = defined_globals(obj)
    assert api and api <= declared, api - declared
    archive = defined_globals(libkbpack.build / "libkbpack.a")
    assert {n for n in archive if not n.startswith("kbpi_")} == api, "a unit exports a name without the kbpi_ prefix"
    if (libkbpack.build / "libkbpack.so").exists():
        assert defined_globals(libkbpack.build / "libkbpack.so", "-D") == api
