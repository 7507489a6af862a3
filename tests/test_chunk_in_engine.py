"""Chunking runs where extraction runs (the engine's workers), and the bundle's bytes do not
depend on where it ran."""

from __future__ import annotations

import pytest

import kbc
from kbc.stages.chunk import ChunkStage

from conftest import SAMPLE_DOCS


@pytest.fixture
def driver_chunking(monkeypatch):
    """Counts the files the driver chunks itself (its ChunkStage._make; a worker's calls happen in
    another process and are not seen here)."""
    calls = []
    orig = ChunkStage._make

    def counted(self, ex):
        calls.append(ex.source.rel)
        return orig(self, ex)

    monkeypatch.setattr(ChunkStage, "_make", counted)
    return calls


def test_workers_chunk_and_the_bytes_match_a_driver_chunked_build(tmp_path, tiny_model, driver_chunking, monkeypatch):
    common = dict(model=str(tiny_model), use_cache=False)
    in_workers = kbc.build([SAMPLE_DOCS], tmp_path / "workers.kbpack", workers=2, **common)
    assert in_workers.chunks > 20
    assert driver_chunking == []  # every file was chunked by the worker that extracted it

    serial = kbc.build([SAMPLE_DOCS], tmp_path / "serial.kbpack", workers=0, **common)
    # in-process extraction chunks through the same plan (so here), each file once
    assert sorted(driver_chunking) == sorted(set(driver_chunking)) and len(driver_chunking) > 5
    driver_chunking.clear()

    # the driver alone (as before chunking moved): the same bytes
    monkeypatch.setattr(ChunkStage, "plan", lambda self, model_dir: None)
    on_driver = kbc.build([SAMPLE_DOCS], tmp_path / "driver.kbpack", workers=2, **common)
    assert len(driver_chunking) == on_driver.files - len(on_driver.skipped) > 5
    a = (tmp_path / "workers.kbpack").read_bytes()
    assert a == (tmp_path / "serial.kbpack").read_bytes() == (tmp_path / "driver.kbpack").read_bytes()
    assert serial.chunks == on_driver.chunks == in_workers.chunks


def test_a_warm_cache_chunks_nothing_anywhere_and_matches(tmp_path, tiny_model, driver_chunking):
    common = dict(model=str(tiny_model), cache_dir=tmp_path / "cache")
    cold = kbc.build([SAMPLE_DOCS], tmp_path / "cold.kbpack", **common)
    warm = kbc.build([SAMPLE_DOCS], tmp_path / "warm.kbpack", **common)
    assert warm.cache["files_cached"] == cold.files and driver_chunking == []  # chunk records from the cache
    assert (tmp_path / "cold.kbpack").read_bytes() == (tmp_path / "warm.kbpack").read_bytes()


def test_a_worker_that_cannot_chunk_leaves_it_to_the_driver(tmp_path, tiny_model, driver_chunking, monkeypatch):
    from kbc.stages.chunk import ChunkPlan

    real = ChunkStage.plan
    # a plan whose settings disagree with the driver's: the worker refuses it, the driver chunks
    monkeypatch.setattr(ChunkStage, "plan", lambda self, model_dir: ChunkPlan(
        **{**real(self, model_dir).__dict__, "settings": "not-the-drivers"}))
    r = kbc.build([SAMPLE_DOCS], tmp_path / "b.kbpack", model=str(tiny_model), use_cache=False, workers=2)
    monkeypatch.setattr(ChunkStage, "plan", real)
    ref = kbc.build([SAMPLE_DOCS], tmp_path / "ref.kbpack", model=str(tiny_model), use_cache=False, workers=2)
    assert len(driver_chunking) == r.files - len(r.skipped)
    assert (tmp_path / "b.kbpack").read_bytes() == (tmp_path / "ref.kbpack").read_bytes() and r.chunks == ref.chunks
