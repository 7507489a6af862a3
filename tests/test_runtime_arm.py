"""libkbpack on aarch64, the CPU phones run (issue 40, item 5): runtimes/c cross-compiled with Debian's
gcc-aarch64-linux-gnu (`make -C runtimes/c aarch64`, static, zstd from source) and run under QEMU user
emulation (qemu-aarch64-static) answers exactly as the native x86-64 build: the same verdict and line
on every crafted bundle, the same search results to the last digit (%.17g) in every mode and unit on
float32, float16, int8 and binary-coded vectors, the same chunks and probe check. Same C, same order
of float operations (no FMA contraction under -std=c99), so nothing less than equal output is accepted.

Skipped, with the reason, without the cross compiler, qemu-aarch64-static or zstd's sources; .ci/run
installs them and sets KBC_REQUIRE_RUNTIMES, which makes a missing one a failure."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import LIBKBPACK_SRC, SAMPLE_DOCS, built_once, kbc_cli, require_or_skip, sources_key
from kbc.format.bundle import Bundle
from kbc.query.knowledge_base import KnowledgeBase
from test_libkbpack import QUESTIONS

CROSS_CC = "aarch64-linux-gnu-gcc"
QEMU = "qemu-aarch64-static"
TIME_LIMIT_S = 120


@pytest.fixture(scope="session")
def kbpack_arm(tmp_path_factory, zstd_source) -> Path:
    """The aarch64 `kbpack` tool, built once per test run into a folder named by the sources."""
    for tool, package in ((CROSS_CC, "gcc-aarch64-linux-gnu"), (QEMU, "qemu-user-static")):
        if shutil.which(tool) is None:
            require_or_skip(f"aarch64: no {tool} (apt-get install {package})")

    def build(folder: Path) -> None:
        proc = subprocess.run(["make", "-s", "-C", str(LIBKBPACK_SRC), "aarch64", f"BUILD={folder}",
                               f"ZSTD_SRC={zstd_source}"], capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"make -C runtimes/c aarch64 failed:\n{proc.stdout}\n{proc.stderr}"

    tool = built_once(tmp_path_factory, f"kbpack-aarch64-{sources_key(CROSS_CC)}", build) / "aarch64" / "kbpack"
    head = tool.read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64
    return tool


def answers(tool: Path, *args, arm: bool) -> tuple[int, str, str]:
    argv = [QEMU, str(tool)] if arm else [str(tool)]
    proc = subprocess.run([*argv, *map(str, args)], capture_output=True, text=True, timeout=TIME_LIMIT_S)
    return proc.returncode, proc.stdout, proc.stderr


def test_the_tool_runs_emulated_and_says_it_is_arm(kbpack_arm, tiny_encoder_bundle):
    proc = subprocess.run(["file", str(kbpack_arm)], capture_output=True, text=True)
    assert proc.returncode != 0 or "aarch64" in proc.stdout
    assert answers(kbpack_arm, "verify", tiny_encoder_bundle, arm=True) == (0, "intact\n", "")


def test_every_crafted_bundle_gets_the_native_verdict_and_line(kbpack_arm, kbpack_tool, crafted_bundles):
    differ = []
    for name, path in crafted_bundles.items():
        arm, native = answers(kbpack_arm, "verify", path, arm=True), answers(kbpack_tool, "verify", path, arm=False)
        if arm != native:
            differ.append(f"{name}: arm {arm} / native {native}")
    assert len(crafted_bundles) > 150
    assert not differ, f"{len(differ)} of {len(crafted_bundles)}:\n" + "\n".join(differ[:10])


@pytest.fixture(scope="module")
def sample_kinds(tmp_path_factory, sample_bundle) -> dict[str, Path]:
    """sample_docs with the default model stored four ways: the SIMD kernels' every path (float32;
    float16 and int8 widened; int8 with binary codes, the two-stage search)."""
    out = {"f32": sample_bundle}
    for name in ("f16", "int8", "binary"):
        def build(d: Path, name=name) -> None:
            kbc_cli("build", str(SAMPLE_DOCS), "-o", str(d / f"{name}.kbpack"), "--vectors", name, "-q", check=True)
        out[name] = built_once(tmp_path_factory, f"arm-{name}", build) / f"{name}.kbpack"
    return out


def test_search_chunks_and_probes_answer_to_the_last_digit(kbpack_arm, kbpack_tool, sample_kinds, tmp_path):
    compared = 0
    for name, bundle in sample_kinds.items():
        with KnowledgeBase(bundle) as kb:
            vectors = kb.embed_queries(QUESTIONS[:4])
            probes = np.array(kb.bundle.probes().vectors, dtype="<f4")
        (tmp_path / "probes.f32").write_bytes(probes.tobytes())
        with Bundle(bundle) as b:
            last = b.count - 1
        calls = [("probe", bundle, tmp_path / "probes.f32"), ("info", bundle), ("chunk", bundle, 0),
                 ("chunk", bundle, last)]
        for i, (question, v) in enumerate(zip(QUESTIONS, vectors)):
            q = tmp_path / f"q{i}.f32"
            q.write_bytes(np.asarray(v, dtype="<f4").tobytes())
            for mode in ("dense", "lexical", "hybrid"):
                calls.append(("search", bundle, "--mode", mode, "-k", 10, "--vector", q, "--", question))
                calls.append(("search", bundle, "--mode", mode, "--unit", "page", "-k", 5, "--vector", q, "--", question))
        for args in calls:
            arm, native = answers(kbpack_arm, *args, arm=True), answers(kbpack_tool, *args, arm=False)
            assert arm == native, (name, args)
            assert native[0] == 0, (name, args, native[2])
            compared += native[1].count("\n")
    assert compared > 500
