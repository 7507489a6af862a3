"""Pages as the unit of retrieval (FORMAT.md §2.8): grouping, scoring and ties by hand, the
settings a bundle may carry, `kbc query --unit page`, `kbc eval --unit page`, and `--rerank`."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from conftest import kbc_cli
from kbc.format.retrieval import RetrievalSettings
from kbc.search.fusion import rank_pages
from pdfgen import make_pdf

S = RetrievalSettings()


def pages(scores, keys, **kw):
    settings = replace(S, **{k: v for k, v in kw.items() if k != "k"})
    ids = np.arange(len(scores))
    return rank_pages(np.asarray(scores, dtype=np.float64), ids, keys, settings=settings, k=kw.get("k", 10))


def test_a_page_scores_as_its_best_chunk_and_ranks_once():
    keys = [(0, None, 1), (0, None, 2), (0, None, 1), (1, None, 1), (0, None, 2)]
    got = pages([0.9, 0.8, 0.7, 0.6, 0.5], keys)
    assert [p.key for p in got] == [(0, None, 1), (0, None, 2), (1, None, 1)]
    assert [p.score for p in got] == [0.9, 0.8, 0.6]
    assert [p.chunk_ids for p in got] == [(0, 2), (1, 4), (3,)]


def test_page_share_adds_the_rest_and_floors_negative_scores():
    keys = [(0, None, 1), (0, None, 2), (0, None, 2), (0, None, 2), (0, None, 1)]
    got = pages([0.9, 0.8, 0.3, 0.2, -5.0], keys, page_share=0.5)
    assert [p.key[2] for p in got] == [2, 1]  # 0.8 + 0.5 x (0.3 + 0.2) = 1.05 beats 0.9 + 0.5 x max(-5, 0)
    assert got[0].score == pytest.approx(1.05) and got[1].score == 0.9


def test_ties_go_to_the_page_whose_best_chunk_has_the_lower_id():
    ids = np.array([7, 3, 5])
    got = rank_pages(np.array([0.5, 0.5, 0.5]), ids, [(0, None, 9), (1, None, 1), (2, None, 4)], settings=S, k=3)
    assert [p.chunk_ids[0] for p in got] == [3, 5, 7]


def test_depth_chunks_and_k_bound_the_answer():
    keys = [(0, None, p % 4) for p in range(12)]
    got = pages(list(np.linspace(1, 0, 12)), keys, page_chunks=2, page_depth=6, k=3)
    assert len(got) == 3 and all(len(p.chunk_ids) <= 2 for p in got)
    assert max(c for p in got for c in p.chunk_ids) < 6  # only the first page_depth chunks are grouped


def test_records_of_one_source_are_different_pages():
    got = pages([0.9, 0.8], [(0, "r1", 1), (0, "r2", 1)])
    assert len(got) == 2


@pytest.mark.parametrize("field, value", [("unit", "paragraph"), ("page_share", 2), ("page_share", -0.1),
                                          ("page_share", "0.1"), ("page_depth", 0), ("page_depth", 10_001),
                                          ("page_depth", 5.0), ("page_chunks", 101), ("page_chunks", True)])
def test_settings_out_of_range_are_refused(field, value):
    with pytest.raises(ValueError):
        RetrievalSettings.from_manifest({**S.to_manifest(), field: value})


def test_older_bundles_rank_chunks():
    old = {k: v for k, v in S.to_manifest().items() if not k.startswith("page") and k != "unit"}
    assert RetrievalSettings.from_manifest(old).unit == "chunk"


QUESTION = "How do I run only the tests whose names match a filter?"


def test_query_unit_page_returns_each_page_once_grouped_from_the_chunk_ranking(sample_bundle):
    import kbc

    paged = json.loads(kbc_cli("query", str(sample_bundle), QUESTION, "--unit", "page", "-k", "4", "--json",
                               check=True).stdout)
    assert paged["unit"] == "page" and 1 <= len(paged["pages"]) <= 4
    chunks = json.loads(kbc_cli("query", str(sample_bundle), QUESTION, "--unit", "chunk", "-k", "100", "--json",
                                check=True).stdout)["hits"]
    want: dict = {}
    for h in chunks:  # group the chunk ranking by hand: the page a chunk starts on
        want.setdefault((h["source"], h.get("record"), h["page_start"]), []).append(h)
    keys = [(p["source"], p.get("record"), p["page"]) for p in paged["pages"]]
    assert keys == list(want)[:len(keys)] and len(set(keys)) == len(keys)
    for p, key in zip(paged["pages"], keys):
        assert [c["chunk_id"] for c in p["chunks"]] == [h["chunk_id"] for h in want[key]][:3]
        assert p["score"] == pytest.approx(want[key][0]["score"])  # page_share 0: the best chunk's score
    with kbc.open(sample_bundle) as kb:
        lib = kb.search_pages(QUESTION, k=4)
    assert [(p.source, p.record, p.page) for p in lib] == keys


def test_prompt_from_pages_lists_each_chunk_once_in_reading_order(sample_bundle):
    paged = json.loads(kbc_cli("query", str(sample_bundle), QUESTION, "--unit", "page", "-k", "3", "--json",
                               check=True).stdout)["pages"]
    prompt = kbc_cli("query", str(sample_bundle), QUESTION, "--unit", "page", "-k", "3", "--prompt", check=True).stdout
    lines = [ln for ln in prompt.splitlines() if ln.startswith("context_")]
    expected = [c for p in paged for c in sorted(p["chunks"], key=lambda c: c["chunk_id"])]
    assert len(lines) == len(expected)
    for line, c in zip(lines, expected):
        assert " ".join(c["text"].split())[:60] in line
    assert prompt.rstrip().endswith(f"question: {QUESTION}")


@pytest.fixture(scope="module")
def paged_set(tmp_path_factory):
    """Two PDFs, three pages each, one topic a page; page-level judgements for three questions."""
    d = tmp_path_factory.mktemp("paged")
    docs = d / "docs"
    docs.mkdir()
    (docs / "animals.pdf").write_bytes(make_pdf([
        "Owls hunt at night and swallow mice whole, then cough up pellets of bone and fur.",
        "Honey bees live in hives, make honey from nectar and pollinate flowers in spring.",
        "Salmon swim upstream to spawn in the river where they hatched years before."]))
    (docs / "weather.pdf").write_bytes(make_pdf([
        "Thunderstorms form when warm moist air rises quickly into cold air above it.",
        "Tides rise and fall twice a day because of the gravitational pull of the moon.",
        "Snowflakes grow as water vapour freezes onto tiny ice crystals in clouds."]))
    (d / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in [
        {"_id": "q1", "text": "which insects make honey and pollinate flowers"},
        {"_id": "q2", "text": "why do tides rise and fall twice a day"},
        {"_id": "q3", "text": "what do owls cough up after eating mice"}]) + "\n")
    (d / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tanimals:p2\t1\nq2\tweather:p2\t1\nq3\tanimals:p1\t1\n")
    out = d / "kb.kbpack"
    # chunks of one page each (a chunk that crosses pages counts for the page it starts on)
    kbc_cli("build", str(docs), "-o", str(out), "--quiet", "--chunk-unit", "chars", "--chunk-size", "100",
            "--chunk-overlap", "0", check=True)
    return d, out


def test_eval_unit_page_ranks_pages(paged_set):
    d, bundle = paged_set
    args = ["eval", str(bundle), "--queries", str(d / "queries.jsonl"), "--qrels", str(d / "qrels.tsv"), "--json",
            "--per-query"]
    rep = json.loads(kbc_cli(*args, "--unit", "page", check=True).stdout)
    assert rep["unit"] == "page" and rep["level"] == "page"
    assert rep["metrics"]["hit@1"] == pytest.approx(1.0)
    for q in rep["per_query"]:
        assert len(q["retrieved"]) == len(set(q["retrieved"]))  # a page once
        assert all(":p" in r and "-" not in r.rsplit(":p", 1)[1] for r in q["retrieved"])
    human = kbc_cli(*args[:-2], "--unit", "page", "--page-share", "0.3", check=True).stdout
    assert "ranked pages" in human and "0.3 x the rest" in human
    bad = kbc_cli(*args[:-2], "--unit", "page", "--page-share", "3")
    assert bad.returncode == 2 and "page_share" in bad.stderr and "Traceback" not in bad.stderr


def test_rerank_orders_by_the_cross_encoder(paged_set, tmp_path):
    from test_rerank import make_tiny_cross_encoder

    from kbc.query.knowledge_base import KnowledgeBase
    from kbc.query.rerank import load_reranker, passage_text

    d, bundle = paged_set
    ce = make_tiny_cross_encoder(tmp_path / "ce")
    q = "why do tides rise and fall twice a day"
    got = json.loads(kbc_cli("query", str(bundle), q, "-k", "3", "--unit", "chunk", "--rerank", str(ce), "--json",
                             check=True).stdout)["hits"]
    with KnowledgeBase(bundle) as kb:
        first = kb.search(q, k=50)  # every chunk of this small bundle
    scores = load_reranker(ce).score(q, [passage_text(h) for h in first])
    order = sorted(range(len(first)), key=lambda i: (-scores[i], i))[:3]
    assert [h["chunk_id"] for h in got] == [first[i].chunk_id for i in order]
    assert [h["score"] for h in got] == pytest.approx([float(scores[i]) for i in order])
    rep = json.loads(kbc_cli("eval", str(bundle), "--queries", str(d / "queries.jsonl"), "--qrels", str(d / "qrels.tsv"),
                             "--rerank", str(ce), "--json", check=True).stdout)
    assert rep["reranker"]
    missing = kbc_cli("query", str(bundle), q, "--rerank", str(tmp_path / "nope"))
    assert missing.returncode == 4 and "nope" in missing.stderr and "Traceback" not in missing.stderr


def test_default_unit_page_is_recorded_and_used(paged_set, tmp_path):
    from kbc.format.bundle import Bundle

    d, _ = paged_set
    out = tmp_path / "paged.kbpack"
    kbc_cli("build", str(d / "docs"), "-o", str(out), "--quiet", "--default-unit", "page", check=True)
    with Bundle(out) as b:
        assert b.manifest["retrieval"]["unit"] == "page" and b.manifest["build_options"]["default_unit"] == "page"
    got = json.loads(kbc_cli("query", str(out), "owls and mice", "--json", check=True).stdout)
    assert got["unit"] == "page" and "pages" in got
    assert json.loads(kbc_cli("query", str(out), "owls", "--unit", "chunk", "--json", check=True).stdout)["unit"] == "chunk"
    (tmp_path / "kbc.toml").write_text('default-unit = "paragraph"\n')
    bad = kbc_cli("build", str(d / "docs"), "-o", str(tmp_path / "x.kbpack"), "--config", str(tmp_path / "kbc.toml"))
    assert bad.returncode == 2 and "paragraph" in bad.stderr and not (tmp_path / "x.kbpack").exists()


def test_exact_dense_search_keeps_the_lower_ids_tied_at_the_cut():
    """FORMAT.md §2.5/§2.8: equal scores go to the lower chunk id, at the k cut too (argpartition
    alone keeps any of them)."""
    from kbc.search.dense import Searcher

    rng = np.random.default_rng(3)
    rows = rng.standard_normal((32, 8)).astype(np.float32)
    q = rng.standard_normal(8).astype(np.float32)
    order = np.argsort(-(rows @ q), kind="stable")
    tied = np.sort(order[2:6])
    rows[tied] = rows[tied[0]]  # the 3rd to 6th best rows become one
    scores, ids = Searcher(rows, None, {}).search(q[None, :], 5)
    s = rows @ q
    want = sorted(range(32), key=lambda i: (-s[i], i))[:5]
    assert list(ids[0]) == want and list(ids[0][2:]) == list(tied[:3])


def test_a_cold_search_that_loads_the_model_beside_the_lexical_side_ranks_as_a_warm_one(sample_bundle, tmp_path):
    """The first dense or hybrid search loads the model in a thread while the index is read and the
    lexical side scored: its answer must be the warm path's, and the model's error must still be the error."""
    import kbc
    from conftest import make_tiny_model
    from kbc.errors import ModelError

    for mode in ("hybrid", "dense"):
        with kbc.open(sample_bundle) as kb:
            cold = kb.rank([QUESTION, "pump maintenance"], 12, mode=mode)
            assert kb._embedder is not None
            warm = kb.rank([QUESTION, "pump maintenance"], 12, mode=mode)
        for (cs, ci), (ws, wi) in zip(cold, warm):
            assert ci.tolist() == wi.tolist() and np.array_equal(cs, ws)
    other = make_tiny_model(tmp_path / "other", seed=1)
    with kbc.open(sample_bundle, model=str(other)) as kb:
        with pytest.raises(ModelError, match="model files differ"):
            kb.search(QUESTION)
