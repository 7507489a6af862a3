"""libkbpack (runtimes/c) from Python through ctypes: open a bundle, search it, read chunks. The
searching is the C library's (the same code the `kbpack` tool, the JVM binding and an app run), so
this module adds no dependency: ctypes is in the standard library, and the arrays are numpy's.

    from kbpack_runtime.libkbpack import Bundle
    with Bundle("kb.kbpack", library="runtimes/c/build/libkbpack.so") as kb:
        for chunk_id, score in kb.search(vector, "How do I rotate the logs?", k=5):
            chunk = kb.chunk(chunk_id)     # {"text", "source_path", "page_start", ...}
        kb.search_pages(vector, "How do I rotate the logs?", k=3, mode="hybrid", where=["kind=pdf"])
        hits = kb.search(vector, "How do I rotate the logs?", k=5)
        strength, confident = kb.answer_strength(vector, hits[0][0])  # False: "no confident answer"

The library is `library`, else $KBPACK_LIBRARY, else libkbpack.so wherever the loader finds it
(make -C runtimes/c builds it). Every failure is a KbpackError carrying libkbpack's status and its
one-line message; a closed bundle, a vector of the wrong length and k < 1 are refused before C.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import numpy as np

MODES = {"default": 0, "dense": 1, "lexical": 2, "hybrid": 3}
STATUS = {1: "io", 2: "invalid", 3: "argument", 4: "not present", 5: "memory"}


class KbpackError(Exception):
    """libkbpack's error: .status "io", "invalid", "argument", "not present" or "memory" (kbp_status),
    or this module's "closed" (a closed Bundle used) and "library" (libkbpack cannot be loaded)."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


class _Error(ctypes.Structure):
    _fields_ = [("status", ctypes.c_int), ("part", ctypes.c_char * 33), ("message", ctypes.c_char * 256)]


class _String(ctypes.Structure):
    _fields_ = [("s", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    def text(self) -> str | None:
        return None if not self.s else ctypes.string_at(self.s, self.len).decode("utf-8", "replace")


class _Chunk(ctypes.Structure):  # kbpack.h's kbp_chunk, field for field
    _fields_ = [("id", ctypes.c_uint64), ("text", _String), ("context", _String), ("source_path", _String),
                ("source", ctypes.c_int64), ("seq", ctypes.c_int64), ("page_start", ctypes.c_int64),
                ("page_end", ctypes.c_int64), ("char_start", ctypes.c_int64), ("char_end", ctypes.c_int64),
                ("tokens", ctypes.c_int64), ("label_start", _String), ("label_end", _String), ("record", _String),
                ("fields", ctypes.c_uint)]


class _Hit(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("score", ctypes.c_double)]


MAX_PAGE_CHUNKS = 100  # kbpack.h's KBP_MAX_PAGE_CHUNKS


class _PageHit(ctypes.Structure):  # kbpack.h's kbp_page_hit
    _fields_ = [("score", ctypes.c_double), ("source", ctypes.c_int64), ("record", _String), ("page", ctypes.c_int64),
                ("n_chunks", ctypes.c_size_t), ("chunk_ids", ctypes.c_uint64 * MAX_PAGE_CHUNKS),
                ("chunk_scores", ctypes.c_double * MAX_PAGE_CHUNKS)]


_FIELDS = ("source", "seq", "page_start", "page_end", "char_start", "char_end", "tokens")  # KBP_FIELD_* bit order


def load(library: str | None = None) -> ctypes.CDLL:
    path = library or os.environ.get("KBPACK_LIBRARY") or ctypes.util.find_library("kbpack") or "libkbpack.so"
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise KbpackError("library", f"libkbpack: cannot load {path}: {e} (make -C runtimes/c; set KBPACK_LIBRARY)") from None
    p = ctypes.c_void_p
    lib.kbp_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(p), ctypes.POINTER(_Error)]
    lib.kbp_close.argtypes = [p]
    lib.kbp_last_error.argtypes, lib.kbp_last_error.restype = [p], ctypes.POINTER(_Error)
    lib.kbp_count.argtypes, lib.kbp_count.restype = [p], ctypes.c_uint64
    lib.kbp_dim.argtypes, lib.kbp_dim.restype = [p], ctypes.c_size_t
    lib.kbp_verify.argtypes = [p]
    floats, size = ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_size_t)
    lib.kbp_search_filtered.argtypes = [p, floats, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, p,
                                        ctypes.POINTER(_Hit), size]
    lib.kbp_search_pages_filtered.argtypes = [p, floats, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, p,
                                              ctypes.POINTER(_PageHit), size]
    lib.kbp_page_settings.argtypes = [p, size, ctypes.POINTER(ctypes.c_double), size]
    lib.kbp_filter_compile.argtypes = [p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_size_t, ctypes.POINTER(p)]
    lib.kbp_filter_matched.argtypes, lib.kbp_filter_matched.restype = [p], ctypes.c_uint64
    lib.kbp_filter_free.argtypes = [p]
    lib.kbp_chunk_get.argtypes = [p, ctypes.c_uint64, ctypes.POINTER(_Chunk)]
    lib.kbp_answer_strength.argtypes = [p, floats, ctypes.c_uint64, ctypes.POINTER(ctypes.c_double),
                                        ctypes.POINTER(ctypes.c_int)]
    lib.kbp_min_strength.argtypes = [p, ctypes.POINTER(ctypes.c_double)]
    return lib


