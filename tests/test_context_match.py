"""The context match (FORMAT.md §2.9): a hybrid candidate gains path_weight x P' + heading_weight x H',
P and H the BM25 idf of the question's terms found in its source path (without the extension) and in
its section heading, each over its best among the candidates. libkbpack's equality with it is in
test_c_pages.py."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from conftest import kbc_cli
from forge import rebuild, sections
from kbc.format.bm25 import TokenizerOptions, tokenize
from kbc.format.retrieval import RetrievalSettings, path_stem
from kbc.query.knowledge_base import KnowledgeBase
from kbc.search.fusion import MAX_CONTEXT_CHARS, context_match, context_parts
from kbc.stages.splitter import document_context
from pdfgen import make_pdf

OPTIONS = TokenizerOptions()


def terms(text: str) -> set:
    return set(tokenize(text, OPTIONS))


def test_the_path_loses_its_extension_and_the_heading_follows_the_first_separator():
    path, head = context_parts("filings/NETFLIX_2017_10K.pdf",
                               "Annual report (NETFLIX 2017 10K) | NETFLIX, INC. — CONSOLIDATED BALANCE SHEETS | Assets")
    assert terms(path) == {"filing", "netflix", "2017", "10", "k"}  # folders too; digits and letters split; no "pdf"
    assert terms(head) == {"netflix", "inc", "consolidated", "balance", "sheet", "asset"}  # plurals folded
    assert "annual" not in terms(path) | terms(head)  # a title is in neither part
    assert context_parts("pump.manual.md", "Pump manual") == ("pump.manual", "")
    assert context_parts("?", None) == ("?", "") and terms("?") == set()
    assert context_parts(7, 7) == ("", "")  # forged non-strings: nothing to match
    assert [path_stem(p) for p in ("a/b.c/d", "a/b.c/d.txt", ".hidden", "x.tar.gz", "noext")] == \
        ["a/b.c/d", "a/b.c/d", "", "x.tar", "noext"]


def test_each_part_is_read_to_its_first_4096_code_points():
    far = "é" * (MAX_CONTEXT_CHARS - 1) + " beyond"  # the word starts past the cut
    path, head = context_parts(far + ".md", "title | " + far)
    assert "beyond" not in terms(path) and "beyond" not in terms(head)
    near = "é" * (MAX_CONTEXT_CHARS - 8) + " inside"
    path, head = context_parts(near + ".md", "title | " + near)
    assert "inside" in terms(path) and "inside" in terms(head)


def test_sums_follow_the_question_order_and_each_part_is_divided_by_its_best():
    weights = [("balance", 1.5), ("sheet", 0.5), ("netflix", 2.0)]
    parts = [
        ("netflix", "balance sheets"),  # P 2.0, H 2.0
        ("netflix/balance", "sheet"),  # P 3.5, H 0.5
        ("", ""),
    ]
    path, head = context_match(weights, parts, OPTIONS)
    assert path.tolist() == [2.0 / 3.5, 1.0, 0.0]
    assert head.tolist() == [1.0, 0.25, 0.0]
    none_p, none_h = context_match(weights, [("other", "")], OPTIONS)
    assert none_p.tolist() == [0.0] and none_h.tolist() == [0.0]  # a best of 0: no match, not a division by 0


def test_a_document_title_cannot_fake_a_heading():
    class Counter:  # whitespace tokens: enough for the cap
        def offsets(self, text):
            out, pos = [], 0
            for word in text.split():
                pos = text.index(word, pos)
                out.append((pos, pos + len(word)))
                pos += len(word)
            return out

    context = document_context("docs/install.html", "Install | MyProject docs", Counter())
    assert " | " not in context and "Install" in context and "MyProject" in context
    overlapping = document_context("docs/install.html", "Install | | MyProject docs", Counter())
    assert " | " not in overlapping and "MyProject" in overlapping


# --------------------------------------------------------------------------- on a built bundle

PAGES = [
    "Annual report 2021\nOur stores sold more goods this year than last year.\nRevenue grew in every region.",
    "CONSOLIDATED BALANCE SHEETS\nCash and cash equivalents 1,200 900\nMerchandise inventories 5,409 5,174\n"
    "Total current assets 9,103 8,500\nTotal assets 15,000 14,000",
    "Notes to the statements\nInventories are valued at the lower of cost and net realisable value.\nWe count "
    "inventories in every store twice a year and write down damaged goods.",
    "CONSOLIDATED STATEMENTS OF CASH FLOWS\nNet earnings 1,000 800\nPurchases of property and equipment (700) (650)",
]


@pytest.fixture(scope="module")
def filings(tmp_path_factory):
    d = tmp_path_factory.mktemp("ctx")
    docs = d / "docs"
    docs.mkdir()
    (docs / "ACME_2021_10K.pdf").write_bytes(make_pdf(PAGES))
    (docs / "OTHERCO_2019_10K.pdf").write_bytes(make_pdf([p.replace("2021", "2019") for p in PAGES]))
    out = d / "f.kbpack"
    kbc_cli("build", str(docs), "-o", str(out), "--chunk-size", "32", "--chunk-overlap", "8", "-q", check=True)
    return out


def with_settings(src, dst, settings: dict):
    data = src.read_bytes()
    m = json.loads(sections(data)["manifest"][1])
    m["retrieval"].update(settings)
    dst.write_bytes(rebuild(data, {"manifest": json.dumps(m).encode()}))
    return dst


QUESTION = "What were ACME's merchandise inventories in FY2021? Use the balance sheet."


def test_a_new_bundle_records_the_weights_and_an_old_one_ranks_without_them(filings, tmp_path):
    recorded = json.loads(sections(filings.read_bytes())["manifest"][1])["retrieval"]
    defaults = RetrievalSettings()
    assert recorded["path_weight"] == defaults.path_weight > 0
    assert recorded["heading_weight"] == defaults.heading_weight > 0
    data = filings.read_bytes()
    m = json.loads(sections(data)["manifest"][1])
    for key in ("path_weight", "heading_weight"):
        del m["retrieval"][key]
    old = tmp_path / "old.kbpack"
    old.write_bytes(rebuild(data, {"manifest": json.dumps(m).encode()}))
    with KnowledgeBase(old) as kb:
        s = kb.retriever.settings
        assert (s.path_weight, s.heading_weight) == (0.0, 0.0)
    shown = kbc_cli("inspect", str(filings), check=True).stdout
    assert f"context match: path {defaults.path_weight}, heading {defaults.heading_weight}" in shown
    assert "context match" not in kbc_cli("inspect", str(old), check=True).stdout


def test_fused_scores_gain_exactly_the_weighted_shares(filings, tmp_path):
    """Every hybrid candidate's score with the match equals its score without it plus
    pw * P / best P + hw * H / best H, P and H recomputed here from the chunks' paths and contexts."""
    on = with_settings(filings, tmp_path / "on.kbpack", {"path_weight": 0.3, "heading_weight": 0.2})
    off = with_settings(filings, tmp_path / "off.kbpack", {"path_weight": 0, "heading_weight": 0})
    with KnowledgeBase(on) as a, KnowledgeBase(off) as b:
        v = a.embed_queries([QUESTION])
        n = a.bundle.count
        with_s, with_ids = a.rank([QUESTION], n, mode="hybrid", vectors=v)[0]
        without_s, without_ids = b.rank([QUESTION], n, mode="hybrid", vectors=v)[0]
        assert set(with_ids.tolist()) == set(without_ids.tolist())  # the same candidates
        lex = a.retriever.lexical
        n_chunks = lex.n
        weights = []
        for term in dict.fromkeys(tokenize(QUESTION, lex.options)):
            t = lex.lookup(term)
            if t >= 0:
                df = len(lex.postings_of(t)[0])
                weights.append((term, math.log(1 + (n_chunks - df + 0.5) / (df + 0.5))))
        in_path, in_head = {}, {}
        for cid in with_ids.tolist():
            chunk = a.bundle.chunk(cid)
            stem = a.bundle.source_path(chunk).rsplit(".", 1)[0]
            heading = (chunk.get("context") or "").partition(" | ")[2]
            p_terms, h_terms = set(tokenize(stem, lex.options)), set(tokenize(heading, lex.options))
            in_path[cid] = sum(w for t, w in weights if t in p_terms)
            in_head[cid] = sum(w for t, w in weights if t in h_terms)
        best_p, best_h = max(in_path.values()), max(in_head.values())
        assert best_p > 0 and best_h > 0  # the question names the company, the year and the statement
        base = dict(zip(without_ids.tolist(), without_s.tolist()))
        for cid, score in zip(with_ids.tolist(), with_s.tolist()):
            expected = base[cid] + 0.3 * in_path[cid] / best_p + 0.2 * in_head[cid] / best_h
            assert score == pytest.approx(expected, abs=1e-12), cid


