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
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import InputError, option
from ..stages.sources import read_text_file

RECALL_KS = (1, 5, 10, 100)
HIT_KS = (1, 5, 10, 20)
NDCG_K = 10
MRR_K = 10
DOC_METRICS = ("ndcg@10", *(f"recall@{k}" for k in RECALL_KS), "mrr@10", *(f"hit@{k}" for k in HIT_KS))
PAGE_METRICS = (*(f"hit@{k}" for k in HIT_KS), "mrr@10")
METRICS = DOC_METRICS
DEPTH = max(RECALL_KS)
# Page-level judgements: `<file stem>:p<N>`, N the 1-based physical page.
MAX_CHUNK_PAGES = 1000  # no real chunk spans more pages than this
PAGE_ID = re.compile(r"^(?P<doc>.+):p(?P<page>[1-9][0-9]{0,6})$")


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
            g = int(float(grade))  # inf and nan raise too: a grade is a finite number
        except (ValueError, OverflowError):
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
    out.update(hit_metrics([d in relevant for d in ranked[:max(HIT_KS)]]))
    return out


def hit_metrics(is_relevant: Sequence[bool]) -> dict[str, float]:
    """hit@k (1 if anything relevant is in the top k) and MRR@10 from a ranked relevance list."""
    first = next((i for i, r in enumerate(is_relevant) if r), None)
    out = {f"hit@{k}": float(first is not None and first < k) for k in HIT_KS}
    out["mrr@10"] = 1.0 / (first + 1) if first is not None and first < MRR_K else 0.0
    return out


def mean_metrics(per_query: Sequence[Mapping[str, float]], names: Sequence[str] = DOC_METRICS) -> dict[str, float]:
    if not per_query:
        return {m: 0.0 for m in names}
    return {m: float(sum(q[m] for q in per_query) / len(per_query)) for m in names}


def page_judgements(qrels: Mapping[str, Mapping[str, int]], doc_ids: set[str]) -> bool:
    """True when the relevant ids are all `<doc>:p<N>` and none is a document of the bundle."""
    relevant = [d for judged in qrels.values() for d, g in judged.items() if g > 0]
    return bool(relevant) and all(PAGE_ID.match(d) and d not in doc_ids for d in relevant)


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
    level: str = "document"  # or "page": judgements name <file stem>:p<N>
    mode: str = "dense"  # the mode `metrics` and `per_query` are for (the bundle's default unless chosen)
    modes: dict[str, dict[str, float]] = field(default_factory=dict)  # metrics of every mode evaluated
    fusion: dict = field(default_factory=dict)  # the hybrid settings used (the bundle's, or overridden)
    unit: str = "chunk"  # what was ranked: chunks, or pages (FORMAT.md §2.8)
    reranker: str | None = None  # the re-ranker that re-ordered the first stage's chunks (kbc.query.rerank)
    # how often the answer strength says "no confident answer" (FORMAT.md §2.11), when asked: see answer_report
    answer_strength: dict | None = None

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


def _chunk_pages(bundle) -> list[tuple[set[str], int, int]]:
    """For each chunk: the names its file answers to (stem and relative path without suffix) and
    its page span."""
    out = []
    for ch in bundle.iter_chunks():
        path = bundle.source_path(ch)
        try:
            names = {Path(path).stem, str(Path(path).with_suffix(""))}
        except ValueError:  # "" or "/" from a bundle of unknown origin
            names = {path}
        a = int(ch.get("page_start", 0) or 0)
        b = min(int(ch.get("page_end", 0) or 0), a + MAX_CHUNK_PAGES)  # a forged span must not cost 10^12 pages
        out.append((names, a, b))
    return out


def _page_relevant(chunk: tuple[set[str], int, int], relevant: Mapping[str, set[int]]) -> bool:
    names, a, b = chunk
    return any(p in relevant.get(n, ()) for n in names for p in range(a, b + 1)) if relevant else False


