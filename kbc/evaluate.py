"""Retrieval evaluation: BEIR queries and qrels against a built bundle.

Metrics follow trec_eval / pytrec_eval (what BEIR and MTEB report), so published scores compare:
- a document's score is its best chunk's score (documents are record ids for JSONL corpora,
  source paths otherwise);
- the ranking is by score, ties broken by document id in descending order (trec_eval's rule);
- nDCG uses linear gains (rel / log2(rank + 1)) and the ideal ranking of every judged document;
- recall@k is relevant retrieved in the top k over all relevant; MRR@10 is 1/rank of the first
  relevant document in the top 10, else 0;
- a document is relevant when its grade is > 0; queries with no relevant document are left out of
  the means (every metric is undefined for them) and counted separately.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import InputError
from .sources import read_text_file

RECALL_KS = (1, 5, 10, 100)
NDCG_K = 10
MRR_K = 10
METRICS = ("ndcg@10", *(f"recall@{k}" for k in RECALL_KS), "mrr@10")
DEPTH = max(RECALL_KS)


def read_queries(path: str | os.PathLike) -> dict[str, str]:
    """BEIR queries.jsonl ({"_id", "text"}); also TSV lines `id<TAB>text`."""
    path = Path(path)
    text = read_text_file(path)
    out: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                rec = json.loads(line)
                qid, qtext = rec.get("_id", rec.get("id")), rec.get("text", rec.get("query"))
            except (ValueError, AttributeError):
                raise InputError(f"{path}: line {lineno}: not a JSON object") from None
        else:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 2:
                raise InputError(f"{path}: line {lineno}: expected a JSON object or 'id<TAB>text'")
            qid, qtext = parts[0], "\t".join(parts[1:])
        if qid is None or not isinstance(qtext, str):
            raise InputError(f"{path}: line {lineno}: a query needs an id and a text")
        qid = str(qid)
        if qid in out:
            raise InputError(f"{path}: line {lineno}: duplicate query id {qid!r}")
        out[qid] = qtext
    if not out:
        raise InputError(f"{path}: no queries")
    return out


def read_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """BEIR qrels (query-id, corpus-id, score; tab- or space-separated, header optional) or TREC
    qrels (query-id, iteration, doc-id, relevance)."""
    path = Path(path)
    text = read_text_file(path)
    out: dict[str, dict[str, int]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        parts = [p.strip() for p in parts]
        if len(parts) == 3:
            qid, did, grade = parts
        elif len(parts) == 4:
            qid, _, did, grade = parts
        else:
            raise InputError(f"{path}: line {lineno}: expected 'query-id corpus-id score' or TREC's 4 columns, "
                             f"got {len(parts)} columns")
        try:
            g = int(float(grade))
        except ValueError:
            if lineno == 1 or not out:  # a header line
                continue
            raise InputError(f"{path}: line {lineno}: relevance {grade!r} is not a number") from None
        out.setdefault(qid, {})[did] = g
    if not out:
        raise InputError(f"{path}: no relevance judgements")
    return out


def rank_documents(scores: Mapping[str, float]) -> list[str]:
    """Document ids best first; ties by document id descending, as trec_eval orders them."""
    return [d for d, _ in sorted(scores.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)]


def query_metrics(ranked: Sequence[str], judged: Mapping[str, int]) -> dict[str, float] | None:
    """Metrics for one query from its ranked document ids. None when no document is relevant."""
    relevant = {d for d, g in judged.items() if g > 0}
    if not relevant:
        return None
    out: dict[str, float] = {}
    dcg = sum(max(judged.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(ranked[:NDCG_K]))
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:NDCG_K]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    out["ndcg@10"] = dcg / idcg
    for k in RECALL_KS:
        out[f"recall@{k}"] = len(relevant.intersection(ranked[:k])) / len(relevant)
    out["mrr@10"] = next((1.0 / (i + 1) for i, d in enumerate(ranked[:MRR_K]) if d in relevant), 0.0)
    return out


def mean_metrics(per_query: Sequence[Mapping[str, float]]) -> dict[str, float]:
    if not per_query:
        return {m: 0.0 for m in METRICS}
    return {m: float(sum(q[m] for q in per_query) / len(per_query)) for m in METRICS}


@dataclass
class QueryResult:
    id: str
    text: str
    metrics: dict[str, float]
    relevant: list[str]
    retrieved: list[str]  # top 10 document ids, best first
    first_relevant_rank: int | None


@dataclass
class EvalReport:
    bundle: str
    metrics: dict[str, float]
    queries: int  # evaluated: in both files with at least one relevant document
    skipped_no_relevant: int
    skipped_no_text: int
    unknown_documents: int  # judged documents that are not in the bundle at all
    documents: int
    chunks: int
    seconds: dict[str, float]
    per_query: list[QueryResult] = field(default_factory=list)

    def to_dict(self, *, per_query: bool = False) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "per_query"}
        if per_query:
            d["per_query"] = [q.__dict__ for q in self.per_query]
        return d


def chunk_documents(bundle) -> tuple[np.ndarray, list[str]]:
    """For every chunk, the index of its document; and the document ids."""
    ids: dict[str, int] = {}
    owner = np.empty(bundle.count, dtype=np.int64)
    for i, ch in enumerate(bundle.iter_chunks()):
        doc = ch.get("record")
        if doc is None:
            doc = bundle.source_path(ch)
        owner[i] = ids.setdefault(str(doc), len(ids))
    return owner, list(ids)


def rank_all(kb, query_vectors: np.ndarray, owner: np.ndarray, doc_ids: list[str], *,
             depth: int = DEPTH) -> list[dict[str, float]]:
    """Top `depth` documents per query with their best-chunk scores, through the bundle's own search.

    Chunks are fetched until `depth` distinct documents are among them: every unseen document then
    scores no higher than the last one fetched, so the document ranking is exact for any index.
    """
    n = kb.bundle.count
    depth = min(depth, len(doc_ids))
    results: list[dict[str, float] | None] = [None] * len(query_vectors)
    todo = np.arange(len(query_vectors))
    k = min(n, depth * 4)
    while len(todo):
        scores, ids = kb.searcher.search(query_vectors[todo], k)
        again = []
        for row, qi in enumerate(todo):
            best: dict[str, float] = {}
            for s, c in zip(scores[row], ids[row]):
                if c < 0:
                    continue
                d = doc_ids[owner[c]]
                if d not in best:  # hits arrive best first: the first is the document's best chunk
                    best[d] = float(s)
            if len(best) >= depth or k >= n:
                top = rank_documents(best)[:depth]
                results[qi] = {d: best[d] for d in top}
            else:
                again.append(qi)
        todo = np.asarray(again, dtype=np.int64)
        k = min(n, k * 4)
    return results  # type: ignore[return-value]


def evaluate(kb, queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]], *,
             batch_size: int = 64, progress=None) -> EvalReport:
    """Score a KnowledgeBase on queries + qrels with the metrics above."""
    t0 = time.perf_counter()
    owner, doc_ids = chunk_documents(kb.bundle)
    known = set(doc_ids)
    evaluated = [q for q in qrels if q in queries and any(g > 0 for g in qrels[q].values())]
    no_text = sum(1 for q in qrels if q not in queries)
    no_relevant = sum(1 for q in qrels if q in queries and not any(g > 0 for g in qrels[q].values()))
    unknown = sum(1 for q in evaluated for d, g in qrels[q].items() if g > 0 and d not in known)
    if not evaluated:
        raise InputError("no query has both a text and a relevant document: do the query ids in the queries "
                         "and qrels files match?")
    t_model = time.perf_counter()
    kb.embedder  # load the model here so its cost is reported apart from the queries'
    t1 = time.perf_counter()
    texts = [queries[q] for q in evaluated]
    vectors = []
    for start in range(0, len(texts), 256):
        vectors.append(kb.embed_queries(texts[start:start + 256], batch_size=batch_size))
        if progress:
            progress("queries", min(256, len(texts) - start), len(texts))
    qv = np.concatenate(vectors) if vectors else np.zeros((0, 1), np.float32)
    t2 = time.perf_counter()
    ranked = rank_all(kb, qv, owner, doc_ids)
    per_query = []
    for qid, scores in zip(evaluated, ranked):
        order = rank_documents(scores)
        m = query_metrics(order, qrels[qid])
        assert m is not None
        relevant = {d for d, g in qrels[qid].items() if g > 0}
        first = next((i + 1 for i, d in enumerate(order) if d in relevant), None)
        per_query.append(QueryResult(qid, queries[qid], m, sorted(relevant), order[:10], first))
    t3 = time.perf_counter()
    return EvalReport(
        bundle=str(kb.bundle.path), metrics=mean_metrics([q.metrics for q in per_query]),
        queries=len(per_query), skipped_no_relevant=no_relevant, skipped_no_text=no_text,
        unknown_documents=unknown, documents=len(doc_ids), chunks=kb.bundle.count,
        seconds={"load_bundle": round(t_model - t0, 3), "load_model": round(t1 - t_model, 3), "embed_queries": round(t2 - t1, 3), "search": round(t3 - t2, 3),
                 "total": round(t3 - t0, 3)},
        per_query=per_query)
