"""How much retrieval quality compact vectors keep, measured with `kbc eval`'s own code.

    python bench/compact_vectors.py KB.kbpack QUERIES.jsonl QRELS.tsv

For an fp32 bundle, each scheme's vectors replace the stored ones in memory (the bundle file is not
touched) and the dense and hybrid modes are evaluated as `kbc eval` does:

- f16: half precision;
- int8: one symmetric scale per dimension, calibrated on the corpus (max |x| / 127);
- binary: the sign of each dimension, scored against the float query (asymmetric);
- binary+rescore: the binary top max(4k, 100) rescored with the int8 vectors.

Prints nDCG@10 (document-level sets) or hit@5 and MRR@10 (page-level sets) per scheme, the share of
fp32's kept, and the vector bytes per 100,000 chunks. This is evidence for a design (issue 17),
not a feature: bundles store f32 or f16 today.
"""

from __future__ import annotations

import sys

import numpy as np

import kbc
from kbc.evaluate import evaluate, read_qrels, read_queries
from kbc.index import Searcher


class RescoringSearcher:
    """Top-k by the binary vectors against the float query, then rescored with the int8 ones."""

    def __init__(self, signs: np.ndarray, rescore: np.ndarray):
        self.signs, self.rescore, self.faiss_index = signs, rescore, None

    def search(self, q: np.ndarray, k: int):
        first = Searcher(self.signs, None, {}).search(q, min(len(self.signs), max(4 * k, 100)))[1]
        scores = np.einsum("qd,qkd->qk", q, self.rescore[first])
        order = np.lexsort((first, -scores), axis=1)[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(first, order, 1)


def schemes(v: np.ndarray) -> dict:
    scale = np.abs(v).max(axis=0) / 127
    int8 = np.clip(np.round(v / np.maximum(scale, 1e-12)), -127, 127) * scale
    signs = np.where(v >= 0, 1.0, -1.0).astype(np.float32) / np.sqrt(v.shape[1])
    dim = v.shape[1]
    return {"f32": (v, None, dim * 4), "f16": (v.astype(np.float16).astype(np.float32), None, dim * 2),
            "int8": (int8.astype(np.float32), None, dim),
            "binary": (signs, None, dim / 8),
            "binary+rescore": (int8.astype(np.float32), RescoringSearcher(signs, int8.astype(np.float32)), dim / 8 + dim)}


def main(bundle: str, queries: str, qrels: str) -> None:
    q, r = read_queries(queries), read_qrels(qrels)
    reference = None
    with kbc.open(bundle) as kb:
        base = np.asarray(kb.bundle.vectors, dtype=np.float32)
        for name, (vectors, searcher, row_bytes) in schemes(base).items():
            kb._searcher = searcher or Searcher(vectors, None, {})
            kb._retriever = None
            kb.retriever.vectors = vectors  # hybrid's candidate scores use the same vectors
            report = evaluate(kb, q, r, modes=["dense", "hybrid"])
            key = ("ndcg@10",) if report.level == "document" else ("hit@5", "mrr@10")
            got = {m: [report.modes[m][k] for k in key] for m in ("dense", "hybrid")}
            reference = reference or got
            kept = {m: [g / f if f else 0 for g, f in zip(got[m], reference[m])] for m in got}
            print(f"{name:15s} " + "  ".join(
                f"{m} " + " ".join(f"{k} {x:.4f} ({p:.1%})" for k, x, p in zip(key, got[m], kept[m])) for m in got)
                + f"  {row_bytes * 100_000 / 2**20:.1f} MiB per 100k")


if __name__ == "__main__":
    main(*sys.argv[1:4])