def test_the_named_filing_leads_the_other_companys_identical_page_by_more(filings, tmp_path):
    """Both filings hold the same balance sheet; the question names ACME and 2021. ACME's page is
    first either way here, and the context match widens its lead over OTHERCO's copy (terms only
    ACME's file name holds), the lead that decides such questions in real filings."""
    off = with_settings(filings, tmp_path / "off.kbpack", {"path_weight": 0, "heading_weight": 0})
    leads = []
    for path in (off, filings):
        with KnowledgeBase(path) as kb:
            pages = {(p.source.split("_")[0], p.page): p.score for p in kb.search_pages(QUESTION, k=8)}
            first = kb.search_pages(QUESTION, k=1)[0]
        assert (first.source, first.page) == ("ACME_2021_10K.pdf", 2)
        leads.append(pages[("ACME", 2)] - pages[("OTHERCO", 2)])
    assert leads[1] > leads[0] + 0.05, leads


def test_rrf_and_lexical_mode_are_left_as_they_were(filings, tmp_path):
    on = with_settings(filings, tmp_path / "on.kbpack", {"path_weight": 1, "heading_weight": 1})
    off = with_settings(filings, tmp_path / "off.kbpack", {"path_weight": 0, "heading_weight": 0})
    with KnowledgeBase(on) as a, KnowledgeBase(off) as b:
        v = a.embed_queries([QUESTION])
        for mode in ("lexical", "dense"):
            x, y = a.rank([QUESTION], 10, mode=mode, vectors=v)[0], b.rank([QUESTION], 10, mode=mode, vectors=v)[0]
            assert x[1].tolist() == y[1].tolist() and np.array_equal(x[0], y[0]), mode
        a.retriever.settings = replace(a.retriever.settings, fusion="rrf")
        b.retriever.settings = replace(b.retriever.settings, fusion="rrf")
        x, y = a.rank([QUESTION], 10, mode="hybrid", vectors=v)[0], b.rank([QUESTION], 10, mode="hybrid", vectors=v)[0]
        assert x[1].tolist() == y[1].tolist() and np.array_equal(x[0], y[0])
        # while tmm (the default) does move scores
        a.retriever.settings = replace(a.retriever.settings, fusion="tmm")
        b.retriever.settings = replace(b.retriever.settings, fusion="tmm")
        x, y = a.rank([QUESTION], 10, mode="hybrid", vectors=v)[0], b.rank([QUESTION], 10, mode="hybrid", vectors=v)[0]
        assert not np.array_equal(x[0], y[0])


