"""Bounds a stored FAISS index before FAISS reads a byte of it (FORMAT.md §5.1).

`faiss::read_index` allocates what the bytes declare (a vector's length, `nlist` inverted lists,
`d x 2^nbits` PQ centroids) before it reads the data that should fill it, so a few bytes claiming
2^40 vectors cost gigabytes before FAISS notices the section is short. This module walks the
serialised index of every type kbc writes, checks each declared size against the bytes that are
actually there and against one budget per quantity, checks that the index can answer for the
bundle (its vector count and dimension, ids and graph links inside the chunk count), and only
then lets FAISS read it. Any other index type is refused: its layout has not been checked.

Pure Python and numpy over a memoryview: nothing is copied, nothing is allocated from a declared
size. Layout per faiss/impl/index_read.cpp (faiss-cpu 1.15): little-endian, `size_t` = u64.
"""

from __future__ import annotations

import numpy as np

# Budgets (FORMAT.md §5.1). A declared size above one is refused however many bytes follow.
MAX_INDEX_BYTES = 1 << 30  # the index section: FAISS holds it in memory whole
MAX_IVF_LISTS = 1 << 20  # nlist: FAISS allocates two vectors per list before reading any
MAX_PQ_BITS = 16  # bits per PQ sub-code: the centroids are d x 2^nbits floats
MAX_HNSW_LEVELS = 32  # graph levels (HNSW32 over 10^9 vectors needs 7)
MAX_HNSW_LINKS = 4096  # neighbour slots one node holds over all its levels (HNSW32: 64 + 32 per upper level)
MAX_HNSW_EF = 4096  # the efSearch stored in the graph (as index.search_params allows)

# Search parameters a bundle may set, and their bounds: an absurd efSearch or nprobe from a
# bundle of unknown origin would make every query allocate and scan without end.
SEARCH_PARAM_LIMITS = {"nprobe": 65536, "efSearch": 4096}

METRIC_INNER_PRODUCT = 0  # FAISS's MetricType value; kbc indexes score by inner product only
# What kbc writes (FORMAT.md §2.2), by the fourcc FAISS puts first: top-level types, and the
# flat inner-product index that serves as HNSW storage and IVF quantizer.
TOP_LEVEL = {"IHNf": "HNSW,Flat", "IwFl": "IVF,Flat", "IwPQ": "IVF,PQ", "IxPq": "PQ", "IxFI": "Flat"}


class IndexFormatError(ValueError):
    """The bytes are not an index this reader lets FAISS load: one line saying why."""


class _Reader:
    def __init__(self, data) -> None:
        self.data = memoryview(data).cast("B")
        self.pos = 0
        self.fields: dict[str, int] = {}  # where each scalar field starts (tests forge them there)

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or n > self.left:
            raise IndexFormatError(f"{what} declares {n} bytes, {self.left} remain in the section")
        view = self.data[self.pos:self.pos + n]
        self.pos += n
        return view

    def scalar(self, fmt: str, what: str) -> int | float:
        dtype = np.dtype(fmt)
        self.fields.setdefault(what, self.pos)
        return np.frombuffer(self.take(dtype.itemsize, what), dtype=dtype)[0].item()

    def fourcc(self, what: str) -> str:
        raw = bytes(self.take(4, what))
        return raw.decode("latin-1")

    def array(self, fmt: str, count: int, what: str) -> np.ndarray:
        dtype = np.dtype(fmt)
        if count < 0 or count > self.left // dtype.itemsize:  # before multiplying: no overflow, no allocation
            raise IndexFormatError(f"{what} declares {count} entries of {dtype.itemsize} bytes, "
                                   f"{self.left} bytes remain in the section")
        return np.frombuffer(self.take(count * dtype.itemsize, what), dtype=dtype)

    def vector(self, fmt: str, what: str) -> np.ndarray:
        """FAISS's READVECTOR: a u64 element count, then the elements."""
        return self.array(fmt, self.scalar("<u8", what + " length"), what)


def _header(r: _Reader, what: str) -> tuple[int, int]:
    """write_index_header: d, ntotal, two dummies, is_trained, metric (and metric_arg past L2)."""
    d = r.scalar("<i4", what + " d")
    ntotal = r.scalar("<i8", what + " ntotal")
    r.take(16 + 1, what + " header")
    metric = r.scalar("<i4", what + " metric")
    if metric != METRIC_INNER_PRODUCT:
        raise IndexFormatError(f"{what} uses metric {metric}, expected inner product ({METRIC_INNER_PRODUCT})")
    if d <= 0 or ntotal < 0:
        raise IndexFormatError(f"{what} declares d={d}, ntotal={ntotal}")
    return d, ntotal


