"""The build cache is correct: it reuses exactly what is unchanged, never across models, and changes no byte."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import kbc
from kbc.format.bundle import Bundle


def write(p: Path, text: str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p


def corpus(root: Path) -> Path:
    write(root / "a.md", "Apples grow on trees in temperate orchards. " * 20)
    write(root / "b.md", "Bridges carry roads across rivers and valleys. " * 20)
    write(root / "c.txt", "Comets are icy bodies that orbit the sun. " * 20)
    return root


def test_changed_file_reembedded_unchanged_not(tmp_path):
    src = corpus(tmp_path / "docs")
    cache = tmp_path / "cache"
    first = kbc.build([src], tmp_path / "1.kbpack", cache_dir=cache)
    assert first.cache["chunks_embedded"] == first.chunks and first.cache["chunks_cached"] == 0
    write(src / "b.md", "Bridges were rebuilt in steel after the flood of 1952. " * 20)
    second = kbc.build([src], tmp_path / "2.kbpack", cache_dir=cache)
    assert second.cache["files_cached"] == 2 and second.cache["files_extracted"] == 1
    with Bundle(tmp_path / "2.kbpack") as b:
        b_chunks = sum(1 for c in b.iter_chunks() if b.sources[c["source"]]["path"] == "b.md")
    assert second.cache["chunks_embedded"] == b_chunks > 0
    assert second.cache["chunks_cached"] == second.chunks - b_chunks


def test_cached_build_is_byte_identical_to_clean_build(tmp_path):
    src = corpus(tmp_path / "docs")
    cache = tmp_path / "cache"
    kbc.build([src], tmp_path / "warm.kbpack", cache_dir=cache)
    write(src / "d.md", "Dunes move slowly with the desert wind. " * 15)
    cached = kbc.build([src], tmp_path / "cached.kbpack", cache_dir=cache)
    assert cached.cache["chunks_cached"] > 0
    kbc.build([src], tmp_path / "clean.kbpack", use_cache=False)
    assert (tmp_path / "cached.kbpack").read_bytes() == (tmp_path / "clean.kbpack").read_bytes()


def test_different_model_gets_no_reuse(tmp_path, tiny_model):
    src = corpus(tmp_path / "docs")
    cache = tmp_path / "cache"
    kbc.build([src], tmp_path / "minilm.kbpack", cache_dir=cache)
    other = kbc.build([src], tmp_path / "tiny.kbpack", cache_dir=cache, model=str(tiny_model))
    assert other.cache["chunks_cached"] == 0 and other.cache["chunks_embedded"] == other.chunks
    assert other.cache["files_cached"] == 3  # extraction does not depend on the model
    int8 = kbc.build([src], tmp_path / "int8.kbpack", cache_dir=cache, backend="onnx-int8")
    assert int8.cache["chunks_cached"] == 0  # another precision is another embedder


def test_reuse_previous_bundle_as_cache(tmp_path):
    src = corpus(tmp_path / "docs")
    kbc.build([src], tmp_path / "old.kbpack", use_cache=False)
    report = kbc.build([src], tmp_path / "new.kbpack", use_cache=False, reuse=[tmp_path / "old.kbpack"])
    assert report.cache["chunks_reused"] == report.chunks and report.cache["chunks_embedded"] == 0
    assert (tmp_path / "old.kbpack").read_bytes() == (tmp_path / "new.kbpack").read_bytes()


def test_reused_vectors_never_enter_the_shared_cache_and_bad_ones_are_refused(tmp_path, monkeypatch):
    """A bundle with recomputed checksums can carry any vectors: they serve one --reuse build
    (when finite and unit length) and are never stored where later builds would ship them."""
    from kbc.format.bundle import Bundle, write_bundle
    from kbc.stages import embed

    # the rows of a large bundle that --reuse's re-embedding sample misses (tests/test_hostile_reuse.py
    # tests the sample): here none is sampled
    monkeypatch.setattr(embed, "REUSE_CHECK_ALL", 0)
    monkeypatch.setattr(embed, "REUSE_SAMPLE", 0)

    src = corpus(tmp_path / "docs")
    kbc.build([src], tmp_path / "old.kbpack", use_cache=False)
    with Bundle(tmp_path / "old.kbpack") as old:
        manifest = {k: v for k, v in old.manifest.items() if k not in ("format", "vectors", "chunks")}
        chunks = [{k: v for k, v in c.items() if k != "id"} for c in old.iter_chunks()]
        vectors = np.array(old.vectors)
    vectors[0] *= 10  # not unit length (the writer itself refuses NaN; the reader checks both)
    vectors[1:] = -vectors[1:]  # unit length, finite: wrong but undetectable, must stay out of the cache
    write_bundle(tmp_path / "evil.kbpack", manifest=manifest, vectors=vectors, chunks=chunks)
    cache = tmp_path / "cache"
    report = kbc.build([src], tmp_path / "a.kbpack", cache_dir=cache, reuse=[tmp_path / "evil.kbpack"])
    assert report.cache["reuse_rejected"] == 1 and report.cache["chunks_reused"] == report.chunks - 1
    clean = kbc.build([src], tmp_path / "b.kbpack", cache_dir=cache)
    assert clean.cache["chunks_cached"] == 1 and clean.cache["chunks_embedded"] == clean.chunks - 1
    assert (tmp_path / "b.kbpack").read_bytes() == (tmp_path / "old.kbpack").read_bytes()


def test_reuse_ignores_bundle_from_another_model(tmp_path, tiny_model):
    src = corpus(tmp_path / "docs")
    kbc.build([src], tmp_path / "tiny.kbpack", use_cache=False, model=str(tiny_model))
    report = kbc.build([src], tmp_path / "new.kbpack", use_cache=False, reuse=[tmp_path / "tiny.kbpack"])
    assert report.cache["chunks_cached"] == 0


def test_damaged_cache_entry_is_rebuilt_not_trusted(tmp_path):
    import sqlite3

    src = corpus(tmp_path / "docs")
    cache = tmp_path / "cache"
    kbc.build([src], tmp_path / "1.kbpack", cache_dir=cache)
    db = sqlite3.connect(cache / "cache.sqlite3")
    db.execute("UPDATE vectors SET value = x'00'")  # wrong length: must be ignored
    db.execute("UPDATE extracted SET value = x'00'")
    db.commit()
    db.close()
    report = kbc.build([src], tmp_path / "2.kbpack", cache_dir=cache)
    assert report.cache["chunks_cached"] == 0 and report.cache["files_cached"] == 0
    with Bundle(tmp_path / "1.kbpack") as a, Bundle(tmp_path / "2.kbpack") as b:
        assert np.array_equal(a.vectors, b.vectors)


def test_fully_cached_cli_rebuild_exits_cleanly(tmp_path):
    """Regression: a rebuild that embeds nothing used to exit while a session was still being created."""
    from conftest import run_kbc

    src = corpus(tmp_path / "docs")
    args = ["build", str(src), "-o", str(tmp_path / "k.kbpack"), "--cache-dir", str(tmp_path / "c"), "--json"]
    run_kbc(*args, check=True)
    for _ in range(3):
        proc = run_kbc(*args)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["cache"]["chunks_embedded"] == 0


def test_a_cache_damaged_or_read_only_mid_build_costs_a_warning_not_the_build(tmp_path):
    """A damaged page is found by the first query that touches it: the build goes on without the
    cache, the file is moved aside, and the next build starts a fresh one."""
    import sqlite3

    src = corpus(tmp_path / "docs")
    cache = tmp_path / "cache"
    kbc.build([src], tmp_path / "a.kbpack", cache_dir=cache)
    db = cache / "cache.sqlite3"
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    page = 4096
    for at in range(page, len(data), page):  # every page but the header: tables and indexes
        data[at:at + 64] = b"\xff" * 64
    db.write_bytes(bytes(data))
    for wal in cache.glob("cache.sqlite3-*"):
        wal.unlink()
    report = kbc.build([src], tmp_path / "b.kbpack", cache_dir=cache)
    assert report.chunks > 0 and (tmp_path / "b.kbpack").read_bytes() == (tmp_path / "a.kbpack").read_bytes()
    assert (cache / "cache.sqlite3.damaged").exists()  # found and moved aside
    again = kbc.build([src], tmp_path / "c.kbpack", cache_dir=cache)
    assert again.chunks == report.chunks


def test_non_finite_cached_vectors_are_misses(tmp_path):
    from kbc.infra.cache import Cache

    c = Cache(tmp_path / "c")
    c.put_vectors([(b"k1", np.array([np.nan, 1.0], dtype=np.float32)), (b"k2", np.array([0.6, 0.8], dtype=np.float32))])
    got = c.get_vectors([b"k1", b"k2"], 2)
    assert got[0] is None and list(got[1]) == pytest.approx([0.6, 0.8])
