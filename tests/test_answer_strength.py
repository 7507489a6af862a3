"""The answer strength (FORMAT.md §2.11) and the build's defaults that go with issue 42: the first
hit's cosine with the question, the bundle's min_strength, `kbc query`'s "no confident answer", `kbc
eval --unanswerable`, and the default unit chosen by what the documents are."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import kbc_cli
from kbc.format.bundle import Bundle
from kbc.pipeline import DEFAULT_MODEL_MIN_STRENGTH, unit_for
from kbc.query.knowledge_base import Answer, KnowledgeBase

ON_TOPIC = "At what temperature should I open the greenhouse roof vents?"
OFF_TOPIC = "Which stock exchange lists the company's preferred shares, and what was the dividend yield?"


def test_default_model_bundle_records_the_measured_threshold_and_pages(sample_bundle):
    with Bundle(sample_bundle) as b:
        r = b.manifest["retrieval"]
        assert r["min_strength"] == DEFAULT_MODEL_MIN_STRENGTH
        assert r["standout_weighting"] is True
        # sample_docs: most chunks come from multi-page PDFs
        assert r["unit"] == "page" == unit_for(b.manifest["sources"])


def test_unit_follows_where_the_chunks_come_from():
    pdf = {"kind": "pdf", "pages": 12, "chunks": 30}
    text = {"kind": "text", "pages": 1, "chunks": 10}
    records = {"kind": "records", "pages": 500, "chunks": 900}
    assert unit_for([pdf, text]) == "page"
    assert unit_for([{**pdf, "chunks": 10}, {**text, "chunks": 30}]) == "chunk"  # mostly text files
    assert unit_for([{**pdf, "chunks": 10}, {**text, "chunks": 10}]) == "chunk"  # half is not most
    assert unit_for([records]) == "chunk"  # JSONL records are documents, not pages
    assert unit_for([{**pdf, "pages": 1}]) == "chunk" and unit_for([]) == "chunk"


def test_query_reports_the_answer_strength_and_each_hits(sample_bundle):
    out = json.loads(kbc_cli("query", str(sample_bundle), ON_TOPIC, "-k", "3", "--json", check=True).stdout)
    a = out["answer"]
    assert a["min_score"] == DEFAULT_MODEL_MIN_STRENGTH and a["confident"] is True and a["strength"] >= 0.44
    first = out["pages"][0]
    assert first["strength"] == pytest.approx(a["strength"])
    with KnowledgeBase(sample_bundle) as kb:  # the strength is the first hit's cosine with the question
        v = kb.embed_queries([ON_TOPIC])[0]
        cos = float(np.dot(v, np.asarray(kb.bundle.vectors[first["chunks"][0]["chunk_id"]], dtype=np.float32)))
    assert a["strength"] == pytest.approx(cos, abs=1e-6)


def test_an_off_topic_question_gets_its_hits_and_no_confident_answer(sample_bundle):
    proc = kbc_cli("query", str(sample_bundle), OFF_TOPIC, "-k", "2", check=True)
    assert "kbc: no confident answer: the first hit's strength" in proc.stderr and "(the bundle's min_strength)" in proc.stderr
    assert proc.stdout.startswith("1. ")  # the hits are still shown
    data = json.loads(kbc_cli("query", str(sample_bundle), OFF_TOPIC, "-k", "2", "--json", check=True).stdout)
    assert data["answer"]["confident"] is False and data["answer"]["strength"] < DEFAULT_MODEL_MIN_STRENGTH
    # --min-score moves the line: under a low threshold the same question is answered
    low = kbc_cli("query", str(sample_bundle), OFF_TOPIC, "-k", "2", "--min-score", "-1", check=True)
    assert "no confident answer" not in low.stderr
    lexical = json.loads(kbc_cli("query", str(sample_bundle), OFF_TOPIC, "--mode", "lexical", "--json", check=True).stdout)
    assert lexical["answer"]["strength"] is None and lexical["answer"]["confident"] is None  # nothing measured


def test_another_model_records_no_threshold_unless_given(tiny_model, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Tides\n\nThe moon's gravity raises two bulges of water.\n", encoding="utf-8")
    plain, given = tmp_path / "plain.kbpack", tmp_path / "given.kbpack"
    kbc_cli("build", str(docs), "-o", str(plain), "--model", str(tiny_model), "-q", check=True)
    kbc_cli("build", str(docs), "-o", str(given), "--model", str(tiny_model), "--min-score", "0.25", "-q", check=True)
    with Bundle(plain) as b:
        assert b.manifest["retrieval"]["min_strength"] is None and b.manifest["retrieval"]["unit"] == "chunk"
    with Bundle(given) as b:
        assert b.manifest["retrieval"]["min_strength"] == 0.25
        assert b.manifest["build_options"]["min_score"] == 0.25
    out = json.loads(kbc_cli("query", str(plain), "why two tides", "--json", check=True).stdout)["answer"]
    assert out["min_score"] is None and out["confident"] is None and isinstance(out["strength"], float)
    bad = kbc_cli("build", str(docs), "-o", str(tmp_path / "x.kbpack"), "--min-score", "1.5", "-q")
    assert bad.returncode == 2 and "--min-score" in bad.stderr and not (tmp_path / "x.kbpack").exists()


def test_answer_semantics():
    assert Answer(0.5, 0.44).confident is True and Answer(0.3, 0.44).confident is False
    assert Answer(None, 0.44).confident is False  # no hit at all: never confident
    assert Answer(None, 0.44, measured=False).confident is None and Answer(0.9, None).confident is None


def test_eval_reports_the_signal_on_unanswerable_questions(sample_bundle, tmp_path):
    queries, qrels, unanswerable = tmp_path / "q.jsonl", tmp_path / "qrels.tsv", tmp_path / "none.jsonl"
    queries.write_text(json.dumps({"_id": "vents", "text": ON_TOPIC}) + "\n", encoding="utf-8")
    qrels.write_text("query-id\tcorpus-id\tscore\nvents\tgreenhouse-care.md\t1\n", encoding="utf-8")
    unanswerable.write_text(json.dumps({"_id": "stocks", "text": OFF_TOPIC}) + "\n"
                            + json.dumps({"_id": "tax", "text": "How is capital gains tax computed on options?"}) + "\n",
                            encoding="utf-8")
    out = json.loads(kbc_cli("eval", str(sample_bundle), "--queries", str(queries), "--qrels", str(qrels),
                             "--unanswerable", str(unanswerable), "--json", check=True).stdout)
    a = out["answer_strength"]
    assert a["answerable"] == 1 and a["unanswerable"] == 2 and a["min_score"] == DEFAULT_MODEL_MIN_STRENGTH
    assert a["unanswerable_flagged"] == 1.0 and a["answerable_flagged"] == 0.0
    text = kbc_cli("eval", str(sample_bundle), "--queries", str(queries), "--qrels", str(qrels),
                   "--unanswerable", str(unanswerable), "--min-score", "0.99", check=True).stdout
    assert "'no confident answer' for 100% of 2 unanswerable questions and, wrongly, 100% of 1 answerable ones" in text


def test_a_threshold_that_is_no_number_is_refused(sample_bundle, tmp_path):
    for argv in (["query", str(sample_bundle), ON_TOPIC, "--min-score", "nan"],
                 ["eval", str(sample_bundle), "--queries", "sample_eval/queries.jsonl", "--qrels", "sample_eval/qrels.tsv",
                  "--min-score", "nan"]):
        proc = kbc_cli(*argv)
        assert proc.returncode == 2 and "--min-score must be a number from -1 to 1" in proc.stderr, proc.stderr
    with KnowledgeBase(sample_bundle) as kb:
        with pytest.raises(Exception, match="min_score"):
            kb.answer(None, None, min_score=float("nan"))


def test_eval_measures_no_strength_in_lexical_mode(sample_bundle, tmp_path):
    """As kbc query and libkbpack: lexical search embeds no question, so there is nothing to flag."""
    unanswerable = tmp_path / "none.jsonl"
    unanswerable.write_text(json.dumps({"_id": "stocks", "text": OFF_TOPIC}) + "\n", encoding="utf-8")
    proc = kbc_cli("eval", str(sample_bundle), "--queries", "sample_eval/queries.jsonl", "--qrels", "sample_eval/qrels.tsv",
                   "--mode", "lexical", "--unanswerable", str(unanswerable), "--json", check=True)
    a = json.loads(proc.stdout)["answer_strength"]
    assert a["measured"] is False and a["unanswerable_flagged"] is None and a["answerable_flagged"] is None
