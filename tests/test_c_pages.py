"""Pages as the unit (FORMAT.md §2.8) in libkbpack (runtimes/c): `kbp_search_pages` and `kbpack search
--unit page` rank the same pages as kbc's Python reader (KnowledgeBase.rank_pages, kbc.search.fusion.rank_pages):
the same page keys in the same order, the same member chunks, page and chunk scores within 1e-5
(dense, hybrid: float32 inner products) or equal (lexical: BM25 is bit-identical, and the page sum
is taken in the same order). Forged page settings get the same verdict from both readers."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import kbc_cli
from forge import rebuild, sections
from kbc.format.bundle import write_bundle
from kbc.errors import BundleError
from kbc.query.knowledge_base import KnowledgeBase
from kbc.format.bm25 import LexicalBuilder
from kbc.format.retrieval import RetrievalSettings
from kbc.search.fusion import rank_pages
from pdfgen import make_pdf
from test_libkbpack import TIME_LIMIT_S, c_verdict, hits_of, kbpack, python_verdict, write_f32


# --------------------------------------------------------------------------- helpers

def with_retrieval_settings(src: Path, dst: Path, settings: dict, drop: tuple[str, ...] = ()) -> Path:
    """A copy of `src` whose manifest's retrieval object is updated with `settings` and lacks the keys
    in `drop`, as a bundle written before they were added (checksums recomputed)."""
    data = src.read_bytes()
    m = json.loads(sections(data)["manifest"][1])
    m.setdefault("retrieval", {}).update(settings)
    for key in drop:
        m["retrieval"].pop(key, None)
    dst.write_bytes(rebuild(data, {"manifest": json.dumps(m).encode()}))
    return dst


def with_manifest_text(src: Path, dst: Path, edit) -> Path:
    """A copy of `src` whose manifest JSON text is `edit(text)` (checksums recomputed)."""
    data = src.read_bytes()
    text = sections(data)["manifest"][1].decode()
    dst.write_bytes(rebuild(data, {"manifest": edit(text).encode()}))
    return dst


def c_pages(tool: Path, bundle: Path, *, mode: str | None, k: int, vector: Path | None, question: str | None,
            unit: str | None = "page") -> list[dict]:
    """`kbpack search --unit page --json` read: [{score, key: (source, record, page), path, chunks: [(id, score)]}]."""
    args = ["search", bundle, "-k", k]
    if unit:
        args += ["--unit", unit]
    if mode:
        args += ["--mode", mode]
    if vector is not None:
        args += ["--vector", vector]
    if question is not None:
        args += ["--", question]
    out = kbpack(tool, *args)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    got = json.loads(out.stdout)
    assert got["unit"] == "page", got
    return [{"score": p["score"], "key": (p["source"], p["record"], p["page"]), "path": p["source_path"],
             "chunks": [(c["id"], c["score"]) for c in p["chunks"]]} for p in got["pages"]]


def py_pages(kb: KnowledgeBase, question: str, vector, k: int, mode: str | None) -> list[dict]:
    ranked = kb.rank_pages([question], k, mode=mode, vectors=None if vector is None else np.asarray(vector)[None])[0]
    return [{"score": p.score, "key": p.key, "chunks": list(zip(p.chunk_ids, p.chunk_scores))} for p in ranked]


def assert_same_pages(c: list[dict], py: list[dict], tol: float, what) -> None:
    """The same pages in the same order with the same member chunks; scores within `tol` (0: equal)."""
    assert [p["key"] for p in c] == [p["key"] for p in py], (what, c, py)
    for cp, pp in zip(c, py):
        assert [i for i, _ in cp["chunks"]] == [i for i, _ in pp["chunks"]], (what, cp, pp)
        assert abs(cp["score"] - pp["score"]) <= tol, (what, cp["score"], pp["score"])
        for (_, cs), (_, ps) in zip(cp["chunks"], pp["chunks"]):
            assert abs(cs - ps) <= tol, (what, cs, ps)
        if tol == 0.0:  # lexical: the same bits (%.17g round-trips a double)
            assert cp["score"] == pp["score"] and [s for _, s in cp["chunks"]] == [s for _, s in pp["chunks"]], what


QUESTIONS = [
    "How do I run only the tests whose names match a filter?",
    "cargo new hello_cargo",
    "How do I insert a value into a HashMap?",
    "How often should I water the greenhouse?",
    "Who argued before the Supreme Court?",
    "pump oil spring",
    "Which valve controls the pressure of the boiler?",
    "honey bees pollinate",
    "tides moon gravity",
    "the and of what",  # stop words only: no lexical hit, hybrid falls back to dense
    "zzzqx unknownword",  # no term in the vocabulary: lexical gives no page at all
]

# retrieval settings to rank pages with (each applied over what kbc wrote)
SETTINGS = {
    "defaults": {},
    "share": {"page_share": 0.5},
    "share-1-depth-5": {"page_share": 1, "page_depth": 5},
    "depth-5-chunks-1": {"page_depth": 5, "page_chunks": 1},
    "share-rrf-chunks-1": {"page_share": 0.25, "page_chunks": 1, "fusion": "rrf", "weight": 0.3, "depth": 20, "rrf_k": 10},
    "minmax-depth-10000": {"page_share": 0.3, "page_depth": 10000, "page_chunks": 100, "fusion": "minmax", "depth": 30},
    # the context match (FORMAT.md §2.9): off, strong, and with minmax
    "context-off": {"path_weight": 0, "heading_weight": 0},
    "context-strong": {"path_weight": 1, "heading_weight": 0.75, "page_share": 0.2},
    "context-minmax": {"path_weight": 0.5, "heading_weight": 0.25, "fusion": "minmax", "depth": 20},
    # each list weighted by its standout (FORMAT.md §2.5.1): kbc writes true, so the settings above
    # have it on; off, absent (a bundle before 1.8: off), and off with minmax and the context match
    "standout-off": {"standout_weighting": False},
    "standout-absent": {},
    "standout-off-minmax-context": {"standout_weighting": False, "fusion": "minmax", "depth": 20, "page_share": 0.3,
                                    "path_weight": 0.5, "heading_weight": 0.25},
    "standout-on-share": {"standout_weighting": True, "page_share": 0.5},
}
DROPPED = {"standout-absent": ("standout_weighting",)}


# --------------------------------------------------------------------------- bundles built by kbc

PDF_PAGES = [
    "Boiler manual\nThe boiler heats water for the whole building.\nThe pressure valve controls the pressure of the "
    "boiler.\nOpen the valve slowly.\nCheck the pressure gauge every morning.\nA pressure above two bar is too high.",
    "Pumps\nThe pump moves water uphill.\nOil the pump every spring.\nA pump that hums needs oil.\nThe pump's valve "
    "must stay closed in winter.\nReplace the pump seal every five years.",
    "",  # a blank page
    "Bees\nHoney bees live in hives and pollinate flowers.\nBees make honey from nectar.\nA hive holds thousands "
    "of bees.\nThe queen bee lays the eggs.\nBees dance to show where flowers are.",
    "Tides\nTides rise and fall twice a day because of the moon's gravity.\nSpring tides are the highest.\nNeap "
    "tides are the lowest.\nThe pressure of the air changes the tides a little.",
]

# distinct sentences: no two chunks are the same text, so no two dense scores tie exactly (kbc's Python
# dense search does not break ties at its cut by chunk id; test_dense_ties_at_the_cut_go_to_the_lower_ids)
RECORDS = {
    "bees": "Honey bees live in hives. They make honey from nectar. Worker bees pollinate flowers in spring. "
            "A colony keeps its queen warm in winter. Drones leave the hive in summer. Beekeepers smoke the hive "
            "before they open it.",
    "rust": "In Rust every value has one owner. When the owner goes out of scope the value is dropped. A reference "
            "borrows a value without owning it. The borrow checker refuses two mutable references at once. Moving "
            "a value transfers its ownership.",
    "tides": "Tides rise and fall twice a day. The gravitational pull of the moon causes them. The sun adds a "
             "smaller pull. Spring tides come at full and new moon. Harbours publish tide tables every year.",
    "bread": "Sourdough bread is leavened by a starter of wild yeast and lactic acid bacteria.",
    "pumps": "A pump moves water uphill. Oil the pump every spring. Check its valve and the pressure gauge. "
             "A worn seal makes the pump leak. Replace the impeller when the flow drops.",
    "volcano": "A volcano erupts when molten rock, gas and ash escape from the magma chamber.",
}


@pytest.fixture(scope="module")
def mixed_bundle(tmp_path_factory) -> Path:
    """A PDF (several chunks per page, a blank page), a JSONL corpus (records of several chunks) and a
    Markdown file (one page), with small chunks so that pages and records hold several each."""
    d = tmp_path_factory.mktemp("pages")
    docs = d / "docs"
    docs.mkdir()
    (docs / "manual.pdf").write_bytes(make_pdf(PDF_PAGES))
    with open(docs / "corpus.jsonl", "w") as f:
        for i, text in RECORDS.items():
            f.write(json.dumps({"_id": i, "title": i.title(), "text": text}) + "\n")
    (docs / "pumps.md").write_text("# Pumps\n\nThe pump moves water uphill at 100 litres an hour.\n\n## Care\n\n"
                                   "Oil the pump every spring. Check the valve and the pressure gauge.\n")
    out = d / "mixed.kbpack"
    kbc_cli("build", str(docs), "-o", str(out), "--chunk-size", "24", "--chunk-overlap", "4", "-q", check=True)
    return out


@pytest.fixture(scope="module")
def bundles(sample_bundle, mixed_bundle) -> dict[str, Path]:
    return {"sample": sample_bundle, "mixed": mixed_bundle}


def test_the_mixed_bundle_has_pages_records_and_several_chunks_each(mixed_bundle):
    with KnowledgeBase(mixed_bundle) as kb:
        keys = kb.page_keys(range(kb.bundle.count))
        settings = kb.retriever.settings
    assert settings.unit == "chunk" and (settings.page_depth, settings.page_share, settings.page_chunks) == (100, 0.0, 3)
    records = {k[1] for k in keys if k[1] is not None}
    assert records == set(RECORDS)
    pdf_pages = {k[2] for k in keys if k[1] is None and k[2] > 1}
    assert pdf_pages  # the PDF's later pages
    assert max(keys.count(k) for k in set(keys)) >= 3  # a page (or record) of three chunks or more


@pytest.fixture(scope="module")
def query_vectors(bundles) -> dict[str, np.ndarray]:
    out = {}
    for name, path in bundles.items():
        with KnowledgeBase(path) as kb:
            out[name] = kb.embed_queries(QUESTIONS)
    return out


@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("name", ["sample", "mixed"])
def test_c_page_ranking_matches_python(kbpack_tool, bundles, query_vectors, name, setting, tmp_path):
    forged = with_retrieval_settings(bundles[name], tmp_path / "r.kbpack", SETTINGS[setting], DROPPED.get(setting, ()))
    compared, grouped, shared = 0, 0, 0
    with KnowledgeBase(forged) as kb:
        s = kb.retriever.settings
        for key, value in SETTINGS[setting].items():
            assert getattr(s, key) == value, key
        assert s.standout_weighting is SETTINGS[setting].get("standout_weighting", setting not in DROPPED)
        for question, v in zip(QUESTIONS, query_vectors[name]):
            qf = write_f32(tmp_path / "q.f32", v)
            for mode, k in (("dense", 5), ("lexical", 5), ("hybrid", 5), ("hybrid", 1), ("dense", 200)):
                c = c_pages(kbpack_tool, forged, mode=mode, k=k, vector=None if mode == "lexical" else qf,
                            question=question)
                py = py_pages(kb, question, None if mode == "lexical" else v, k, mode)
                assert_same_pages(c, py, 0.0 if mode == "lexical" else 1e-5, (name, setting, question, mode, k))
                assert len(c) <= min(k, s.page_depth) and all(1 <= len(p["chunks"]) <= s.page_chunks for p in c)
                compared += len(c)
                grouped += sum(len(p["chunks"]) > 1 for p in c)
                shared += sum(p["score"] != p["chunks"][0][1] for p in c)
    assert compared > 50
    if s.page_chunks > 1 and s.page_depth > 5:
        assert grouped > 10  # pages of several chunks were compared, not just single-chunk pages
    if s.page_share:
        assert shared > 5  # the share changed page scores
    else:
        assert shared == 0  # share 0: a page's score is exactly its first chunk's


def test_page_ranking_with_page_share_changes_the_order_somewhere(kbpack_tool, mixed_bundle, query_vectors, tmp_path):
    """The settings tested above matter: with page_share 1 some ranking differs from share 0 (in both readers)."""
    plain = with_retrieval_settings(mixed_bundle, tmp_path / "plain.kbpack", {})
    shared = with_retrieval_settings(mixed_bundle, tmp_path / "shared.kbpack", {"page_share": 1})
    differs = 0
    for question, v in zip(QUESTIONS, query_vectors["mixed"]):
        qf = write_f32(tmp_path / "q.f32", v)
        a = c_pages(kbpack_tool, plain, mode="hybrid", k=5, vector=qf, question=question)
        b = c_pages(kbpack_tool, shared, mode="hybrid", k=5, vector=qf, question=question)
        differs += [p["key"] for p in a] != [p["key"] for p in b]
    assert differs >= 1


def test_the_context_match_changes_the_order_somewhere_in_both_readers(kbpack_tool, mixed_bundle, query_vectors, tmp_path):
    """Headings and identities that hold the question's words lift their chunks: the context match
    tested equal above is not a no-op on these bundles (with weights 0 the order differs)."""
    off = with_retrieval_settings(mixed_bundle, tmp_path / "off.kbpack", {"path_weight": 0, "heading_weight": 0})
    on = with_retrieval_settings(mixed_bundle, tmp_path / "on.kbpack", {"path_weight": 1, "heading_weight": 1})
    differs = 0
    for question, v in zip(QUESTIONS, query_vectors["mixed"]):
        qf = write_f32(tmp_path / "q.f32", v)
        a = hits_of(kbpack(kbpack_tool, "search", off, "--mode", "hybrid", "-k", 5, "--vector", qf, "--", question))
        b = hits_of(kbpack(kbpack_tool, "search", on, "--mode", "hybrid", "-k", 5, "--vector", qf, "--", question))
        differs += [i for i, _ in a] != [i for i, _ in b]
    assert differs >= 2


# paths and headings that test the two readers' reading of them: escapes, a lone surrogate, dots in
# folders, no extension, a path past the 4,096-code-point cut, an out-of-range source, no context
CONTEXT_SOURCES = [
    {"path": "filings/NETFLIX_2017_10K.pdf"},
    {"path": "other.v2/ACME balance"},  # a dot in a folder, no extension: the whole path
    # 50 lone surrogates (escaped into the JSON below) count one code point each: "netflix" ends
    # before the 4,096-code-point cut only if they do
    {"path": "SURROGATES" + "é" * 4000 + " netflix \u00e9\"quoted\" sheet.md"},
    {"path": "é" * 4094 + " netflix.md"},  # the word starts past the cut
    {"path": "x.tar.gz"},
]
CONTEXT_CHUNKS = [
    {"text": "alpha netflix text", "source": 0, "context": "NETFLIX | CONSOLIDATED BALANCE SHEETS"},
    {"text": "alpha balance", "source": 0, "context": "NETFLIX | Notes | more balance"},
    {"text": "alpha sheet", "source": 1, "context": "ACME"},
    {"text": "alpha netflix", "source": 2, "context": "x | " + "balance " * 700 + "sheet"},
    {"text": "alpha", "source": 3, "context": " | netflix balance"},
    {"text": "alpha tar", "source": 4},
    {"text": "alpha netflix sheet", "source": 9, "context": "nowhere | sheet"},  # out of range: no path
    {"text": "alpha balance sheet", "context": "|no separator| balance"},
    {"text": "alpha 2017", "source": 0},  # a path, no context
]


@pytest.mark.parametrize("retrieval", [None, {"path_weight": 0.1, "heading_weight": 0.05},
                                       {"path_weight": 1, "heading_weight": 1, "fusion": "minmax"},
                                       {"path_weight": 1, "heading_weight": 1, "fusion": "rrf"},
                                       {"path_weight": 0.1, "heading_weight": 0.05, "standout_weighting": True},
                                       {"path_weight": 1, "heading_weight": 1, "fusion": "minmax",
                                        "standout_weighting": True}],
                         ids=["no-retrieval", "default", "minmax", "rrf", "standout", "standout-minmax"])
def test_paths_and_headings_read_the_same_in_both_readers(kbpack_tool, tmp_path, retrieval):
    """The context match on hand-made paths and contexts (FORMAT.md §2.9): the same ids and scores
    from both readers; without a retrieval object neither applies it."""
    chunks = [dict(c) for c in CONTEXT_CHUNKS]
    if retrieval is not None:
        retrieval = {"default_mode": "hybrid", **retrieval}
    builder = LexicalBuilder()
    for c in chunks:
        builder.add(c["text"], context=c["context"] if isinstance(c.get("context"), str) else "")
    meta, lex_sections = builder.finish()
    manifest = {"lexical": meta, "sources": CONTEXT_SOURCES, **({"retrieval": retrieval} if retrieval else {})}
    rng = np.random.default_rng(11)
    vectors = rng.standard_normal((len(chunks), 8)).astype(np.float32)
    written = write_bundle(tmp_path / "w.kbpack", manifest=manifest, vectors=vectors, chunks=chunks,
                           extra_sections=lex_sections, chunks_per_block=4)
    # JSON may hold a lone surrogate escape that kbc's writer cannot: forged into the manifest text
    p = with_manifest_text(written, tmp_path / "ctx.kbpack", lambda t: t.replace("SURROGATES", "\\ud800" * 50))
    moved = 0
    with KnowledgeBase(p) as kb:
        s = kb.retriever.settings
        if retrieval is None:
            assert (s.path_weight, s.heading_weight) == (0.0, 0.0)
        for i in range(6):
            q = rng.standard_normal(8).astype(np.float32)
            qf = write_f32(tmp_path / "q.f32", q)
            for question in ("netflix balance sheet", "alpha 2017 tar", "quoted sheet", "acme balance"):
                c = hits_of(kbpack(kbpack_tool, "search", p, "--mode", "hybrid", "-k", 9, "--vector", qf, "--", question))
                scores, ids = kb.rank([question], 9, mode="hybrid", vectors=q[None])[0]
                assert [i for i, _ in c] == ids.tolist(), (question, c, ids)
                assert all(abs(a - b) <= 1e-5 for (_, a), b in zip(c, scores.tolist())), (question, c, scores)
                moved += max(scores) > 1.0 + 1e-9  # only the match lifts a tmm score past 1
    if retrieval is not None and retrieval.get("fusion", "tmm") == "tmm":
        assert moved > 0
    if retrieval is None or retrieval.get("fusion") == "rrf":
        assert moved == 0


def test_unit_page_is_the_default_when_the_bundle_says_so(kbpack_tool, mixed_bundle, query_vectors, tmp_path):
    question, v = QUESTIONS[6], query_vectors["mixed"][6]
    qf = write_f32(tmp_path / "q.f32", v)
    paged = with_retrieval_settings(mixed_bundle, tmp_path / "paged.kbpack", {"unit": "page", "page_share": 0.5})
    with KnowledgeBase(paged) as kb:
        assert kb.resolve_unit(None) == "page"
        py = py_pages(kb, question, v, 4, None)
        chunks = [(int(i), float(s)) for s, i in zip(*kb.rank([question], 4, vectors=v[None])[0])]
        paths = [h.source for h in kb.page_hits(kb.rank_pages([question], 4, vectors=v[None])[0])]
    c = c_pages(kbpack_tool, paged, mode=None, k=4, vector=qf, question=question, unit=None)  # no --unit: pages
    assert_same_pages(c, py, 1e-5, "default unit")
    assert [p["path"] for p in c] == paths
    plain = hits_of(kbpack(kbpack_tool, "search", paged, "--unit", "chunk", "-k", 4, "--vector", qf, "--", question))
    assert [i for i, _ in plain] == [i for i, _ in chunks]
    assert all(abs(a - b) <= 1e-5 for (_, a), (_, b) in zip(plain, chunks))
    # a bundle that does not say (kbc writes "chunk"): chunk lines without --unit
    out = kbpack(kbpack_tool, "search", mixed_bundle, "-k", 4, "--vector", qf, "--", question)
    assert [i for i, _ in hits_of(out)] == [i for i, _ in chunks]


def test_record_ids_come_back_with_their_pages(kbpack_tool, mixed_bundle, tmp_path):
    c = c_pages(kbpack_tool, mixed_bundle, mode="lexical", k=20, vector=None, question="honey bees tides moon pump")
    records = [p["key"][1] for p in c if p["key"][1] is not None]
    assert {"bees", "tides", "pumps"} <= set(records)
    assert len(records) == len(set(records))  # each record once
    assert all(p["path"].endswith("corpus.jsonl") for p in c if p["key"][1] is not None)


# --------------------------------------------------------------------------- hand-made bundles

def handmade_bundle(path: Path, chunks: list[dict], vectors: np.ndarray, retrieval: dict | None,
                    block_size: int | None = None) -> Path:
    builder = LexicalBuilder()
    builder.add_many([c["text"] for c in chunks])
    meta, lex_sections = builder.finish()
    meta["fields"] = "context+text"
    manifest = {"lexical": meta, "sources": [{"path": "a.pdf"}, {"path": "b.jsonl"}]}
    if retrieval is not None:
        manifest["retrieval"] = retrieval
    kw = {"chunks_per_block": block_size} if block_size else {}
    return write_bundle(path, manifest=manifest, vectors=vectors, chunks=chunks, extra_sections=lex_sections, **kw)


ODD_CHUNKS = [
    {"text": "alpha beta", "source": 0, "page_start": 1},
    {"text": "alpha", "source": 0, "page_start": 1},
    {"text": "alpha alpha beta", "source": 0, "page_start": 2},
    {"text": "alpha gamma", "source": 1, "page_start": 1, "record": "r1"},
    {"text": "alpha delta", "source": 1, "page_start": 1, "record": "r1\x00x"},  # differs from r1 after a NUL
    {"text": "alpha beta gamma", "source": 1, "page_start": 1, "record": ""},  # an empty record is not none
    {"text": "alpha beta beta", "source": 1, "page_start": 1},
    {"text": "alpha epsilon"},  # no source, no page: source 0, page 0
    {"text": "alpha zeta", "source": 0},  # page 0 of source 0 too
    {"text": "alpha eta", "source": 0, "page_start": 2 ** 63 - 1},  # the largest page (FORMAT.md 2.1: int64)
    {"text": "alpha kappa", "source": 0, "page_start": 2 ** 63 - 1, "record": "r1"},
    {"text": "alpha", "source": 0, "page_start": 1},  # the same text as chunk 1: equal scores
    {"text": "alpha beta", "source": 0, "page_start": 2},  # the same text as chunk 0, another page
    {"text": "alpha lambda", "source": 1, "page_start": 3, "record": "r1", "page_end": 9, "seq": 4},
]


@pytest.mark.parametrize("retrieval", [None, {"page_share": 0.5, "page_chunks": 2}, {"page_share": 1, "page_depth": 4},
                                       {"page_share": 0.1, "page_chunks": 100, "unit": "page"}],
                         ids=["no-retrieval", "share", "depth-4", "chunks-100"])
def test_odd_page_keys_group_as_python_groups_them(kbpack_tool, tmp_path, retrieval):
    """Records that differ after a NUL, an empty record, chunks without source or page, the largest
    page number (2^63-1; past it a bundle is invalid, tests/test_hostile_verify.py), equal BM25 scores;
    blocks of 3 so that the ranked chunks span blocks."""
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((len(ODD_CHUNKS), 8)).astype(np.float32)
    p = handmade_bundle(tmp_path / "odd.kbpack", ODD_CHUNKS, vectors, retrieval, block_size=3)
    modes = ["dense"] if retrieval is None else ["dense", "lexical", "hybrid"]
    seen_keys = set()
    with KnowledgeBase(p) as kb:
        for i in range(12):
            q = rng.standard_normal(8).astype(np.float32)
            qf = write_f32(tmp_path / "q.f32", q)
            for question in ("alpha beta", "beta gamma theta", "alpha"):
                for mode in modes:
                    c = c_pages(kbpack_tool, p, mode=mode, k=20, vector=None if mode == "lexical" else qf,
                                question=question)
                    py = py_pages(kb, question, None if mode == "lexical" else q, 20, mode)
                    assert_same_pages(c, py, 0.0 if mode == "lexical" else 1e-5, (retrieval, i, question, mode))
                    seen_keys.update(page["key"] for page in py)
    if (retrieval or {}).get("page_depth", 100) < len(ODD_CHUNKS):
        assert len(seen_keys) >= 4
        return
    assert (1, "r1", 1) in seen_keys and (1, "r1\x00x", 1) in seen_keys and (1, "", 1) in seen_keys
    assert (1, None, 1) in seen_keys and (0, None, 0) in seen_keys


@pytest.mark.parametrize("depth", [2, 3, 4, 5, 6])
def test_dense_ties_at_the_cut_go_to_the_lower_ids(kbpack_tool, tmp_path, depth):
    """Chunks 1..5 have the same vector: a page_depth that cuts through them keeps the lower ids
    (FORMAT.md §2.5, §2.8). The expectation is kbc.search.fusion.rank_pages over the spec's ranking
    (every score, best first, lower id first on ties), not kbc's dense Searcher, whose
    argpartition may keep a higher id at the cut."""
    rng = np.random.default_rng(9)
    vectors = rng.standard_normal((12, 8)).astype(np.float32)
    vectors[1:6] = vectors[1]
    q = vectors[1] * 3
    chunks = [{"text": f"chunk {i}", "source": 0, "page_start": 1 + i % 4} for i in range(12)]
    settings = {"page_depth": depth, "page_share": 0.5, "page_chunks": 3}
    p = handmade_bundle(tmp_path / "ties.kbpack", chunks, vectors, settings)
    scores = (vectors @ q).astype(np.float64)
    order = np.lexsort((np.arange(12), -scores))
    keys = [(0, None, 1 + int(i) % 4) for i in order]
    want = rank_pages(scores[order], order, keys, settings=RetrievalSettings(**settings), k=10)
    c = c_pages(kbpack_tool, p, mode="dense", k=10, vector=write_f32(tmp_path / "q.f32", q), question=None)
    assert [(page["key"], [i for i, _ in page["chunks"]]) for page in c] == \
        [(page.key, list(page.chunk_ids)) for page in want]
    ids = sorted(i for page in c for i, _ in page["chunks"])
    assert len(ids) == depth and set(range(1, 1 + min(depth, 5))) <= set(ids)  # the tied chunks' lowest ids
    for cp, wp in zip(c, want):
        assert abs(cp["score"] - wp.score) <= 1e-5


EXACT_TEXTS = ["pump oil valve", "pump pump water", "valve pressure gauge", "bees honey hive", "honey bread",
               "tides moon", "moon gravity tides tides", "pump seal leak", "oil spring pump valve",
               "gauge pressure boiler", "hive queen bees", "water uphill pump", "bread yeast", "spring tides moon"]
EXACT_CHUNKS = [{"text": t, "source": i % 2, "page_start": 1 + i // 3} for i, t in enumerate(EXACT_TEXTS)]
# "bread": two equal BM25 scores, "yeast": one; either list saying nothing keeps the fixed weight
EXACT_QUESTIONS = ["pump valve oil", "honey bees hive", "tides moon", "pressure gauge boiler water", "bread", "yeast"]


def spec_fused(dense: np.ndarray, lexical: np.ndarray, s: RetrievalSettings, standout: bool) -> dict[int, float]:
    """FORMAT.md §2.5 and §2.5.1 written out here, for a bundle whose every chunk is in the dense
    list (depth >= count) and a question with a lexical hit: {chunk id: fused score}."""
    d_list = sorted(dense.tolist(), reverse=True)
    l_list = sorted((x for x in lexical.tolist() if x > 0), reverse=True)

    def z(xs: list) -> float | None:  # None: a list that cannot say (fewer than two scores, no spread)
        mean = math.fsum(xs) / len(xs)
        sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / len(xs))
        return (xs[0] - mean) / sd if len(xs) > 1 and sd > 0 else None

    w = s.weight
    if standout and z(d_list) is not None and z(l_list) is not None:
        a, b = (1 - w) * max(z(d_list), 0.0), w * max(z(l_list), 0.0)
        w = b / (a + b) if a + b > 0 else w

    def scaled(x: float, xs: list) -> float:
        if s.fusion == "tmm":
            return max(x, 0.0) / xs[0] if xs[0] > 0 else 0.0
        return (x - xs[-1]) / (xs[0] - xs[-1]) if xs[0] > xs[-1] else float(x >= xs[0])

    return {i: (1 - w) * scaled(dv, d_list) + w * scaled(lv, l_list)
            for i, (dv, lv) in enumerate(zip(dense.tolist(), lexical.tolist()))}


@pytest.mark.parametrize("retrieval", [{"standout_weighting": True}, {"standout_weighting": True, "fusion": "minmax"},
                                       {"standout_weighting": False}, {}],
                         ids=["on", "on-minmax", "off", "absent"])
def test_standout_weighting_gives_the_same_bits_in_both_readers_on_exact_vectors(kbpack_tool, tmp_path, retrieval):
    """Vectors of quarters: every inner product is exact in float32 whatever the order of its sums,
    so the two readers' dense lists, BM25 lists and fused scores must agree to the last bit, chunks
    and pages; and each fused score is the one FORMAT.md §2.5.1 gives, computed here on its own."""
    rng = np.random.default_rng(42)
    vectors = (rng.integers(-4, 5, (len(EXACT_CHUNKS), 8)) / 4).astype(np.float32)
    p = handmade_bundle(tmp_path / "exact.kbpack", EXACT_CHUNKS, vectors,
                        {"default_mode": "hybrid", "page_share": 0.5, **retrieval})
    on = retrieval.get("standout_weighting", False)  # absent: a bundle before 1.8, the fixed weight
    moved = 0
    with KnowledgeBase(p) as kb:
        s = kb.retriever.settings
        assert s.standout_weighting is on and s.depth >= len(EXACT_CHUNKS)
        for _ in range(8):
            q = (rng.integers(-4, 5, 8) / 4).astype(np.float32)
            qf = write_f32(tmp_path / "q.f32", q)
            for question in EXACT_QUESTIONS:
                c = hits_of(kbpack(kbpack_tool, "search", p, "--unit", "chunk", "--mode", "hybrid", "-k", 20,
                                   "--vector", qf, "--", question))
                scores, ids = kb.rank([question], 20, mode="hybrid", vectors=q[None])[0]
                assert c == list(zip(ids.tolist(), scores.tolist())), (question, c)  # %.17g: the same doubles
                assert_same_pages(c_pages(kbpack_tool, p, mode="hybrid", k=20, vector=qf, question=question),
                                  py_pages(kb, question, q, 20, "hybrid"), 0.0, question)
                dense, lexical = (vectors @ q).astype(np.float64), kb.retriever.lexical.scores(question)
                assert lexical.max() > 0
                want = spec_fused(dense, lexical, s, on)
                assert len(c) == len(EXACT_CHUNKS)
                assert all(score == pytest.approx(want[i], abs=1e-12) for i, score in c), (question, c, want)
                fixed = spec_fused(dense, lexical, s, False)
                moved += any(abs(want[i] - fixed[i]) > 1e-9 for i in want)
    assert (moved > 20) if on else (moved == 0), moved


def test_rank_pages_reference_on_a_known_list():
    """What the C side is compared with, pinned on a hand-computed example (FORMAT.md §2.8)."""
    keys = [("a",), ("b",), ("a",), ("c",), ("b",), ("a",)]
    scores = np.array([0.9, 0.8, 0.7, 0.75, -0.5, 0.1])
    ids = np.array([4, 2, 9, 1, 7, 3])
    pages = rank_pages(scores, ids, keys, settings=RetrievalSettings(page_share=0.5, page_chunks=2), k=10)
    assert [p.key for p in pages] == [("a",), ("b",), ("c",)]
    assert pages[0].score == 0.9 + 0.5 * (0.7 + 0.1) and pages[0].chunk_ids == (4, 9)
    assert pages[1].score == 0.8 and pages[1].chunk_ids == (2, 7)  # the negative member adds nothing
    plain = rank_pages(scores, ids, keys, settings=RetrievalSettings(page_depth=3), k=10)
    assert [(p.key, p.score) for p in plain] == [(("a",), 0.9), (("b",), 0.8)]


# --------------------------------------------------------------------------- the library API

API_PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kbpack.h"

int main(int argc, char **argv) { /* BUNDLE QUESTION */
  kbp_bundle *kb;
  kbp_error err;
  (void)argc;
  if (kbp_open(argv[1], &kb, &err) != KBP_OK) { printf("open %s\n", err.message); return 1; }
  kbp_unit unit = KBP_UNIT_DEFAULT;
  size_t depth = 0, per_page = 0, n = 99;
  double share = -1;
  kbp_status st = kbp_default_unit(kb, &unit);
  printf("unit %d %d\n", (int)st, (int)unit);
  st = kbp_page_settings(kb, &depth, &share, &per_page);
  printf("settings %d %zu %.17g %zu\n", (int)st, depth, share, per_page);
  size_t k = 50;
  kbp_page_hit *pages = malloc(k * sizeof *pages);
  printf("null-n %d\n", (int)kbp_search_pages(kb, NULL, argv[2], 3, KBP_MODE_LEXICAL, pages, NULL));
  printf("null-pages %d\n", (int)kbp_search_pages(kb, NULL, argv[2], 3, KBP_MODE_LEXICAL, NULL, &n));
  printf("no-vector %d %s\n", (int)kbp_search_pages(kb, NULL, argv[2], 3, KBP_MODE_DENSE, pages, &n), kbp_last_error(kb)->message);
  st = kbp_search_pages(kb, NULL, argv[2], 0, KBP_MODE_LEXICAL, NULL, &n);
  printf("k0 %d %zu\n", (int)st, n);
  printf("k0-no-question %d\n", (int)kbp_search_pages(kb, NULL, NULL, 0, KBP_MODE_LEXICAL, NULL, &n));
  st = kbp_search_pages(kb, NULL, argv[2], k, KBP_MODE_LEXICAL, pages, &n);
  /* the records stay valid across kbp_chunk_get (which reads other blocks) */
  kbp_chunk c;
  for (size_t i = 0; i < n; i++) kbp_chunk_get(kb, pages[i].chunk_ids[0], &c);
  kbp_chunk_get(kb, kbp_count(kb) - 1, &c);
  printf("pages %d %zu\n", (int)st, n);
  for (size_t i = 0; i < n; i++) {
    printf("page %lld %lld %s %zu", (long long)pages[i].source, (long long)pages[i].page,
           pages[i].record.s ? pages[i].record.s : "(none)", pages[i].n_chunks);
    for (size_t j = 0; j < pages[i].n_chunks; j++) printf(" %llu", (unsigned long long)pages[i].chunk_ids[j]);
    printf("\n");
  }
  /* a second search reuses the record area */
  st = kbp_search_pages(kb, NULL, "zzzqx", k, KBP_MODE_LEXICAL, pages, &n);
  printf("none %d %zu\n", (int)st, n);
  free(pages);
  kbp_close(kb);
  printf("null-kb %d\n", (int)kbp_search_pages(NULL, NULL, "x", 1, KBP_MODE_LEXICAL, NULL, &n));
  return 0;
}
"""