def evaluate(kb, queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]], *,
             modes: Sequence[str] | None = None, batch_size: int = 64, progress=None,
             query_vectors: np.ndarray | None = None, unit: str | None = None,
             unanswerable: Mapping[str, str] | None = None, min_score: float | None = None) -> EvalReport:
    """Score a KnowledgeBase on queries + qrels in each search mode (default: every mode the
    bundle supports; `metrics`/`per_query` are for the first listed, the bundle's default).
    `query_vectors`: the evaluated queries already embedded (in `evaluated_queries` order).
    `unit`: rank chunks or pages (default: the bundle's); with pages, a page-level judgement is met
    by a ranked page with that number, a document-level one by the document's best page.
    `unanswerable`: questions the bundle has no answer to (with the qrels' queries that have no
    relevant document): the report then says how often the answer strength flags each kind."""
    t0 = time.perf_counter()
    unit = kb.resolve_unit(unit)
    owner, doc_ids = chunk_documents(kb.bundle)
    known = set(doc_ids)
    page_level = page_judgements(qrels, known)
    chunk_pages = _chunk_pages(kb.bundle) if page_level else []
    if page_level:
        known = {f"{n}:p{p}" for names, a, b in chunk_pages for n in names for p in range(a, b + 1)}
    evaluated = evaluated_queries(queries, qrels)
    no_text = sum(1 for q in qrels if q not in queries)
    no_relevant = sum(1 for q in qrels if q in queries and not any(g > 0 for g in qrels[q].values()))
    unknown = sum(1 for q in evaluated for d, g in qrels[q].items() if g > 0 and d not in known)
    if not evaluated:
        raise InputError("no query has both a text and a relevant document: do the query ids in the queries "
                         "and qrels files match?")
    default = kb.default_mode
    if modes is None:
        modes = [default] + [m for m in ("dense", "lexical", "hybrid") if m != default and
                             (m == "dense" or kb.retriever.lexical is not None)]
    modes = [kb.retriever.resolve(m) for m in modes]
    texts = [queries[q] for q in evaluated]
    t_model = time.perf_counter()
    qv = query_vectors
    if qv is None and any(m != "lexical" for m in modes):
        kb.embedder  # load the model here so its cost is reported apart from the queries'
    t1 = time.perf_counter()
    if qv is None and any(m != "lexical" for m in modes):
        vectors = []
        for start in range(0, len(texts), 256):
            vectors.append(kb.embed_queries(texts[start:start + 256], batch_size=batch_size))
            if progress:
                progress("queries", min(256, len(texts) - start), len(texts))
        qv = np.concatenate(vectors) if vectors else np.zeros((0, 1), np.float32)
    t2 = time.perf_counter()
    results: dict[str, list[QueryResult]] = {}
    for mode in modes:
        if page_level:
            results[mode] = _score_pages(kb, evaluated, queries, qrels, qv, mode, chunk_pages, unit)
        else:
            results[mode] = _score_documents(kb, evaluated, queries, qrels, qv, mode, owner, doc_ids, unit)
    strength = None
    no_answer = dict(unanswerable or {})
    no_answer.update({q: queries[q] for q in qrels if q in queries and q not in no_answer
                      and not any(g > 0 for g in qrels[q].values())})
    if no_answer:
        strength = answer_report(kb, texts, qv, list(no_answer.values()), mode=modes[0], unit=unit,
                                 batch_size=batch_size, min_score=min_score)
    t3 = time.perf_counter()
    names = PAGE_METRICS if page_level else DOC_METRICS
    all_modes = {m: mean_metrics([q.metrics for q in results[m]], names) for m in modes}
    return EvalReport(
        bundle=str(kb.bundle.path), metrics=all_modes[modes[0]],
        queries=len(evaluated), skipped_no_relevant=no_relevant, skipped_no_text=no_text,
        unknown_documents=unknown, documents=len(doc_ids), chunks=kb.bundle.count,
        seconds={"load_bundle": round(t_model - t0, 3), "load_model": round(t1 - t_model, 3),
                 "embed_queries": round(t2 - t1, 3), "search": round(t3 - t2, 3), "total": round(t3 - t0, 3)},
        per_query=results[modes[0]], level="page" if page_level else "document", mode=modes[0], modes=all_modes,
        fusion=kb.retriever.settings.to_manifest(), unit=unit,
        reranker=getattr(getattr(kb, "reranker", None), "name", None), answer_strength=strength)


