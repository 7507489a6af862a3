"""libkbpack's kbp_apply_delta through `kbpack apply` (runtimes/c/delta.c): the bundle it rebuilds is
byte-identical to `kbc apply`'s and to a fresh build; every crafted delta of tests/test_delta.py gets the
same verdict (exit 3, the same part) from both readers; a 100 MB apply stays within the mapped files plus
a few MB of address space; a SIGKILL during an apply never leaves a partial file under the final name."""

from __future__ import annotations

import resource
import subprocess
import time

from conftest import with_address_space
from test_delta import big_pair, bundles, crafted, kill_during  # noqa: F401  (fixtures shared with test_delta)
from kbc.errors import BundleError
from kbc.tools import delta as D


def kbpack_apply(tool, old, delta, out, *, limit_bytes: int | None = None, timeout: int = 120):
    argv = [str(tool), "apply", str(old), str(delta), "-o", str(out)]
    return subprocess.run(with_address_space(limit_bytes, argv) if limit_bytes else argv, capture_output=True,
                          text=True, timeout=timeout)


def test_kbpack_apply_equals_kbc_apply_and_a_fresh_build(kbpack_tool, bundles, tmp_path):  # noqa: F811
    for name in ("added", "changed", "rebuilt"):
        delta = tmp_path / f"{name}.kbdelta"
        D.make_delta(bundles["base"], bundles[name], delta)
        ours, theirs = tmp_path / f"{name}-c.kbpack", tmp_path / f"{name}-py.kbpack"
        proc = kbpack_apply(kbpack_tool, bundles["base"], delta, ours)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == f"{ours}: verified"
        D.apply_delta(bundles["base"], delta, theirs)
        assert ours.read_bytes() == theirs.read_bytes() == bundles[name].read_bytes()
        assert ours.stat().st_mode & 0o777 == 0o644
        verify = subprocess.run([str(kbpack_tool), "verify", str(ours)], capture_output=True, text=True)
        assert verify.stdout.strip() == "intact", verify.stderr


def test_both_readers_give_every_crafted_delta_the_same_verdict(kbpack_tool, crafted, tmp_path):  # noqa: F811
    for name, (delta, base, part) in crafted.items():
        out = tmp_path / "new.kbpack"
        try:
            D.rebuild(base.read_bytes(), delta.read_bytes())
            python_part = None
        except BundleError as e:
            python_part = e.section
        proc = kbpack_apply(kbpack_tool, base, delta, out, limit_bytes=256 << 20)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 3 and len(lines) == 1, (name, proc.returncode, proc.stderr)
        assert lines[0].startswith(f"kbpack: {part}: ") and python_part == part, (name, lines[0], python_part)
        assert not out.exists() and not list(tmp_path.glob(".new.kbpack.*")), name


