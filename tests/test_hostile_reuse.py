"""--reuse checks what it reuses (issue 43, item 4): a bundle's embedder record is a claim, so some
of its rows are re-embedded (every row of a small bundle; else a sample chosen by hash plus one at
random) and a bundle whose vectors are not its recorded model's is refused in one line naming it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import kbc
from kbc.errors import InputError
from kbc.format.bundle import Bundle, write_bundle
from kbc.stages import embed


def _corpus(root: Path, n: int = 6) -> Path:
    root.mkdir(parents=True)
    topics = ["apples grow in orchards", "bridges cross rivers", "comets orbit the sun", "dunes move with wind",
              "eels swim upstream", "ferns like shade", "glaciers carve valleys", "herons hunt fish"]
    for i in range(n):
        (root / f"{i}.md").write_text(f"# Note {i}\n\n" + (topics[i % len(topics)].capitalize() + ". ") * 12)
    return root


def _forged(genuine: Path, out: Path, forge) -> Path:
    """The genuine bundle rewritten with checksums recomputed, its embedder record untouched and its
    vectors replaced by forge(vectors)."""
    with Bundle(genuine) as old:
        manifest = {k: v for k, v in old.manifest.items() if k not in ("format", "vectors", "chunks")}
        chunks = [{k: v for k, v in c.items() if k != "id"} for c in old.iter_chunks()]
        vectors = forge(np.array(old.vectors))
    write_bundle(out, manifest=manifest, vectors=vectors, chunks=chunks)
    return out


def _one_distinct_row(vectors: np.ndarray) -> np.ndarray:
    """The issue's forgery: every vector the same unit row (finite, unit length: nothing else is wrong)."""
    row = np.random.default_rng(0).standard_normal(vectors.shape[1]).astype(np.float32)
    return np.tile(row / np.linalg.norm(row), (len(vectors), 1))


def test_a_bundle_of_forged_vectors_is_refused_naming_it(tmp_path, tiny_model):
    src = _corpus(tmp_path / "docs")
    genuine = tmp_path / "old.kbpack"
    kbc.build([src], genuine, use_cache=False, model=str(tiny_model))
    evil = _forged(genuine, tmp_path / "evil.kbpack", _one_distinct_row)
    with pytest.raises(InputError) as refused:
        kbc.build([src], tmp_path / "new.kbpack", use_cache=False, model=str(tiny_model), reuse=[evil])
    assert str(refused.value).startswith(f"{evil}: --reuse refused: ") and "\n" not in str(refused.value)
    assert "are not what" in str(refused.value) and not (tmp_path / "new.kbpack").exists()
    # the genuine one is reused whole, every row of it checked (a small bundle), and changes no byte
    report = kbc.build([src], tmp_path / "same.kbpack", use_cache=False, model=str(tiny_model), reuse=[genuine])
    assert report.cache["chunks_reused"] == report.chunks and report.cache["reuse_checked"] == report.chunks
    assert (tmp_path / "same.kbpack").read_bytes() == genuine.read_bytes()


def test_a_large_bundle_is_checked_by_a_sample_and_one_forged_row_in_it_is_found(tmp_path, tiny_model, monkeypatch):
    # the sampling path, at a size a test affords: bundles over 2 rows checked by 1 row by hash + 1 at random
    monkeypatch.setattr(embed, "REUSE_CHECK_ALL", 2)
    monkeypatch.setattr(embed, "REUSE_SAMPLE", 1)
    src = _corpus(tmp_path / "docs", n=8)
    genuine = tmp_path / "old.kbpack"
    kbc.build([src], genuine, use_cache=False, model=str(tiny_model))
    report = kbc.build([src], tmp_path / "same.kbpack", use_cache=False, model=str(tiny_model), reuse=[genuine])
    assert report.chunks > 2 and report.cache["reuse_checked"] == 2 and report.cache["chunks_reused"] == report.chunks

    # the row the hash rule picks is the same every build: forged alone, it is always found
    with Bundle(genuine) as old:
        keys = [embed.vector_key(embed.embedder_identity(embed.EmbedderSpec(**old.manifest["embedder"])),
                                 old.manifest["embedder"]["document_prompt"], embed.embedded_text(c))
                for c in old.iter_chunks()]
    picked = max(range(len(keys)), key=keys.__getitem__)  # the largest key: the one row the rule checks

    def forge_the_picked_row(vectors: np.ndarray) -> np.ndarray:
        vectors[picked] = -vectors[picked]  # unit length, finite: only re-embedding tells
        return vectors

    evil = _forged(genuine, tmp_path / "evil.kbpack", forge_the_picked_row)
    with pytest.raises(InputError, match=rf"--reuse refused: 1 of the 2 vectors re-embedded to check it \(row {picked}"):
        kbc.build([src], tmp_path / "new.kbpack", use_cache=False, model=str(tiny_model), reuse=[evil])