def test_the_page_api_contracts(libkbpack, mixed_bundle, tmp_path):
    """Run with LIBKBPACK_CFLAGS="-std=c99 -O1 -g -fsanitize=address,undefined", this also checks that
    the library frees what it allocates and reads no byte it should not."""
    paged = with_retrieval_settings(mixed_bundle, tmp_path / "paged.kbpack", {"unit": "page", "page_share": 0.25,
                                                                              "page_depth": 30, "page_chunks": 2})
    src = tmp_path / "pages.c"
    src.write_text(API_PROGRAM)
    exe = libkbpack.compile(src, tmp_path / "pages")
    question = "honey bees tides moon pump boiler valve"
    out = subprocess.run([str(exe), str(paged), question], capture_output=True, text=True, timeout=TIME_LIMIT_S)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    rows = dict(line.split(" ", 1) for line in lines if not line.startswith("page "))
    assert rows["unit"] == "0 2"
    assert rows["settings"] == "0 30 0.25 2"
    assert rows["null-n"] == "3" and rows["null-pages"] == "3"
    assert rows["no-vector"] == "3 this search needs a query vector"
    assert rows["k0"] == "0 0" and rows["k0-no-question"] == "3"
    assert rows["none"] == "0 0" and rows["null-kb"] == "3"
    with KnowledgeBase(paged) as kb:
        py = kb.rank_pages([question], 50, mode="lexical")[0]
    assert rows["pages"] == f"0 {len(py)}" and len(py) > 5
    got = [line.split(" ")[1:] for line in lines if line.startswith("page ")]
    want = [[str(p.key[0]), str(p.key[2]), "(none)" if p.key[1] is None else p.key[1], str(len(p.chunk_ids)),
             *map(str, p.chunk_ids)] for p in py]
    assert got == want