def test_a_100_mb_apply_needs_the_mapped_files_and_a_few_mb_more(kbpack_tool, tmp_path):
    """Issue 41's target: <= 64 MB resident beyond the mapped files for a 100 MB bundle. The address-space
    limit is the mapped files (old, new, delta) plus 24 MB for everything else (code, libc, stack,
    zstd's context): a decoder that buffered the output or copied the old bundle would need 100 MB more."""
    old, new, delta = big_pair(tmp_path, 100 << 20)
    mapped = sum(p.stat().st_size for p in (old, new, delta))
    out = tmp_path / "out.kbpack"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = kbpack_apply(kbpack_tool, old, delta, out, limit_bytes=mapped + (24 << 20))
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == new.read_bytes()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"100 MB apply: {cpu:.2f} s CPU, {wall:.2f} s wall, delta {delta.stat().st_size} bytes")
    assert cpu < 5, f"{cpu:.2f} s of CPU for a 100 MB apply"  # 0.65 s on the 2-core AMD EPYC; a loose bound
    starved = kbpack_apply(kbpack_tool, old, delta, out.with_name("starved.kbpack"), limit_bytes=mapped // 2)
    assert starved.returncode != 0 and not out.with_name("starved.kbpack").exists(), "the limit limits nothing"


def test_a_kill_during_kbpack_apply_leaves_the_old_bundle_and_no_partial_file(kbpack_tool, tmp_path):
    old, new, delta = big_pair(tmp_path, 96 << 20)
    old_bytes, new_bytes = old.read_bytes(), new.read_bytes()
    final = tmp_path / "out.kbpack"
    argv = [str(kbpack_tool), "apply", str(old), str(delta), "-o", str(final)]
    killed = kill_during(argv, tmp_path, [0.02, 0.1, 0.2, 0.4, 0.7], final, old, old_bytes, new_bytes)
    assert killed >= 1, "every run finished before the kill: nothing was tested"
    # the device's usual call, the output over the old bundle: killed at any point it is old or new, whole
    argv = [str(kbpack_tool), "apply", str(old), str(delta), "-o", str(old)]
    for delay in (0.05, 0.3):
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        assert old.read_bytes() in (old_bytes, new_bytes)
        old.write_bytes(old_bytes)


def test_every_crafted_delta_under_address_and_undefined_behaviour_sanitizers(tmp_path_factory, crafted, bundles,  # noqa: F811
                                                                              tmp_path):
    """The crafted set and genuine deltas through `make asan`'s kbpack: any sanitizer report fails (the
    fuzz target reads bundles from memory, kbp_apply_delta files, so deltas are not in its seeds)."""
    from conftest import make_libkbpack
    from test_c_sanitizers import assert_no_report, sanitized

    _, build = make_libkbpack(tmp_path_factory, target="asan")
    tool = build / "asan" / "kbpack"
    out = tmp_path / "new.kbpack"
    for name, (delta, base, part) in crafted.items():
        proc = sanitized(tool, "apply", base, delta, "-o", out)
        assert_no_report(proc, name)
        assert proc.returncode == 3 and proc.stderr.startswith(f"kbpack: {part}: "), (name, proc.stderr)
    for name in ("added", "rebuilt"):
        delta = tmp_path / f"{name}.kbdelta"
        D.make_delta(bundles["base"], bundles[name], delta)
        proc = sanitized(tool, "apply", bundles["base"], delta, "-o", out)
        assert_no_report(proc, name)
        assert proc.returncode == 0 and out.read_bytes() == bundles[name].read_bytes(), proc.stderr


def test_kbpack_apply_refuses_paths_as_kbc_apply_does(kbpack_tool, bundles, tmp_path):  # noqa: F811
    damaged = tmp_path / "damaged.kbdelta"
    damaged.write_bytes(b"KBDELTA\0" + bytes(300))
    missing = tmp_path / "missing.kbpack"
    proc = kbpack_apply(kbpack_tool, missing, damaged, tmp_path / "y")
    assert proc.returncode == 3 and proc.stderr.startswith("kbpack: header: "), "the delta is checked before the base"
    delta = tmp_path / "d.kbdelta"
    D.make_delta(bundles["base"], bundles["added"], delta)
    proc = kbpack_apply(kbpack_tool, missing, delta, tmp_path / "y")
    assert proc.returncode == 2 and "no such file" in proc.stderr and proc.stderr.count("\n") == 1
    proc = kbpack_apply(kbpack_tool, bundles["base"], tmp_path / "nope.kbdelta", tmp_path / "y")
    assert proc.returncode == 2 and "no such file" in proc.stderr
    proc = kbpack_apply(kbpack_tool, bundles["base"], delta, tmp_path / "no-such-folder" / "y")
    assert proc.returncode == 2 and "cannot create" in proc.stderr and not (tmp_path / "no-such-folder").exists()
    usage = subprocess.run([str(kbpack_tool), "apply", str(bundles["base"]), str(delta)], capture_output=True, text=True)
    assert usage.returncode == 2 and "kbpack apply OLD DELTA -o NEW" in usage.stderr
