"""libkbpack (runtimes/c): the C library and its `kbpack` tool open, verify, read and search bundles
as kbc's Python reader does. Every test runs the tool (or a program linked against the library)
and compares it with the Python reader on the same bytes: the same top-k ids and scores, the same
chunks, the same verdict on damaged and forged files.

The tool always runs as a child process under an address-space limit and a timeout, so a reader
that allocates what a forged file asks for, or loops, fails the test instead of the machine."""

from __future__ import annotations

import functools
import json
import math
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import test_hostile_bundles as hostile
from conftest import SAMPLE_DOCS, kbc_cli, with_address_space
from forge import rebuild, resign, sections
from kbc.format.bundle import Bundle, write_bundle
from kbc.errors import BundleError
from kbc.query.knowledge_base import KnowledgeBase
from kbc.tools.probe import compare

MEMORY_LIMIT = 512 << 20  # the tool maps the file; it allocates at most one 64 MiB block and its index
TIME_LIMIT_S = 60


def kbpack(tool: Path, *args) -> subprocess.CompletedProcess:
    """The kbpack tool; `search` with --json (its exact values: the default output is for people)."""
    if args and args[0] == "search":
        args = (*args[:2], "--json", *args[2:])
    argv = [str(tool), *map(str, args)]
    sanitized = "-fsanitize" in os.environ.get("LIBKBPACK_CFLAGS", "")  # ASan reserves terabytes of address space
    return subprocess.run(argv if sanitized else with_address_space(MEMORY_LIMIT, argv), capture_output=True,
                          text=True, timeout=TIME_LIMIT_S)


def hits_of(proc: subprocess.CompletedProcess) -> list[tuple[int, float]]:
    """`kbpack search --json` by chunk: [(id, score)], best first."""
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    out = json.loads(proc.stdout)
    assert out["unit"] == "chunk", out
    return [(h["id"], h["score"]) for h in out["hits"]]


def write_f32(path: Path, values) -> Path:
    np.asarray(values, dtype="<f4").tofile(path)
    return path


def assert_same_ranking(c: list[tuple[int, float]], py: list[tuple[int, float]], tol: float, what,
                        ties: float = 0.0) -> None:
    """The same ids in the same order, the scores at each rank within `tol`. With `ties`, two chunks
    whose scores differ by less than that may come in either order: float32 inner products summed in
    another order round differently (numpy's BLAS vs the C loop), which decides near-ties."""
    assert len(c) == len(py), (what, c, py)
    py_score = dict(py)
    for (ci, cs), (pi, ps) in zip(c, py):
        assert abs(cs - ps) <= tol, (what, cs, ps)
        if ci != pi:  # a near-tie, inside the list or at its cut
            other = py_score.get(ci, py[-1][1])
            assert ties and abs(other - ps) <= ties, (what, c, py)


def ranked(scores, ids) -> list[tuple[int, float]]:
    return [(int(i), float(s)) for s, i in zip(scores, ids)]


# --------------------------------------------------------------------------- bundles

@pytest.fixture(scope="module")
def tiny_bundle(tiny_encoder_bundle) -> Path:
    """sample_docs with the 32-d test model: 330 chunks in 6 blocks of 64, the last one partial, and
    the query encoder (format 1.3); conftest.tiny_encoder_bundle, built once per test run."""
    return tiny_encoder_bundle


@pytest.fixture(scope="module")
def tiny_f16_bundle(tmp_path_factory, tiny_model) -> Path:
    out = tmp_path_factory.mktemp("tiny16") / "tiny16.kbpack"
    kbc_cli("build", str(SAMPLE_DOCS), "-o", str(out), "--model", str(tiny_model), "--float16", "-q", check=True)
    return out


@pytest.fixture(scope="module")
def sample_f16_bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample16") / "sample16.kbpack"
    kbc_cli("build", str(SAMPLE_DOCS), "-o", str(out), "--float16", "-q", check=True)
    return out


BUNDLES = {"sample": "sample_bundle", "sample-f16": "sample_f16_bundle", "tiny": "tiny_bundle", "tiny-f16": "tiny_f16_bundle"}
# The tiny test model has random weights: its vectors are nearly parallel (cosines agree to about
# 1e-7), so which of two chunks ranks first is float32 rounding. Rankings from it are compared up to
# such ties; the real model's exactly.
NEAR_TIE = {"sample": 0.0, "sample-f16": 0.0, "tiny": 1e-6, "tiny-f16": 1e-6}


@pytest.fixture
def bundle_and_model(request, tiny_model):
    """(name, bundle, model to embed questions with) for the names in BUNDLES."""
    name = request.param
    return name, request.getfixturevalue(BUNDLES[name]), None if name.startswith("sample") else str(tiny_model)