def _expect(r: _Reader, what: str, *, d: int, ntotal: int) -> str:
    fourcc = r.fourcc(what + " type")
    if fourcc not in TOP_LEVEL:
        raise IndexFormatError(f"{what} has FAISS type {fourcc!r}, which kbc bundles do not carry "
                               f"(allowed: {', '.join(sorted(set(TOP_LEVEL.values())))})")
    got_d, got_n = _header(r, what)
    if (got_d, got_n) != (d, ntotal):
        raise IndexFormatError(f"{what} holds {got_n} x {got_d}-d vectors, expected {ntotal} x {d}")
    return fourcc


def _flat(r: _Reader, what: str, *, d: int, ntotal: int) -> None:
    """IndexFlat: READXBVECTOR, a count of floats, then ntotal x d of them."""
    n = r.scalar("<u8", what + " codes length")
    if n != ntotal * d:
        raise IndexFormatError(f"{what} codes hold {n} floats, expected {ntotal} x {d}")
    r.array("<f4", n, what + " codes")


def _hnsw(r: _Reader, *, ntotal: int) -> None:
    probas = r.vector("<f8", "HNSW assign_probas")
    cum = r.vector("<i4", "HNSW cum_nneighbor_per_level")
    levels_n = len(cum) - 1
    if not 1 <= levels_n <= MAX_HNSW_LEVELS or len(probas) > MAX_HNSW_LEVELS:
        raise IndexFormatError(f"HNSW declares {levels_n} levels (limit {MAX_HNSW_LEVELS})")
    # as int64: an int32 diff wraps, and [0, 2^31-1, -2^31+5] would pass as increasing
    if cum[0] != 0 or np.any(np.diff(cum.astype(np.int64)) < 0) or cum[-1] > MAX_HNSW_LINKS:
        raise IndexFormatError(f"HNSW neighbours per level are not increasing from 0 up to {MAX_HNSW_LINKS}")
    levels = r.vector("<i4", "HNSW levels")
    if len(levels) != ntotal or (ntotal and (levels.min() < 1 or levels.max() > levels_n)):
        raise IndexFormatError(f"HNSW levels are not {ntotal} values from 1 to {levels_n}")
    offsets = r.vector("<u8", "HNSW offsets")
    if len(offsets) != ntotal + 1 or offsets[0] != 0 or np.any(np.diff(offsets) != cum[levels].astype(np.uint64)):
        raise IndexFormatError("HNSW offsets disagree with the nodes' levels")
    neighbors = r.vector("<i4", "HNSW neighbors")
    if len(neighbors) != int(offsets[-1]):
        raise IndexFormatError(f"HNSW holds {len(neighbors)} neighbour slots, its offsets {int(offsets[-1])}")
    if len(neighbors) and (neighbors.min() < -1 or neighbors.max() >= ntotal):
        raise IndexFormatError(f"HNSW links name nodes beyond the {ntotal} vectors")
    entry, max_level = r.scalar("<i4", "HNSW entry_point"), r.scalar("<i4", "HNSW max_level")
    r.scalar("<i4", "HNSW efConstruction")
    ef = r.scalar("<i4", "HNSW efSearch")
    r.scalar("<i4", "HNSW upper_beam")
    if ntotal == 0:
        ok = entry == -1 and max_level == -1
    else:
        ok = 0 <= entry < ntotal and max_level == int(levels[entry]) - 1 == int(levels.max()) - 1
    if not ok:
        raise IndexFormatError(f"HNSW entry point {entry} / max level {max_level} do not fit the graph")
    if not 1 <= ef <= MAX_HNSW_EF:
        raise IndexFormatError(f"HNSW efSearch {ef} is outside 1..{MAX_HNSW_EF}")


