"""Search modes and fusion: dense, lexical (BM25) and hybrid, the same on every runtime.

Hybrid search takes the `depth` best chunks of each list (at least k), scores every candidate
exactly in both (the inner product with its stored vector; its BM25 score), normalises each list
and fuses (FORMAT.md §2.5, settings in the manifest's `retrieval` object, chosen by
bench/retrieval_sweep.py on two evaluation sets):

- `tmm` (Bruch et al., arXiv:2210.11934, "theoretical min-max"): dense' = max(cos, 0) / best cos,
  lexical' = bm25 / best bm25; fused = (1 - w) dense' + w lexical';
- `minmax`: each score min-max scaled over its own list's top `depth`; fused as above;
- `rrf`: (1 - w) / (rrf_k + dense rank) + w / (rrf_k + lexical rank), a list's rank counting only
  within its top `depth` (no term for a candidate outside it).
Ties go to the lower chunk id. A question with no word in the lexical index falls back to dense.
With `standout_weighting` (format 1.8, §2.5.1) tmm and minmax replace w, per question, by each list's
share in proportion to how far its best stands out of its own list (question_weight).

The context match (FORMAT.md §2.9): with tmm or minmax, a hybrid candidate also gains
`path_weight` x P' + `heading_weight` x H', where P and H are the idf (BM25's) of the question's
terms found in the candidate's file path (its folders and name, without the extension) and in its
section heading (its context after " | "), each over its best among the candidates. A question that
names the company and year ("NETFLIX_2017_10K.pdf") or the statement ("balance sheet") then lifts
the chunks filed under them, which a chunk cut from the middle of a table cannot say in its own
words. A descriptive title is not in either part: as a field of its own it cost SciFact (README).

Pages as the unit (FORMAT.md §2.8): the mode's best `page_depth` chunks are grouped by the page
they start on (source, record, page_start); a page scores as its best chunk plus `page_share`
times the sum of its other chunks' scores (each at least 0), so a page that answers in three
chunks outranks one that matches once; ties go to the page whose best chunk has the lower id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from ..errors import InputError, option
from ..format.bm25 import LexicalIndex, TokenizerOptions, tokenize, top_k
from ..modes import Fusion, Mode
from ..format.retrieval import HEADING_SEPARATOR, RetrievalSettings, path_stem

MAX_CONTEXT_CHARS = 4096  # code points of each part read: a forged path or context costs no more


def context_parts(path, context) -> tuple[str, str]:
    """What the context match reads of a chunk: its source path without the extension, and its
    section heading (its context after the first " | "; none without one), each cut to
    MAX_CONTEXT_CHARS code points. A forged non-string reads as nothing."""
    path = path_stem(path)[:MAX_CONTEXT_CHARS] if isinstance(path, str) else ""
    heading = context.partition(HEADING_SEPARATOR)[2][:MAX_CONTEXT_CHARS] if isinstance(context, str) else ""
    return path, heading


def _over_best(x: np.ndarray) -> np.ndarray:
    hi = float(x.max()) if len(x) else 0.0
    return x / hi if hi > 0 else np.zeros_like(x)


def context_match(weights: Sequence[tuple[str, float]], parts: Sequence[tuple[str, str]],
                  options: TokenizerOptions) -> tuple[np.ndarray, np.ndarray]:
    """(P', H') per candidate (`parts`: each one's context_parts): the summed weights of the
    question's terms (in the question's order) found among the kbc-lex-1 terms of its path and of
    its heading, each divided by its best over the candidates (0 when that best is 0). Nothing is
    kept past the query but one float per distinct text: memory is bounded by the question."""
    wanted = {t for t, _ in weights}
    sums: dict[str, float] = {}

    def summed(text: str) -> float:
        if text not in sums:
            found = {t for t in tokenize(text, options) if t in wanted} if wanted and text else set()
            s = 0.0
            for term, w in weights:
                if term in found:
                    s += w
            sums[text] = s
        return sums[text]

    in_path = np.array([summed(p) for p, _ in parts], dtype=np.float64)
    in_heading = np.array([summed(h) for _, h in parts], dtype=np.float64)
    return _over_best(in_path), _over_best(in_heading)


def _normalise(scores: np.ndarray, ref: np.ndarray, method: str, floor: float) -> np.ndarray:
    if len(ref) == 0:
        return np.zeros_like(scores)
    hi = float(ref.max())
    if not np.isfinite(hi):  # only a forged bundle's overflowing scores get here
        return np.zeros_like(scores)
    if method == Fusion.tmm.value:
        return np.maximum(scores, floor) / hi if hi > floor else np.zeros_like(scores)
    lo = float(ref.min())
    if hi > lo:
        return (scores - lo) / (hi - lo)
    return (scores >= hi).astype(np.float64)  # one distinct score: the list's members 1, the rest 0


# A list flatter than this is float32 rounding (a degenerate model's cosines all 0.99999x): two
# runtimes summing inner products in another order would weigh it differently, so it says nothing.
# Real lists are far above it (the dense lists' sd of four development sets: 0.015 at the least).
STANDOUT_MIN_SD = 0.001


def standout(scores: np.ndarray) -> float | None:
    """How far a list's best stands out of its own list: (best - mean) / standard deviation over the
    list (the population's), summed best first in double precision as every runtime sums them
    (FORMAT.md §2.5.1). None when it cannot say: fewer than two scores, or a spread under
    STANDOUT_MIN_SD."""
    n = len(scores)
    if n < 2:
        return None
    total = 0.0
    for x in scores:
        total += float(x)
    mean = total / n
    spread = 0.0
    for x in scores:
        spread += (float(x) - mean) * (float(x) - mean)
    sd = math.sqrt(spread / n)
    return (float(scores[0]) - mean) / sd if sd >= STANDOUT_MIN_SD and math.isfinite(sd) else None


def question_weight(weight: float, dense_scores: np.ndarray, lexical_scores: np.ndarray) -> float:
    """The lexical list's weight for this question: each list's share in proportion to its fixed share
    times how far its best stands out (a negative standout counts as 0). A question whose best dense
    hit is far ahead of the rest leans on the dense list, one whose best lexical match is far ahead
    leans on BM25. The fixed weight when either list's standout says nothing (a single hit, all
    scores equal) or neither stands out."""
    z_dense, z_lexical = standout(dense_scores), standout(lexical_scores)
    if z_dense is None or z_lexical is None:
        return weight
    a = (1.0 - weight) * max(z_dense, 0.0)
    b = weight * max(z_lexical, 0.0)
    return b / (a + b) if a + b > 0 else weight


def fuse(*, dense_ids: np.ndarray, dense_scores: np.ndarray, lexical_ids: np.ndarray,
         lexical_scores: np.ndarray, candidate_dense: np.ndarray, candidate_lexical: np.ndarray,
         candidates: np.ndarray, settings: RetrievalSettings, k: int,
         context: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fuse one query's lists. `dense_*`/`lexical_*` are each list's top `depth` (best first);
    `candidate_*` are the exact scores of `candidates` (their sorted union) in each list;
    `context`: the candidates' (P', H') of the context match (tmm and minmax only)."""
    w = float(settings.weight)
    if settings.standout_weighting and settings.fusion != Fusion.rrf.value:
        w = question_weight(w, dense_scores, lexical_scores)
    if settings.fusion == Fusion.rrf.value:
        fused = np.zeros(len(candidates), dtype=np.float64)
        for ids, share in ((dense_ids, 1.0 - w), (lexical_ids, w)):
            pos = np.searchsorted(candidates, ids)
            fused[pos] += share / (settings.rrf_k + np.arange(1, len(ids) + 1))
    else:
        d = _normalise(candidate_dense, dense_scores, settings.fusion, 0.0)
        lx = _normalise(candidate_lexical, lexical_scores, settings.fusion, 0.0)
        fused = (1.0 - w) * d + w * lx
        if context is not None:  # added one after the other, as every runtime does (FORMAT.md §2.9)
            fused = fused + float(settings.path_weight) * context[0]
            fused = fused + float(settings.heading_weight) * context[1]
    order = np.lexsort((candidates, -fused))[:k]
    return fused[order], candidates[order]


