"""A docs folder is untrusted input: special files, links and names must not hang, leak or abort a
build, and outputs must never destroy an input or a special file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import run_kbc, with_address_space
from kbc.errors import InputError
from kbc.stages.sources import check_output_path, discover


def _tree(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("# Pumps\n\nThe pump moves water uphill.\n")
    return docs


def test_walk_skips_fifos_devices_outside_links_and_loops_with_reasons(tmp_path):
    docs = _tree(tmp_path)
    os.mkfifo(docs / "pipe.md")
    (docs / "zero.txt").symlink_to("/dev/zero")
    secret = tmp_path / "secret.txt"
    secret.write_text("outside the folder")
    (docs / "leak.txt").symlink_to(secret)
    (docs / "inside.md").symlink_to(docs / "good.md")
    (docs / "loop.md").symlink_to(docs / "loop.md")
    (docs / "dangling.md").symlink_to(docs / "missing.md")
    (docs / "linked-dir").symlink_to(tmp_path)
    skipped: list = []
    found = {s.rel for s in discover([docs], skipped=skipped)}
    reasons = dict(skipped)
    assert found == {"good.md", "inside.md"}
    assert "not a regular file" in reasons["pipe.md"] and "outside the input folder" in reasons["zero.txt"]
    assert "outside the input folder" in reasons["leak.txt"]
    assert "looping" in reasons["loop.md"] and "broken" in reasons["dangling.md"]
    assert "not followed" in reasons["linked-dir"]
    followed: list = []
    assert "leak.txt" in {s.rel for s in discover([docs], follow_symlinks=True, skipped=followed)}
    assert "not a regular file" in dict(followed)["zero.txt"]  # followed, /dev/zero is still refused


def test_non_utf8_file_names_are_kept_losslessly_and_printable(tmp_path):
    docs = _tree(tmp_path)
    raw = os.fsencode(str(docs)) + b"/caf\xe9.md"
    with open(raw, "wb") as f:
        f.write(b"Latin-1 named file about espresso machines.\n")
    rels = {s.rel for s in discover([docs])}
    assert "caf\\xe9.md" in rels
    json.dumps(sorted(rels)).encode("utf-8")  # storable


def test_build_over_a_hostile_tree_finishes_and_lists_what_it_skipped(tmp_path, tiny_model):
    docs = _tree(tmp_path)
    os.mkfifo(docs / "pipe.md")
    (docs / "zero.txt").symlink_to("/dev/zero")
    (docs / "leak.txt").symlink_to("/etc/hostname")
    out = tmp_path / "kb.kbpack"
    proc = run_kbc("build", str(docs), "-o", str(out), "--model", str(tiny_model), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert {p["source"] for p in report["skipped"]} == {"pipe.md", "zero.txt", "leak.txt"}
    strict = run_kbc("build", str(docs), "-o", str(tmp_path / "s.kbpack"), "--model", str(tiny_model), "--strict")
    assert strict.returncode == 5 and not (tmp_path / "s.kbpack").exists()


def test_outputs_never_destroy_inputs_or_special_files(tmp_path, tiny_model):
    docs = _tree(tmp_path)
    before = (docs / "good.md").read_bytes()
    proc = run_kbc("build", str(docs), "-o", str(docs / "good.md"), "--model", str(tiny_model))
    assert proc.returncode == 2 and "is one of the inputs" in proc.stderr and proc.stderr.count("\n") == 1
    assert (docs / "good.md").read_bytes() == before
    bundle = tmp_path / "kb.kbpack"
    run_kbc("build", str(docs), "-o", str(bundle), "--model", str(tiny_model), "-q", check=True)
    original = bundle.read_bytes()
    proc = run_kbc("export", str(bundle), str(bundle), "--to", "jsonl")
    assert proc.returncode == 2 and "is one of the inputs" in proc.stderr and bundle.read_bytes() == original
    link = tmp_path / "link.kbpack"
    link.symlink_to(tmp_path / "elsewhere.kbpack")
    proc = run_kbc("build", str(docs), "-o", str(link), "--model", str(tiny_model))
    assert proc.returncode == 2 and "not a regular file" in proc.stderr and link.is_symlink()
    fifo = tmp_path / "out.jsonl"
    os.mkfifo(fifo)
    proc = run_kbc("export", str(bundle), str(fifo), "--to", "jsonl")
    assert proc.returncode == 2 and "not a regular file" in proc.stderr
    with pytest.raises(InputError, match="not a regular file"):
        check_output_path(Path("/dev/null"))


def test_sigterm_leaves_no_temporary_bundle_behind(tmp_path):
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT, SAMPLE_DOCS

    docs = tmp_path / "docs"
    for i in range(4):
        shutil.copytree(SAMPLE_DOCS, docs / f"copy{i}")
    out = tmp_path / "out" / "kb.kbpack"
    out.parent.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "kbc", "build", str(docs), "-o", str(out), "-q", "--no-cache"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(out.parent.glob(".kb.kbpack.*.tmp")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # wait until the bundle is being written
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err
    assert list(out.parent.iterdir()) == []  # neither a bundle nor a temporary file


def test_temporaries_of_killed_writers_are_removed_live_ones_kept(tmp_path):
    """A SIGKILLed build leaves `.NAME.kbpack.*.tmp`; the next writer to NAME removes it unless a
    live writer still holds its lock."""
    import fcntl

    import numpy as np

    from kbc.format.bundle import write_bundle

    dead = tmp_path / ".kb.kbpack.dead1234.tmp"
    dead.write_bytes(b"\x00" * 4096)
    live = tmp_path / ".kb.kbpack.live5678.tmp"
    live.write_bytes(b"\x00" * 4096)
    holder = os.open(live, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    other = tmp_path / ".other.kbpack.x.tmp"
    other.write_bytes(b"")
    try:
        write_bundle(tmp_path / "kb.kbpack", manifest={}, vectors=np.eye(1, 4, dtype=np.float32), chunks=[{"text": "a"}])
        assert not dead.exists() and live.exists() and other.exists()
    finally:
        os.close(holder)


def _digests(folder: Path) -> dict[str, str]:
    """sha256 of every small regular file under `folder`, links not followed: what a build must not change."""
    import hashlib

    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = Path(dirpath) / f
            if p.is_file() and not p.is_symlink():
                st = p.stat()  # the sparse giant by size and time: reading it would take minutes
                out[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest() if st.st_size < 1 << 20
                               else f"{st.st_size}:{st.st_mtime_ns}")
    return out


def test_a_hostile_tree_builds_within_time_and_memory_bounds(tmp_path, tiny_model):
    """Every class at once, in a child process with an address-space limit and a timeout: a FIFO,
    a link to /dev/zero, a link loop, a link out of the folder, a name that is not UTF-8, a 64 GiB
    sparse file, and a damaged cache; then a cache directory that cannot be created. Each build
    ends with exit 0, only one-line warnings on stderr, every skipped file listed with its reason,
    and nothing under the folder changed."""
    import sqlite3
    import subprocess
    import sys
    import time

    from conftest import ROOT

    docs = _tree(tmp_path)
    os.mkfifo(docs / "pipe.md")
    (docs / "zero.txt").symlink_to("/dev/zero")
    (docs / "loop.md").symlink_to(docs / "loop.md")
    (docs / "leak.txt").symlink_to("/etc/hostname")
    with open(os.fsencode(str(docs)) + b"/caf\xe9 \x1b[2J.md", "wb") as f:
        f.write(b"Espresso machines need descaling every month.\n")
    with open(docs / "huge.txt", "wb") as f:
        f.truncate(64 << 30)  # sparse: no disk used, but hashing or reading it would take minutes
    cache = tmp_path / "cache"
    run_kbc("build", str(docs), "-o", str(tmp_path / "warm.kbpack"), "--model", str(tiny_model), "-q",
            "--cache-dir", str(cache), check=True)
    db = cache / "cache.sqlite3"
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    for at in range(4096, len(data), 4096):
        data[at:at + 64] = b"\xff" * 64
    db.write_bytes(bytes(data))
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory would go")
    before = _digests(docs)

    for cache_dir in (cache, blocker / "cache"):
        out = tmp_path / "kb.kbpack"
        t = time.monotonic()
        proc = subprocess.run(with_address_space(2 << 30, [sys.executable, "-m", "kbc", "build", str(docs), "-o", str(out),
                                                           "--json", "--model", str(tiny_model), "--cache-dir",
                                                           str(cache_dir)]),
                              capture_output=True, text=True, cwd=ROOT, timeout=180)
        assert proc.returncode == 0, proc.stderr
        assert time.monotonic() - t < 120
        assert all(line.startswith("kbc: warning: ") for line in proc.stderr.splitlines()), proc.stderr
        assert "cache" in proc.stderr  # the damaged or unusable cache was reported, once
        report = json.loads(proc.stdout)
        reasons = {p["source"]: p["reason"] for p in report["skipped"]}
        assert set(reasons) == {"pipe.md", "zero.txt", "loop.md", "leak.txt", "huge.txt"}, reasons
        assert "limit per file" in reasons["huge.txt"]
        assert report["files"] == 2 and report["chunks"] >= 2  # good.md and the oddly named file
        assert _digests(docs) == before
    assert "\x1b" not in proc.stderr + proc.stdout