def _pq(r: _Reader, *, d: int) -> int:
    """ProductQuantizer: d, M, nbits (size_t each), then d x 2^nbits centroid floats. Its code size."""
    pd, m, nbits = (r.scalar("<u8", f"PQ {k}") for k in ("d", "M", "nbits"))
    if pd != d or not 1 <= m <= d or d % m or not 1 <= nbits <= MAX_PQ_BITS:
        raise IndexFormatError(f"PQ of d={pd}, M={m}, nbits={nbits} does not fit {d}-d vectors "
                               f"(M must divide d, nbits 1..{MAX_PQ_BITS})")
    n = r.scalar("<u8", "PQ centroids length")
    if n != d << nbits:
        raise IndexFormatError(f"PQ centroids hold {n} floats, expected {d} x 2^{nbits}")
    r.array("<f4", n, "PQ centroids")
    return (m * nbits + 7) // 8


def _invlists(r: _Reader, *, nlist: int, code_size: int, ntotal: int) -> None:
    """ArrayInvertedLists ("ilar"): list sizes ("full" or "sprs"), then each list's codes and ids."""
    if r.fourcc("inverted lists type") != "ilar":
        raise IndexFormatError("inverted lists are not FAISS array lists ('ilar')")
    if r.scalar("<u8", "inverted lists nlist") != nlist or r.scalar("<u8", "inverted lists code size") != code_size:
        raise IndexFormatError("inverted lists disagree with the index's nlist or code size")
    kind = r.fourcc("inverted lists layout")
    raw = r.vector("<u8", "inverted list sizes")
    if kind == "full" and len(raw) == nlist:
        sizes = raw
    elif kind == "sprs" and len(raw) % 2 == 0:
        which, sizes = raw[0::2], raw[1::2]
        if len(which) and (which.max() >= nlist or np.any(np.diff(which.astype(np.int64)) <= 0)):
            raise IndexFormatError("sparse inverted list sizes name lists out of order or beyond nlist")
    else:
        raise IndexFormatError(f"inverted list sizes of layout {kind!r} do not fit {nlist} lists")
    total = int(sizes.astype(object).sum())  # Python ints: forged sizes must not wrap around
    if total != ntotal:
        raise IndexFormatError(f"inverted lists hold {total} entries, the index {ntotal}")
    if total * (code_size + 8) > r.left:
        raise IndexFormatError(f"inverted lists declare {total} entries, more than the section holds")
    ids = []
    for n in (int(s) for s in sizes if s):
        r.take(n * code_size, "inverted list codes")
        ids.append(r.array("<i8", n, "inverted list ids"))
    _check_ids(np.concatenate(ids) if ids else np.zeros(0, np.int64), ntotal, "inverted list")


def _check_ids(ids: np.ndarray, ntotal: int, what: str) -> None:
    """Every row exactly once: an id beyond the chunks would be returned as a chunk that does not exist."""
    if len(ids) and (ids.min() < 0 or ids.max() >= ntotal):
        raise IndexFormatError(f"{what} ids lie outside 0..{ntotal - 1}")
    if len(ids) != ntotal or (ntotal and np.bincount(ids, minlength=ntotal).max() != 1):
        raise IndexFormatError(f"{what} ids are not each of the {ntotal} rows once")


def _ivf(r: _Reader, fourcc: str, *, d: int, ntotal: int) -> None:
    nlist = r.scalar("<u8", "IVF nlist")
    nprobe = r.scalar("<u8", "IVF nprobe")
    if not 1 <= nlist <= MAX_IVF_LISTS or not 1 <= nprobe <= nlist:
        raise IndexFormatError(f"IVF declares nlist={nlist}, nprobe={nprobe} (nlist 1..{MAX_IVF_LISTS}, nprobe 1..nlist)")
    if _expect(r, "IVF quantizer", d=d, ntotal=nlist) != "IxFI":
        raise IndexFormatError("IVF quantizer is not a flat inner-product index")
    _flat(r, "IVF quantizer", d=d, ntotal=nlist)
    if r.scalar("<u1", "IVF direct map type") != 0 or len(r.vector("<i8", "IVF direct map")):
        raise IndexFormatError("IVF carries a direct map (kbc writes none)")
    if fourcc == "IwFl":
        code_size = d * 4
    else:
        if r.scalar("<u1", "IVFPQ by_residual") > 1:
            raise IndexFormatError("IVFPQ by_residual is not a boolean")
        code_size = r.scalar("<u8", "IVFPQ code size")
        if _pq(r, d=d) != code_size:
            raise IndexFormatError(f"IVFPQ code size {code_size} disagrees with its PQ")
    _invlists(r, nlist=nlist, code_size=code_size, ntotal=ntotal)