def test_the_tiny_bundle_has_several_blocks_and_a_partial_last_one(tiny_bundle):
    with Bundle(tiny_bundle) as b:
        assert b.n_blocks >= 3 and b.count % b.block_size != 0


# --------------------------------------------------------------------------- dense search

@pytest.mark.parametrize("bundle_and_model", sorted(BUNDLES), indirect=True)
def test_dense_top10_for_every_probe_vector_matches_python(kbpack_tool, bundle_and_model, tmp_path):
    name, bundle, model = bundle_and_model
    with KnowledgeBase(bundle, model=model) as kb:
        queries = np.array(kb.bundle.probes().vectors)
        expected = kb.search_vectors(queries, k=10)
    assert len(queries) >= 15
    for i, (q, py_hits) in enumerate(zip(queries, expected)):
        c = hits_of(kbpack(kbpack_tool, "search", bundle, "--unit", "chunk", "--mode", "dense", "-k", 10, "--vector",
                           write_f32(tmp_path / "q.f32", q)))
        assert_same_ranking(c, [(h.chunk_id, h.score) for h in py_hits], 1e-5, ("probe", i), NEAR_TIE[name])


def test_dense_k_beyond_the_count_returns_every_chunk_once(kbpack_tool, tiny_bundle, tmp_path):
    with Bundle(tiny_bundle) as b:
        q, n = np.array(b.probes().vectors[0]), b.count
    c = hits_of(kbpack(kbpack_tool, "search", tiny_bundle, "--unit", "chunk", "--mode", "dense", "-k", n + 50,
                       "--vector",
                       write_f32(tmp_path / "q.f32", q)))
    assert sorted(i for i, _ in c) == list(range(n))
    assert all(a[1] >= b[1] for a, b in zip(c, c[1:]))


# --------------------------------------------------------------------------- lexical and hybrid search

QUESTIONS = [
    "How do I run only the tests whose names match a filter?",
    "cargo new hello_cargo",
    "How do I insert a value into a HashMap?",
    "How often should I water the greenhouse?",
    "Who argued before the Supreme Court?",
    "the and of what",  # stop words only: no lexical hit, hybrid falls back to dense
    "zzzqx unknownword",  # no term in the vocabulary: the same
]

FUSIONS = {
    "tmm": None,  # as kbc builds it: tmm, weight 0.4, depth 100
    "minmax": {"fusion": "minmax", "weight": 0.5, "depth": 30},
    "rrf": {"fusion": "rrf", "weight": 0.3, "depth": 50, "rrf_k": 10},
}


def with_retrieval(src: Path, dst: Path, settings: dict | None) -> Path:
    """A copy of `src` whose manifest's retrieval object has `settings` (checksums recomputed); a key
    set to None is removed, as a bundle written before it was added lacks it."""
    data = src.read_bytes()
    if settings:
        m = json.loads(sections(data)["manifest"][1])
        m["retrieval"].update(settings)
        for key in [k for k, v in settings.items() if v is None]:
            del m["retrieval"][key]
        data = rebuild(data, {"manifest": json.dumps(m).encode()})
    dst.write_bytes(data)
    return dst


# FORMAT.md §2.5.1 (1.8): kbc writes standout_weighting true; false, and a bundle written before 1.8
# without the key, fuse with the fixed weight
STANDOUT = {"on": True, "off": False, "absent": None}


# On the tiny model's bundle only BM25 is compared: with nearly parallel vectors the dense ranks,
# and so the fused ones, are float32 rounding (see NEAR_TIE).
SEARCHES = {"sample": (("hybrid", 10), ("hybrid", 3), ("lexical", 10), ("dense", 10)), "tiny": (("lexical", 10),)}


@pytest.mark.parametrize("bundle_and_model,fusion,standout",
                         [("sample", f, s) for f in sorted(FUSIONS) for s in STANDOUT] + [("tiny", "tmm", "on")],
                         indirect=["bundle_and_model"])
