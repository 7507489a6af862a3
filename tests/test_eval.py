"""`kbc eval`: metric code against hand-computed cases, file parsing, and the command end to end."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import SHARED, kbc_cli
from kbc.errors import InputError
from kbc.tools.evaluate import (PAGE_METRICS, _score_pages, hit_metrics, mean_metrics, page_judgements, query_metrics,
                                rank_all, rank_documents, read_qrels, read_queries)
from kbc.search.dense import Searcher

L2_3, L2_4, L2_5 = math.log2(3), math.log2(4), math.log2(5)


def test_binary_relevance_by_hand():
    # relevant a (rank 2) and b (rank 4); DCG = 1/log2(3) + 1/log2(5); ideal = 1 + 1/log2(3)
    m = query_metrics(["x", "a", "y", "b"], {"a": 1, "b": 1})
    assert m["ndcg@10"] == pytest.approx((1 / L2_3 + 1 / L2_5) / (1 + 1 / L2_3))
    assert m["ndcg@10"] == pytest.approx(0.65092, abs=1e-5)
    assert m["recall@1"] == 0.0
    assert m["recall@5"] == m["recall@10"] == m["recall@100"] == 1.0
    assert m["mrr@10"] == 0.5


def test_graded_relevance_uses_linear_gains_and_the_ideal_order():
    # b (grade 1) first, a (grade 2) second: DCG = 1 + 2/log2(3); ideal = 2 + 1/log2(3)
    m = query_metrics(["b", "a", "c"], {"a": 2, "b": 1, "c": 0})
    assert m["ndcg@10"] == pytest.approx((1 + 2 / L2_3) / (2 + 1 / L2_3))
    assert m["ndcg@10"] == pytest.approx(0.85972, abs=1e-5)
    assert m["recall@1"] == 0.5  # grade 0 is judged but not relevant
    assert m["mrr@10"] == 1.0


def test_relevant_documents_past_the_cutoffs():
    ranked = [f"n{i}" for i in range(10)] + ["r1"] + [f"m{i}" for i in range(200)]
    m = query_metrics(ranked, {"r1": 1, "r2": 1})  # r1 at rank 11, r2 never retrieved
    assert m["ndcg@10"] == 0.0 and m["mrr@10"] == 0.0 and m["recall@10"] == 0.0
    assert m["recall@100"] == 0.5


def test_ties_are_ordered_by_document_id_descending_like_trec_eval():
    order = rank_documents({"a": 0.5, "b": 0.5, "c": 0.9, "d": 0.1})
    assert order == ["c", "b", "a", "d"]
    m = query_metrics(order, {"a": 1})
    assert m["ndcg@10"] == pytest.approx(1 / L2_4)
    assert m["mrr@10"] == pytest.approx(1 / 3)


def test_query_with_no_relevant_document_is_not_scored():
    assert query_metrics(["a", "b"], {"a": 0, "b": 0}) is None
    assert query_metrics(["a"], {}) is None


def test_mean_over_queries():
    a = query_metrics(["a"], {"a": 1})
    b = query_metrics(["x", "y"], {"b": 1})
    mean = mean_metrics([a, b])
    assert mean["ndcg@10"] == pytest.approx(0.5) and mean["recall@100"] == pytest.approx(0.5)


def test_qrels_with_and_without_header_and_trec_layout(tmp_path):
    with_header = tmp_path / "a.tsv"
    with_header.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t2\nq2\td3\t0\n")
    bare = tmp_path / "b.tsv"
    bare.write_text("q1\td1\t1\nq1\td2\t2\nq2\td3\t0\n")
    trec = tmp_path / "c.txt"
    trec.write_text("q1 0 d1 1\nq1 0 d2 2\nq2 0 d3 0\n")
    expected = {"q1": {"d1": 1, "d2": 2}, "q2": {"d3": 0}}
    assert read_qrels(with_header) == read_qrels(bare) == read_qrels(trec) == expected


def test_bad_qrels_and_queries_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("q1\td1\t1\nq1\td2\tvery\n")
    with pytest.raises(InputError, match=r"bad.tsv: line 2: relevance 'very'"):
        read_qrels(bad)
    cols = tmp_path / "cols.tsv"
    cols.write_text("q1\td1\n")
    with pytest.raises(InputError, match=r"cols.tsv: line 1: .*2 columns"):
        read_qrels(cols)
    dup = tmp_path / "q.jsonl"
    dup.write_text('{"_id": "1", "text": "a"}\n{"_id": "1", "text": "b"}\n')
    with pytest.raises(InputError, match=r"q.jsonl: line 2: duplicate query id '1'"):
        read_queries(dup)
    with pytest.raises(InputError, match="no such file"):
        read_queries(tmp_path / "missing.jsonl")


def test_queries_jsonl_and_tsv(tmp_path):
    j = tmp_path / "q.jsonl"
    j.write_text('{"_id": 7, "text": "first"}\n\n{"_id": "x", "text": "second"}\n')
    t = tmp_path / "q.tsv"
    t.write_text("7\tfirst\nx\tsecond\n")
    assert read_queries(j) == read_queries(t) == {"7": "first", "x": "second"}


def test_document_ranking_is_exact_whatever_the_chunk_depth():
    """rank_all fetches chunks until enough distinct documents are seen; compare with brute force."""
    rng = np.random.default_rng(1)
    owner = np.repeat(np.arange(40), rng.integers(1, 12, size=40))  # 40 documents, 1-11 chunks each
    vectors = rng.standard_normal((len(owner), 8)).astype(np.float32)
    queries = rng.standard_normal((6, 8)).astype(np.float32)
    doc_ids = [f"d{i:02d}" for i in range(40)]
    kb = SimpleNamespace(searcher=Searcher(vectors, None, {}), bundle=SimpleNamespace(count=len(owner)))
    got = rank_all(kb, queries, owner, doc_ids, depth=7)
    for q, ranked in zip(queries, got):
        s = vectors @ q
        best = {doc_ids[d]: float(s[owner == d].max()) for d in range(40)}
        want = rank_documents(best)[:7]
        assert list(rank_documents(ranked)) == want
        assert all(ranked[d] == pytest.approx(best[d]) for d in want)


@pytest.fixture(scope="module")
def tiny_eval_set(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalset")
    docs = {
        "bees": ("Honey bees", "Honey bees live in hives, make honey from nectar and pollinate flowers."),
        "rust": ("Rust ownership", "In Rust every value has one owner; when the owner goes out of scope the value is dropped."),
        "tides": ("Ocean tides", "Tides rise and fall twice a day because of the gravitational pull of the moon."),
        "bread": ("Sourdough", "Sourdough bread is leavened by a starter of wild yeast and lactic acid bacteria."),
        "volcano": ("Volcanoes", "A volcano erupts when molten rock, gas and ash escape from the magma chamber."),
    }
    with open(d / "corpus.jsonl", "w") as f:
        for i, (title, text) in docs.items():
            f.write(json.dumps({"_id": i, "title": title, "text": text}) + "\n")
    queries = {"q1": "which insects pollinate flowers and make honey", "q2": "why does the sea level rise and fall",
               "q3": "what happens to a value when its owner goes out of scope", "q4": "an unjudged question"}
    with open(d / "queries.jsonl", "w") as f:
        for i, t in queries.items():
            f.write(json.dumps({"_id": i, "text": t}) + "\n")
    (d / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tbees\t1\nq2\ttides\t1\nq3\trust\t2\n"
                                 "q5\tbread\t1\nq4\tvolcano\t0\n")
    out = d / "kb.kbpack"
    kbc_cli("build", str(d / "corpus.jsonl"), "-o", str(out), "--quiet", check=True)
    return d, out


def test_kbc_eval_end_to_end(tiny_eval_set):
    d, bundle = tiny_eval_set
    proc = kbc_cli("eval", str(bundle), "--queries", str(d / "queries.jsonl"), "--qrels", str(d / "qrels.tsv"),
                   "--json", "--per-query", check=True)
    rep = json.loads(proc.stdout)
    assert rep["queries"] == 3 and rep["documents"] == 5
    assert rep["skipped_no_text"] == 1 and rep["skipped_no_relevant"] == 1  # q5 has no text, q4 no relevant doc
    assert rep["metrics"]["ndcg@10"] == pytest.approx(1.0) and rep["metrics"]["recall@1"] == pytest.approx(1.0)
    by_id = {q["id"]: q for q in rep["per_query"]}
    assert by_id["q3"]["retrieved"][0] == "rust" and by_id["q3"]["first_relevant_rank"] == 1
    assert len(by_id["q1"]["retrieved"]) == 5  # every document, best first

    human = kbc_cli("eval", str(bundle), "--queries", str(d / "queries.jsonl"), "--qrels", str(d / "qrels.tsv"), "--per-query",
                    check=True).stdout
    assert "ndcg@10" in human and "1 queries with no relevant document" in human
    dense_row = next(line for line in human.splitlines() if line.strip().startswith("dense"))
    assert dense_row.split()[1] == "1.0000"  # nDCG@10 is the first column


def test_kbc_eval_reports_a_wrong_corpus_and_bad_input(tiny_eval_set, tmp_path):
    d, bundle = tiny_eval_set
    other = tmp_path / "other.tsv"
    other.write_text("q1\tnot-in-bundle\t1\nq2\ttides\t1\n")
    proc = kbc_cli("eval", str(bundle), "--queries", str(d / "queries.jsonl"), "--qrels", str(other), check=True)
    assert "1 relevant documents are not in the bundle" in proc.stdout
    missing = kbc_cli("eval", str(bundle), "--queries", str(d / "queries.jsonl"), "--qrels", str(tmp_path / "nope.tsv"))
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "nope.tsv: no such file" in missing.stderr
    mismatch = tmp_path / "ids.tsv"
    mismatch.write_text("zz\tbees\t1\n")
    proc = kbc_cli("eval", str(bundle), "--queries", str(d / "queries.jsonl"), "--qrels", str(mismatch))
    assert proc.returncode == 2 and "query ids" in proc.stderr


def test_page_level_metrics_by_hand():
    """Chunks span pages; a chunk counts when its file and any page of its span are judged."""
    chunk_pages = [({"a"}, 1, 1), ({"a"}, 2, 3), ({"b"}, 1, 1), ({"b"}, 4, 4)]
    qrels = {"q1": {"a:p3": 1}, "q2": {"b:p4": 1, "a:p1": 1}, "q3": {"b:p9": 1}, "q4": {"a:p2": 0}}
    queries = {q: q for q in qrels}
    lists = {"q1": [2, 0, 1], "q2": [3, 0], "q3": [0, 1, 2, 3]}
    kb = SimpleNamespace(rank=lambda texts, k, mode, vectors: [
        (np.ones(len(lists[t])), np.array(lists[t])) for t in texts])
    got = {r.id: r for r in _score_pages(kb, ["q1", "q2", "q3"], queries, qrels, None, "dense", chunk_pages)}
    assert got["q1"].metrics == {"hit@1": 0.0, "hit@5": 1.0, "hit@10": 1.0, "hit@20": 1.0, "mrr@10": pytest.approx(1 / 3)}
    assert got["q1"].retrieved == ["b:p1", "a:p1", "a:p2-3"] and got["q1"].first_relevant_rank == 3
    assert got["q2"].metrics["hit@1"] == 1.0 and got["q2"].metrics["mrr@10"] == 1.0
    assert got["q3"].metrics["hit@20"] == 0.0 and got["q3"].first_relevant_rank is None
    mean = mean_metrics([r.metrics for r in got.values()], PAGE_METRICS)
    assert mean["hit@1"] == pytest.approx(1 / 3) and mean["hit@5"] == pytest.approx(2 / 3)
    assert mean["mrr@10"] == pytest.approx((1 / 3 + 1) / 3)
    assert page_judgements(qrels, {"a", "b"}) and not page_judgements({"q": {"a": 1}}, {"a"})
    assert not page_judgements({"q": {"x:p3": 1}}, {"x:p3"})  # a document really named like a page stays a document


def test_hit_metrics_cut_offs():
    m = hit_metrics([False] * 7 + [True])
    assert m == {"hit@1": 0.0, "hit@5": 0.0, "hit@10": 1.0, "hit@20": 1.0, "mrr@10": pytest.approx(1 / 8)}
    assert hit_metrics([False] * 12 + [True])["mrr@10"] == 0.0 and hit_metrics([])["hit@20"] == 0.0


SCIFACT = SHARED / "eval" / "scifact-train"


@pytest.mark.slow
@pytest.mark.skipif(not (SCIFACT / "qrels.tsv").exists(), reason="../shared/eval/scifact-train not present")
def test_scifact_reads_cleanly():
    """The shared set parses: every judged query has a text (the full reproduction is in bench/eval_sweep.py)."""
    q = read_queries(SCIFACT / "queries.jsonl")
    r = read_qrels(SCIFACT / "qrels.tsv")
    assert len(q) == 809 and len(r) == 809 and sum(len(v) for v in r.values()) == 919
    assert set(r) <= set(q)


def test_the_sample_questions_judge_pages_that_exist_and_are_found(sample_bundle):
    """sample_eval/ is the README's runnable `kbc eval` example: every judged page is in a build of
    sample_docs, and hybrid search finds it (a regression in extraction, chunking or search shows here)."""
    from conftest import ROOT
    from kbc.query.knowledge_base import KnowledgeBase
    from kbc.tools.evaluate import evaluate

    queries = read_queries(ROOT / "sample_eval" / "queries.jsonl")
    qrels = read_qrels(ROOT / "sample_eval" / "qrels.tsv")
    assert len(queries) >= 12 and set(qrels) == set(queries)
    with KnowledgeBase(sample_bundle) as kb:
        report = evaluate(kb, queries, qrels, modes=["hybrid", "dense", "lexical"])
    assert report.level == "page" and report.unknown_documents == 0 and report.queries == len(queries)
    assert report.modes["hybrid"]["hit@5"] >= 0.85 and report.modes["hybrid"]["hit@20"] == 1.0
    assert report.modes["hybrid"]["mrr@10"] >= 0.7