def test_the_default_unit_without_a_retrieval_object_is_chunk(libkbpack, tmp_path):
    vectors = np.eye(3, 4, dtype=np.float32)
    p = write_bundle(tmp_path / "old.kbpack", manifest={}, vectors=vectors, chunks=[{"text": f"c{i}"} for i in range(3)])
    src = tmp_path / "unit.c"
    src.write_text(API_PROGRAM)
    exe = libkbpack.compile(src, tmp_path / "unit")
    out = subprocess.run([str(exe), str(p), "c1"], capture_output=True, text=True, timeout=TIME_LIMIT_S)
    assert out.returncode == 0, out.stderr
    rows = dict(line.split(" ", 1) for line in out.stdout.splitlines() if not line.startswith("page "))
    assert rows["unit"] == "0 1" and rows["settings"] == "0 100 0 3"
    assert rows["pages"].startswith("4 ")  # lexical search: this bundle has no lexical index


# --------------------------------------------------------------------------- forged settings: the same verdict

BAD = {
    "unit bogus": {"unit": "bogus"},
    "unit empty": {"unit": ""},
    "unit number": {"unit": 1},
    "unit null": {"unit": None},
    "unit list": {"unit": ["page"]},
    "unit capital": {"unit": "Page"},
    "page_depth 0": {"page_depth": 0},
    "page_depth 10001": {"page_depth": 10001},
    "page_depth -1": {"page_depth": -1},
    "page_depth 1e30": {"page_depth": 1e30},
    "page_depth 5.0": {"page_depth": 5.0},
    "page_depth '5'": {"page_depth": "5"},
    "page_depth true": {"page_depth": True},
    "page_depth null": {"page_depth": None},
    "page_depth 2**64": {"page_depth": 2 ** 64},
    "page_share 2": {"page_share": 2},
    "page_share -1": {"page_share": -1},
    "page_share 1.0000001": {"page_share": 1.0000001},
    "page_share string": {"page_share": "0.5"},
    "page_share true": {"page_share": True},
    "page_share null": {"page_share": None},
    "page_share nan": {"page_share": float("nan")},
    "page_share inf": {"page_share": float("inf")},
    "path_weight 2": {"path_weight": 2},
    "path_weight -0.1": {"path_weight": -0.1},
    "path_weight string": {"path_weight": "0.1"},
    "path_weight true": {"path_weight": True},
    "path_weight null": {"path_weight": None},
    "path_weight nan": {"path_weight": float("nan")},
    "heading_weight 1.5": {"heading_weight": 1.5},
    "heading_weight inf": {"heading_weight": float("inf")},
    "heading_weight list": {"heading_weight": [0.1]},
    "page_chunks 0": {"page_chunks": 0},
    "page_chunks 101": {"page_chunks": 101},
    "page_chunks 3.0": {"page_chunks": 3.0},
    "page_chunks false": {"page_chunks": False},
    "page_chunks '3'": {"page_chunks": "3"},
    # a JSON boolean only (FORMAT.md §2.5.1): 1 or "yes" would read as true to one reader and false to another
    "standout_weighting 1": {"standout_weighting": 1},
    "standout_weighting 0": {"standout_weighting": 0},
    "standout_weighting 'yes'": {"standout_weighting": "yes"},
    "standout_weighting 'true'": {"standout_weighting": "true"},
    "standout_weighting null": {"standout_weighting": None},
    "standout_weighting list": {"standout_weighting": [True]},
}

