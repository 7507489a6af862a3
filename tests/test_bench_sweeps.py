"""bench/retrieval_sweep.py: its rows rank as the product does (the script had gone stale once: every
row raised TypeError after the search split and no test noticed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from kbc.query.knowledge_base import KnowledgeBase
from kbc.tools.evaluate import evaluate, read_qrels, read_queries


@pytest.fixture()
def judged(tmp_path):
    q = tmp_path / "queries.jsonl"
    q.write_text("\n".join(json.dumps(r) for r in (
        {"_id": "q1", "text": "How do I run only the tests whose names match a filter?"},
        {"_id": "q2", "text": "How often should greenhouse plants be watered?"},
        {"_id": "q3", "text": "What does cargo build do?"})) + "\n")
    r = tmp_path / "qrels.tsv"
    r.write_text("query-id\tcorpus-id\tscore\nq1\tch11-02-running-tests:p2\t1\n"
                 "q2\tgreenhouse-care:p1\t1\nq3\tch01-03-hello-cargo:p1\t1\n")
    return q, r


def test_retrieval_sweep_rows_equal_kbc_eval(sample_bundle, judged, tmp_path):
    q, r = judged
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "retrieval_sweep.py"), str(sample_bundle),
                           "--queries", str(q), "--qrels", str(r), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    rows = {row["row"].split(" [")[0]: row for row in json.loads(out.read_text())}
    assert {"dense", "lexical", "hybrid tmm w=0.4 depth=100", "hybrid rrf w=0.5 depth=100"} <= rows.keys()
    with KnowledgeBase(sample_bundle) as kb:
        report = evaluate(kb, read_queries(q), read_qrels(r), modes=["hybrid", "dense", "lexical"], unit="chunk")
    for sweep_row, mode in (("hybrid tmm w=0.4 depth=100", "hybrid"), ("dense", "dense"), ("lexical", "lexical")):
        got = {k: v for k, v in rows[sweep_row].items() if k != "row"}
        assert got == pytest.approx(report.modes[mode]), sweep_row
