"""libkbpack under AddressSanitizer and UndefinedBehaviorSanitizer (`make -C runtimes/c asan`): every
crafted bundle of the suite (tests/fuzz_seeds.py: the hostile cases, the schema cases, mutations
of real bundles, and a real `kbc build` output) goes through the fuzz target's checks
(runtimes/c/fuzz_kbpack.c built as a plain program) and through the sanitized `kbpack` tool. Any
sanitizer report (an out-of-bounds read, a use after free, a leak, signed overflow, a misaligned
load, ...) is fatal there (-fno-sanitize-recover=all) and fails the test, as does any broken
promise the fuzz target checks (verify said intact and a search then failed, ...).

The sanitized tool runs without the address-space limit of the other C tests: ASan reserves
terabytes of shadow memory. The memory bound itself is tested by those tests, on the -O2 build."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import fuzz_seeds
from conftest import make_libkbpack

TIME_LIMIT_S = 120
SANITIZER_EXIT = 86  # what a sanitizer report exits with here: none of kbpack's own codes (0, 2, 3, 6)
SANITIZER_ENV = {
    "ASAN_OPTIONS": f"exitcode={SANITIZER_EXIT}:detect_leaks=1:abort_on_error=0:allocator_may_return_null=1",
    "UBSAN_OPTIONS": f"exitcode={SANITIZER_EXIT}:print_stacktrace=1:halt_on_error=1",
}


@pytest.fixture(scope="module")
def asan_build(tmp_path_factory) -> Path:
    """`make -C runtimes/c asan` once per test run (conftest.make_libkbpack): $BUILD/asan/{kbpack,
    fuzz_kbpack}. Skipped like the other C tests without a compiler or zstd.h, a failure under
    KBC_REQUIRE_LIBKBPACK (CI); a compiler without sanitizer runtimes is a failure, not a skip: this
    file exists to run them."""
    _, build = make_libkbpack(tmp_path_factory, target="asan")
    return build / "asan"


@pytest.fixture(scope="module")
def crafted(crafted_bundles) -> list[Path]:
    """Every crafted bundle, one file each: fuzz_seeds' set (with a real kbc build as an extra base)
    and the hostile cases on that real bundle, as tests/test_hostile_bundles.py makes them
    (conftest.crafted_bundles, written once per test run)."""
    return list(crafted_bundles.values())


def sanitized(*args, timeout: int = TIME_LIMIT_S) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **SANITIZER_ENV})


def assert_no_report(proc: subprocess.CompletedProcess, what) -> None:
    report = "Sanitizer" in proc.stderr or "runtime error:" in proc.stderr
    assert proc.returncode != SANITIZER_EXIT and not report, (what, proc.stderr[-4000:])


def test_the_crafted_set_covers_every_class(crafted):
    """The set these tests run is the suite's whole crafted set, not a sample of it."""
    import test_hostile_bundles

    names = {p.name.split("-", 1)[1] for p in crafted}
    for case in list(test_hostile_bundles.CASES) + list(fuzz_seeds.SCHEMA_CASES):
        assert any(fuzz_seeds._slug(case)[:50] in n for n in names), case
    assert sum(n.startswith("mutated-genuine") for n in names) >= 10
    assert len(crafted) > 150


def test_every_crafted_bundle_keeps_the_fuzz_targets_promises_under_sanitizers(asan_build, crafted):
    """runtimes/c/fuzz_kbpack.c (as a program) opens, uses and verifies each bundle as it is and
    re-signed, in both orders: no sanitizer report, no broken promise, every file done."""
    proc = sanitized(asan_build / "fuzz_kbpack", *crafted, timeout=300)
    assert_no_report(proc, "fuzz_kbpack")
    assert "broken promise" not in proc.stderr, proc.stderr[-4000:]
    assert proc.returncode == 0 and proc.stdout == f"ok {len(crafted)}\n", (proc.returncode, proc.stderr[-4000:])


def test_the_sanitized_tool_refuses_or_serves_every_crafted_bundle(asan_build, kbpack_tool, crafted, tmp_path):
    """`kbpack verify`, `info`, `chunk`, a lexical search and one in the bundle's default mode, from the sanitized
    build: one-line errors with kbpack's exit codes, and verify's verdict that of the -O2 build (an
    optimiser exploiting undefined behaviour would make them differ)."""
    question = "how often is the pump oiled 2018"
    verdicts = {}
    for path in crafted:
        out = sanitized(asan_build / "kbpack", "verify", path)
        assert_no_report(out, (path.name, "verify"))
        plain = subprocess.run([str(kbpack_tool), "verify", str(path)], capture_output=True, text=True,
                               timeout=TIME_LIMIT_S)
        assert (out.returncode, out.stdout, out.stderr) == (plain.returncode, plain.stdout, plain.stderr), path.name
        verdicts[path.name] = out.returncode
        info = sanitized(asan_build / "kbpack", "info", path)
        assert_no_report(info, (path.name, "info"))
        dim = next((int(line[5:]) for line in info.stdout.splitlines() if line.startswith("dim: ")), 0)
        vector = tmp_path / "q.f32"
        vector.write_bytes(b"\x00\x00\x80\x3f" * min(dim, 1 << 16))  # ones; a wrong length is exit 2
        for args in (["chunk", path, 0], ["search", path, "--mode", "lexical", "-k", 5, "--", question],
                     ["search", path, "-k", 5, "--vector", vector, "--", question]):
            out = sanitized(asan_build / "kbpack", *args)
            assert_no_report(out, (path.name, args[0]))
            assert out.returncode in (0, 2, 3), (path.name, args[0], out.returncode, out.stderr)
            if out.returncode:
                assert out.stderr.count("\n") == 1 and out.stderr.startswith("kbpack: "), (path.name, args[0], out.stderr)
    # the set holds both intact and refused bundles, so both paths ran sanitized
    assert set(verdicts.values()) == {0, 3}, verdicts