GOOD = {
    "unit page": {"unit": "page"},
    "unit chunk": {"unit": "chunk"},
    "page_depth 1": {"page_depth": 1},
    "page_depth 10000": {"page_depth": 10000},
    "page_share 0": {"page_share": 0},
    "page_share 1": {"page_share": 1},
    "page_share 0.0": {"page_share": 0.0},
    "page_share -0.0": {"page_share": -0.0},
    "page_share 1e-300": {"page_share": 1e-300},
    "path_weight 0": {"path_weight": 0},
    "path_weight 1": {"path_weight": 1},
    "heading_weight 0.5": {"heading_weight": 0.5},
    "page_chunks 1": {"page_chunks": 1},
    "page_chunks 100": {"page_chunks": 100},
    "standout_weighting true": {"standout_weighting": True},
    "standout_weighting false": {"standout_weighting": False},
}


def python_opens(path: Path) -> bool:
    try:
        with KnowledgeBase(path) as kb:
            kb.rank_pages(["pump"], 3, mode="lexical")
        return True
    except BundleError as e:
        assert "retrieval" in str(e) and e.section == "manifest", str(e)
        return False


@pytest.mark.parametrize("case", sorted(BAD) + sorted(GOOD))
def test_forged_page_settings_get_the_same_verdict(kbpack_tool, mixed_bundle, tmp_path, case):
    settings = {**BAD, **GOOD}[case]
    path = with_retrieval_settings(mixed_bundle, tmp_path / "f.kbpack", settings)
    refused = case in BAD
    assert python_opens(path) is not refused, case
    assert c_verdict(kbpack_tool, path) == python_verdict(path) == ((3, "manifest") if refused else (0, None)), case
    out = kbpack(kbpack_tool, "search", path, "--unit", "page", "--mode", "lexical", "-k", 3, "--", "pump")
    if refused:
        assert out.returncode == 3 and out.stdout == "", case
        assert out.stderr.startswith("kbpack: manifest: retrieval: ") and out.stderr.count("\n") == 1, (case, out.stderr)
        name = next(iter(settings))
        assert (name in out.stderr) if name != "unit" else ("unknown unit" in out.stderr), (case, out.stderr)
    else:
        assert out.returncode == 0 and json.loads(out.stdout)["unit"] == "page", (case, out.stderr)
    assert kbpack(kbpack_tool, "chunk", path, 0).returncode == 0  # the rest of the bundle reads as before


