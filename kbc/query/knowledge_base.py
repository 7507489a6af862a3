"""Query a bundle: `kbc.open(path).search("question", k=5)`.

The query embedder is rebuilt from what the bundle recorded (model, prompts, pooling,
normalisation) and its weights are hashed and compared with the recorded hash before any query
runs: vectors from one model and queries from another fail loudly instead of retrieving badly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from ..format.bundle import Bundle
from ..errors import BundleError, InputError, ModelError, option


# The embedder keeps max_seq_length tokens and the lexical search 1024 distinct terms: a question
# is cut here first, so a 30 MB one is never tokenised whole (the tokenizer aborts the process).
MAX_QUESTION_CHARS = 1_000_000


def check_questions(texts: Sequence[str]) -> None:
    """An empty question has nothing to match: BM25 finds no term and the embedder returns the
    vector of its special tokens alone, so any "hits" would be arbitrary. Refused, not answered."""
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"question {i + 1}: expected text, got {type(t).__name__}")
        if not t.strip():
            which = "the question" if len(texts) == 1 else f"question {i + 1} of {len(texts)}"
            raise InputError(f"{which} is empty: ask something to retrieve context for")


@dataclass
class Hit:
    rank: int
    score: float
    chunk_id: int
    source: str
    page_start: int
    page_end: int
    char_start: int
    char_end: int
    text: str
    record: str | None = None
    context: str | None = None  # the document/section context embedded with the text (not part of it)
    label_start: str | None = None
    label_end: str | None = None

    @property
    def pages(self) -> str:
        """Physical pages, 1-based: "5" or "5-6" (what a PDF viewer's page box takes)."""
        a, b = str(self.page_start), str(self.page_end)
        return a if a == b else f"{a}-{b}"

    @property
    def labels(self) -> str | None:
        """The document's own page labels ("iv", "A-3") when they differ from the physical pages."""
        if self.label_start is None and self.label_end is None:
            return None
        a, b = self.label_start or str(self.page_start), self.label_end or str(self.page_end)
        label = a if a == b else f"{a}-{b}"
        return None if label == self.pages else label

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if v is not None}
        d["pages"] = self.pages
        if self.labels:
            d["labels"] = self.labels
        return d


def check_min_score(value: float | None) -> None:
    """An answer-strength threshold a caller gives: None, or a number from -1 to 1 (nan is refused:
    typer's range and a plain comparison would both let it through)."""
    if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                  and -1 <= value <= 1):
        raise InputError(f"{option('min_score')} must be a number from -1 to 1, not {value!r}")


@dataclass(frozen=True)
class Answer:
    """How strongly the bundle answers a question (FORMAT.md §2.11): `strength` is the first hit's
    cosine with the question (one meaning across questions, for one embedder); under `min_score`
    (the bundle's threshold, or the caller's) the bundle has "no confident answer". The hits are
    returned either way: the app decides what its model is told."""
    strength: float | None  # None: no hit, or not measured
    min_score: float | None  # None: the bundle records no threshold (another embedder than the default)
    measured: bool = True  # False: a lexical search, which embeds no question to measure with

    @property
    def confident(self) -> bool | None:
        """True or False against the threshold; None when there is no threshold or nothing was
        measured (a question with no hit at all is never confident)."""
        if self.min_score is None or not self.measured:
            return None
        return self.strength is not None and self.strength >= self.min_score

    def to_dict(self) -> dict:
        return {"strength": self.strength, "min_score": self.min_score, "confident": self.confident}


@dataclass
class PageHit:
    """One page of a page-unit search: a PDF page (or a record, or a text file's page 1) with its
    best chunks among the ranked ones, best first."""
    rank: int
    score: float
    source: str
    page: int  # 1-based physical page
    chunks: list[Hit]
    record: str | None = None
    label: str | None = None  # the document's own label for the page, where it differs

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if v is not None and k != "chunks"}
        d["chunks"] = [c.to_dict() for c in self.chunks]
        return d