def answer_report(kb, answerable: Sequence[str], answerable_vectors: np.ndarray | None, unanswerable: Sequence[str], *,
                  mode: str, unit: str, batch_size: int = 64, min_score: float | None = None) -> dict:
    """The answer strength (FORMAT.md §2.11) of every question's first hit in `mode` and `unit`, and
    how often it is under the threshold (the bundle's, or `min_score`): among questions with an
    answer in the bundle (a false "no answer") and among those without (a caught one)."""
    threshold = kb.min_score(min_score)
    if mode == "lexical":  # it embeds no question: nothing to measure (FORMAT.md §2.11), as kbc query says
        return {"mode": mode, "unit": unit, "min_score": threshold, "measured": False,
                "answerable": len(answerable), "answerable_flagged": None,
                "unanswerable": len(unanswerable), "unanswerable_flagged": None,
                "answerable_strength": {}, "unanswerable_strength": {}}

    def strengths(texts: Sequence[str], vectors: np.ndarray | None) -> list[float | None]:
        if not texts:
            return []
        if vectors is None or len(vectors) != len(texts):
            vectors = np.concatenate([kb.embed_queries(list(texts[i:i + 256]), batch_size=batch_size)
                                      for i in range(0, len(texts), 256)])
        if unit == "page":
            firsts = [p[0].chunk_ids[0] if p else None for p in kb.rank_pages(texts, 1, mode=mode, vectors=vectors)]
        else:
            firsts = [int(ids[0]) if len(ids) else None for _, ids in kb.rank(texts, 1, mode=mode, vectors=vectors)]
        return [kb.answer(v, f, min_score=min_score).strength for v, f in zip(vectors, firsts)]

    answerable_s = strengths(answerable, answerable_vectors)
    unanswerable_s = strengths(unanswerable, None)

    def flagged(values: list[float | None]) -> float | None:
        if threshold is None or not values:
            return None
        return sum(1 for v in values if v is None or v < threshold) / len(values)

    def quantiles(values: list[float | None]) -> dict:
        known = np.array([v for v in values if v is not None], dtype=np.float64)
        return {f"p{q}": round(float(np.quantile(known, q / 100)), 4) for q in (10, 50, 90)} if len(known) else {}

    return {"mode": mode, "unit": unit, "min_score": threshold, "measured": True,
            "answerable": len(answerable_s), "answerable_flagged": flagged(answerable_s),
            "unanswerable": len(unanswerable_s), "unanswerable_flagged": flagged(unanswerable_s),
            "answerable_strength": quantiles(answerable_s), "unanswerable_strength": quantiles(unanswerable_s)}


def evaluated_queries(queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]]) -> list[str]:
    """The query ids scored: in both files, with at least one relevant document."""
    return [q for q in qrels if q in queries and any(g > 0 for g in qrels[q].values())]


@dataclass
class VectorsResult:
    """One encoding's retrieval next to the others' (`kbc eval --vectors`)."""
    vectors: str  # a kbc.format.vectors.PRESETS name
    bytes_per_chunk: int  # in the file: the vectors section, plus binary codes
    mib_per_100k: float
    search_ms: float  # one dense top-10 search, mean over up to 200 queries, in this Python process
    report: EvalReport
    kept: dict[str, dict[str, float | None]]  # mode -> metric -> share of the first encoding's value (None: it was 0)

    def to_dict(self) -> dict:
        return {"vectors": self.vectors, "bytes_per_chunk": self.bytes_per_chunk,
                "mib_per_100k": round(self.mib_per_100k, 2), "search_ms": round(self.search_ms, 3),
                "modes": self.report.modes, "kept": self.kept, "seconds": self.report.seconds}


def compare_vectors(kb, queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]],
                    presets: Sequence[str], *, modes: Sequence[str] | None = None, batch_size: int = 64,
                    progress=None, unit: str | None = None) -> list[VectorsResult]:
    """Evaluate what each vector encoding (kbc.format.vectors.PRESETS) would retrieve, derived from the
    bundle's float32 vectors with the writer's own arithmetic; `kept` is relative to the first.
    The queries are embedded once; every encoding is searched exactly or two-stage as its bundle
    would be (a stored FAISS index is set aside)."""
    from ..format.vectors import PRESETS, Encoded, preset_of, row_bytes, simulate

    bundle = kb.bundle
    own = preset_of(bundle.dtype_name, bundle.binary_index() is not None)
    for name in presets:
        if name not in PRESETS:
            raise InputError(f"{option('vectors')} must be among {', '.join(PRESETS)}, not {name!r}")
        if bundle.dtype_name != "float32" and name != own:
            raise InputError(f"{bundle.path}: stores {own} vectors; {option('vectors')} {name} is derived from float32 "
                             f"ones: evaluate a bundle built with --vectors f32")
    if modes is None:  # the lexical list is the same for every encoding
        modes = [m for m in (kb.default_mode, "dense", "hybrid") if m != "lexical"]
        modes = [m for m in dict.fromkeys(modes) if m == "dense" or kb.retriever.lexical is not None]
    evaluated = evaluated_queries(queries, qrels)
    qv = None
    if evaluated and any(m != "lexical" for m in modes):
        qv = kb.embed_queries([queries[q] for q in evaluated], batch_size=batch_size)
    floats = np.asarray(bundle.vectors, dtype=np.float32)
    results: list[VectorsResult] = []
    for name in presets:
        kb.use_vectors(simulate(floats, name) if name != own else
                       Encoded(bundle.stored_vectors, bundle.scales(), bundle.binary_index()))
        report = evaluate(kb, queries, qrels, modes=modes, batch_size=batch_size, progress=progress, query_vectors=qv,
                          unit=unit)
        search_ms = 0.0
        if qv is not None and len(qv):
            sample = qv[:200]
            t = time.perf_counter()
            for row in sample:
                kb.searcher.search(row[None, :], 10)
            search_ms = (time.perf_counter() - t) * 1000 / len(sample)
        base = results[0].report.modes if results else report.modes
        kept = {m: {k: (v / base[m][k] if base[m][k] else None) for k, v in metrics.items()}
                for m, metrics in report.modes.items()}
        per_chunk = row_bytes(PRESETS[name].dtype, bundle.dim, binary=PRESETS[name].binary)
        results.append(VectorsResult(name, per_chunk, per_chunk * 100_000 / 2**20, search_ms, report, kept))
    return results


