"""Index stage: build a FAISS index over the vectors, and search a bundle.

"Flat" (the default) stores no index at all: exact inner-product search runs directly over the
bundle's memory-mapped vectors section, which is what a FAISS IndexFlatIP would hold byte for
byte. Other FAISS factory strings (HNSW32, IVF256,Flat, IVF256,PQ32, ...) are trained on the
corpus and stored serialised, because their graph or codes cannot be derived cheaply on a device.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import BundleError, InputError, option

from ..format.faiss_guard import SEARCH_PARAM_LIMITS  # noqa: F401 (the bounds a bundle's search_params obey)

DEFAULT_INDEX = "Flat"
DEFAULT_NPROBE = 16
DEFAULT_EF_SEARCH = 64
# float16 and int8 rows are searched as float32: a converted copy up to this size is kept
CONVERTED_LIMIT = 256 << 20
# rows of a filtered search read (gathered and converted) at once
ALLOWED_BLOCK = 1 << 16


@dataclass
class IndexResult:
    data: bytes | None  # serialised FAISS index; None for Flat
    manifest: dict


def check_factory(factory: str, dim: int):
    """The empty FAISS index `factory` names for `dim`-d vectors; refused, in kbc's words, when FAISS
    cannot parse it. Cheap (nothing is trained): the build calls it before it reads any file, so a
    mistyped --index fails at once, not after the corpus was embedded."""
    factory = factory.strip() or DEFAULT_INDEX
    if factory == "Flat":
        return None
    import faiss

    pq = re.search(r"PQ(\d+)(?:x(\d+))?", factory)
    if pq and int(pq.group(1)) and dim % int(pq.group(1)):
        m = int(pq.group(1))
        raise InputError(f"{option('index')} {factory}: PQ{m} needs the dimension ({dim}) to be a multiple of {m}")
    try:  # FAISS's own error is a C++ signature and stack
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except Exception:
        raise InputError(f"{option('index')} {factory!r}: not a FAISS factory string FAISS accepts; "
                         "valid ones are e.g. Flat, HNSW32, IVF1024,Flat") from None


def _untrained_index(factory: str, n: int, dim: int):
    """The untrained FAISS index `factory` names; refused, in kbc's words, when this corpus cannot
    train it or FAISS cannot parse it."""
    index = check_factory(factory, dim)
    pq = re.search(r"PQ(\d+)(?:x(\d+))?", factory)
    ivf = re.search(r"IVF(\d+)", factory)
    if ivf:
        nlist = int(ivf.group(1))
        if n < nlist:
            raise InputError(f"{option('index')} {factory}: needs at least {nlist} chunks to train {nlist} lists, "
                             f"corpus has {n}; use a smaller IVF size or Flat")
    if pq:
        nbits = int(pq.group(2) or 8)
        if n < (1 << nbits):
            raise InputError(f"{option('index')} {factory}: needs at least {1 << nbits} chunks to train "
                             f"{nbits}-bit product quantizers, corpus has {n}; use Flat or HNSW32")
    return index


def build_index(vectors: np.ndarray, factory: str = DEFAULT_INDEX, *, metric: str = "ip") -> IndexResult:
    """Build and serialise the index; `vectors` may be a read-only memmap."""
    n, dim = vectors.shape
    factory = factory.strip() or DEFAULT_INDEX
    base = {"factory": factory, "metric": "inner_product", "count": int(n)}
    if factory == "Flat":
        return IndexResult(None, {**base, "stored": False, "search": "exact"})
    import faiss

    index = _untrained_index(factory, n, dim)
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    params: dict = {}
    threads = faiss.omp_get_max_threads()
    if "HNSW" in factory:
        faiss.omp_set_num_threads(1)  # parallel HNSW insertion order varies run to run; we promise identical bytes
    try:
        if not index.is_trained:
            index.train(x)
        index.add(x)
    finally:
        faiss.omp_set_num_threads(threads)
    if "IVF" in factory:
        params["nprobe"] = min(DEFAULT_NPROBE, faiss.extract_index_ivf(index).nlist)
    if "HNSW" in factory:
        params["efSearch"] = DEFAULT_EF_SEARCH
    data = faiss.serialize_index(index).tobytes()
    _check_written(factory, data, n, dim)
    return IndexResult(data, {**base, "stored": True, "search_params": params, "faiss_version": faiss.__version__})


def _check_written(factory: str, data: bytes, n: int, dim: int) -> None:
    """What kbc writes, its readers load: an index type whose layout the reader does not bound
    (FORMAT.md §5.1) is refused here rather than in every bundle's first query."""
    from ..format.faiss_guard import IndexFormatError, check_index

    try:
        check_index(data, count=n, dim=dim)
    except IndexFormatError as e:
        raise InputError(f"{option('index')} {factory}: makes an index bundles cannot carry ({e})") from None


