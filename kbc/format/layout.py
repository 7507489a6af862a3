"""The .kbpack byte layout that the writer (kbc/format/writer.py) and the reader (kbc/format/bundle.py)
share: magic, version, header and table entry structs, alignment, the bounds a reader holds a file to,
and the canonical JSON both hash (spec: schemas/FORMAT.md).

Layout, all integers little-endian, every section starting on a 64-byte boundary:

    [header 128 B][section]...[section][table: section_count x 128 B]

The table sits at the end so the writer can stream every section once, hashing as it goes,
and then write the table and finally the header (the only seek). Readers start from the fixed
header, which says where the table is.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from . import vectors as vec_enc

MAGIC = b"KBPACK\x00\x00"
FORMAT_MAJOR = 1
FORMAT_MINOR = 8  # 1.1 added probes; 1.2 the lexical index; 1.3 the encoder; 1.4 int8 vectors and binary codes;
# 1.5 pages as a retrieval unit, 1.6 the context match (manifest retrieval keys only), 1.7 document attributes,
# 1.8 the by-source chunk layout
HEADER_SIZE = 128
ENTRY_SIZE = 128
ALIGN = 64

# struct layouts; FORMAT.md documents the same offsets
_HEADER = struct.Struct("<8sHHIQQ32s32s32s")
_ENTRY = struct.Struct("<32s16sQQ32s32s")
assert _HEADER.size == HEADER_SIZE and _ENTRY.size == ENTRY_SIZE

# Bounds a reader enforces before it allocates or decompresses anything.
MAX_SECTIONS = 1024
MAX_MANIFEST_BYTES = 64 << 20
MAX_BLOCK_BYTES = 64 << 20  # decompressed size of one chunk block
MAX_JSON_SECTION_BYTES = 64 << 20
MAX_PROMPT_CHARS = 4096  # embedder.query_prompt / document_prompt

DTYPES = {name: (e.section_encoding, e.numpy) for name, e in vec_enc.ENCODINGS.items()}

REQUIRED_SECTIONS = ("manifest", "vectors", "chunks", "chunk_offsets")

# The chunk layouts (FORMAT.md §2.1), by the `chunks` section's encoding. "fixed": block b holds chunks
# [b * block_size, (b + 1) * block_size). "by-source" (1.8): a block holds chunks of one source only, and
# the `chunk_blocks` table names each block's first chunk and its source, so records carry no `source`:
# adding or removing a document re-encodes only its own blocks, which keeps an update's delta small
# (docs/updates.md). Its encoding name is new so that a reader that predates it refuses such a bundle
# instead of misreading it.
LAYOUTS = {"fixed": "zstd-msgpack", "by-source": "zstd-msgpack-src"}
BLOCKS_SECTION = "chunk_blocks"
BLOCKS_ENCODING = "u64le"  # n_blocks pairs (first chunk id, source index)
INT64_MAX = (1 << 63) - 1  # a chunk's int fields, the source included, are signed 64-bit (FORMAT.md §2.1)


@dataclass(frozen=True)
class SectionInfo:
    name: str
    encoding: str
    offset: int
    length: int
    sha256: bytes


def _pad(n: int) -> int:
    return (-n) % ALIGN


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _fixed_ascii(value: str, size: int) -> bytes:
    raw = value.encode("ascii")
    if not raw or len(raw) > size or b"\x00" in raw:
        raise ValueError(f"name {value!r} must be 1..{size} ASCII characters")
    return raw.ljust(size, b"\x00")
