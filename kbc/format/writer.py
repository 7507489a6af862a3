"""Writes a .kbpack: BundleWriter streams sections to a temporary file beside the target, hashing as it
goes, then writes the table and the header and renames the file into place (kbc/format/layout.py has
the byte layout, schemas/FORMAT.md the spec). Importing it stays cheap: numpy, msgpack, zstandard."""

from __future__ import annotations

import glob
import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import msgpack
import numpy as np
import zstandard

from . import vectors as vec_enc
from ..errors import InputError
from .bm25 import LENGTHS_ENCODING as LEXICAL_LENGTHS, OFFSET_SECTIONS as LEXICAL_OFFSETS
from .layout import (BLOCKS_ENCODING, BLOCKS_SECTION, DTYPES, FORMAT_MAJOR, FORMAT_MINOR, HEADER_SIZE, INT64_MAX,
                     LAYOUTS, MAGIC, _ENTRY, _HEADER, SectionInfo, _canonical_json, _fixed_ascii, _pad)

# --------------------------------------------------------------------------- writer


class BundleWriter:
    """Streams a bundle to a temporary file beside `path` and renames it into place on `finish`.

    Chunks and their vectors arrive together through `add`; float vectors go straight to disk (the
    first section), chunk records are compressed in blocks into a spool file, so memory stays
    flat however large the corpus. int8 needs the whole corpus's range first: its float32 rows are
    spooled and quantised in `finish`; binary codes (`binary=True`) are spooled as they come.
    A killed or failed build leaves the previous file untouched.

    `layout="by-source"` (FORMAT.md §2.1, 1.8) starts a block wherever the source changes and keeps each
    block's source in the `chunk_blocks` table instead of in its records.
    """

    def __init__(self, path: str | os.PathLike, *, dim: int, dtype: str = "float32", binary: bool = False,
                 chunks_per_block: int = 64, zstd_level: int = 10, layout: str = "fixed"):
        self.path = Path(path)
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, not {layout!r}")
        if dim <= 0 or chunks_per_block <= 0:
            raise ValueError("dim and chunks_per_block must be positive")
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.is_dir():
            raise InputError(f"{self.path}: output directory {parent} does not exist")
        if self.path.is_dir():
            raise InputError(f"{self.path}: output path is a directory")
        self.dim = dim
        self.dtype_name = dtype
        self._encoding, self._dtype = DTYPES[dtype]
        self.chunks_per_block = chunks_per_block
        self.layout = layout
        self._cctx = zstandard.ZstdCompressor(level=zstd_level, write_content_size=True, write_checksum=False)
        _remove_stale_temporaries(parent, self.path.name)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=parent)
        except OSError as e:
            raise InputError(f"{self.path}: cannot write there ({e.strerror})") from None
        self._tmp_path = Path(tmp)
        try:  # an interrupt (SIGTERM unwinds as KeyboardInterrupt) from here on must not leave the temporary
            _lock(fd)  # held until this writer ends: a later build can tell a live temporary from a dead one
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a bundle is meant to be shared like any file
            self._f = os.fdopen(fd, "w+b")
            self._spool = tempfile.TemporaryFile(dir=parent)
            quantised = vec_enc.ENCODINGS[dtype].quantised
            self._float_spool = tempfile.TemporaryFile(dir=parent) if quantised else None
            self._binary_spool = tempfile.TemporaryFile(dir=parent) if binary else None
            self._f.write(b"\x00" * HEADER_SIZE)
        except BaseException:
            for close in (getattr(self, "_spool", None), getattr(self, "_float_spool", None),
                          getattr(self, "_binary_spool", None), getattr(self, "_f", None)):
                if close is not None:
                    close.close()
            if getattr(self, "_f", None) is None:  # until os.fdopen took it, the descriptor is ours to close
                os.close(fd)
            self._tmp_path.unlink(missing_ok=True)
            raise
        self._body = hashlib.sha256()
        self._sections: list[SectionInfo] = []
        self._pos = HEADER_SIZE
        self._vec_hash = hashlib.sha256()
        self._absmax = np.zeros(dim, dtype=np.float32)
        self._count = 0
        self._pending: list[dict] = []
        self._block_offsets = [0]
        self._block_table: list[int] = []  # by-source: first chunk id, source index, for each block
        self._pending_source: int | None = None
        self._closed = False

    # -- streaming input

    def add(self, chunks: Sequence[Mapping[str, Any]], vectors: np.ndarray) -> None:
        """Append chunk records and their vectors (one row each, in the same order)."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or vectors.shape[0] != len(chunks):
            raise ValueError(f"expected vectors of shape ({len(chunks)}, {self.dim}), got {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise ValueError("vectors contain NaN or infinity")
        largest = float(np.abs(vectors).max()) if vectors.size else 0.0
        if largest > vec_enc.LARGEST[self.dtype_name]:  # stored, it would be infinite: the reader refuses that
            raise ValueError(f"a vector value reaches {largest:.3g}, beyond what {self.dtype_name} vectors hold "
                             f"({vec_enc.LARGEST[self.dtype_name]:.3g})")
        by_source = self.layout == "by-source"
        if by_source:  # checked before anything is written: the block table holds what the records would
            for record in chunks:
                source = record.get("source")
                if not isinstance(source, int) or isinstance(source, bool) or not 0 <= source <= INT64_MAX:
                    raise ValueError(f"the by-source layout needs every chunk's source index (0 to 2^63-1), "
                                     f"not {source!r}")
        if self._float_spool is not None:
            block = np.ascontiguousarray(vectors, dtype="<f4")
            if len(block):
                np.maximum(self._absmax, np.abs(block).max(axis=0), out=self._absmax)
            self._float_spool.write(block.tobytes())
        else:
            raw = np.ascontiguousarray(vectors, dtype=self._dtype).tobytes()
            self._write_body(raw)
            self._vec_hash.update(raw)
        if self._binary_spool is not None:
            self._binary_spool.write(vec_enc.binary_codes(vectors).tobytes())
        for i, record in enumerate(chunks):
            record = dict(record)
            if by_source:
                source = record.pop("source")
                if self._pending and source != self._pending_source:
                    self._flush_block()
                if not self._pending:
                    self._block_table += [self._count + i, source]
                    self._pending_source = source
            self._pending.append(record)
            if len(self._pending) == self.chunks_per_block:
                self._flush_block()
        self._count += len(chunks)

    @property
    def count(self) -> int:
        return self._count

    def vectors_view(self) -> np.ndarray:
        """The vectors added so far, memory-mapped read-only from disk: as stored for float
        dtypes, the float32 originals for int8 (an index is trained on those)."""
        spool = self._float_spool
        (spool or self._f).flush()
        dtype = np.dtype("<f4") if spool is not None else self._dtype
        if self._count == 0:
            return np.zeros((0, self.dim), dtype=dtype)
        if spool is not None:
            return np.memmap(spool, dtype=dtype, mode="r", shape=(self._count, self.dim))
        return np.memmap(self._tmp_path, dtype=dtype, mode="r", offset=HEADER_SIZE,
                         shape=(self._count, self.dim))

    # -- finishing

    def finish(self, manifest: Mapping[str, Any], *, index: bytes | None = None, index_encoding: str = "faiss",
               extra_sections: Iterable[tuple[str, str, bytes]] = ()) -> Path:
        """Write the remaining sections, table and header; fsync; rename over `path`."""
        try:
            self._finish(manifest, index, index_encoding, list(extra_sections))
        except BaseException:
            self.abort()
            raise
        return self.path

    def _finish(self, manifest, index, index_encoding, extra_sections) -> None:
        if self._pending:
            self._flush_block()
        vectors_meta: dict[str, Any] = {}
        if self._float_spool is not None:
            scales = vec_enc.int8_scales(self._absmax)
            self._write_quantised(scales)
            vectors_meta["scales"] = vec_enc.SCALES_SECTION
        vec_len = self._pos - HEADER_SIZE
        self._sections.append(SectionInfo("vectors", self._encoding, HEADER_SIZE, vec_len, self._vec_hash.digest()))
        self._align()
        if self._float_spool is not None:
            self._add_bytes(vec_enc.SCALES_SECTION, "f32le", scales.tobytes())
        if self._binary_spool is not None:
            self._add_bytes(vec_enc.BINARY_SECTION, vec_enc.BINARY_ENCODING, self._binary_spool)
            vectors_meta["binary"] = {"section": vec_enc.BINARY_SECTION, "candidates": vec_enc.BINARY_CANDIDATES,
                                      "multiplier": vec_enc.BINARY_MULTIPLIER}
        self._align()

        self._spool.seek(0)
        chunk_hash = hashlib.sha256()
        start = self._pos
        while block := self._spool.read(1 << 20):
            chunk_hash.update(block)
            self._write_body(block)
        self._sections.append(SectionInfo("chunks", LAYOUTS[self.layout], start, self._pos - start, chunk_hash.digest()))
        self._spool.close()
        self._align()

        self._add_bytes("chunk_offsets", "u64le", np.asarray(self._block_offsets, dtype="<u8").tobytes())
        if self.layout == "by-source":
            self._add_bytes(BLOCKS_SECTION, BLOCKS_ENCODING, np.asarray(self._block_table, dtype="<u8").tobytes())
        if index is not None:
            self._add_bytes("index", index_encoding, bytes(index))
        for name, encoding, data in extra_sections:
            if self.layout == "by-source" and name in LEXICAL_OFFSETS and encoding == "u32le":
                # FORMAT.md §2.4 (1.8): lengths, which stay where they were when terms before them change
                offsets = np.frombuffer(bytes(data), dtype="<u4")
                encoding, data = LEXICAL_LENGTHS, np.diff(offsets, prepend=np.uint32(0)).astype("<u4").tobytes()
            self._add_bytes(name, encoding, data)

        full_manifest = dict(manifest)
        full_manifest["format"] = {"name": "kbpack", "major": FORMAT_MAJOR, "minor": FORMAT_MINOR}
        full_manifest["vectors"] = {"count": self._count, "dim": self.dim, "dtype": self.dtype_name, **vectors_meta}
        full_manifest["chunks"] = {"count": self._count, "block_size": self.chunks_per_block,
                                   "encoding": "msgpack", "compression": "zstd"}
        self._add_bytes("manifest", "json", _canonical_json(full_manifest))

        names = [s.name for s in self._sections]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate section names: {names}")
        table = b"".join(
            _ENTRY.pack(_fixed_ascii(s.name, 32), _fixed_ascii(s.encoding, 16), s.offset, s.length, s.sha256, b"\x00" * 32)
            for s in self._sections)
        self._align()
        table_offset = self._pos
        self._write_body(table)
        file_length = self._pos
        head = _HEADER.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR, len(self._sections), table_offset, file_length,
                            hashlib.sha256(table).digest(), self._body.digest(), b"\x00" * 32)
        head = head[:96] + hashlib.sha256(head[:96]).digest()
        self._f.seek(0)
        self._f.write(head)
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self._tmp_path, self.path)
        self._closed = True
        _fsync_dir(self.path.parent)

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        for handle in (self._f, self._spool, self._float_spool, self._binary_spool):
            try:
                if handle is not None:
                    handle.close()
            except OSError:
                pass
        try:
            self._tmp_path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> "BundleWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._closed:
            self.abort()

    # -- internals

    def _write_body(self, data: bytes) -> None:
        self._f.write(data)
        self._body.update(data)
        self._pos += len(data)

    def _align(self) -> None:
        pad = _pad(self._pos)
        if pad:
            self._write_body(b"\x00" * pad)

    def _add_bytes(self, name: str, encoding: str, data) -> None:
        """A section from bytes, or streamed from a path or an open spool file (an encoder graph
        is tens of MB, binary codes grow with the corpus)."""
        self._align()
        start = self._pos
        if isinstance(data, (bytes, bytearray, memoryview)):
            self._write_body(data)
            digest = hashlib.sha256(data).digest()
        else:
            h = hashlib.sha256()
            f = data if hasattr(data, "read") else open(data, "rb")
            try:
                f.seek(0)
                while block := f.read(1 << 20):
                    h.update(block)
                    self._write_body(block)
            finally:
                if f is not data:
                    f.close()
            digest = h.digest()
        self._sections.append(SectionInfo(name, encoding, start, self._pos - start, digest))

    def _write_quantised(self, scales: np.ndarray) -> None:
        """The int8 rows from the float32 spool, a block at a time (memory stays flat)."""
        self._float_spool.flush()
        self._float_spool.seek(0)
        rows = 1 << 14
        while raw := self._float_spool.read(rows * self.dim * 4):
            block = np.frombuffer(raw, dtype="<f4").reshape(-1, self.dim)
            data = vec_enc.quantise_int8(block, scales).tobytes()
            self._write_body(data)
            self._vec_hash.update(data)
        self._float_spool.close()

    def _flush_block(self) -> None:
        frame = self._cctx.compress(msgpack.packb(self._pending, use_bin_type=True))
        self._spool.write(frame)
        self._block_offsets.append(self._block_offsets[-1] + len(frame))
        self._pending = []


def _lock(fd: int) -> bool:
    """Take an exclusive advisory lock without waiting; False if another process holds it."""
    try:
        import fcntl
    except ImportError:  # no advisory locks here: never treat a temporary file as stale
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _remove_stale_temporaries(parent: Path, name: str) -> None:
    """Temporary bundles of killed writers (SIGKILL, power loss) hold megabytes of vectors: remove
    those whose writer is gone (their lock is free); a running build keeps its own."""
    for stale in parent.glob(f".{glob.escape(name)}.*.tmp"):
        try:
            fd = os.open(stale, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode) and _lock(fd):
                stale.unlink()
        except OSError:
            pass
        finally:
            os.close(fd)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bundle(path: str | os.PathLike, *, manifest: Mapping[str, Any], vectors: np.ndarray,
                 chunks: Sequence[Mapping[str, Any]], index: bytes | None = None, dtype: str = "float32",
                 binary: bool = False, chunks_per_block: int = 64, layout: str = "fixed",
                 extra_sections: Iterable[tuple[str, str, bytes]] = ()) -> Path:
    """Write a whole bundle from plain arrays, texts and metadata in one call (float32 vectors
    in; `dtype` and `binary` say how they are stored, FORMAT.md §2.7)."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise ValueError("vectors must be a 2-D array")
    with BundleWriter(path, dim=vectors.shape[1], dtype=dtype, binary=binary, chunks_per_block=chunks_per_block,
                      layout=layout) as w:
        w.add(chunks, vectors)
        return w.finish(manifest, index=index, extra_sections=extra_sections)
