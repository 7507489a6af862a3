"""Reads a .kbpack: Bundle opens a file from anywhere and checks sizes, types and checksums before it
trusts a byte (schemas/FORMAT.md §5). The byte layout is kbc/format/layout.py, the writer
kbc/format/writer.py (BundleWriter and write_bundle are importable from here too).

Importing this module must stay cheap: numpy, msgpack and zstandard only. Never torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import stat
from typing import Any, Iterator, Mapping

import msgpack
import numpy as np
import zstandard
from kbpack_runtime import guard as encoder_guard  # one copy, shared with the device runtime

from . import vectors as vec_enc
from ..errors import BundleError, InputError
from .layout import (ALIGN, BLOCKS_ENCODING, BLOCKS_SECTION, DTYPES, ENTRY_SIZE, FORMAT_MAJOR, FORMAT_MINOR, HEADER_SIZE,
                     INT64_MAX, LAYOUTS, MAGIC, MAX_BLOCK_BYTES, MAX_JSON_SECTION_BYTES, MAX_MANIFEST_BYTES,
                     MAX_PROMPT_CHARS, MAX_SECTIONS, REQUIRED_SECTIONS,
                     _ENTRY, _HEADER, SectionInfo, _canonical_json)  # noqa: F401 (the names importers knew here)
from .writer import BundleWriter, _fsync_dir, write_bundle  # noqa: F401 (importable from here as before)

# --------------------------------------------------------------------------- reader


class Bundle:
    """A validated, memory-mapped view of a .kbpack file.

    `open` checks the header, the table and the manifest before returning. Every other section is
    checked against its sha256 the first time it is used, so opening a large bundle costs almost
    nothing and nothing unverified is ever handed out. `verify()` checks everything at once.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self._checked: set[str] = set()
        self._block_cache: tuple[int, list] | None = None
        self._firsts: np.ndarray | None = None  # by-source: each block's first chunk id, once checked
        try:
            # non-blocking: a FIFO named as a bundle must not hang the open; refused just below
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError:
            raise InputError(f"{self.path}: no such file") from None
        except IsADirectoryError:
            raise InputError(f"{self.path}: is a directory, not a bundle") from None
        except OSError as e:
            raise InputError(f"{self.path}: cannot open: {e.strerror}") from None
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise InputError(f"{self.path}: is a directory, not a bundle")
            if not stat.S_ISREG(st.st_mode):
                raise InputError(f"{self.path}: not a regular file (a FIFO or device), not a bundle")
            size = st.st_size
            if size < HEADER_SIZE:
                raise self._err("header", f"file is {size} bytes, shorter than the {HEADER_SIZE}-byte header (truncated or not a bundle)")
            self._mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except IsADirectoryError:
            raise InputError(f"{self.path}: is a directory, not a bundle") from None
        finally:
            os.close(fd)
        self.size = size
        try:
            self._read_header()
            self._read_table()
            self._read_manifest()
            self._screen_encoder()
        except BaseException:
            self.close()
            raise

    # -- structure

    def _err(self, section: str, message: str) -> BundleError:
        return BundleError(message, section=section, path=self.path)

    def _read_header(self) -> None:
        head = self._mm[:HEADER_SIZE]
        (magic, major, minor, count, table_offset, file_length,
         table_sha, body_sha, header_sha) = _HEADER.unpack(head)
        if magic != MAGIC:
            raise self._err("header", f"bad magic {magic!r}: not a .kbpack file")
        if major != FORMAT_MAJOR:
            if major > FORMAT_MAJOR:
                raise self._err("header", f"format version {major}.{minor} is newer than this reader supports "
                                          f"({FORMAT_MAJOR}.{FORMAT_MINOR}); upgrade kbc")
            raise self._err("header", f"format version {major}.{minor} is not supported by this reader ({FORMAT_MAJOR}.{FORMAT_MINOR})")
        if hashlib.sha256(head[:96]).digest() != header_sha:
            raise self._err("header", "header checksum mismatch: the header is damaged")
        if file_length != self.size:
            raise self._err("file", f"file is {self.size} bytes but its header says {file_length}: "
                                    f"{'truncated' if self.size < file_length else 'trailing bytes added'}")
        if count > MAX_SECTIONS:
            raise self._err("header", f"section count {count} exceeds the limit of {MAX_SECTIONS}")
        table_length = count * ENTRY_SIZE
        if table_offset % ALIGN or table_offset < HEADER_SIZE or table_offset + table_length != file_length:
            raise self._err("header", f"table at offset {table_offset} with {count} entries does not end at the end of the file")
        self.major, self.minor = major, minor
        self.section_count = count
        self.table_offset = table_offset
        self._table_sha, self._body_sha = table_sha, body_sha

    def _read_table(self) -> None:
        table = self._mm[self.table_offset:self.table_offset + self.section_count * ENTRY_SIZE]
        if hashlib.sha256(table).digest() != self._table_sha:
            raise self._err("table", "section table checksum mismatch: the table is damaged")
        sections: dict[str, SectionInfo] = {}
        for i in range(self.section_count):
            raw_name, raw_enc, offset, length, sha, reserved = _ENTRY.unpack_from(table, i * ENTRY_SIZE)
            name = _read_fixed_ascii(raw_name)
            encoding = _read_fixed_ascii(raw_enc)
            if name is None or encoding is None:
                raise self._err("table", f"entry {i} has a malformed name or encoding")
            if reserved.strip(b"\x00"):
                raise self._err("table", f"entry {i} ({name}) has non-zero reserved bytes")
            if name in sections:
                raise self._err("table", f"section {name!r} appears twice")
            if offset % ALIGN or offset < HEADER_SIZE or offset + length > self.table_offset:
                raise self._err(name, f"offset {offset} / length {length} lies outside the data area or is misaligned")
            sections[name] = SectionInfo(name, encoding, offset, length, sha)
        ordered = sorted(sections.values(), key=lambda s: s.offset)
        for a, b in zip(ordered, ordered[1:]):
            if a.offset + a.length > b.offset:
                raise self._err(b.name, f"overlaps section {a.name!r}")
        for required in REQUIRED_SECTIONS:
            if required not in sections:
                raise self._err("table", f"required section {required!r} is missing")
        self.sections = sections

    def _read_manifest(self) -> None:
        info = self.sections["manifest"]
        if info.encoding != "json":
            raise self._err("manifest", f"unknown encoding {info.encoding!r}")
        if info.length > MAX_MANIFEST_BYTES:
            raise self._err("manifest", f"{info.length} bytes exceeds the {MAX_MANIFEST_BYTES}-byte limit")
        manifest = self._load_json("manifest")
        if not isinstance(manifest, dict):
            raise self._err("manifest", "is not a JSON object")
        try:
            fmt = manifest["format"]
            if (fmt["major"], fmt["minor"]) != (self.major, self.minor):
                raise self._err("manifest", f"format {fmt['major']}.{fmt['minor']} disagrees with header {self.major}.{self.minor}")
            vec = manifest["vectors"]
            count, dim, dtype_name = vec["count"], vec["dim"], vec["dtype"]
            chunks = manifest["chunks"]
            block_size = chunks["block_size"]
            if chunks["count"] != count:
                raise self._err("manifest", f"chunk count {chunks['count']} differs from vector count {count}")
        except (KeyError, TypeError) as e:
            raise self._err("manifest", f"missing or malformed field {e}") from None
        # at most 2^64-1, as libkbpack holds them: a block_size of 10^30 (one block, whatever the
        # count) verified and answered here where libkbpack refused it (issue 43)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v < 1 << 64 for v in (count, dim, block_size)):
            raise self._err("manifest", "counts, dim and block_size must be integers")
        if count < 0 or dim <= 0 or block_size <= 0:
            raise self._err("manifest", "counts must be >= 0, dim and block_size > 0")
        if not isinstance(dtype_name, str) or dtype_name not in DTYPES:
            raise self._err("manifest", f"unknown vector dtype {dtype_name!r}")
        encoding, dtype = DTYPES[dtype_name]
        vinfo = self.sections["vectors"]
        if vinfo.encoding != encoding:
            raise self._err("vectors", f"encoding {vinfo.encoding!r} disagrees with manifest dtype {dtype_name}")
        if vinfo.length != count * dim * dtype.itemsize:
            raise self._err("vectors", f"length {vinfo.length} != {count} x {dim} x {dtype.itemsize} bytes")
        self._check_vector_sections(vec, count, dim, dtype_name)
        n_blocks = math.ceil(count / block_size)
        chunks_encoding = self.sections["chunks"].encoding
        by_source = chunks_encoding == LAYOUTS.get("by-source")
        if by_source:  # FORMAT.md §2.1: the block table says how many blocks there are
            n_blocks = self._block_table_shape(count)
        oinfo = self.sections["chunk_offsets"]
        if oinfo.encoding != "u64le" or oinfo.length != (n_blocks + 1) * 8:
            raise self._err("chunk_offsets", f"expected {n_blocks + 1} u64le entries, found {oinfo.length} bytes ({oinfo.encoding})")
        if chunks_encoding not in LAYOUTS.values():
            raise self._err("chunks", f"unknown encoding {chunks_encoding!r}")
        if not by_source and BLOCKS_SECTION in self.sections:
            raise self._err(BLOCKS_SECTION, f"present although the chunks are not by source (encoding {chunks_encoding!r})")
        for key, want in _MANIFEST_TYPES.items():
            if key in manifest and not isinstance(manifest[key], want):
                raise self._err("manifest", f"{key!r} is {type(manifest[key]).__name__}, expected "
                                            f"{'an object' if want is dict else 'an array'}")
        for entry in manifest.get("sources", []):
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                raise self._err("manifest", "every entry of 'sources' must be an object with a 'path' string")
        embedder = manifest.get("embedder", {})
        for key in ("query_prompt", "document_prompt"):
            prompt = embedder.get(key, "")
            if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS:
                # every query is tokenised with the prompt: a 30 MB one aborts the tokenizer
                raise self._err("manifest", f"embedder.{key} must be a string of at most {MAX_PROMPT_CHARS} characters")
        recorded_dim = embedder.get("dim", dim)
        if recorded_dim != dim:
            raise self._err("manifest", f"embedder.dim {recorded_dim!r} disagrees with the {dim}-d vectors")
        self.manifest = manifest
        self.count, self.dim, self.dtype = count, dim, dtype
        self.block_size, self.n_blocks = block_size, n_blocks
        self.layout = "by-source" if by_source else "fixed"

    def _block_table_shape(self, count: int) -> int:
        """The by-source layout's `chunk_blocks` section: present, u64le pairs, one block per chunk at
        most and at least one when there are chunks. Its values are checked on first use (_firsts_checked)."""
        info = self.sections.get(BLOCKS_SECTION)
        if info is None:
            raise self._err(BLOCKS_SECTION, "missing although the chunks are by source (encoding 'zstd-msgpack-src')")
        n_blocks = info.length // 16
        if info.encoding != BLOCKS_ENCODING or info.length % 16 or n_blocks > count or (count > 0) != (n_blocks > 0):
            raise self._err(BLOCKS_SECTION, f"expected 1 to {count} pairs of u64le (none for no chunks), found "
                                            f"{info.length} bytes ({info.encoding})")
        return n_blocks

    def _check_vector_sections(self, vec: dict, count: int, dim: int, dtype_name: str) -> None:
        """int8's scales and the optional binary codes (1.4): present, typed and sized as declared."""
        if vec_enc.ENCODINGS[dtype_name].quantised:
            if vec.get("scales") != vec_enc.SCALES_SECTION:
                raise self._err("manifest", f"vectors.scales must name the {vec_enc.SCALES_SECTION!r} section for {dtype_name} vectors")
            info = self.sections.get(vec_enc.SCALES_SECTION)
            if info is None:
                raise self._err(vec_enc.SCALES_SECTION, f"missing although the vectors are {dtype_name}")
            if info.encoding != "f32le" or info.length != dim * 4:
                raise self._err(vec_enc.SCALES_SECTION, f"expected {dim} f32le values, found {info.length} bytes ({info.encoding})")
        binary = vec.get("binary")
        if binary is None:
            return
        if not isinstance(binary, dict) or binary.get("section") != vec_enc.BINARY_SECTION:
            raise self._err("manifest", f"vectors.binary must be an object naming the {vec_enc.BINARY_SECTION!r} section")
        for key, limit in vec_enc.BINARY_LIMITS.items():
            value = binary.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
                raise self._err("manifest", f"vectors.binary.{key} must be an integer from 1 to {limit}, not {value!r}")
        info = self.sections.get(vec_enc.BINARY_SECTION)
        want = count * vec_enc.binary_row_bytes(dim)
        if info is None:
            raise self._err(vec_enc.BINARY_SECTION, "missing although the manifest names it")
        if info.encoding != vec_enc.BINARY_ENCODING or info.length != want:
            raise self._err(vec_enc.BINARY_SECTION, f"expected {want} bytes of {vec_enc.BINARY_ENCODING}, "
                                                    f"found {info.length} ({info.encoding})")
        if "index" in self.sections:  # the codes are the index: two answers to one search would disagree
            raise self._err("index", "a bundle with binary codes stores no FAISS index (FORMAT.md §2.7)")

    def _section(self, name: str) -> memoryview:
        """Bytes of a section, checked against its sha256 on first use."""
        info = self.sections[name]
        view = memoryview(self._mm)[info.offset:info.offset + info.length]
        if name not in self._checked:
            if hashlib.sha256(view).digest() != info.sha256:
                view.release()
                raise self._err(name, "sha256 mismatch: section content is damaged")
            self._checked.add(name)
        return view

    def _load_json(self, name: str) -> Any:
        info = self.sections[name]
        if info.length > MAX_JSON_SECTION_BYTES:
            raise self._err(name, f"{info.length} bytes exceeds the JSON section limit")
        try:
            return json.loads(bytes(self._section(name)).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise self._err(name, f"invalid JSON: {e}") from None
        except RecursionError:
            raise self._err(name, "invalid JSON: nested too deeply") from None

    # -- public access

    @property
    def dtype_name(self) -> str:
        return self.manifest["vectors"]["dtype"]

    @property
    def stored_vectors(self) -> np.ndarray:
        """The vectors section as stored: a read-only (count, dim) array over the mapped file."""
        view = self._section("vectors")
        return np.frombuffer(view, dtype=self.dtype).reshape(self.count, self.dim)

    @property
    def vectors(self) -> np.ndarray:
        """The vectors as numbers to score with: the mapped array itself for float dtypes (no copy),
        dequantised float32 for int8 (made once; `vector_rows` reads a few without that)."""
        scales = self.scales()
        if scales is None:
            return self.stored_vectors
        cached = getattr(self, "_dequantised", None)
        if cached is None:
            cached = self._dequantised = vec_enc.dequantise(self.stored_vectors, scales)
            cached.flags.writeable = False
        return cached

    def vector_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as float32, without dequantising the whole matrix."""
        return vec_enc.dequantise(self.stored_vectors[start:stop], self.scales())

    def scales(self) -> np.ndarray | None:
        """int8's per-dimension scales (1.4), checked >= 0 with 128 x scale a finite float32 (so
        every value a row's bytes stand for is a number); None for float vectors."""
        if not vec_enc.ENCODINGS[self.dtype_name].quantised:
            return None
        scales = np.frombuffer(self._section(vec_enc.SCALES_SECTION), dtype="<f4")
        with np.errstate(over="ignore", invalid="ignore"):
            largest = scales * np.float32(128)
        if not (np.isfinite(largest) & (scales >= 0)).all():
            raise self._err(vec_enc.SCALES_SECTION, "holds a negative, NaN or too large scale (128 x scale must be a finite float32)")
        return scales

    def binary_index(self) -> vec_enc.BinaryIndex | None:
        """The binary codes that make dense search two-stage (1.4), or None."""
        meta = self.manifest["vectors"].get("binary")
        if meta is None:
            return None
        codes = np.frombuffer(self._section(vec_enc.BINARY_SECTION), dtype=np.uint8)
        codes = codes.reshape(self.count, vec_enc.binary_row_bytes(self.dim))
        return vec_enc.BinaryIndex(codes, candidates=meta["candidates"], multiplier=meta["multiplier"])

    @property
    def sources(self) -> list[dict]:
        return self.manifest.get("sources", [])

    def source_path(self, chunk: Mapping[str, Any]) -> str:
        """The relative path of the file a chunk came from ("?" if its source index is out of range)."""
        src, sources = chunk.get("source"), self.sources
        return sources[src]["path"] if isinstance(src, int) and 0 <= src < len(sources) else "?"

    def index_bytes(self) -> memoryview | None:
        """The stored FAISS index, only when declared as one: bytes are never handed to FAISS on the
        strength of the section's name alone."""
        if "index" not in self.sections:
            return None
        if self.sections["index"].encoding != "faiss":
            raise self._err("index", f"unknown encoding {self.sections['index'].encoding!r}, expected 'faiss'")
        return self._section("index")

    def section_json(self, name: str) -> Any:
        """Decode an optional JSON section (None when absent)."""
        if name not in self.sections:
            return None
        if self.sections[name].encoding != "json":
            raise self._err(name, f"unexpected encoding {self.sections[name].encoding!r}")
        return self._load_json(name)

    def probes(self):
        """The embedder probes (format 1.1): a ProbeSet, or None for bundles without them."""
        if "probes" not in self.sections:
            return None
        from .probes import ProbeSet

        meta = self.section_json("probes")
        if not isinstance(meta, dict) or not isinstance(meta.get("probes"), list) or not all(
                isinstance(p, dict) and isinstance(p.get("text"), str) for p in meta["probes"]):
            raise self._err("probes", "malformed: expected an object with a list of {text} probes")
        # FORMAT.md §2.3: every field an engine reads has its type, so a verified bundle's probes are
        # all usable (libkbpack's load_probe_json checks the same, in the same words)
        for i, p in enumerate(meta["probes"]):
            if ("kind" in p and not isinstance(p["kind"], str)) or ("tokens" in p and not _is_count(p["tokens"])):
                raise self._err("probes", f"probe {i}: kind must be a string and tokens an integer >= 0")
        for key in ("prompt", "role"):
            if key in meta and not isinstance(meta[key], str):
                raise self._err("probes", f"{key} is not a string")
        if ("max_seq_length" in meta and not (_is_count(meta["max_seq_length"]) and meta["max_seq_length"] >= 1)) or (
                "version" in meta and not _is_count(meta["version"])):
            raise self._err("probes", "version and max_seq_length must be integers (max_seq_length >= 1)")
        threshold = meta.get("threshold")
        if "threshold" in meta and not (isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
                                        and math.isfinite(threshold) and -1 <= threshold <= 1):
            raise self._err("probes", "threshold must be a number from -1 to 1 (a cosine)")
        n = len(meta["probes"])
        info = self.sections.get("probe_vectors")
        if info is None:
            raise self._err("probe_vectors", "missing although a probes section is present")
        if info.encoding != "f32le" or info.length != n * self.dim * 4:
            raise self._err("probe_vectors", f"expected {n} x {self.dim} f32le, found {info.length} bytes ({info.encoding})")
        vectors = np.frombuffer(self._section("probe_vectors"), dtype="<f4").reshape(n, self.dim)
        return ProbeSet(meta, vectors)

    def encoder(self) -> dict | None:
        """The query encoder stored with `kbc build --with-encoder` (format 1.3): {"meta": the
        manifest's `encoder` object, "graph": the ONNX bytes, "tokenizer": tokenizer.json's text},
        checksummed; None when the bundle has none."""
        meta = self.manifest.get("encoder")
        if meta is None:
            return None
        if not isinstance(meta, dict) or not all(isinstance(meta.get(k), str) for k in ("graph", "tokenizer")):
            raise self._err("manifest", "encoder: expected an object naming its graph and tokenizer sections")
        self._check_encoder_record(meta)
        for key, encoding in (("graph", "onnx"), ("tokenizer", "json")):
            name = meta[key]
            if name not in self.sections:
                raise self._err(name, f"encoder {key} section is missing")
            if self.sections[name].encoding != encoding:
                raise self._err(name, f"encoding {self.sections[name].encoding!r}, expected {encoding!r}")
        graph = self._section(meta["graph"])
        if hashlib.sha256(graph).hexdigest() != meta.get("graph_sha256"):
            raise self._err(meta["graph"], "differs from the manifest's encoder.graph_sha256")
        # the encoder must be the one that made the vectors, run the way the embedder record says
        embedder = self.manifest.get("embedder")
        embedder = embedder if isinstance(embedder, dict) else {}
        runtime = embedder.get("runtime") if isinstance(embedder.get("runtime"), dict) else {}
        if not _same_setting(meta.get("graph_sha256"), runtime.get("graph_sha256")):
            raise self._err("manifest", "encoder.graph_sha256 disagrees with embedder.runtime.graph_sha256")
        for key in ("query_prompt", "max_seq_length", "do_lower_case", "precision"):
            if not _same_setting(meta.get(key), embedder.get(key)):
                raise self._err("manifest", f"encoder.{key} disagrees with embedder.{key}")
        # the graph and tokenizer are code and data a bundle's author wrote (FORMAT.md §5.1)
        try:
            encoder_guard.check_graph(graph)
        except encoder_guard.EncoderRefusal as e:
            raise self._err(meta["graph"], str(e)) from None
        tokenizer = self._tokenizer_bytes(meta["tokenizer"], checked=True)
        try:
            encoder_guard.check_tokenizer(tokenizer)
        except encoder_guard.EncoderRefusal as e:
            raise self._err(meta["tokenizer"], str(e)) from None
        return {"meta": meta, "graph": graph, "tokenizer": tokenizer.decode("utf-8")}

    def _check_encoder_record(self, meta: dict) -> None:
        """The encoder object as manifest.schema.json gives it, every field of its type and range, so an
        engine reading a verified bundle's encoder record finds what the spec promises (libkbpack's
        check_encoder_record makes the same checks, in the same words)."""
        def fail(message: str):
            raise self._err("manifest", message)

        def flag(v) -> bool:
            return isinstance(v, bool)

        if meta.get("format") != "onnx":
            fail('encoder.format must be "onnx"')
        if meta.get("precision") not in ("float32", "int8"):
            fail('encoder.precision must be "float32" or "int8"')
        inputs = meta.get("inputs")
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            fail("encoder.inputs must be a list of strings")
        for key, required in (("output", True), ("query_prompt", True), ("pooling", False), ("truncation", False),
                              ("batching", False)):
            if (key in meta or required) and not isinstance(meta.get(key), str):
                fail(f"encoder.{key} must be a string")
        if len(meta["query_prompt"]) > MAX_PROMPT_CHARS:
            fail(f"encoder.query_prompt must be a string of at most {MAX_PROMPT_CHARS} characters")
        if not flag(meta.get("do_lower_case")):
            fail("encoder.do_lower_case must be true or false")
        if "normalized" in meta and not flag(meta["normalized"]):
            fail("encoder.normalized must be true or false")
        if not (_is_count(meta.get("max_seq_length")) and meta["max_seq_length"] >= 1):
            fail("encoder.max_seq_length must be an integer >= 1")
        if "opset" in meta and not _is_count(meta["opset"]):
            fail("encoder.opset must be an integer >= 0")

    def _tokenizer_bytes(self, name: str, *, checked: bool) -> bytes:
        info = self.sections[name]
        if info.length > encoder_guard.MAX_TOKENIZER_BYTES:
            raise self._err(name, f"{info.length} bytes exceeds the {encoder_guard.MAX_TOKENIZER_BYTES}-byte "
                                  "tokenizer limit")
        if checked:
            return bytes(self._section(name))
        return bytes(self._mm[info.offset:info.offset + info.length])

    def _screen_encoder(self) -> None:
        """At open: the encoder's graph and tokenizer checked as `encoder()` checks them, but
        without hashing the graph first (a few ms for a 90 MB graph: headers are read, weights
        skipped), so that no command reads a bundle whose encoder would be refused. On a refusal the
        full check runs, so the first problem is named in `--verify`'s order (encoding, checksum,
        record, then the refusal)."""
        meta = self.manifest.get("encoder")
        if not isinstance(meta, dict):
            return  # malformed records are `--verify`'s to name
        graph, tokenizer = meta.get("graph"), meta.get("tokenizer")
        if not (isinstance(graph, str) and isinstance(tokenizer, str) and graph in self.sections
                and tokenizer in self.sections):
            return
        info = self.sections[graph]
        view = memoryview(self._mm)[info.offset:info.offset + info.length]
        try:
            encoder_guard.check_graph(view)
            encoder_guard.check_tokenizer(self._tokenizer_bytes(tokenizer, checked=False))
            refused = False
        except (encoder_guard.EncoderRefusal, BundleError):
            refused = True
        finally:
            view.release()
        if refused:
            self.encoder()  # raises: it refuses the same bytes, or something before them
            raise self._err(graph, "encoder refused")  # pragma: no cover

    def lexical(self):
        """The BM25 index over the chunks (format 1.2): a LexicalIndex, or None when absent."""
        from .bm25 import ENCODINGS, LENGTHS_ENCODING, OFFSET_SECTIONS, SECTIONS, LexicalFormatError, LexicalIndex

        meta = self.manifest.get("lexical")
        present = [n for n in SECTIONS if n in self.sections]
        if meta is None and not present:
            return None
        if meta is None or len(present) != len(SECTIONS):
            missing = [n for n in SECTIONS if n not in self.sections] or ["manifest.lexical"]
            raise self._err(missing[0], "lexical index is incomplete: missing " + ", ".join(missing))
        lengths = frozenset(n for n in OFFSET_SECTIONS if self.sections[n].encoding == LENGTHS_ENCODING)  # 1.8
        for name in SECTIONS:
            if self.sections[name].encoding != ENCODINGS[name] and name not in lengths:
                raise self._err(name, f"encoding {self.sections[name].encoding!r}, expected {ENCODINGS[name]!r}")
        if not isinstance(meta, dict):
            raise self._err("manifest", "lexical: not an object")
        try:
            return LexicalIndex(meta, {n: self._section(n) for n in SECTIONS}, count=self.count, lengths=lengths)
        except LexicalFormatError as e:
            raise self._err(e.section, str(e)) from None

    def attributes(self):
        """The document attributes (format 1.7, FORMAT.md §2.10): a checked AttributeTable, or None
        for a bundle without them. Checked in libkbpack's order (attributes.c): the pairing of the
        manifest object and the section, the keys, the section's encoding, size and checksum, its rows."""
        from .attributes import SECTION, AttributeFormatError, AttributeTable

        if getattr(self, "_attributes", None) is not None:
            return self._attributes
        meta = self.manifest.get("attributes")
        if meta is None and SECTION not in self.sections:
            return None
        if meta is None:
            raise self._err(SECTION, "present although the manifest has no attributes object")
        try:
            keys = AttributeTable.parse_keys(meta)
            info = self.sections.get(SECTION)
            if info is None:
                raise self._err(SECTION, "missing although the manifest names it")
            if info.encoding != "json":
                raise self._err(SECTION, f"encoding {info.encoding!r}, expected 'json'")
            if info.length > MAX_JSON_SECTION_BYTES:
                raise self._err(SECTION, f"{info.length} bytes exceeds the JSON section limit")
            table = AttributeTable.parse(keys, self._section(SECTION), count=self.count, n_sources=len(self.sources))
        except AttributeFormatError as e:
            raise self._err(e.section, str(e)) from None
        self._attributes = table
        return table

    def source_paths(self) -> list[str]:
        return [s["path"] for s in self.sources]

    def retrieval_settings(self):
        """Search settings the bundle was built with (format 1.2); defaults for older bundles."""
        from .retrieval import RetrievalSettings

        raw = self.manifest.get("retrieval")
        if raw is None:  # before 1.2: dense, and (before 1.6) no context match
            return RetrievalSettings(default_mode="dense", path_weight=0.0, heading_weight=0.0, standout_weighting=False)
        try:
            return RetrievalSettings.from_manifest(raw)
        except (TypeError, ValueError) as e:
            raise self._err("manifest", f"retrieval: {e}") from None

    def _offsets(self) -> np.ndarray:
        offsets = np.frombuffer(self._section("chunk_offsets"), dtype="<u8")
        if "chunk_offsets:ok" not in self._checked:
            clen = self.sections["chunks"].length
            if offsets[0] != 0 or offsets[-1] != clen or np.any(np.diff(offsets.astype(np.int64)) <= 0):
                raise self._err("chunk_offsets", "block offsets are not strictly increasing from 0 to the chunks length")
            self._checked.add("chunk_offsets:ok")
        return offsets

    def _block_table(self) -> np.ndarray:
        """The by-source layout's (first chunk id, source) pairs, checked whole on first use: the first
        ids strictly increasing from 0, each block at most block_size chunks, the last ending at count;
        a source index an int64 (one out of range of the sources names none, as in a record)."""
        table = np.frombuffer(self._section(BLOCKS_SECTION), dtype="<u8").reshape(-1, 2)
        if self._firsts is None and not len(table):  # no chunks (the section's shape was checked at open)
            self._firsts = table[:, 0]
        if self._firsts is None:
            firsts = table[:, 0]
            rising = firsts[0] == 0 and bool(np.all(firsts[1:] > firsts[:-1])) and int(firsts[-1]) < self.count
            # u64 differences, taken only once the ids rise (no wrap-around)
            if not rising or (np.diff(firsts) > np.uint64(self.block_size)).any() or \
                    self.count - int(firsts[-1]) > self.block_size:
                raise self._err(BLOCKS_SECTION, f"first chunk ids must rise from 0, each block holding 1 to "
                                                f"{self.block_size} of the {self.count} chunks")
            if (table[:, 1] > INT64_MAX).any():
                raise self._err(BLOCKS_SECTION, "a source index is past 2^63-1")
            self._firsts = firsts
        return table

    def _block_span(self, b: int) -> tuple[int, int]:
        """Block b's first chunk id and its number of chunks."""
        if self.layout == "fixed":
            return b * self.block_size, min(self.block_size, self.count - b * self.block_size)
        table = self._block_table()
        first = int(table[b, 0])
        return first, (int(table[b + 1, 0]) if b + 1 < self.n_blocks else self.count) - first

    def _block(self, b: int) -> list:
        if self._block_cache is not None and self._block_cache[0] == b:
            return self._block_cache[1]
        offsets = self._offsets()
        _, expected = self._block_span(b)
        frame = self._section("chunks")[int(offsets[b]):int(offsets[b + 1])]
        try:
            size = zstandard.frame_content_size(frame)
            if size < 0 or size > MAX_BLOCK_BYTES:
                raise self._err("chunks", f"block {b} declares {size} decompressed bytes (limit {MAX_BLOCK_BYTES})")
            raw = zstandard.ZstdDecompressor().decompress(frame, max_output_size=MAX_BLOCK_BYTES)
            records = _unpack_block(raw, expected)
        except BundleError:
            raise
        except Exception as e:  # zstd/msgpack raise assorted types on garbage; all mean "damaged"
            raise self._err("chunks", f"block {b} cannot be decoded: {type(e).__name__}: {e}") from None
        if not isinstance(records, list) or len(records) != expected or not all(
                isinstance(r, dict) and isinstance(r.get("text"), str) for r in records):
            raise self._err("chunks", f"block {b} does not hold {expected} chunk records")
        for r in records:
            for key, value in r.items():
                want = _CHUNK_FIELD_TYPES.get(key)
                if want is not None and (not isinstance(value, want) or isinstance(value, bool)):
                    raise self._err("chunks", f"block {b}: chunk field {key!r} is {type(value).__name__}, "
                                              f"expected {want.__name__}")
                if want is int and value > INT64_MAX:  # FORMAT.md 2.1: libkbpack's int64 cannot hold it
                    raise self._err("chunks", f"block {b}: chunk field {key!r} is past 2^63-1")
        if self.layout == "by-source":  # the table names the source: a record naming one too would be a second answer
            if any("source" in r for r in records):
                raise self._err("chunks", f"block {b}: a chunk record holds 'source', which the by-source layout "
                                          "keeps in chunk_blocks")
            source = int(self._block_table()[b, 1])
            records = [{**r, "source": source} for r in records]
        self._block_cache = (b, records)
        return records

    def chunk(self, i: int) -> dict:
        """Chunk i (0-based) with its provenance; decompresses only the block that holds it."""
        if not 0 <= i < self.count:
            raise IndexError(f"chunk {i} out of range 0..{self.count - 1}")
        if self.layout == "fixed":
            b, j = divmod(i, self.block_size)
        else:  # the last block whose first id is <= i
            self._block_table()
            b = int(np.searchsorted(self._firsts, np.uint64(i), side="right")) - 1
            j = i - int(self._firsts[b])
        return dict(self._block(b)[j], id=i)

    def iter_chunks(self, start: int = 0, stop: int | None = None) -> Iterator[dict]:
        stop = self.count if stop is None else min(stop, self.count)
        for i in range(start, stop):
            yield self.chunk(i)

    def verify(self) -> None:
        """Check every checksum and structural rule; raise BundleError naming the first bad section."""
        mm = memoryview(self._mm)
        body = hashlib.sha256()
        step = 1 << 24
        for pos in range(HEADER_SIZE, self.size, step):
            body.update(mm[pos:min(pos + step, self.size)])
        body_ok = body.digest() == self._body_sha
        # Name the damaged section when there is one; the body digest also catches padding.
        for name in sorted(self.sections, key=lambda n: self.sections[n].offset):
            self._checked.discard(name)
            self._section(name)
        self._offsets()
        if self.layout == "by-source":
            self._block_table()
        for b in range(self.n_blocks):
            self._block(b)
        if not body_ok:
            raise self._err("file", "whole-file sha256 mismatch (damage outside any section, e.g. padding)")
        mm.release()
        self.check_vectors_finite()
        self._check_binary_padding()
        self.encoder()
        probes = self.probes()
        if probes is not None and not np.isfinite(probes.vectors).all():
            raise self._err("probe_vectors", "holds NaN or infinity")
        lexical = self.lexical()
        if lexical is not None:
            from .bm25 import LexicalFormatError

            try:
                lexical.check_all()
            except LexicalFormatError as e:
                raise self._err(e.section, str(e)) from None
        if "index" in self.sections:  # loaded as a search would: encoding, size, dim, parameters
            from .faiss_guard import load_index

            load_index(self.index_bytes(), self.stored_vectors.shape, self.manifest.get("index") or {})
        self.retrieval_settings()
        self.attributes()
        self._check_manifest_schema()

    def _check_manifest_schema(self) -> None:
        """manifest.schema.json's types for what nothing above reads: the counts and each source's
        numbers are JSON integers (not 2.0) from 0 to 2^64-1, kbc_version and created strings. The
        schema requires only what a reader needs (kbc writes every key it lists); libkbpack's
        kbp_verify checks the same in the same words (verify.c), so both readers say "intact" of
        the same bundles."""
        m = self.manifest
        for key in ("kbc_version", "created"):
            if key in m and not isinstance(m[key], str):
                raise self._err("manifest", f"'{key}' must be a string")
        for key, value in (m.get("counts") or {}).items():
            if not _is_u64(value):
                raise self._err("manifest", f"counts.{key} must be an integer from 0 to 2^64-1")
        for i, source in enumerate(m.get("sources") or []):
            for key in _SOURCE_NUMBERS:
                if key in source and not _is_u64(source[key]):
                    raise self._err("manifest", f"sources[{i}].{key} must be an integer from 0 to 2^64-1")

    def check_vectors_finite(self) -> None:
        """NaN or infinity in a vector poisons every score it meets and makes JSON exports that
        standard parsers reject: refused, a block of rows at a time (bounded memory). int8 rows
        are numbers by construction; their scales are checked instead."""
        if self.scales() is not None:
            return
        vectors = self.stored_vectors
        for start in range(0, self.count, 1 << 16):
            block = np.asarray(vectors[start:start + (1 << 16)], dtype=np.float32)
            if not np.isfinite(block).all():
                row = start + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
                raise self._err("vectors", f"row {row} holds NaN or infinity")

    def _check_binary_padding(self) -> None:
        """The unused bits of each code's last byte are 0 (FORMAT.md §2.7)."""
        index = self.binary_index()
        spare = (-self.dim) % 8
        if index is None or not spare or not self.count:
            return
        mask = np.uint8((1 << spare) - 1)
        bad = np.flatnonzero(index.codes[:, -1] & mask)
        if len(bad):
            raise self._err(vec_enc.BINARY_SECTION, f"row {int(bad[0])} sets bits past dimension {self.dim}")

    def describe_sections(self) -> list[dict]:
        return [{"name": s.name, "encoding": s.encoding, "offset": s.offset, "length": s.length,
                 "sha256": s.sha256.hex()} for s in sorted(self.sections.values(), key=lambda s: s.offset)]

    def close(self) -> None:
        mm = getattr(self, "_mm", None)
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # arrays still point into the mapping; it is released when they are

    def __enter__(self) -> "Bundle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_fixed_ascii(raw: bytes) -> str | None:
    text, _, rest = raw.partition(b"\x00")
    if not text or rest.strip(b"\x00") or not all(32 < c < 127 for c in text):
        return None
    return text.decode("ascii")


MAX_KEYS_PER_CHUNK = 64
# FORMAT.md §2.1: the types of the chunk fields kbc reads (unknown keys are ignored)
_CHUNK_FIELD_TYPES = {"text": str, "source": int, "seq": int, "page_start": int, "page_end": int,
                      "label_start": str, "label_end": str, "char_start": int, "char_end": int,
                      "tokens": int, "record": str, "context": str}
# manifest objects kbc reads, and their JSON types (a bundle from anywhere may put anything there)
_MANIFEST_TYPES = {"embedder": dict, "chunking": dict, "index": dict, "counts": dict, "sources": list,
                   "skipped": list, "degraded": list, "lexical": dict, "retrieval": dict, "extraction": dict}


def _unpack_block(raw: bytes, expected: int) -> Any:
    """Decode one chunk block, bounding the objects it may create, not only its bytes: one array
    of `expected` maps of at most MAX_KEYS_PER_CHUNK scalar entries. Millions of tiny nested
    objects inside the 64 MiB cap (about 70 bytes of Python per byte of msgpack) are refused
    while decoding, before they exist."""
    arrays = maps = 0

    def on_list(items):
        nonlocal arrays
        arrays += 1
        if arrays > 1:
            raise ValueError("a chunk field holds an array")
        return items

    def on_map(pairs):
        nonlocal maps
        maps += 1
        if maps > expected:
            raise ValueError("more maps than chunks (nested objects)")
        if any(isinstance(v, msgpack.Timestamp) for _, v in pairs):  # ext -1 never reaches ext_hook
            raise ValueError("msgpack extension type -1 (timestamp) is not allowed")
        return dict(pairs)

    return msgpack.unpackb(raw, raw=False, strict_map_key=True, ext_hook=_no_ext, use_list=True,
                           list_hook=on_list, object_pairs_hook=on_map, max_array_len=max(expected, 1),
                           max_map_len=MAX_KEYS_PER_CHUNK)


_SOURCE_NUMBERS = ("size", "pages", "chunks")  # a source entry's counts (manifest.schema.json)


def _is_u64(value: Any) -> bool:
    """A count libkbpack can hold too: a JSON integer from 0 to 2^64-1."""
    return _is_count(value) and value < 1 << 64


def _is_count(value: Any) -> bool:
    """An integer >= 0 as JSON writes one (not a bool, not 3.0)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _same_setting(a: Any, b: Any) -> bool:
    """The same string, boolean or non-negative integer (as the C reader compares them)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int) and isinstance(b, int):
        return a == b and a >= 0
    return isinstance(a, str) and isinstance(b, str) and a == b


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")


def open_bundle(path: str | os.PathLike) -> Bundle:
    return Bundle(path)