def check_index(data, *, count: int, dim: int) -> str:
    """Check serialised FAISS bytes against the bundle's `count` x `dim` vectors before FAISS reads
    them; return the index type (TOP_LEVEL's value) or raise IndexFormatError."""
    return _walk(_Reader(data), count=count, dim=dim)


def field_offsets(data, *, count: int, dim: int) -> dict[str, int]:
    """Where each scalar field of a valid index starts, by the name its errors use."""
    r = _Reader(data)
    _walk(r, count=count, dim=dim)
    return r.fields


def _walk(r: _Reader, *, count: int, dim: int) -> str:
    if len(r.data) > MAX_INDEX_BYTES:
        raise IndexFormatError(f"index section of {len(r.data)} bytes exceeds {MAX_INDEX_BYTES}")
    fourcc = _expect(r, "stored index", d=dim, ntotal=count)
    if fourcc == "IxFI":
        _flat(r, "stored index", d=dim, ntotal=count)
    elif fourcc == "IHNf":
        _hnsw(r, ntotal=count)
        if _expect(r, "HNSW storage", d=dim, ntotal=count) != "IxFI":
            raise IndexFormatError("HNSW storage is not a flat inner-product index")
        _flat(r, "HNSW storage", d=dim, ntotal=count)
    elif fourcc == "IxPq":
        code_size = _pq(r, d=dim)
        n = r.scalar("<u8", "PQ codes length")
        if n != count * code_size:
            raise IndexFormatError(f"PQ codes hold {n} bytes, expected {count} x {code_size}")
        r.take(n, "PQ codes")
        if r.scalar("<i4", "PQ search type") != 0:  # polysemous search types build extra tables
            raise IndexFormatError("PQ search type is not plain PQ search")
        r.take(1 + 4, "PQ search settings")
    else:
        _ivf(r, fourcc, d=dim, ntotal=count)
    if r.left:
        raise IndexFormatError(f"{r.left} bytes follow the index")
    return TOP_LEVEL[fourcc]


def read_index(data):
    """faiss.read_index over the checked bytes, fed in 1 MiB pieces from the mapped section: FAISS
    builds its own copy, so no second copy of the whole section is made first."""
    import faiss

    view = memoryview(data).cast("B")
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        piece = bytes(view[pos:pos + n])
        pos += len(piece)
        return piece

    return faiss.read_index(faiss.PyCallbackIOReader(read, 1 << 20))


def load_index(index_bytes, shape: tuple[int, int], index_manifest: dict):
    """The stored index as FAISS holds it, for the bundle's `shape` (count, dim) vectors, with the
    manifest's search parameters applied: every declared size checked first (check_index), then
    read, then its size and the parameters checked. BundleError naming the section otherwise."""
    import faiss

    from ..errors import BundleError

    n, dim = shape
    try:
        kind = check_index(index_bytes, count=n, dim=dim)
    except IndexFormatError as e:
        raise BundleError(str(e), section="index") from None
    try:
        index = read_index(index_bytes)
    except Exception as e:
        raise BundleError(f"stored index cannot be loaded by this FAISS: {str(e).splitlines()[0][:160]}",
                          section="index") from None
    if index.ntotal != n or index.d != dim:
        raise BundleError(f"stored index holds {index.ntotal} x {index.d}-d vectors, the bundle {n} x {dim}",
                          section="index")
    params = index_manifest.get("search_params") or {}
    if not isinstance(params, dict):
        raise BundleError("index.search_params is not an object", section="manifest")
    # what FAISS accepts on each type (it raises on efSearch for an IVF index, nprobe for HNSW, either for PQ)
    applies = {"nprobe": kind.startswith("IVF"), "efSearch": kind.startswith("HNSW")}
    for key, value in params.items():
        if key not in SEARCH_PARAM_LIMITS or not isinstance(value, int) or isinstance(value, bool) \
                or not 1 <= value <= SEARCH_PARAM_LIMITS[key]:
            raise BundleError(f"index.search_params: {key}={value!r} is not allowed (known: "
                              f"{', '.join(f'{k} 1..{v}' for k, v in SEARCH_PARAM_LIMITS.items())})",
                              section="manifest")
        if not applies[key]:
            raise BundleError(f"index.search_params: {key} does not apply to the stored {kind} index", section="manifest")
        faiss.ParameterSpace().set_index_parameter(index, key, value)
    return index