class Searcher:
    """Top-k inner-product search over a bundle's vectors, its stored FAISS index, or its binary
    codes then its vectors (two-stage, FORMAT.md §2.7).

    `vectors` are the rows as stored (float32, float16, or int8 with `scales`). int8 rows are scored
    as the spec says and libkbpack does: the query times the scales, against the bytes."""

    def __init__(self, vectors: np.ndarray, index_bytes, index_manifest: dict, *, scales=None, binary=None):
        self.vectors = vectors
        self.scales = None if scales is None else np.asarray(scales, dtype=np.float32)
        self.binary = binary  # a kbc.format.vectors.BinaryIndex, or None
        self.faiss_index = None
        if index_bytes is not None:  # bounded and checked before FAISS reads a byte (FORMAT.md §5.1)
            from ..format.faiss_guard import load_index

            self.faiss_index = load_index(index_bytes, vectors.shape, index_manifest)

    def search(self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k best rows per query, best first, lower id first on ties. `allowed` (increasing chunk
        ids, a filter's, FORMAT.md §2.10.2): only those rows are scored, exactly, so min(k, m) come back."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if allowed is not None:
            return self._search_allowed(q, k, np.asarray(allowed, dtype=np.int64))
        n = self.vectors.shape[0]
        k = max(0, min(k, n))
        if k == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if self.faiss_index is not None:
            scores, ids = self.faiss_index.search(q, k)
            if np.any(ids >= n):  # a forged index may name rows the bundle does not have
                raise BundleError(f"stored index returned chunk ids beyond the {n} chunks", section="index")
            return scores, ids
        if self.binary is not None:
            return self._two_stage(q, k)
        with np.errstate(over="ignore", invalid="ignore"):  # a forged bundle's huge vectors: no warnings,
            scores_all = self._all_scores(self._weights(q))
        scores_all[np.isnan(scores_all)] = -np.inf  # and a score that is no number ranks last
        top = np.argpartition(-scores_all, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores_all, top, axis=1)
        # argpartition picks any of the scores tied at the cut; the spec keeps the lower chunk ids
        kth = top_scores.min(axis=1)
        cut_ties = (scores_all == kth[:, None]).sum(axis=1) > (top_scores == kth[:, None]).sum(axis=1)
        for r in np.flatnonzero(cut_ties):
            row = scores_all[r]
            above = np.flatnonzero(row > kth[r])
            top[r] = np.concatenate([above, np.flatnonzero(row == kth[r])[:k - len(above)]])
            top_scores[r] = row[top[r]]
        # stable order: best score first, lower chunk id first on ties
        order = np.lexsort((top, -top_scores), axis=1)
        ids = np.take_along_axis(top, order, axis=1)
        return np.take_along_axis(top_scores, order, axis=1), ids

    def _search_allowed(self, q: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Search restricted to `allowed` rows: the binary codes' shortlist drawn from them, or every
        one of them scored; a stored FAISS index is not used (it cannot promise k matching answers)."""
        from ..format.vectors import top_k

        k = max(0, min(k, len(allowed)))
        scores = np.zeros((len(q), k), np.float32)
        ids = np.zeros((len(q), k), np.int64)
        if k == 0:
            return scores, ids
        for i, query in enumerate(q):
            rows = self.binary.shortlist(query, k, allowed=allowed) if self.binary is not None else allowed
            # a block of rows at a time: half of a million-row bundle must not be copied whole
            block_scores = [self.score(query, rows[at:at + ALLOWED_BLOCK]) for at in range(0, len(rows), ALLOWED_BLOCK)]
            scores[i], ids[i] = top_k(np.concatenate(block_scores), rows, k)
        return scores, ids

    def score(self, query: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """The dense scores of some rows for one query (hybrid's candidates, binary's shortlist):
        only those rows are read."""
        with np.errstate(over="ignore", invalid="ignore"):
            return np.asarray(self.vectors[ids], dtype=np.float32) @ self._weights(np.asarray(query, dtype=np.float32))

    def _weights(self, q: np.ndarray) -> np.ndarray:
        """The query as it meets the stored rows: times the scales for int8 (FORMAT.md §2.7)."""
        if self.scales is None:
            return q
        with np.errstate(over="ignore", invalid="ignore"):
            return q * self.scales

    def _all_scores(self, weights: np.ndarray) -> np.ndarray:
        """Every row's score for each query. float32 rows are used where they are mapped; float16
        and int8 rows are converted once and kept when that copy is at most CONVERTED_LIMIT bytes,
        else a block at a time per search (a million int8 rows must not cost 1.5 GB)."""
        if self.vectors.dtype == np.float32:
            return weights @ self.vectors.T
        n, dim = self.vectors.shape
        if n * dim * 4 <= CONVERTED_LIMIT:
            if getattr(self, "_converted", None) is None:
                self._converted = np.asarray(self.vectors, dtype=np.float32)
            return weights @ self._converted.T
        out = np.empty((len(weights), n), dtype=np.float32)
        for start in range(0, n, 1 << 16):
            out[:, start:start + (1 << 16)] = weights @ np.asarray(self.vectors[start:start + (1 << 16)], np.float32).T
        return out

    def _two_stage(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        from ..format.vectors import top_k

        scores = np.zeros((len(q), k), np.float32)
        ids = np.zeros((len(q), k), np.int64)
        for i, query in enumerate(q):
            shortlist = self.binary.shortlist(query, k)
            scores[i], ids[i] = top_k(self.score(query, shortlist), shortlist, k)
        return scores, ids
