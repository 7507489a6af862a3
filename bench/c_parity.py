"""libkbpack against kbc on a real bundle's questions: the same hits in the same order, the same
scores, the same answer strength (issue 42's parity check over whole evaluation sets; the tests check
the same on small bundles).

    python bench/c_parity.py BUNDLE QUERIES [--kbpack runtimes/c/build/kbpack] [-k 10] [--limit N]

For every question: Python's default search (`KnowledgeBase.search_pages` or `search`, the bundle's
mode and unit) against `kbpack search --json` given the same query vector, and the answer strength
(`KnowledgeBase.answer` against the answer object `kbpack search --json` prints). Prints the share of
questions whose hit ids agree in order, the largest score and strength differences, and how often
`confident` differs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from kbc.query.knowledge_base import KnowledgeBase  # noqa: E402
from kbc.tools.evaluate import read_queries  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("queries")
    ap.add_argument("--kbpack", default=str(Path(__file__).resolve().parents[1] / "runtimes/c/build/kbpack"))
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--limit", type=int, default=0, help="the first N questions only")
    a = ap.parse_args()
    questions = list(read_queries(a.queries).values())
    if a.limit:
        questions = questions[:a.limit]
    same_order = confident_differs = 0
    max_score = max_strength = 0.0
    with KnowledgeBase(a.bundle) as kb, tempfile.TemporaryDirectory() as tmp:
        unit = kb.resolve_unit(None)
        vectors = kb.embed_queries(questions)
        for text, v in zip(questions, vectors):
            path = Path(tmp) / "q.f32"
            np.asarray(v, dtype="<f4").tofile(path)
            c = json.loads(subprocess.run([a.kbpack, "search", a.bundle, "--vector", str(path), "-k", str(a.k),
                                           "--json", "--", text], capture_output=True, text=True, check=True).stdout)
            if unit == "page":
                py = kb.search_pages(text, a.k, vector=v)
                py_ids = [[h.chunk_id for h in p.chunks] for p in py]
                c_ids = [[ch["id"] for ch in p["chunks"]] for p in c["pages"]]
                py_scores, c_scores = [p.score for p in py], [p["score"] for p in c["pages"]]
            else:
                py = kb.search(text, a.k, vector=v)
                py_ids, c_ids = [h.chunk_id for h in py], [h["id"] for h in c["hits"]]
                py_scores, c_scores = [h.score for h in py], [h["score"] for h in c["hits"]]
            same_order += py_ids == c_ids
            if len(py_scores) == len(c_scores) and py_scores:
                max_score = max(max_score, float(np.max(np.abs(np.subtract(py_scores, c_scores)))))
            first = (py[0].chunks[0].chunk_id if unit == "page" else py[0].chunk_id) if py else None
            answer = kb.answer(v, first)
            if answer.strength is not None and c["answer"]["strength"] is not None:
                max_strength = max(max_strength, abs(answer.strength - c["answer"]["strength"]))
            confident_differs += answer.confident != c["answer"]["confident"]
    n = len(questions)
    print(json.dumps({"bundle": a.bundle, "questions": n, "unit": unit, "k": a.k,
                      "same_hits_in_order": same_order / n if n else None, "max_score_difference": max_score,
                      "max_strength_difference": max_strength, "confident_differs": confident_differs}))


if __name__ == "__main__":
    main()