class Retriever:
    """Runs a mode over a bundle's dense searcher and (when present) its lexical index."""

    def __init__(self, *, searcher, lexical: LexicalIndex | None, settings: RetrievalSettings,
                 contexts: Callable[[np.ndarray], Sequence[tuple[str, str]]] | None = None):
        # a Searcher, or a function making one on first dense use: lexical search never reads the
        # vectors (so, as in libkbpack, it answers even when they are damaged)
        self._searcher = searcher
        self.lexical = lexical
        self.settings = settings
        # chunk ids -> their context_parts (the context match); None: no context match
        self.contexts = contexts

    def _context_match(self, text: str, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        s = self.settings
        if (self.contexts is None or s.fusion == Fusion.rrf.value
                or not (s.path_weight or s.heading_weight)):
            return None
        return context_match(self.lexical.term_weights(text), self.contexts(candidates), self.lexical.options)

    @property
    def searcher(self):
        if callable(self._searcher):
            self._searcher = self._searcher()
        return self._searcher

    def resolve(self, mode: str | None) -> str:
        mode = mode or (self.settings.default_mode if self.lexical is not None else Mode.dense.value)
        if mode not in {m.value for m in Mode}:
            raise InputError(f"{option('mode')} must be dense, lexical or hybrid, not {mode!r}")
        if mode != Mode.dense.value and self.lexical is None:
            raise InputError(f"{option('mode')} {mode}: this bundle has no lexical index (built before format 1.2, or with "
                             "--no-lexical); use --mode dense or rebuild it")
        return mode

    def search(self, query_vectors: np.ndarray | None, texts: list[str], k: int, *, mode: str | None = None,
               lexical_scores: list[np.ndarray] | None = None, allowed=None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query (scores, chunk ids), best first. `lexical_scores[i]`, where given, is
        `self.lexical.scores(texts[i])` computed beforehand (while the model loaded). `allowed`, a
        compiled filter (kbc.format.filters.Filter), keeps every list inside its chunks (FORMAT.md
        §2.10.2): dense scores only them, BM25 counts only their postings, hybrid fuses lists of them."""
        mode = self.resolve(mode)
        n = len(texts)

        def lexical_of(i: int, text: str) -> np.ndarray:
            scores = self.lexical.scores(text) if lexical_scores is None else lexical_scores[i]
            if allowed is not None:  # other chunks' postings count for nothing (N, df, avgdl stay the bundle's)
                scores = np.where(allowed.mask, scores, 0.0)
            return scores

        if mode == Mode.lexical.value:
            if allowed is None:
                return [self.lexical.search(t, k) for t in texts]
            return [top_k(lexical_of(i, t), k) for i, t in enumerate(texts)]
        depth = max(k, self.settings.depth)
        d_scores, d_ids = self.searcher.search(query_vectors, depth if mode == Mode.hybrid.value else k,
                                               **({} if allowed is None else {"allowed": allowed.ids}))
        dense = []
        for i in range(n):
            keep = d_ids[i] >= 0
            dense.append((d_scores[i][keep].astype(np.float64), d_ids[i][keep].astype(np.int64)))
        if mode == Mode.dense.value:
            return [(s[:k], ids[:k]) for s, ids in dense]
        out = []
        for i, text in enumerate(texts):
            all_lex = lexical_of(i, text)
            l_scores, l_ids = top_k(all_lex, depth)
            ds, di = dense[i]
            if len(l_ids) == 0:
                out.append((ds[:k], di[:k]))
                continue
            cand = np.union1d(di, l_ids)
            cand_dense = self.searcher.score(query_vectors[i], cand)
            cand_dense[~np.isfinite(cand_dense)] = 0.0  # a forged bundle's overflowing scores count for nothing
            out.append(fuse(dense_ids=di, dense_scores=ds, lexical_ids=l_ids, lexical_scores=l_scores,
                            candidate_dense=cand_dense.astype(np.float64), candidate_lexical=all_lex[cand],
                            candidates=cand, settings=self.settings, k=k,
                            context=self._context_match(text, cand)))
        return out


@dataclass(frozen=True)
class RankedPage:
    """One page of a page-unit ranking: its score and its chunks among the ranked ones, best first."""
    score: float
    key: tuple  # (source index, record id or None, page number): what makes a page
    chunk_ids: tuple[int, ...]
    chunk_scores: tuple[float, ...]


def page_key(chunk: Mapping) -> tuple:
    """The page a chunk belongs to: the one it starts on, in its source (and record, for JSONL)."""
    return (int(chunk.get("source", 0) or 0), chunk.get("record"), int(chunk.get("page_start", 0) or 0))


def rank_pages(scores: np.ndarray, ids: np.ndarray, keys: Sequence[tuple], *, settings: RetrievalSettings,
               k: int) -> list[RankedPage]:
    """Pages from one query's chunk ranking (best first; `keys[i]` is chunk `ids[i]`'s page_key),
    the first `page_depth` of it: score = best + page_share x sum of the rest (each >= 0)."""
    groups: dict[tuple, list[tuple[float, int]]] = {}
    n = min(len(ids), settings.page_depth)
    for score, cid, key in zip(scores[:n], ids[:n], keys[:n]):
        groups.setdefault(key, []).append((float(score), int(cid)))
    share = float(settings.page_share)
    pages = []
    for key, members in groups.items():
        members.sort(key=lambda m: (-m[0], m[1]))
        best = members[0][0]
        rest = 0.0
        for s, _ in members[1:]:
            rest += max(s, 0.0)
        total = best + share * rest if share else best
        pages.append((total, members[0][1], key, members))
    pages.sort(key=lambda p: (-p[0], p[1]))
    return [RankedPage(total, key, tuple(c for _, c in members[:settings.page_chunks]),
                       tuple(s for s, _ in members[:settings.page_chunks]))
            for total, _, key, members in pages[:k]]