class KnowledgeBase:
    def __init__(self, path: str | os.PathLike, *, model: str | None = None, allow_model_mismatch: bool = False,
                 backend: str = "auto", device: str | None = None, sessions: int = 1,
                 fusion: dict | None = None, reranker=None, where=None):
        self.bundle = Bundle(path)
        # conditions every ranking of this handle applies unless it names its own (`kbc eval --where`)
        self._scope = where
        # a kbc.query.rerank.Reranker: every ranking takes more first-stage chunks and re-orders them by it
        self.reranker = reranker
        self.manifest = self.bundle.manifest
        self._model_arg = model
        self._allow_mismatch = allow_model_mismatch
        self._backend = backend
        self._device = device
        self._sessions = sessions  # onnxruntime sessions: one per core pays off for many queries (eval)
        self._embedder = None
        self._searcher = None
        self._retriever = None
        # overrides of the recorded fusion settings (eval sweeps): {"fusion", "weight", "depth", "rrf_k"}
        self._settings_override = {k: v for k, v in (fusion or {}).items() if v is not None}
        self.warnings: list[str] = []
        self._page_keys: dict[int, tuple] = {}  # chunk id -> its page (retrieval.page_key), as read
        self._filters: dict[tuple, object] = {}  # the last compiled filter, by its conditions

    @property
    def embedder(self):
        if self._embedder is None:
            self._embedder = self._load_embedder()
        return self._embedder

    def _load_embedder(self):
        from ..backends import load_embedder
        from ..backends.model import EmbedderSpec, read_spec, resolve_model

        rec = dict(self.manifest.get("embedder") or {})
        try:
            recorded = EmbedderSpec(**rec)
        except TypeError as e:
            raise ModelError(f"{self.bundle.path}: manifest embedder record is malformed ({e})") from None
        ref = resolve_model(self._model_arg or recorded.name)
        from ..infra.cache import cached_file_hasher

        local = read_spec(ref, query_prompt=recorded.query_prompt, document_prompt=recorded.document_prompt,
                          file_hasher=cached_file_hasher())
        if local.weights_sha256 != recorded.weights_sha256:
            changed = sorted(k for k in set(local.files) | set(recorded.files)
                             if local.files.get(k) != recorded.files.get(k))
            msg = (f"{ref.path}: model files differ from the ones that built {self.bundle.path} "
                   f"(weights sha256 {local.weights_sha256[:12]} != recorded {recorded.weights_sha256[:12]}; "
                   f"differing: {', '.join(changed[:5]) or 'n/a'})")
            if not self._allow_mismatch:
                raise ModelError(msg + f"; pass {option('allow_model_mismatch')} to query anyway")
            self.warnings.append(msg)
        if local.dim != recorded.dim:
            raise ModelError(f"{ref.path}: model makes {local.dim}-d vectors, bundle holds {recorded.dim}-d")
        # The recorded pooling/normalisation/prompts/length win: they are what made the vectors.
        spec = EmbedderSpec(**{**rec, "files": local.files, "weights_sha256": local.weights_sha256})
        backend = self._backend
        if backend == "auto":
            backend = "onnx-int8" if recorded.precision == "int8" else "onnx"
        return load_embedder(spec, ref, backend=backend, device=self._device, sessions=self._sessions)

    @property
    def searcher(self):
        if self._searcher is None:
            from ..search.dense import Searcher

            try:
                self._searcher = Searcher(self.bundle.stored_vectors, self.bundle.index_bytes(),
                                          self.manifest.get("index", {}), scales=self.bundle.scales(),
                                          binary=self.bundle.binary_index())
            except BundleError as e:  # name the file: the index module does not know it
                raise BundleError(e.detail, section=e.section, path=self.bundle.path) from None
        return self._searcher

    def use_vectors(self, encoded) -> None:
        """Search other vectors than the bundle's own (a kbc.format.vectors.Encoded: rows as stored, int8
        scales, binary codes), as a bundle holding them would: how `kbc eval --vectors` scores what
        another encoding retrieves. A stored FAISS index is not used."""
        from ..search.dense import Searcher

        if encoded.rows.shape != (self.bundle.count, self.bundle.dim):
            raise ValueError(f"expected ({self.bundle.count}, {self.bundle.dim}) vectors, got {encoded.rows.shape}")
        self._searcher = Searcher(encoded.rows, None, {}, scales=encoded.scales, binary=encoded.binary)
        self._retriever = None

    @property
    def retriever(self):
        """Dense, lexical and hybrid search with the bundle's recorded fusion settings."""
        if self._retriever is None:
            from ..search.fusion import Retriever

            settings = self.bundle.retrieval_settings()
            if self._settings_override:
                settings = replace(settings, **self._settings_override)
                try:
                    settings.check()
                except ValueError as e:
                    raise InputError(str(e)) from None
            lexical = self.bundle.lexical()
            self._retriever = Retriever(searcher=lambda: self.searcher, lexical=lexical, settings=settings,
                                        contexts=self.context_parts if lexical is not None else None)
        return self._retriever

    @property
    def default_mode(self) -> str:
        return self.retriever.resolve(None)

    def embed_queries(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        return self.embedder.embed_queries([t[:MAX_QUESTION_CHARS] for t in texts], batch_size=batch_size)

    # questions whose lexical scores (one float per chunk each) are computed while a cold model loads
    OVERLAP_QUESTIONS = 4

    def _embed_first(self, texts: list[str], mode: str) -> tuple[np.ndarray, list | None]:
        """The questions' vectors and, for a cold hybrid search of a few questions, their lexical
        scores: while the model loads and embeds in a thread (onnxruntime releases the GIL for part
        of its session set-up), this one reads the dense index and scores the lexical side, the work
        a cold `kbc query` would otherwise do after it. Warm, it is plain embedding."""
        if self._embedder is not None:
            return self.embed_queries(texts), None
        from ..infra.background import Background

        pending = Background(lambda: self.embed_queries(texts), name="kbc-query-model")
        try:
            self.retriever.searcher  # noqa: B018 (reads the FAISS index and vectors)
            lexical = None
            if mode == "hybrid" and len(texts) <= self.OVERLAP_QUESTIONS:
                lexical = [self.retriever.lexical.scores(t) for t in texts]
        finally:
            vectors = pending.result()  # its error (a model that will not load) wins: it is the cause
        return vectors, lexical

    def filter(self, where: str | Sequence[str]):
        """The compiled filter (kbc.format.filters.Filter: its chunk ids and `matched`, their number)
        for conditions such as "product=x200", "path:manuals/**", "year>=2022" (FORMAT.md §2.10.1),
        all of which a chunk must meet. InputError, one line naming the condition and the bundle's
        keys, for what this bundle cannot apply."""
        from ..format.filters import FilterError, compile_filter, normalise_where

        key = tuple(normalise_where(where))
        cached = self._filters.get(key)
        if cached is None:
            try:
                cached = compile_filter(list(key), self.bundle.attributes(), self.bundle.source_paths())
            except FilterError as e:
                raise InputError(f"{self.bundle.path}: {e}") from None
            self._filters = {key: cached}  # one filter kept: a loop over questions reuses it
        return cached

    @property
    def scope(self):
        """The compiled filter every ranking applies (`where` given to the constructor), or None. A
        ranking that reads the searcher directly must go through `rank` instead while one is set."""
        return None if self._scope is None else self._allowed(None)

    def _allowed(self, where):
        from ..format.filters import Filter

        where = self._scope if where is None else where
        if where is None or isinstance(where, Filter):
            return where
        return self.filter(where)

    def rank(self, texts: Sequence[str], k: int, *, mode: str | None = None,
             vectors: np.ndarray | None = None, where=None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per question (scores, chunk ids), best first. Lexical mode never loads the model. `where`:
        conditions (or a compiled filter) every returned chunk meets, applied inside the search."""
        texts = [t[:MAX_QUESTION_CHARS] for t in texts]
        check_questions(texts)
        allowed = self._allowed(where)
        mode = self.retriever.resolve(mode)
        lexical = None
        if vectors is None and mode != "lexical":
            vectors, lexical = self._embed_first(texts, mode)
        if self.reranker is None:
            return self.retriever.search(vectors, texts, k, mode=mode, lexical_scores=lexical, allowed=allowed)
        from .rerank import candidates_for, rerank

        out = []
        for text, first in zip(texts, self.retriever.search(vectors, texts, candidates_for(k), mode=mode,
                                                             lexical_scores=lexical, allowed=allowed)):
            reranked = rerank(self.reranker, text, self.hits(first), k=k)
            out.append((np.array([r.hit.score for r in reranked], dtype=np.float64),
                        np.array([r.hit.chunk_id for r in reranked], dtype=np.int64)))
        return out

    def hits(self, ranked: tuple[np.ndarray, np.ndarray]) -> list[Hit]:
        hits = []
        for rank, (score, cid) in enumerate(zip(*ranked), 1):
            c = self.bundle.chunk(int(cid))
            hits.append(Hit(rank=rank, score=float(score), chunk_id=int(cid), source=self.bundle.source_path(c),
                            page_start=c.get("page_start", 0), page_end=c.get("page_end", 0),
                            char_start=c.get("char_start", 0), char_end=c.get("char_end", 0),
                            text=c["text"], record=c.get("record"), context=c.get("context") or None,
                            label_start=c.get("label_start"), label_end=c.get("label_end")))
        return hits

    def resolve_unit(self, unit: str | None) -> str:
        from ..modes import Unit

        unit = unit or self.retriever.settings.unit
        if unit not in {u.value for u in Unit}:
            raise InputError(f"{option('unit')} must be chunk or page, not {unit!r}")
        return unit

    def page_keys(self, ids) -> list[tuple]:
        """Each chunk's page (source, record, page_start); blocks are read in id order, once each."""
        from ..search.fusion import page_key

        for i in sorted({int(i) for i in ids} - self._page_keys.keys()):
            self._page_keys[i] = page_key(self.bundle.chunk(i))
        return [self._page_keys[int(i)] for i in ids]

    def context_parts(self, ids) -> list[tuple[str, str]]:
        """Each chunk's path and heading as the context match reads them (kbc.search.fusion.context_parts),
        read for this query only; blocks in id order, once each."""
        from ..search.fusion import context_parts, page_key

        chunks = {}
        for i in sorted({int(i) for i in ids}):
            chunk = self.bundle.chunk(i)
            chunks[i] = context_parts(self.bundle.source_path(chunk), chunk.get("context"))
            # the page ranking that follows reads these chunks' pages: from here, not a second read
            self._page_keys.setdefault(i, page_key(chunk))
        return [chunks[int(i)] for i in ids]

    def rank_pages(self, texts: Sequence[str], k: int, *, mode: str | None = None,
                   vectors: np.ndarray | None = None, where=None) -> list[list]:
        """Per question the k best pages (kbc.search.fusion.RankedPage), ranked from the mode's best
        `page_depth` chunks (those `where` keeps) as FORMAT.md §2.8 says."""
        from ..search.fusion import rank_pages

        settings = self.retriever.settings
        out = []
        for scores, ids in self.rank(texts, settings.page_depth, mode=mode, vectors=vectors, where=where):
            out.append(rank_pages(scores, ids, self.page_keys(ids), settings=settings, k=k))
        return out

    def page_hits(self, pages) -> list[PageHit]:
        out = []
        for rank, p in enumerate(pages, 1):
            chunks = self.hits((np.asarray(p.chunk_scores), np.asarray(p.chunk_ids)))
            best = chunks[0]
            label = best.label_start if best.page_start == p.key[2] else None
            out.append(PageHit(rank=rank, score=float(p.score), source=best.source, page=p.key[2], chunks=chunks,
                               record=best.record, label=label if label != str(p.key[2]) else None))
        return out

    def search_pages(self, text: str, k: int = 5, *, mode: str | None = None, where=None,
                     vector: np.ndarray | None = None) -> list[PageHit]:
        """The k best pages for a question, each once with its best chunks (FORMAT.md §2.8).
        `vector`: the question already embedded (embed_queries), e.g. to ask `answer` with it too."""
        vectors = None if vector is None else np.asarray(vector, dtype=np.float32).reshape(1, -1)
        return self.page_hits(self.rank_pages([text], k, mode=mode, where=where, vectors=vectors)[0])

    def min_score(self, override: float | None = None) -> float | None:
        """The answer-strength threshold: `override` (checked: a number from -1 to 1), else the
        bundle's min_strength (None when it records none)."""
        check_min_score(override)
        return self.retriever.settings.min_strength if override is None else float(override)

    def answer(self, vector: np.ndarray | None, first_chunk_id: int | None, *,
               min_score: float | None = None) -> Answer:
        """The answer strength of a question (its embedded `vector`) whose first hit, in any mode or
        unit, is chunk `first_chunk_id` (a page's first chunk); `min_score` overrides the bundle's
        threshold."""
        threshold = self.min_score(min_score)
        if vector is None or first_chunk_id is None:
            return Answer(None, threshold, measured=vector is not None)
        score = self.strengths(vector, [first_chunk_id])[0]
        return Answer(score if np.isfinite(score) else None, threshold)

    def strengths(self, vector: np.ndarray, chunk_ids) -> list[float]:
        """Each chunk's cosine with the question (`vector`): what each hit's `strength` says."""
        ids = np.asarray([int(c) for c in chunk_ids], dtype=np.int64)
        if len(ids) == 0:
            return []
        return [float(x) for x in self.searcher.score(np.asarray(vector, dtype=np.float32).reshape(-1), ids)]

    def search_vectors(self, vectors: np.ndarray, k: int = 5) -> list[list[Hit]]:
        """Dense search for precomputed query vectors."""
        return [self.hits(r) for r in self.retriever.search(vectors, [""] * len(vectors), k, mode="dense")]

    def search(self, text: str, k: int = 5, *, mode: str | None = None, where=None,
               vector: np.ndarray | None = None) -> list[Hit]:
        """The k best chunks for a question; mode dense, lexical or hybrid (default: the bundle's).
        `where`: a condition or a list of them ("product=x200", "year>=2022", "path:manuals/**"),
        all met by every hit; whenever k chunks match, k come back (`filter(where).matched` says how many match).
        `vector`: the question already embedded (embed_queries), e.g. to ask `answer` with it too."""
        vectors = None if vector is None else np.asarray(vector, dtype=np.float32).reshape(1, -1)
        return self.hits(self.rank([text], k, mode=mode, where=where, vectors=vectors)[0])

    def search_many(self, texts: Sequence[str], k: int = 5, *, mode: str | None = None,
                    where=None) -> list[list[Hit]]:
        return [self.hits(r) for r in self.rank(texts, k, mode=mode, where=where)]

    def close(self) -> None:
        self._searcher = None
        self.bundle.close()

    def __enter__(self) -> "KnowledgeBase":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def device_prompt(question: str, hits: Sequence[Hit | PageHit]) -> str:
    """The prompt in the form the edge-slm device app builds: context lines, then the question.
    Pages give their chunks in reading order (chunk id), best page first, each chunk once."""
    if hits and isinstance(hits[0], PageHit):
        seen: set[int] = set()
        hits = [c for p in hits for c in sorted(p.chunks, key=lambda c: c.chunk_id)
                if not (c.chunk_id in seen or seen.add(c.chunk_id))]
    lines = [f"context_{i}: " + (f"[{' '.join(h.context.split())}] " if h.context else "") + " ".join(h.text.split())
             for i, h in enumerate(hits)]
    return "\n".join(lines + [f"question: {question}"])
