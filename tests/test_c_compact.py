"""libkbpack (runtimes/c) on format 1.4's vector encodings (FORMAT.md §2.7): int8 vectors with their
scales and binary codes with the two-stage search, compared with kbc's Python reader on the same
bytes. Dense and hybrid rankings must be the same ids, scores within 1e-5; forged and damaged
scales and codes must get the same verdict from both readers; the `kbpack` tool runs under the
address-space limit and timeout of test_libkbpack."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import SAMPLE_DOCS, kbc_cli
from forge import rebuild, sections
from kbc.format.bundle import Bundle, write_bundle
from kbc.errors import BundleError
from kbc.query.knowledge_base import KnowledgeBase
from test_libkbpack import (FUSIONS, QUESTIONS, TIME_LIMIT_S, assert_same_ranking, c_verdict, flipped_verdicts, hits_of,
                            kbpack, python_verdict, ranked, with_retrieval, write_f32)


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def with_binary_settings(src: Path, dst: Path, **settings) -> Path:
    """A copy of `src` whose manifest's vectors.binary has `settings` (checksums recomputed): small
    candidates and multiplier make the shortlist decide the answer on a small bundle."""
    data = src.read_bytes()
    m = json.loads(sections(data)["manifest"][1])
    m["vectors"]["binary"].update(settings)
    dst.write_bytes(rebuild(data, {"manifest": json.dumps(m).encode()}))
    return dst


# --------------------------------------------------------------------------- bundles built by kbc

@pytest.fixture(scope="module")
def sample_encoded(tmp_path_factory, sample_bundle) -> dict[str, Path]:
    """sample_docs built with --vectors int8 and binary (the session's build cache embeds once), and
    the binary one with C = M = 1, so that the shortlist is exactly the k nearest codes."""
    d = tmp_path_factory.mktemp("sample-encoded")
    out = {}
    for name in ("int8", "binary"):
        out[name] = d / f"{name}.kbpack"
        kbc_cli("build", str(SAMPLE_DOCS), "-o", str(out[name]), "--vectors", name, "-q", check=True)
    out["binary-narrow"] = with_binary_settings(out["binary"], d / "narrow.kbpack", candidates=1, multiplier=1)
    return out


def test_the_built_bundles_hold_what_they_should(kbpack_tool, sample_encoded):
    for name, path in sample_encoded.items():
        with Bundle(path) as b:
            assert b.dtype_name == "int8" and (b.binary_index() is not None) == name.startswith("binary")
            assert b.count < 1000  # so C = 1000 shortlists every chunk; "binary-narrow" does not
        out = kbpack(kbpack_tool, "info", path)
        assert out.returncode == 0 and out.stderr == ""
        lines = out.stdout.splitlines()
        assert "dtype: int8" in lines and "scales: vector_scales (384 float32, one per dimension)" in lines
        binary = [line for line in lines if line.startswith("binary: ")]
        assert binary == [{"int8": "binary: no",
                           "binary": "binary: vectors_binary (48 bytes per chunk), candidates 1000, multiplier 10",
                           "binary-narrow": "binary: vectors_binary (48 bytes per chunk), candidates 1, multiplier 1"}[name]]
        assert kbpack(kbpack_tool, "verify", path).stdout == "intact\n"


@pytest.mark.parametrize("name", ["int8", "binary", "binary-narrow"])
def test_dense_top_k_for_every_probe_vector_matches_python(kbpack_tool, sample_encoded, name, tmp_path):
    path = sample_encoded[name]
    for k in (10, 3):
        with KnowledgeBase(path) as kb:
            queries = np.array(kb.bundle.probes().vectors)
            expected = kb.search_vectors(queries, k=k)
        assert len(queries) >= 15
        for i, (q, py_hits) in enumerate(zip(queries, expected)):
            c = hits_of(kbpack(kbpack_tool, "search", path, "--mode", "dense", "--unit", "chunk", "-k", k, "--vector",
                               write_f32(tmp_path / "q.f32", q)))
            assert_same_ranking(c, [(h.chunk_id, h.score) for h in py_hits], 1e-5, (name, "probe", i, k))


@pytest.mark.parametrize("name, fusion", [("int8", "tmm"), ("binary", "tmm"), ("binary-narrow", "tmm"),
                                          ("binary-narrow", "minmax"), ("binary-narrow", "rrf")])
def test_hybrid_and_dense_search_match_python(kbpack_tool, sample_encoded, sample_bundle, name, fusion, tmp_path):
    """minmax and rrf search to depth 30 and 50 (FUSIONS): on binary-narrow the dense list of hybrid
    search is then a real shortlist of the 52 chunks."""
    path = with_retrieval(sample_encoded[name], tmp_path / "r.kbpack", FUSIONS[fusion])
    with KnowledgeBase(sample_bundle) as kb:
        vectors = kb.embed_queries(QUESTIONS)
    compared = 0
    with KnowledgeBase(path) as kb:
        assert kb.default_mode == "hybrid" and kb.retriever.settings.fusion == fusion
        for question, v in zip(QUESTIONS, vectors):
            qf = write_f32(tmp_path / "q.f32", v)
            for mode, k in (("hybrid", 10), ("hybrid", 3), ("dense", 10)):
                args = ["search", path, "--unit", "chunk", "-k", k, "--vector", qf, "--", question]
                if mode != "hybrid":
                    args[2:2] = ["--mode", mode]
                c = hits_of(kbpack(kbpack_tool, *args))
                py = ranked(*kb.retriever.search(v[None], [question], k, mode=mode)[0])
                assert_same_ranking(c, py, 1e-5, (name, fusion, question, mode, k))
                compared += len(c)
    assert compared > 100


# --------------------------------------------------------------------------- many queries, every encoding

SEARCHER = r"""
#include <stdio.h>
#include <stdlib.h>
#include "kbpack.h"

int main(int argc, char **argv) { /* BUNDLE QUERIES.f32 K: one line of `id:score` per query */
  kbp_bundle *kb;
  kbp_error err;
  if (argc != 4) return 2;
  if (kbp_open(argv[1], &kb, &err) != KBP_OK) return fprintf(stderr, "%s\n", err.message), 3;
  size_t dim = kbp_dim(kb), k = (size_t)atol(argv[3]), n;
  float *q = malloc(dim * sizeof *q);
  kbp_hit *hits = malloc((k ? k : 1) * sizeof *hits);
  FILE *f = fopen(argv[2], "rb");
  while (f && q && hits && fread(q, sizeof *q, dim, f) == dim) {
    if (kbp_search(kb, q, NULL, k, KBP_MODE_DENSE, hits, &n) != KBP_OK)
      return fprintf(stderr, "%s\n", kbp_last_error(kb)->message), 3;
    for (size_t i = 0; i < n; i++) printf("%s%llu:%.9g", i ? " " : "", (unsigned long long)hits[i].id, hits[i].score);
    printf("\n");
  }
  unsigned c, m;
  int binary = kbp_binary(kb, &c, &m);
  printf("%s %d %u %u\n", kbp_dtype(kb), binary, c, m);
  if (f) fclose(f);
  free(q);
  free(hits);
  kbp_close(kb);
  return 0;
}
"""


@pytest.fixture(scope="module")
def searcher(libkbpack, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("searcher")
    (d / "searcher.c").write_text(SEARCHER)
    return libkbpack.compile(d / "searcher.c", d / "searcher")


def c_search_many(searcher: Path, bundle: Path, queries: np.ndarray, k: int, tmp_path: Path):
    qf = write_f32(tmp_path / "queries.f32", queries)
    out = subprocess.run([str(searcher), str(bundle), str(qf), str(k)], capture_output=True, text=True,
                         timeout=TIME_LIMIT_S)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    *rows, last = out.stdout.splitlines()
    assert len(rows) == len(queries)
    parsed = [[(int(i), float(s)) for i, s in (hit.split(":") for hit in row.split())] for row in rows]
    return parsed, last


# (dtype, binary, dim): dims that are and are not multiples of 8 and 64; C = M = 1 or 5 and 2
ENCODINGS = [("int8", True, 13), ("int8", True, 64), ("int8", False, 37), ("float32", True, 24),
             ("float16", True, 9)]


@pytest.mark.parametrize("dtype, binary, dim", ENCODINGS, ids=[f"{d}{'+binary' if b else ''}-{n}" for d, b, n in ENCODINGS])
def test_many_random_queries_rank_as_in_python(searcher, tmp_path, dtype, binary, dim):
    """400 chunks, 60 queries, k of 1, 10 and 37 (and C = 5, M = 2: R = max(2k, 5)) through the
    library itself: the same shortlist, so the same ids, the scores within 1e-5. Low dimensions make
    many codes equally distant, so ties at the shortlist's cut are broken by chunk id in both."""
    x = unit_rows(400, dim, seed=dim)
    x[7] = x[3]  # equal rows: equal codes and scores, the lower id first
    path = write_bundle(tmp_path / "b.kbpack", manifest={}, vectors=x, chunks=[{"text": str(i)} for i in range(400)],
                        dtype=dtype, binary=binary)
    if binary:
        path = with_binary_settings(path, tmp_path / "narrow.kbpack", candidates=5, multiplier=2)
    queries = unit_rows(60, dim, seed=100 + dim)
    queries[0] = x[3]
    queries[1, ::2] = 0.0  # a zero is not > 0: its bit is 0
    with KnowledgeBase(path) as kb:
        for k in (1, 10, 37):
            c, info = c_search_many(searcher, path, queries, k, tmp_path)
            assert info == f"{dtype} {int(binary)} {5 if binary else 0} {2 if binary else 0}"
            for i, (row, py_hits) in enumerate(zip(c, kb.search_vectors(queries, k=k))):
                # random vectors have no near-ties at this size, but allow float32 summation order to swap two
                # chunks whose scores agree to 1e-6
                assert_same_ranking(row, [(h.chunk_id, h.score) for h in py_hits], 1e-5, (dtype, binary, dim, i, k),
                                    ties=1e-6)
        first = kb.search_vectors(queries[:1], k=2)[0]
    assert [h.chunk_id for h in first] == [3, 7]


def test_equal_distances_shortlist_the_lowest_ids(searcher, tmp_path):
    """Every code equal: the shortlist is the first R chunks (FORMAT.md §2.7), whatever their scores."""
    x = np.zeros((50, 8), np.float32)
    x[:, 0] = -np.linspace(0.1, 1.0, 50)  # negative: every code is 0; later rows score higher for q[0] < 0
    x[:, 1] = -1.0
    path = write_bundle(tmp_path / "b.kbpack", manifest={}, vectors=x, chunks=[{"text": str(i)} for i in range(50)],
                        dtype="int8", binary=True)
    path = with_binary_settings(path, tmp_path / "narrow.kbpack", candidates=7, multiplier=1)
    q = np.zeros((1, 8), np.float32)
    q[0, 0] = -1.0
    c, _ = c_search_many(searcher, path, q, 3, tmp_path)
    assert [i for i, _ in c[0]] == [6, 5, 4]  # the best 3 of chunks 0..6, not of all 50
    with KnowledgeBase(path) as kb:
        assert [h.chunk_id for h in kb.search_vectors(q, k=3)[0]] == [6, 5, 4]


# --------------------------------------------------------------------------- forged and damaged sections

DIM, COUNT = 13, 40  # 13: three unused bits in each code's last byte


@pytest.fixture(scope="module")
def compact(tmp_path_factory) -> bytes:
    x = unit_rows(COUNT, DIM, seed=5)
    path = write_bundle(tmp_path_factory.mktemp("compact") / "c.kbpack", manifest={}, vectors=x,
                        chunks=[{"text": f"chunk {i}"} for i in range(COUNT)], dtype="int8", binary=True)
    return path.read_bytes()


def manifest_edit(edit):
    def forge(data: bytes) -> bytes:
        m = json.loads(sections(data)["manifest"][1])
        edit(m["vectors"])
        return rebuild(data, {"manifest": json.dumps(m).encode()})
    return forge


def section_edit(name: str, change):
    def forge(data: bytes) -> bytes:
        return rebuild(data, {name: change(sections(data)[name][1])})
    return forge


def scales_set(index: int, value: float):
    def change(raw: bytes) -> bytes:
        s = np.frombuffer(raw, "<f4").copy()
        s[index] = value
        return s.tobytes()
    return change


def padding_bit(row: int):
    def change(raw: bytes) -> bytes:
        codes = bytearray(raw)
        codes[row * 2 + 1] |= 0x01  # dimension 15 of a 13-d code: unused
        return bytes(codes)
    return change


def _dtype_without_scales(v):
    v.pop("scales")


def _pop_binary_section(v):
    v["binary"].pop("section")


# name: (forge, expected `verify` verdict of both readers: (exit code, part named))
CASES = {
    "intact": (lambda d: d, (0, None)),
    "scale NaN": (section_edit("vector_scales", scales_set(4, np.nan)), (3, "vector_scales")),
    "scale negative": (section_edit("vector_scales", scales_set(0, -0.5)), (3, "vector_scales")),
    "scale infinite": (section_edit("vector_scales", scales_set(12, np.inf)), (3, "vector_scales")),
    "scale -0.0 (>= 0)": (section_edit("vector_scales", scales_set(2, -0.0)), (0, None)),
    "scale huge": (section_edit("vector_scales", scales_set(3, 2.7e36)), (3, "vector_scales")),  # 127 x it overflows
    "scale largest": (section_edit("vector_scales", scales_set(3, 2.6e36)), (0, None)),
    "scales short": (section_edit("vector_scales", lambda r: r[:-4]), (3, "vector_scales")),
    "scales long": (section_edit("vector_scales", lambda r: r + b"\0" * 4), (3, "vector_scales")),
    "scales as f16le": (lambda d: rebuild(d, encodings={"vector_scales": "f16le"}), (3, "vector_scales")),
    "scales missing": (lambda d: rebuild(d, drop=("vector_scales",)), (3, "vector_scales")),
    "int8 without vectors.scales": (manifest_edit(_dtype_without_scales), (3, "manifest")),
    "vectors.scales names another section": (manifest_edit(lambda v: v.update(scales="chunks")), (3, "manifest")),
    "int8 vectors one byte long": (section_edit("vectors", lambda r: r + b"\0"), (3, "vectors")),
    "int8 vectors as f32le": (lambda d: rebuild(d, encodings={"vectors": "f32le"}), (3, "vectors")),
    "dtype int4": (manifest_edit(lambda v: v.update(dtype="int4")), (3, "manifest")),
    "dtype float32 over int8 bytes": (manifest_edit(lambda v: v.update(dtype="float32")), (3, "vectors")),
    "codes short": (section_edit("vectors_binary", lambda r: r[:-1]), (3, "vectors_binary")),
    "codes as u8": (lambda d: rebuild(d, encodings={"vectors_binary": "u8"}), (3, "vectors_binary")),
    "codes missing": (lambda d: rebuild(d, drop=("vectors_binary",)), (3, "vectors_binary")),
    "codes missing, binary null": (lambda d: manifest_edit(lambda v: v.update(binary=None))(
        rebuild(d, drop=("vectors_binary",))), (0, None)),
    "padding bit set": (section_edit("vectors_binary", padding_bit(17)), (3, "vectors_binary")),
    "candidates 0": (manifest_edit(lambda v: v["binary"].update(candidates=0)), (3, "manifest")),
    "candidates 65537": (manifest_edit(lambda v: v["binary"].update(candidates=65537)), (3, "manifest")),
    "candidates 65536": (manifest_edit(lambda v: v["binary"].update(candidates=65536)), (0, None)),
    "candidates 200.0": (manifest_edit(lambda v: v["binary"].update(candidates=200.0)), (3, "manifest")),
    "candidates '200'": (manifest_edit(lambda v: v["binary"].update(candidates="200")), (3, "manifest")),
    "candidates true": (manifest_edit(lambda v: v["binary"].update(candidates=True)), (3, "manifest")),
    "candidates 2**64": (manifest_edit(lambda v: v["binary"].update(candidates=2 ** 64)), (3, "manifest")),
    "multiplier 0": (manifest_edit(lambda v: v["binary"].update(multiplier=0)), (3, "manifest")),
    "multiplier 1025": (manifest_edit(lambda v: v["binary"].update(multiplier=1025)), (3, "manifest")),
    "multiplier 1024": (manifest_edit(lambda v: v["binary"].update(multiplier=1024)), (0, None)),
    "multiplier missing": (manifest_edit(lambda v: v["binary"].pop("multiplier")), (3, "manifest")),
    "binary section unnamed": (manifest_edit(_pop_binary_section), (3, "manifest")),
    "binary names chunks": (manifest_edit(lambda v: v["binary"].update(section="chunks")), (3, "manifest")),
    "binary a list": (manifest_edit(lambda v: v.update(binary=[1, 2])), (3, "manifest")),
}


def with_int8_rows(change):
    """The int8 rows edited (as a (COUNT, DIM) int8 array), checksums recomputed."""
    def forge(data: bytes) -> bytes:
        rows = np.frombuffer(sections(data)["vectors"][1], dtype=np.int8).reshape(COUNT, DIM).copy()
        change(rows)
        return rebuild(data, {"vectors": rows.tobytes()})
    return forge


CASES["byte -128 at the largest scale"] = (  # 128 x scale is finite: every value a byte stands for is a number
    lambda d: with_int8_rows(lambda r: r.__setitem__((slice(None), 3), -128))(
        section_edit("vector_scales", scales_set(3, 2.6e36))(d)), (0, None))


def test_binary_codes_with_a_faiss_index_are_refused_by_both_readers(kbpack_tool, tmp_path):
    """The codes are the index: a stored FAISS index beside them would make Python and C answer
    differently, so both refuse the bundle (FORMAT.md §2.7)."""
    from kbc.search.dense import build_index

    x = unit_rows(300, 16, seed=6)
    path = write_bundle(tmp_path / "both.kbpack", manifest={}, vectors=x, chunks=[{"text": str(i)} for i in range(300)],
                        dtype="int8", binary=True, index=build_index(x, "HNSW32").data)
    assert python_verdict(path) == c_verdict(kbpack_tool, path) == (3, "index")


def test_codes_the_manifest_does_not_name_are_skipped_but_verified(kbpack_tool, compact, tmp_path):
    """vectors.binary null: the codes are a section like any unknown one (FORMAT.md §4): dense search
    is exact, and verify checks only their SHA-256, so a set unused bit passes in both readers."""
    path = tmp_path / "unnamed.kbpack"
    path.write_bytes(section_edit("vectors_binary", padding_bit(3))(
        manifest_edit(lambda v: v.update(binary=None))(compact)))
    rows = kbpack(kbpack_tool, "info", path).stdout.splitlines()
    assert "binary: no" in rows
    assert [r for r in rows if "vectors_binary" in r][0].endswith("(not read by this reader)")
    assert not [r for r in rows if "vector_scales" in r][0].endswith("(not read by this reader)")
    assert c_verdict(kbpack_tool, path) == python_verdict(path) == (0, None)


def python_search_ok(path: Path, q: np.ndarray) -> list[tuple[int, float]] | None:
    try:
        with KnowledgeBase(path) as kb:
            return [(h.chunk_id, h.score) for h in kb.search_vectors(q[None], k=5)[0]]
    except BundleError:
        return None


@pytest.mark.parametrize("case", sorted(CASES))
def test_forged_compact_sections_get_the_same_verdict_from_both_readers(case, kbpack_tool, compact, tmp_path):
    """verify: the same exit code and part; dense search: both answer (the same hits) or both refuse;
    every command of the tool exits 0 or 3 with one line, within the memory and time limits."""
    forge, expected = CASES[case]
    path = tmp_path / "forged.kbpack"
    path.write_bytes(forge(compact))
    assert python_verdict(path) == expected
    assert c_verdict(kbpack_tool, path) == expected
    q = unit_rows(1, DIM, seed=9)[0]
    c = kbpack(kbpack_tool, "search", path, "--mode", "dense", "-k", 5, "--vector", write_f32(tmp_path / "q.f32", q))
    py = python_search_ok(path, q)
    assert (c.returncode == 0) == (py is not None), (c.stderr, py)
    if py is not None and case in ("scale largest", "byte -128 at the largest scale"):  # near float32's limit: the same chunks
        assert [i for i, _ in hits_of(c)] == [i for i, _ in py]
    elif py is not None:
        assert_same_ranking(hits_of(c), py, 1e-5, case)
    else:
        assert c.returncode == 3 and c.stderr.count("\n") == 1 and c.stderr.startswith("kbpack: "), c.stderr
    for args in (("info", path), ("chunk", path, 0)):
        out = kbpack(kbpack_tool, *args)
        assert out.returncode in {0, 3}, (args, out.stderr)
        if out.returncode:
            assert out.stderr.count("\n") == 1 and out.stderr.startswith("kbpack: "), out.stderr


def test_the_padding_bits_count_in_the_distance_until_verify_refuses_them(searcher, compact, tmp_path):
    """Searching does not check the unused bits (neither reader does): they are XOR'd and counted
    like any bit, so with C = M = 1 a row whose code has one set scores a distance more in both."""
    x_path = tmp_path / "narrow.kbpack"
    x_path.write_bytes(compact)
    narrow = with_binary_settings(x_path, tmp_path / "n.kbpack", candidates=1, multiplier=1)
    padded = tmp_path / "padded.kbpack"
    padded.write_bytes(section_edit("vectors_binary", lambda r: bytes(b | 0x07 if i % 2 else b for i, b in enumerate(r)))(
        narrow.read_bytes()))
    queries = unit_rows(30, DIM, seed=11)
    for path in (narrow, padded):
        c, _ = c_search_many(searcher, path, queries, 4, tmp_path)
        with KnowledgeBase(path) as kb:
            for row, py_hits in zip(c, kb.search_vectors(queries, k=4)):
                assert_same_ranking(row, [(h.chunk_id, h.score) for h in py_hits], 1e-5, path.name)
    with Bundle(narrow) as a, Bundle(padded) as b:
        assert not np.array_equal(a.binary_index().codes, b.binary_index().codes)


@pytest.mark.parametrize("recompute", [False, True], ids=["damaged", "forged"])
def test_a_flipped_byte_anywhere_in_an_int8_binary_bundle(kbpack_tool, compact, tmp_path, recompute):
    """As test_libkbpack's flipped-byte test, on a bundle with scales and codes: damaged, both readers
    name the same part; forged, both reach the same verdict (a flipped scale sign bit or a code's
    unused bit is refused, another bit is a valid bundle)."""
    verdicts = {}
    for part, at, mask, c, py in flipped_verdicts(kbpack_tool, compact, tmp_path, (0x01, 0x80), recompute):
        assert c == py if not recompute or c[0] else c[0] == py[0], (part, at, mask, c, py)
        if not recompute:
            assert c[0] == 3, (part, at, mask, c)
        verdicts[part, at, mask] = c
    assert {"vector_scales", "vectors_binary"} <= {p for p, _, _ in verdicts}
    if recompute:
        refused = {c[1] for c in verdicts.values() if c[0]}
        assert {"vector_scales", "vectors_binary"} <= refused
        assert any(c[0] == 0 for (p, _, _), c in verdicts.items() if p == "vectors_binary")
