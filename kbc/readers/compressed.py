"""Compressed files (`.gz`, `.bz2`, `.xz`): decompressed, then read by the reader of the name
inside (`notes.md.gz` by the Markdown reader; `changelog.gz`, whose inner name says nothing, as
text when its bytes are text). Their kind joins the two: `markdown+gzip`.

Decompression is bounded: a file that decompresses to more than the per-file limit (--max-file-mb)
is skipped with that reason after at most the limit's worth of output, so a few kilobytes that
expand to terabytes (a "zip bomb") cost neither the disk nor the memory. The source walk, in the
build's own process, decompresses only a file's first bytes (to tell its kind when the name inside
does not); the whole stream is decompressed, measured and checked in the extraction worker, whose
memory is bounded.
"""

from __future__ import annotations

import bz2
import lzma
import re
import zlib
from dataclasses import dataclass
from typing import Iterable, Iterator

from ..records import Extracted, Problem, SourceFile
from . import ReadOptions, reader_for
from .text import CUT_KINDS, TEXT_BYTES_KEPT, cut_at_character, cut_reason

CODECS = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz"}  # suffix -> codec, the second half of a kind
# how each codec's stream (a gzip member, a bzip2 or xz stream) begins
MAGIC = {"gzip": b"\x1f\x8b", "bzip2": b"BZh", "xz": b"\xfd7zXZ\x00"}
STEP = 1 << 20  # input fed and output taken per call: memory stays a few MiB above what is kept
# xz's presets need at most 65 MiB to decompress; a header may ask for 4 GiB
XZ_MEMORY_LIMIT = 256 << 20
# a library caller may pass no per-file limit; a compressed file's size is unknown until it is
# decompressed, so it is bounded by the default one then
DEFAULT_LIMIT = 1 << 30


class TooLarge(Exception):
    """More than the limit came out of the stream."""


class NotCompressed(Exception):
    """The bytes are not a complete stream of the codec."""


@dataclass(frozen=True)
class CompressedSource(SourceFile):
    """A source whose bytes are compressed: the limit on their decompressed size travels with it
    to the extraction worker."""
    max_bytes: int | None = None


def split_kind(kind: str) -> tuple[str, str] | None:
    """'markdown+gzip' -> ('markdown', 'gzip'); None for a kind that is not a compressed one."""
    inner, sep, codec = kind.rpartition("+")
    return (inner, codec) if sep and inner and codec in CODECS.values() else None


def limit_text(limit: int) -> str:
    mib = limit / 2**20
    return f"{mib:,.0f} MiB" if mib >= 10 else f"{mib:,.2g} MiB"


def _decompressor(codec: str):
    if codec == "gzip":
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    if codec == "bzip2":
        return bz2.BZ2Decompressor()
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=XZ_MEMORY_LIMIT)


def inflate(blocks: Iterable[bytes], codec: str, limit: int, step: int = STEP) -> Iterator[bytes]:
    """The decompressed bytes of `blocks` (one stream, or several concatenated, as gzip and xz
    allow), at most `step` at a time. TooLarge as soon as more than `limit` bytes came out,
    NotCompressed for bytes that are not the codec's or end early."""
    blocks = iter(blocks)
    d, pending, total = _decompressor(codec), b"", 0
    try:
        while True:
            if d.eof:  # one member ended: another may follow (`cat a.gz b.gz`), or padding
                # unused_data is all the input past the member's end. zlib also leaves the same bytes
                # in unconsumed_tail when its output limit was hit in that call: adding `pending` fed
                # the next member twice (issue 43: a second member stored twice, 40 members -> GBs).
                rest = d.unused_data
                if not rest:
                    rest = next(blocks, b"")
                if not rest.strip(b"\x00"):  # the end, or the zero padding tar and dd leave
                    if not any(b.strip(b"\x00") for b in blocks):
                        return
                    raise NotCompressed("data after the end of the stream")
                if not MAGIC[codec].startswith(rest[:len(MAGIC[codec])]):  # not another member: garbage
                    raise NotCompressed("data after the end of the stream")
                d, pending = _decompressor(codec), rest
            buffered = codec != "gzip" and not d.needs_input  # bz2/lzma hold output back past `step`
            if not pending and not buffered:
                pending = next(blocks, None)
                if pending is None:
                    raise NotCompressed("the file ends before the stream does (truncated)")
            out = d.decompress(pending, step)
            # zlib keeps what it did not read in unconsumed_tail; bz2 and lzma keep it inside
            pending = d.unconsumed_tail if codec == "gzip" else b""
            total += len(out)
            if total > limit:
                raise TooLarge
            if out:
                yield out
    except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError) as e:
        # zlib's "Error -3 while decompressing data: incorrect header check" -> "incorrect header check"
        why = re.sub(r"^Error -?\d+ while \w+ data: ", "", " ".join(str(e).split()))
        raise NotCompressed(why or type(e).__name__) from None


def slices(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)
    for i in range(0, len(view), STEP):
        yield bytes(view[i:i + STEP])


def decompress(data: bytes, codec: str, limit: int) -> bytes:
    out = bytearray()
    for block in inflate(slices(data), codec, limit):
        out += block
    return bytes(out)


def too_large_reason(limit: int) -> str:
    return f"decompresses to more than {limit_text(limit)}, the limit per file (--max-file-mb)"


def read_compressed(src: SourceFile, data: bytes, out: Extracted, opts: ReadOptions) -> None:
    """Decompress, in steps, keeping what the inner reader needs (a text document's first
    TEXT_BYTES_KEPT bytes; a PDF or DOCX whole), and measure the rest against the limit as it
    streams past: one copy of the kept bytes is held, never the whole inflated file and its copies."""
    inner, codec = split_kind(src.kind)
    limit = getattr(src, "max_bytes", None) or DEFAULT_LIMIT
    keep = TEXT_BYTES_KEPT if inner in CUT_KINDS else limit
    raw, total = bytearray(), 0
    try:
        for block in inflate(slices(data), codec, limit):
            total += len(block)
            if len(raw) < keep:
                raw += block[:keep - len(raw)]
    except TooLarge:
        out.problems.append(Problem(src.rel, "skipped", too_large_reason(limit)))
        return
    except NotCompressed as e:
        out.problems.append(Problem(src.rel, "skipped", f"not a valid {codec} file: {e}"[:200]))
        return
    del data
    kept = bytes(raw)
    del raw
    if total > len(kept):
        kept = cut_at_character(kept)
        out.problems.append(Problem(src.rel, "degraded", cut_reason(len(kept), total)))
    inner_src = SourceFile(src.path, src.rel, inner)
    reader_for(inner, dict(opts.variants).get(inner)).read(inner_src, kept, out, opts)