def test_eval_takes_the_weights_from_the_command_line(filings, tmp_path):
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"_id": "q1", "text": QUESTION}) + "\n")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\tACME_2021_10K:p2\t1\n")
    out = kbc_cli("eval", str(filings), "--queries", str(queries), "--qrels", str(qrels), "--mode", "hybrid",
                  "--path-weight", "0.2", "--heading-weight", "0.3", "--json", check=True)
    report = json.loads(out.stdout)
    assert (report["fusion"]["path_weight"], report["fusion"]["heading_weight"]) == (0.2, 0.3)
    bad = kbc_cli("eval", str(filings), "--queries", str(queries), "--qrels", str(qrels), "--heading-weight", "2")
    assert bad.returncode == 2 and "heading_weight must be within [0, 1]" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("standout", ["on", "off", "absent"])
def test_libkbpack_ranks_the_filings_as_python_with_the_match_and_each_standout_setting(kbpack_tool, filings, standout,
                                                                                      tmp_path):
    """The context match (as kbc writes it) with each list weighted by its standout (FORMAT.md
    §2.5.1: true as kbc writes it, false, and absent as before 1.8), chunks and pages: the same ids
    and pages from both readers, scores within 1e-5 (float32 inner products)."""
    from test_c_pages import assert_same_pages, c_pages, py_pages
    from test_libkbpack import assert_same_ranking, hits_of, kbpack, ranked, write_f32

    data = filings.read_bytes()
    m = json.loads(sections(data)["manifest"][1])
    if standout == "absent":
        del m["retrieval"]["standout_weighting"]
    else:
        m["retrieval"]["standout_weighting"] = standout == "on"
    p = tmp_path / "s.kbpack"
    p.write_bytes(rebuild(data, {"manifest": json.dumps(m).encode()}))
    questions = [QUESTION, "cash flows purchases of property OTHERCO 2019", "inventories valued at cost", "revenue grew"]
    with KnowledgeBase(p) as kb:
        s = kb.retriever.settings
        assert s.standout_weighting is (standout == "on") and s.path_weight > 0 and s.heading_weight > 0
        for question, v in zip(questions, kb.embed_queries(questions)):
            qf = write_f32(tmp_path / "q.f32", v)
            for k in (1, 5, 20):
                c = hits_of(kbpack(kbpack_tool, "search", p, "--unit", "chunk", "--mode", "hybrid", "-k", k,
                                   "--vector", qf, "--", question))
                assert_same_ranking(c, ranked(*kb.rank([question], k, mode="hybrid", vectors=v[None])[0]), 1e-5,
                                    (question, k))
                assert_same_pages(c_pages(kbpack_tool, p, mode="hybrid", k=k, vector=qf, question=question),
                                  py_pages(kb, question, v, k, "hybrid"), 1e-5, (question, k))
