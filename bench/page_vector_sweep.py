"""Page-aware vectors, a throwaway sweep: each stored vector mixed with its page's mean vector
(v + a * mean, renormalised) and evaluated as `kbc eval` would, over the bundle's own vectors and
query embeddings. A page is kbc.search.fusion.page_key's (a PDF page; a JSONL record).

    python bench/page_vector_sweep.py BUNDLE QUERIES QRELS --alpha 0 0.25 0.5 1 [--unit page]

Prints one JSON line per alpha with hybrid and dense metrics. Nothing is written.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

import kbc
from kbc.format.vectors import Encoded
from kbc.search.fusion import page_key
from kbc.tools.evaluate import evaluate, evaluated_queries, read_qrels, read_queries


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("queries")
    ap.add_argument("qrels")
    ap.add_argument("--alpha", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0])
    ap.add_argument("--unit", choices=["chunk", "page"], default=None)
    args = ap.parse_args()
    queries, qrels = read_queries(args.queries), read_qrels(args.qrels)
    with kbc.open(args.bundle) as kb:
        qv = kb.embed_queries([queries[q] for q in evaluated_queries(queries, qrels)])
        floats = np.asarray(kb.bundle.vectors, dtype=np.float32)
        pages: dict[tuple, int] = {}
        group = np.array([pages.setdefault(page_key(kb.bundle.chunk(i)), len(pages)) for i in range(kb.bundle.count)])
        sums = np.zeros((len(pages), floats.shape[1]), np.float32)
        np.add.at(sums, group, floats)
        means = sums / np.bincount(group).astype(np.float32)[:, None]
        for a in args.alpha:
            mixed = floats + a * means[group]
            mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
            kb.use_vectors(Encoded(mixed.astype(np.float32), None, None))
            report = evaluate(kb, queries, qrels, modes=["hybrid", "dense"], query_vectors=qv, unit=args.unit)
            print(json.dumps({"alpha": a, **{m: {k: round(v, 4) for k, v in met.items() if v is not None}
                                             for m, met in report.modes.items()}}), flush=True)


if __name__ == "__main__":
    main()