def _score_documents(kb, evaluated, queries, qrels, qv, mode, owner, doc_ids, unit="chunk") -> list[QueryResult]:
    if unit == "page":  # a document scores as its best page; pages come from the best page_depth chunks
        ranked = []
        for pages in kb.rank_pages([queries[q] for q in evaluated], DEPTH * 4, mode=mode, vectors=qv):
            best: dict[str, float] = {}
            for p in pages:
                best.setdefault(doc_ids[owner[p.chunk_ids[0]]], float(p.score))
            ranked.append({d: best[d] for d in rank_documents(best)[:DEPTH]})
    elif mode == "dense" and getattr(kb, "reranker", None) is None and getattr(kb, "scope", None) is None:
        ranked = rank_all(kb, qv, owner, doc_ids)
    else:  # fused or lexical chunk lists; a document scores as its best chunk in them
        k = min(kb.bundle.count, DEPTH * 4)
        ranked = []
        for scores, ids in kb.rank([queries[q] for q in evaluated], k, mode=mode, vectors=qv):
            best: dict[str, float] = {}
            for sc, c in zip(scores, ids):
                best.setdefault(doc_ids[owner[c]], float(sc))
            ranked.append({d: best[d] for d in rank_documents(best)[:DEPTH]})
    out = []
    for qid, scores in zip(evaluated, ranked):
        order = rank_documents(scores)
        m = query_metrics(order, qrels[qid])
        assert m is not None
        relevant = {d for d, g in qrels[qid].items() if g > 0}
        first = next((i + 1 for i, d in enumerate(order) if d in relevant), None)
        out.append(QueryResult(qid, queries[qid], m, sorted(relevant), order[:10], first))
    return out


def _score_pages(kb, evaluated, queries, qrels, qv, mode, chunk_pages, unit="chunk") -> list[QueryResult]:
    """hit@k and MRR@10 over chunks (a chunk is relevant when its file and any page of its span
    are judged relevant) or over pages (a page is relevant when its file and number are)."""
    k = max(HIT_KS)
    out = []
    texts = [queries[q] for q in evaluated]
    if unit == "page":  # each page as (names of its file, its number, its number)
        ranked = [[(*chunk_pages[p.chunk_ids[0]][:1], p.key[2], p.key[2]) for p in pages]
                  for pages in kb.rank_pages(texts, k, mode=mode, vectors=qv)]
    else:
        ranked = [[chunk_pages[int(c)] for c in ids] for _, ids in kb.rank(texts, k, mode=mode, vectors=qv)]
    for qid, spans in zip(evaluated, ranked):
        relevant: dict[str, set[int]] = {}
        for d, g in qrels[qid].items():
            m = PAGE_ID.match(d)
            if g > 0 and m:
                relevant.setdefault(m["doc"], set()).add(int(m["page"]))
        flags = [_page_relevant(span, relevant) for span in spans]
        first = next((i + 1 for i, f in enumerate(flags) if f), None)
        shown = []
        for names, a, b in spans[:10]:
            stem = min(names, key=len)
            shown.append(f"{stem}:p{a}" if a == b else f"{stem}:p{a}-{b}")
        out.append(QueryResult(qid, queries[qid], hit_metrics(flags),
                               sorted(d for d, g in qrels[qid].items() if g > 0), shown, first))
    return out
