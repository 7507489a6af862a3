"""Fuzz every section of a bundle, checksums recomputed each time (a checksum proves nothing about
who wrote the file): whatever the bytes, reading, verifying, decoding chunks and searching either
work or raise the reader's one-line errors (exit 3 / 2 in the CLI), never anything else.

`KBC_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz_bundle.py` runs a longer campaign."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forge import resign
from kbc.format.bundle import Bundle, write_bundle
from kbc.errors import BundleError, InputError
from kbc.search.dense import Searcher
from kbc.format.bm25 import LexicalBuilder
from kbc.format.retrieval import RetrievalSettings
from kbc.search.fusion import Retriever

EXAMPLES = int(os.environ.get("KBC_FUZZ_EXAMPLES", "300"))
TEXTS = ["alpha beta 2018", "beta gamma, 1,577 units", "Gamma delta ÉPÉE", "delta alpha 漢字", "epsilon"]


@pytest.fixture(scope="module", params=[("float32", False), ("int8", True)], ids=["float32", "int8+binary"])
def original(tmp_path_factory, request) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """The bundle's bytes and {section name: (offset, length)}: float32 vectors, and (format 1.4)
    int8 vectors with their scales and binary codes."""
    dtype, binary = request.param
    b = LexicalBuilder()
    b.add_many(TEXTS)
    meta, sections = b.finish()
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((len(TEXTS), 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    chunks = [{"text": t, "source": 0, "seq": i, "page_start": 1, "page_end": 1, "context": "doc"}
              for i, t in enumerate(TEXTS)]
    p = write_bundle(tmp_path_factory.mktemp("fuzz") / "f.kbpack", chunks_per_block=2, vectors=vecs, chunks=chunks,
                     dtype=dtype, binary=binary,
                     manifest={"lexical": meta, "retrieval": RetrievalSettings().to_manifest(),
                               "sources": [{"path": "doc.md"}], "embedder": {"dim": 8}},
                     extra_sections=sections)
    with Bundle(p) as bundle:
        where = {n: (s.offset, s.length) for n, s in bundle.sections.items()}
    return p.read_bytes(), where


def _use(path) -> None:
    with Bundle(path) as b:
        b.verify()
        for ch in b.iter_chunks():
            b.source_path(ch)
        lex = b.lexical()
        r = Retriever(searcher=Searcher(b.stored_vectors, b.index_bytes(), b.manifest.get("index", {}),
                                        scales=b.scales(), binary=b.binary_index()),
                      lexical=lex, settings=b.retrieval_settings())
        mode = "hybrid" if lex is not None else "dense"
        r.search(np.asarray(b.vectors[:1], dtype=np.float32), ["alpha 2018 gamma"], 3, mode=mode)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_bytes_with_valid_checksums_are_used_or_refused_cleanly(original, tmp_path, data):
    raw, sections = original
    name = data.draw(st.sampled_from(sorted(sections)))
    offset, length = sections[name]
    buf = bytearray(raw)
    if length:
        for _ in range(data.draw(st.integers(1, 8))):
            at = offset + data.draw(st.integers(0, length - 1))
            buf[at] = data.draw(st.integers(0, 255))
    path = tmp_path / "forged.kbpack"
    path.write_bytes(resign(bytes(buf)))
    try:
        _use(path)
    except (BundleError, InputError):
        pass