class Bundle:
    def __init__(self, path: str | os.PathLike, *, library: str | None = None):
        self._lib = load(library)
        handle, err = ctypes.c_void_p(), _Error()
        if self._lib.kbp_open(os.fsencode(path), ctypes.byref(handle), ctypes.byref(err)) != 0:
            raise KbpackError(STATUS.get(err.status, "invalid"), err.message.decode("utf-8", "replace"))
        self._kb = handle
        self.count = int(self._lib.kbp_count(handle))
        self.dim = int(self._lib.kbp_dim(handle))

    def _live(self) -> ctypes.c_void_p:
        if self._kb is None:
            raise KbpackError("closed", "kbpack: the bundle is closed")
        return self._kb

    def _raise(self, status: int):
        err = self._lib.kbp_last_error(self._kb).contents
        raise KbpackError(STATUS.get(status, "invalid"), err.message.decode("utf-8", "replace"))

    def verify(self) -> None:
        status = self._lib.kbp_verify(self._live())
        if status:
            self._raise(status)

    def _query(self, vector, question, k: int, mode: str):
        if mode not in MODES or k < 1:
            raise KbpackError("argument", f"kbpack: search: mode {mode!r} k {k}: a mode of {sorted(MODES)} and k >= 1")
        v = None
        if vector is not None:
            v = np.ascontiguousarray(vector, dtype=np.float32)
            if v.shape != (self.dim,):
                raise KbpackError("argument", f"kbpack: search: the vector has shape {v.shape}, not ({self.dim},)")
        q = None if question is None else question.encode("utf-8", "surrogatepass")
        return v, (None if v is None else v.ctypes.data_as(ctypes.POINTER(ctypes.c_float))), q

    def _filter(self, where):
        """kbp_filter_compile of `where` (a condition or a list: "kind=pdf", "year>=2022",
        "path:manuals/**"), or None; the caller frees it."""
        if where is None:
            return None
        conditions = [where] if isinstance(where, str) else list(where)
        if not conditions or not all(isinstance(c, str) and "\0" not in c for c in conditions):
            raise KbpackError("argument", "kbpack: filter: conditions must be non-empty strings without NUL")
        array = (ctypes.c_char_p * len(conditions))(*(c.encode("utf-8", "surrogatepass") for c in conditions))
        f = ctypes.c_void_p()
        status = self._lib.kbp_filter_compile(self._kb, array, len(conditions), ctypes.byref(f))
        if status:
            self._raise(status)
        return f

    def search(self, vector, question: str | None, k: int = 5, mode: str = "default",
               where=None) -> list[tuple[int, float]]:
        """The k best (chunk id, score), best first: dense and hybrid need `vector` (dim float32),
        lexical and hybrid `question`; `where`, conditions every hit meets (FORMAT.md §2.10)."""
        kb = self._live()
        v, vp, q = self._query(vector, question, k, mode)
        room = max(1, min(k, self.count))
        hits, n = (_Hit * room)(), ctypes.c_size_t()
        f = self._filter(where)
        try:
            status = self._lib.kbp_search_filtered(kb, vp, q, room, MODES[mode], f, hits, ctypes.byref(n))
        finally:
            self._lib.kbp_filter_free(f)
        if status:
            self._raise(status)
        return [(int(hits[i].id), float(hits[i].score)) for i in range(n.value)]

    def search_pages(self, vector, question: str | None, k: int = 5, mode: str = "default", where=None) -> list[dict]:
        """The k best pages (FORMAT.md §2.8), best first: {"score", "source", "record", "page",
        "chunks": [(chunk id, score), ...]}; arguments as search's."""
        kb = self._live()
        v, vp, q = self._query(vector, question, k, mode)
        depth = ctypes.c_size_t()
        status = self._lib.kbp_page_settings(kb, ctypes.byref(depth), None, None)
        if status:
            self._raise(status)
        room = max(1, min(k, depth.value))  # at most page_depth pages come back, ~1.6 kB each
        pages, n = (_PageHit * room)(), ctypes.c_size_t()
        f = self._filter(where)
        try:
            status = self._lib.kbp_search_pages_filtered(kb, vp, q, room, MODES[mode], f, pages, ctypes.byref(n))
        finally:
            self._lib.kbp_filter_free(f)
        if status:
            self._raise(status)
        return [{"score": p.score, "source": int(p.source), "record": p.record.text(), "page": int(p.page),
                 "chunks": [(int(p.chunk_ids[j]), float(p.chunk_scores[j])) for j in range(p.n_chunks)]}
                for p in pages[:n.value]]

    def answer_strength(self, vector, first_id: int) -> tuple[float, bool | None]:
        """How strongly the bundle answers a question (FORMAT.md §2.11): (strength, confident), where
        strength is the inner product of the question's `vector` with chunk `first_id`'s stored
        vector (the first hit of a dense or hybrid search; a page's first chunk): the cosine, one
        meaning across questions, where a hybrid score is about 1 for the best of nothing. confident
        is False under the bundle's retrieval.min_strength ("no confident answer": the hits are
        still the best there are), True at or above it, None when the bundle records no threshold."""
        kb = self._live()
        _, vp, _ = self._query(vector, None, 1, "dense")
        if vp is None:
            raise KbpackError("argument", "kbpack: answer_strength: needs the question's vector")
        if not 0 <= first_id < self.count:
            raise KbpackError("argument", f"kbpack: answer_strength: chunk id {first_id} is out of range "
                                          f"(the bundle has {self.count} chunks)")
        strength, confident = ctypes.c_double(), ctypes.c_int()
        status = self._lib.kbp_answer_strength(kb, vp, first_id, ctypes.byref(strength), ctypes.byref(confident))
        if status:
            self._raise(status)
        return float(strength.value), None if confident.value < 0 else bool(confident.value)

    def min_strength(self) -> float | None:
        """The bundle's answer-strength threshold (manifest retrieval.min_strength), None when it
        records none (built with another embedder than kbc's default and no --min-score)."""
        kb = self._live()
        t = ctypes.c_double()
        status = self._lib.kbp_min_strength(kb, ctypes.byref(t))
        if status == 4:  # KBP_ERR_NOT_PRESENT: no threshold recorded
            return None
        if status:
            self._raise(status)
        return float(t.value)

    def chunk(self, i: int) -> dict:
        """Chunk i with its provenance: text, context, source_path, labels, record (None when absent)
        and the integer fields it holds (source, seq, page_start, ...)."""
        kb = self._live()
        if not 0 <= i < self.count:
            raise KbpackError("argument", f"kbpack: chunk: id {i} is out of range (the bundle has {self.count} chunks)")
        c = _Chunk()
        status = self._lib.kbp_chunk_get(kb, i, ctypes.byref(c))
        if status:
            self._raise(status)
        out = {"id": int(c.id)}
        for name in ("text", "context", "source_path", "label_start", "label_end", "record"):
            out[name] = getattr(c, name).text()
        out.update({name: int(getattr(c, name)) for bit, name in enumerate(_FIELDS) if c.fields & (1 << bit)})
        return out

    def close(self) -> None:
        if self._kb is not None:
            self._lib.kbp_close(self._kb)
            self._kb = None

    def __enter__(self) -> "Bundle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if getattr(self, "_kb", None) is not None:
            self.close()