def test_hybrid_lexical_and_dense_search_match_python(kbpack_tool, bundle_and_model, fusion, standout, tmp_path):
    name, bundle, model = bundle_and_model
    # chunks as the unit: kbc records page for a corpus of PDFs (as sample_docs is), which `kbpack search` follows
    settings = {**(FUSIONS[fusion] or {}), "unit": "chunk", "standout_weighting": STANDOUT[standout]}
    forged = with_retrieval(bundle, tmp_path / "r.kbpack", settings)
    with KnowledgeBase(bundle, model=model) as kb:
        vectors = kb.embed_queries(QUESTIONS)
    compared = 0
    with KnowledgeBase(forged, model=model) as kb:
        assert kb.default_mode == "hybrid" and kb.retriever.settings.fusion == fusion
        assert kb.retriever.settings.standout_weighting is (standout == "on")
        for question, v in zip(QUESTIONS, vectors):
            qf = write_f32(tmp_path / "q.f32", v)
            for mode, k in SEARCHES[name]:
                args = ["search", forged, "-k", k, "--vector", qf, "--", question]
                if mode != "hybrid":  # hybrid is the bundle's default mode: no --mode
                    args[2:2] = ["--mode", mode]
                c = hits_of(kbpack(kbpack_tool, *args))
                py = ranked(*kb.retriever.search(v[None], [question], k, mode=mode)[0])
                # BM25 is bit-identical; dense and fused scores carry float32 inner products
                assert_same_ranking(c, py, 0.0 if mode == "lexical" else 1e-5, (question, mode, k))
                compared += len(c)
    assert compared > 40


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_standout_weighting_moves_tmm_and_minmax_only_and_its_absence_is_the_fixed_weight(kbpack_tool, sample_bundle,
                                                                                           fusion, tmp_path):
    """One bundle three ways (FORMAT.md §2.5.1): a manifest without the key (written before 1.8) ranks
    with the same bits as one saying false, the fixed weight, in both readers; true changes tmm and
    minmax scores wherever both lists answer, and nothing under rrf."""
    with KnowledgeBase(sample_bundle) as kb:
        vectors = kb.embed_queries(QUESTIONS)
    c_runs, py_runs = {}, {}
    for standout, value in STANDOUT.items():
        p = with_retrieval(sample_bundle, tmp_path / f"{standout}.kbpack",
                           {**(FUSIONS[fusion] or {}), "unit": "chunk", "standout_weighting": value})
        with KnowledgeBase(p) as kb:
            py_runs[standout] = [ranked(*kb.retriever.search(v[None], [q], 10, mode="hybrid")[0])
                                 for q, v in zip(QUESTIONS, vectors)]
        c_runs[standout] = [hits_of(kbpack(kbpack_tool, "search", p, "-k", 10, "--vector",
                                           write_f32(tmp_path / "q.f32", v), "--", q)) for q, v in zip(QUESTIONS, vectors)]
    for runs in (c_runs, py_runs):
        assert runs["absent"] == runs["off"]
        moved = [q for q, on, off in zip(QUESTIONS, runs["on"], runs["off"]) if on != off]
        # the last two questions have no word in the index: the dense list, whatever the weight
        assert moved == ([] if fusion == "rrf" else QUESTIONS[:5]), moved


def test_a_bundle_without_retrieval_settings_searches_dense_by_default(kbpack_tool, tmp_path):
    vectors = np.random.default_rng(3).standard_normal((20, 8)).astype(np.float32)
    p = write_bundle(tmp_path / "d.kbpack", manifest={}, vectors=vectors, chunks=[{"text": f"c{i}"} for i in range(20)])
    q = write_f32(tmp_path / "q.f32", vectors[4])
    c = hits_of(kbpack(kbpack_tool, "search", p, "-k", 5, "--vector", q))
    with KnowledgeBase(p) as kb:
        assert_same_ranking(c, [(h.chunk_id, h.score) for h in kb.search_vectors(vectors[4:5], k=5)[0]], 1e-5, "dense")
    out = kbpack(kbpack_tool, "search", p, "--mode", "hybrid", "--vector", q, "anything")
    assert out.returncode == 2 and "no lexical index" in out.stderr


# --------------------------------------------------------------------------- chunks

def chunk_json(tool: Path, bundle: Path, i: int) -> dict:
    out = kbpack(tool, "chunk", bundle, i)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert out.stdout.count("\n") == 1
    return json.loads(out.stdout)


def assert_chunk_matches_python(tool: Path, bundle: Path, ids) -> None:
    with Bundle(bundle) as b:
        for i in ids:
            py = b.chunk(i)
            c = chunk_json(tool, bundle, i)
            assert c.pop("source_path") == b.source_path(py), i
            known = {k: v for k, v in py.items() if k in c or k in KNOWN_FIELDS}
            assert c == known, i


KNOWN_FIELDS = {"id", "text", "context", "source", "seq", "page_start", "page_end", "char_start", "char_end",
                "tokens", "label_start", "label_end", "record"}