def test_settings_spelled_otherwise_in_json_read_the_same(kbpack_tool, mixed_bundle, tmp_path):
    """Escapes, duplicate keys (the last wins), exponents: the C JSON reader reads what Python's does."""
    def edit(text: str) -> str:
        m = json.loads(text)
        m["retrieval"].pop("unit", None), m["retrieval"].pop("page_share", None)
        body = json.dumps(m)
        assert body.endswith("}")
        return body[:-1] + ', "retrieval": ' + json.dumps(m["retrieval"])[:-1] + \
            ', "unit": "chunk", "unit": "\\u0070age", "page_share": 5e-1, "page_depth": 7}}'
    path = with_manifest_text(mixed_bundle, tmp_path / "s.kbpack", edit)
    with KnowledgeBase(path) as kb:
        s = kb.retriever.settings
        assert (s.unit, s.page_share, s.page_depth) == ("page", 0.5, 7)
        py = py_pages(kb, "pump valve pressure", None, 5, "lexical")
    c = c_pages(kbpack_tool, path, mode="lexical", k=5, vector=None, question="pump valve pressure", unit=None)
    assert_same_pages(c, py, 0.0, "spelled otherwise")
    assert len(c) >= 2


def test_usage_errors(kbpack_tool, mixed_bundle):
    for args in (["--unit", "pages"], ["--unit"], ["--unit", ""]):
        out = kbpack(kbpack_tool, "search", mixed_bundle, "--mode", "lexical", *args, "--", "pump")
        assert out.returncode == 2 and out.stderr.startswith("usage:"), (args, out.stderr)
    out = kbpack(kbpack_tool, "search", mixed_bundle, "--unit", "page", "--mode", "dense", "-k", 3)
    assert out.returncode == 2 and "--vector" in out.stderr