def test_chunks_match_python_across_blocks(kbpack_tool, tiny_bundle):
    with Bundle(tiny_bundle) as b:
        n, bs = b.count, b.block_size
    ids = sorted({0, 1, bs - 1, bs, 2 * bs + 7, (n // bs) * bs - 1, (n // bs) * bs, n - 2, n - 1})
    assert_chunk_matches_python(kbpack_tool, tiny_bundle, ids)  # n - 1: the last of a partial block


def test_chunks_match_python_on_sample_bundle(kbpack_tool, sample_bundle):
    with Bundle(sample_bundle) as b:
        n = b.count
    assert_chunk_matches_python(kbpack_tool, sample_bundle, [0, 5, n // 2, n - 1])


def test_every_chunk_field_and_odd_values_match_python(kbpack_tool, tmp_path):
    """Labels, record ids, context, NUL and control characters, big and negative integers, unknown
    keys (ignored), a source index out of range, blocks of 3 with a partial last block."""
    chunks = [
        {"text": "plain", "source": 0, "seq": 0, "page_start": 1, "page_end": 2, "char_start": 0, "char_end": 5,
         "tokens": 3},
        {"text": "labelled", "source": 1, "page_start": 4, "page_end": 4, "label_start": "iv", "label_end": "iv"},
        {"text": "record", "record": "doc-17", "source": 1, "context": "Ti\"tle | Section\\n"},
        {"text": "nul\x00and\x1b[2J escape", "context": "tab\there", "source": 7},  # source out of range: "?"
        {"text": "emoji 😀 and ünïcödé", "seq": -3, "char_end": 2 ** 40, "tokens": 2 ** 63 - 1},
        {"text": "unknown keys", "future": [1, 2][0], "blob": b"\x00\x01", "also": None, "f": 1.5},
        {"text": ""},
    ]
    manifest = {"sources": [{"path": "a/ä.md"}, {"path": "b\\c \"d\".pdf"}]}
    vectors = np.eye(len(chunks), 4, dtype=np.float32)
    p = write_bundle(tmp_path / "f.kbpack", manifest=manifest, vectors=vectors, chunks=chunks, chunks_per_block=3)
    assert_chunk_matches_python(kbpack_tool, p, range(len(chunks)))
    assert chunk_json(kbpack_tool, p, 3)["source_path"] == "?"
    out = kbpack(kbpack_tool, "chunk", p, len(chunks))
    assert out.returncode == 2 and "out of range" in out.stderr


# --------------------------------------------------------------------------- probes

def test_probe_check_passes_with_the_reference_vectors_and_fails_when_one_is_perturbed(kbpack_tool, tiny_bundle,
                                                                                       tmp_path):
    with Bundle(tiny_bundle) as b:
        ps = b.probes()
        ref = np.array(ps.vectors, dtype=np.float32)
    out = kbpack(kbpack_tool, "probe", tiny_bundle, write_f32(tmp_path / "ok.f32", ref))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1].endswith("threshold 0.99: PASS")
    assert len(out.stdout.splitlines()) == len(ref) + 1

    bad = ref.copy()
    bad[3] = np.random.default_rng(5).standard_normal(ref.shape[1])
    py = compare(ref, bad, threshold=0.99)
    out = kbpack(kbpack_tool, "probe", tiny_bundle, write_f32(tmp_path / "bad.f32", bad))
    assert out.returncode == 6, out.stderr
    last = out.stdout.splitlines()[-1]
    assert last.startswith(f"min {py.min:.6f} (probe 3, {ps.meta['probes'][3]['kind']})") and last.endswith("FAIL")
    assert "< threshold" in out.stdout.splitlines()[3]

    out = kbpack(kbpack_tool, "probe", tiny_bundle, write_f32(tmp_path / "short.f32", ref[:-1]))
    assert out.returncode == 2 and "expected" in out.stderr


def test_probe_check_on_a_bundle_without_probes_exits_2(kbpack_tool, tmp_path):
    p = write_bundle(tmp_path / "n.kbpack", manifest={}, vectors=np.ones((2, 4), np.float32),
                     chunks=[{"text": "a"}, {"text": "b"}])
    out = kbpack(kbpack_tool, "probe", p, write_f32(tmp_path / "v.f32", np.ones(4)))
    assert out.returncode == 2 and "no probes" in out.stderr


# --------------------------------------------------------------------------- info and the library API

def test_info_shows_what_python_reads(kbpack_tool, sample_bundle):
    out = kbpack(kbpack_tool, "info", sample_bundle)
    assert out.returncode == 0, out.stderr
    with Bundle(sample_bundle) as b:
        head = (f"format: {b.major}.{b.minor}\ncount: {b.count}\ndim: {b.dim}\ndtype: float32\nbinary: no\n"
                f"block_size: {b.block_size}\nembedder: {b.manifest['embedder']['name']}\nlexical: yes\nsections:\n")
        assert out.stdout.startswith(head)
        rows = [line.split() for line in out.stdout[len(head):].splitlines()]
        assert [(r[0], r[1], int(r[3]), int(r[5]), r[7]) for r in rows] == [
            (s["name"], s["encoding"], s["offset"], s["length"], s["sha256"][:16]) for s in b.describe_sections()]



@pytest.mark.parametrize("tricky", ['a \\" b', 'ends in a backslash \\', '\\\\\\" \\\\"', '"quoted" \\\\\\\\'])
def test_lookups_skip_strings_with_escaped_quotes_and_backslash_runs(kbpack_tool, sample_bundle, tricky, tmp_path):
    """Lookups skip the strings before their key by the first quote after an even run of
    backslashes (runtimes/c/json.c): a quote after an odd run is inside the string. Every manifest
    string the lookup of embedder.name and the sections after it passes holds such runs here."""
    from forge import with_manifest

    def edit(m):
        for key in ("dim_note", "document_prompt"):  # keys before and after "name" in the embedder object
            m["embedder"][key] = tricky
        m["embedder"]["name"] = f"model {tricky}"
        m["a_note"] = {"x": tricky, "y": [tricky, {"z": tricky}]}  # a top-level value before every key

    p = tmp_path / "tricky.kbpack"
    p.write_bytes(with_manifest(sample_bundle.read_bytes(), edit))
    with Bundle(p) as b:
        name = b.manifest["embedder"]["name"]
    assert name == f"model {tricky}"
    out = kbpack(kbpack_tool, "info", p)
    assert out.returncode == 0, out.stderr
    assert f"\nembedder: {name}\nlexical: yes\n" in out.stdout
    assert kbpack(kbpack_tool, "verify", p).stdout == "intact\n"

def test_unknown_sections_are_skipped_but_verified(kbpack_tool, tmp_path):
    p = write_bundle(tmp_path / "u.kbpack", manifest={}, vectors=np.ones((3, 4), np.float32),
                     chunks=[{"text": str(i)} for i in range(3)], extra_sections=[("from_the_future", "cbor", b"\x01" * 100)])
    out = kbpack(kbpack_tool, "info", p)
    assert out.returncode == 0 and "from_the_future" in out.stdout and "(not read by this reader)" in out.stdout
    assert kbpack(kbpack_tool, "verify", p).stdout == "intact\n"
    data = bytearray(p.read_bytes())
    with Bundle(p) as b:
        data[b.sections["from_the_future"].offset + 50] ^= 1
    p.write_bytes(bytes(data))
    out = kbpack(kbpack_tool, "verify", p)
    assert out.returncode == 3 and out.stderr.startswith("kbpack: from_the_future: sha256 mismatch")
    assert kbpack(kbpack_tool, "chunk", p, 2).returncode == 0  # never read unless verifying


# the C example exactly as README.md shows it (its one ```c block), so the two cannot drift apart
README_EXAMPLE = (Path(__file__).resolve().parent.parent / "README.md").read_text().split("```c\n", 1)[1].split("```", 1)[0]

EXAMPLE_MAIN = r"""
#include <stdlib.h>
int main(int argc, char **argv) { /* FILE Q.f32 QUESTION */
  static float q[4096];
  FILE *f = fopen(argv[2], "rb");
  size_t dim = f ? fread(q, sizeof *q, 4096, f) : 0;
  (void)dim; (void)argc;
  return print_top_chunks(argv[1], q, argv[3]) < 0 ? 3 : 0;
}
"""


def test_the_readme_example_compiles_links_and_finds_the_chunks(libkbpack, tiny_bundle, tiny_model, tmp_path):
    assert len(README_EXAMPLE.strip().splitlines()) <= 14  # 12 lines of code and the two includes
    src = tmp_path / "example.c"
    src.write_text(README_EXAMPLE + EXAMPLE_MAIN)
    exe = libkbpack.compile(src, tmp_path / "example")
    question = "How do I insert a value into a HashMap?"
    with KnowledgeBase(tiny_bundle, model=str(tiny_model)) as kb:
        q = kb.embed_queries([question])[0]
        best = kb.search(question, k=5)
    out = subprocess.run([str(exe), str(tiny_bundle), str(write_f32(tmp_path / "q.f32", q)), question],
                         capture_output=True, text=True, timeout=TIME_LIMIT_S)
    assert out.returncode == 0, out.stderr
    first = best[0]
    assert out.stdout.startswith(f"{first.score:.3f}  {first.source} p.{first.page_start}  {first.text[:40]}")
    out = subprocess.run([str(exe), str(tmp_path / "missing.kbpack"), str(tmp_path / "q.f32"), question],
                         capture_output=True, text=True)
    assert out.returncode == 3 and out.stderr == f"{tmp_path / 'missing.kbpack'}: no such file\n"


API_PROGRAM = r"""
#include <stdio.h>
#include <string.h>
#include "kbpack.h"

static void line(const char *what, kbp_status st, const kbp_error *e) {
  printf("%s %d %s|%s\n", what, (int)st, e ? e->part : "", e ? e->message : "");
}

int main(int argc, char **argv) { /* GOOD DAMAGED */
  kbp_bundle *kb, *bad;
  kbp_error err;
  kbp_chunk c;
  kbp_hit hits[3];
  size_t n = 7, probes = 0;
  (void)argc;
  line("missing", kbp_open("/nonexistent/x.kbpack", &kb, &err), &err);
  printf("missing-handle %s\n", kb == NULL ? "null" : "set");
  line("open", kbp_open(argv[1], &kb, &err), &err);
  line("range", kbp_chunk_get(kb, kbp_count(kb), &c), kbp_last_error(kb));
  line("chunk", kbp_chunk_get(kb, 0, &c), kbp_last_error(kb));
  printf("text-len %zu %zu\n", c.text.len, strlen(c.text.s));
  line("no-vector", kbp_search(kb, NULL, NULL, 3, KBP_MODE_DENSE, hits, &n), kbp_last_error(kb));
  printf("no-vector-hits %zu\n", n);
  line("no-question", kbp_search(kb, NULL, NULL, 3, KBP_MODE_LEXICAL, hits, &n), kbp_last_error(kb));
  line("lexical", kbp_search(kb, NULL, "cargo build", 3, KBP_MODE_LEXICAL, hits, &n), kbp_last_error(kb));
  printf("lexical-hits %zu\n", n);
  line("probes", kbp_probe_count(kb, &probes), kbp_last_error(kb));
  kbp_probe p;
  line("probe-0", kbp_probe_get(kb, 0, &p), kbp_last_error(kb));
  printf("probe-0-input %s|%s\n", p.kind.s, p.input.s);
  kbp_encoder enc;
  line("encoder", kbp_encoder_get(kb, &enc), kbp_last_error(kb));
  printf("encoder-sizes %zu %zu %c%c\n", enc.graph_len, enc.tokenizer_len, enc.tokenizer_json[0], enc.settings_json[0]);
  line("verify", kbp_verify(kb), kbp_last_error(kb));
  printf("status-name %s\n", kbp_status_name(KBP_ERR_INVALID));
  line("open-damaged", kbp_open(argv[2], &bad, &err), &err);
  line("chunk-damaged", kbp_chunk_get(bad, 0, &c), kbp_last_error(bad));
  line("again-damaged", kbp_chunk_get(bad, 1, &c), kbp_last_error(bad));
  line("verify-damaged", kbp_verify(bad), kbp_last_error(bad));
  kbp_close(bad);
  kbp_close(kb);
  kbp_close(NULL);
  return 0;
}
"""


def test_the_library_api_reports_errors_by_status_part_and_message(libkbpack, tiny_bundle, tmp_path):
    data = bytearray(tiny_bundle.read_bytes())
    with Bundle(tiny_bundle) as b:
        data[b.sections["chunks"].offset + 10] ^= 1
        probe0 = b.probes().inputs()[0]
        kind0 = b.probes().meta["probes"][0]["kind"]
        encoder = (b.sections["encoder_graph"].length, b.sections["encoder_tokenizer"].length)
        count = b.count
    damaged = tmp_path / "damaged.kbpack"
    damaged.write_bytes(bytes(data))
    src = tmp_path / "api.c"
    src.write_text(API_PROGRAM)
    exe = libkbpack.compile(src, tmp_path / "api")
    out = subprocess.run([str(exe), str(tiny_bundle), str(damaged)], capture_output=True, text=True, timeout=TIME_LIMIT_S)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert lines["missing"] == "1 |/nonexistent/x.kbpack: no such file"
    assert lines["missing-handle"] == "null"
    assert lines["open"] == "0 |"
    assert lines["range"].startswith(f"3 |chunk {count} out of range 0..{count - 1}")
    assert lines["chunk"] == "0 |"
    assert lines["no-vector"] == "3 |this search needs a query vector" and lines["no-vector-hits"] == "0"
    assert lines["no-question"] == "3 |this search needs a question"
    assert lines["lexical"] == "0 |" and lines["lexical-hits"] == "3"
    assert lines["probes"] == "0 |" and lines["probe-0"] == "0 |"
    assert lines["probe-0-input"] == f"{kind0}|{probe0}"
    assert lines["text-len"].split() == [lines["text-len"].split()[0]] * 2
    assert lines["encoder"] == "0 |" and lines["encoder-sizes"] == f"{encoder[0]} {encoder[1]} {{{{"
    assert lines["verify"] == "0 |"
    assert lines["status-name"] == "invalid bundle"
    assert lines["open-damaged"] == "0 |"  # opening hashes the manifest only
    for key in ("chunk-damaged", "again-damaged", "verify-damaged"):
        assert lines[key] == "2 chunks|chunks: sha256 mismatch: section content is damaged", key


# --------------------------------------------------------------------------- refusing what Python refuses

def test_files_that_are_not_bundles(kbpack_tool, tiny_bundle, tmp_path):
    fifo = tmp_path / "fifo.kbpack"
    os.mkfifo(fifo)
    for path, code, text in ((tmp_path / "missing.kbpack", 2, "no such file"), (tmp_path, 2, "is a directory"),
                             (fifo, 2, "not a regular file")):
        out = kbpack(kbpack_tool, "verify", path)
        assert out.returncode == code and text in out.stderr and out.stderr.count("\n") == 1, (path, out.stderr)
    data = tiny_bundle.read_bytes()
    v2 = bytearray(data[:128])
    struct.pack_into("<HH", v2, 8, 2, 0)
    cases = {
        "empty": (b"", "kbpack: header: file is 0 bytes"),
        "truncated": (data[:-1], "kbpack: file: "),
        "trailing": (data + b"\0", "kbpack: file: "),
        "not-a-bundle": (b"%PDF-1.7" + bytes(200), "kbpack: header: bad magic"),
        "version-2": (resign(bytes(v2) + data[128:]), "kbpack: header: format version 2.0 is newer than this reader"),
    }
    for name, (content, start) in cases.items():
        p = tmp_path / f"{name}.kbpack"
        p.write_bytes(content)
        out = kbpack(kbpack_tool, "verify", p)
        assert out.returncode == 3 and out.stderr.startswith(start) and out.stderr.count("\n") == 1, (name, out.stderr)
        with pytest.raises(BundleError):
            Bundle(p)


@pytest.mark.parametrize("case", sorted(hostile.CASES))
def test_a_forged_bundle_python_refuses_is_refused_in_one_line_within_bounds(case, kbpack_tool, genuine, tmp_path):
    """test_hostile_bundles' cases, through `kbpack`: verify gives Python's exit code (3 or 0); every
    other command works or refuses with that code, in one line, within the memory and time limits."""
    forge, expected = hostile.CASES[case]
    path = tmp_path / "forged.kbpack"
    path.write_bytes(forge(genuine))
    dim = json.loads(sections(genuine)["manifest"][1])["vectors"]["dim"]
    q = write_f32(tmp_path / "q.f32", np.full(dim, 0.1))
    commands = {
        "verify": ["verify", path],
        "info": ["info", path],
        "chunk": ["chunk", path, 0],
        "dense": ["search", path, "--mode", "dense", "-k", 3, "--vector", q],
        "lexical": ["search", path, "--mode", "lexical", "-k", 3, "how often is the pump oiled"],
        "probe": ["probe", path, q],
    }
    outcomes = {}
    for name, args in commands.items():
        out = kbpack(kbpack_tool, *args)
        outcomes[name] = out.returncode
        if out.returncode != 0:
            assert out.stderr.count("\n") == 1 and out.stderr.startswith("kbpack: "), (name, out.stderr)
    assert outcomes["verify"] == expected, outcomes
    usage = {"lexical", "probe"}  # exit 2: no lexical index in this forgery, or a probe file of the wrong size
    assert all(code in {0, expected} or (code == 2 and name in usage) for name, code in outcomes.items()), outcomes


def test_a_query_encoder_other_than_the_recorded_one_is_refused_by_both(kbpack_tool, tiny_bundle, tmp_path):
    """Format 1.3 (FORMAT.md §2.6): the graph must be the one the manifest records, and both of the
    encoder's sections must be there, as kbc's verify checks."""
    data = tiny_bundle.read_bytes()
    graph = bytearray(sections(data)["encoder_graph"][1])
    graph[-100] ^= 0xFF
    manifest = json.loads(sections(data)["manifest"][1])
    no_tokenizer = {**manifest, "encoder": {**manifest["encoder"], "tokenizer": "nowhere"}}
    malformed = {**manifest, "encoder": {**manifest["encoder"], "graph": 7}}
    cases = {
        "other graph": (rebuild(data, {"encoder_graph": bytes(graph)}),
                        "kbpack: encoder_graph: differs from the manifest's encoder.graph_sha256"),
        "tokenizer missing": (rebuild(data, {"manifest": json.dumps(no_tokenizer).encode()}),
                              "kbpack: nowhere: encoder tokenizer section is missing"),
        "graph not named": (rebuild(data, {"manifest": json.dumps(malformed).encode()}), "kbpack: manifest: encoder"),
        "graph as another encoding": (rebuild(data, encodings={"encoder_graph": "pickle"}),
                                      "kbpack: encoder_graph: encoding 'pickle', expected 'onnx'"),
    }
    path = tmp_path / "forged.kbpack"
    for name, (forged, message) in cases.items():
        path.write_bytes(forged)
        out = kbpack(kbpack_tool, "verify", path)
        assert out.returncode == 3 and out.stderr.startswith(message), (name, out.stderr)
        assert python_verdict(path) == c_verdict(kbpack_tool, path), name
        assert kbpack(kbpack_tool, "chunk", path, 0).returncode == 0  # the rest reads as before


@functools.cache
def _kbc_command():
    """kbc's typer app as the click command typer's CliRunner makes of it on every call (~15 ms)."""
    from typer.main import get_command

    from kbc.cli import app

    return get_command(app)


def python_verdict(path: Path) -> tuple[int, str | None]:
    """`kbc inspect --verify --json`, run in this process: (exit code, the damaged part or None)."""
    from click.testing import CliRunner

    result = CliRunner().invoke(_kbc_command(), ["inspect", str(path), "--verify", "--json"])
    info = json.loads(result.stdout)
    return result.exit_code, (info.get("error") or {}).get("section")


def c_verdict(tool: Path, path: Path) -> tuple[int, str | None]:
    out = kbpack(tool, "verify", path)
    if out.returncode == 0:
        assert out.stdout == "intact\n"
        return 0, None
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("kbpack: "), out.stderr
    return out.returncode, out.stderr[len("kbpack: "):].split(":", 1)[0]


def flipped_verdicts(tool: Path, data: bytes, tmp_path: Path, masks, recompute: bool):
    """For each flip target and bit mask: (part, offset, mask, C verdict, Python verdict) of the
    bundle with that bit flipped, its checksums recomputed when `recompute` (a forgery)."""
    path = tmp_path / "flipped.kbpack"
    for part, at in flip_targets(data):
        for mask in masks:
            flipped = bytearray(data)
            flipped[at] ^= mask
            path.write_bytes(resign(bytes(flipped)) if recompute else bytes(flipped))
            yield part, at, mask, c_verdict(tool, path), python_verdict(path)


def flip_targets(data: bytes) -> list[tuple[str, int]]:
    """(part, byte offset) pairs: the start, thirds, middle and end of every section, of the header
    and of the table, and one padding byte."""
    count, table_offset = struct.unpack_from("<IQ", data, 12)
    parts = {"header": (0, 128), "table": (table_offset, count * 128)}
    with_padding = []
    for i in range(count):
        entry = data[table_offset + 128 * i:table_offset + 128 * (i + 1)]
        name = entry[:32].rstrip(b"\0").decode()
        offset, length = struct.unpack_from("<QQ", entry, 48)
        parts[name] = (offset, length)
        if length % 64:
            with_padding.append(offset + length)
    targets = [(part, start + at) for part, (start, length) in parts.items() if length
               for at in sorted({0, length // 3, length // 2, 2 * length // 3, length - 1})]
    return targets + [("padding", with_padding[0])]


@pytest.mark.parametrize("recompute", [False, True], ids=["damaged", "forged"])
def test_verify_agrees_with_python_on_a_flipped_byte_anywhere(kbpack_tool, tiny_bundle, tmp_path, recompute):
    """A byte flipped in every part of a real bundle: damaged (checksums as they were) both readers
    refuse, naming the same part; forged (checksums recomputed) both reach the same verdict."""
    data = tiny_bundle.read_bytes()
    verdicts = {}
    for part, at, mask, c, py in flipped_verdicts(kbpack_tool, data, tmp_path, (0x01, 0x20), recompute):
        assert c[0] == py[0], (part, at, mask, c, py)
        if not recompute:
            assert c[0] == 3 and c[1] == py[1], (part, at, mask, c, py)
        verdicts[part, at, mask] = c[0]
    assert len({p for p, _, _ in verdicts}) == len(sections(data)) + 3  # header, table, padding
    if recompute:  # both outcomes occur: some forgeries are valid bundles, others are not
        assert set(verdicts.values()) == {0, 3}
