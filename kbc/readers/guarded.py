"""Extract stage: one source file in, plain text with page spans out, plus any problems found.

The reader for each kind of file comes from the registry in `kbc.readers`; this module reads the
bytes, hands them to it, bounds the result and converts it to and from its cache form. Worker
processes that run it under limits are in `kbc.engines.workers`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

from ..readers import ReadOptions, reader_for
from ..records import Document, Extracted, Page, Problem, SourceFile
from .text import CUT_KINDS, TEXT_BYTES_KEPT, cut_at_character, cut_reason

EXTRACTOR_VERSION = "15"  # 15: PDF Info author, subject, keywords as attributes; 14: the cache keeps them; bump when output for the same input changes (it keys the build cache)


def extract_file(src: SourceFile, *, passwords: Sequence[str] = (), clean: bool = True,
                 encoding: str | None = None, variants: tuple[tuple[str, str], ...] = ()) -> Extracted:
    """Read and extract one file. Never raises for bad content: problems are returned."""
    try:
        data, sha256, size = _read(src)
    except OSError as e:
        out = Extracted(src, "", 0, 0)
        out.problems.append(Problem(src.rel, "skipped", f"cannot read: {e.strerror or e}"))
        return out
    out = Extracted(src, sha256, size, 0)
    if len(data) < size:
        out.problems.append(Problem(src.rel, "degraded", cut_reason(len(data), size)))
    reader = reader_for(src.kind, dict(variants).get(src.kind))
    reader.read(src, data, out, ReadOptions(passwords=tuple(passwords), clean=clean, encoding=encoding,
                                            variants=variants))
    del data
    for doc in out.documents:
        if len(doc.text) > MAX_DOCUMENT_CHARS:
            _cut(doc, MAX_DOCUMENT_CHARS)
            out.problems.append(Problem(src.rel, "degraded", f"text cut at {MAX_DOCUMENT_CHARS:,} characters "
                                        f"(page {doc.pages[-1].number}): split the document to keep the rest"))
    return out


def _read(src: SourceFile) -> tuple[bytes, str, int]:
    """(the bytes its reader gets, the whole file's sha256, its size). A file read as one text
    document gets its first TEXT_BYTES_KEPT bytes only, the rest hashed as it streams past: a
    900 MiB file (a sparse one: 8 KiB of text, then a hole) is not held whole."""
    if src.kind not in CUT_KINDS:
        data = src.path.read_bytes()
        return data, hashlib.sha256(data).hexdigest(), len(data)
    digest = hashlib.sha256()
    with open(src.path, "rb") as f:
        data = f.read(TEXT_BYTES_KEPT)
        digest.update(data)
        size = len(data)
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return (cut_at_character(data) if size > len(data) else data), digest.hexdigest(), size


# One document's text is chunked and tokenised in the build process, outside the extraction
# workers' memory limit: this bound keeps that step's memory and time finite (~4,000 dense pages).
MAX_DOCUMENT_CHARS = 20_000_000


def _cut(doc: Document, limit: int) -> None:
    """Keep the first `limit` characters and the pages and headings inside them."""
    doc.text = doc.text[:limit]
    doc.pages = [p for p in doc.pages if p.start < limit] or doc.pages[:1]
    last = doc.pages[-1]
    doc.pages[-1] = Page(last.number, last.label, min(last.start, limit), min(last.end, limit))
    doc.headings = [(a, min(b, limit), h) for a, b, h in doc.headings if a < limit]


@dataclass(frozen=True)
class ExtractOptions:
    passwords: tuple[str, ...] = ()
    clean: bool = True
    encoding: str | None = None  # text files: forced instead of detected
    variants: tuple[tuple[str, str], ...] = ()  # (kind, reader variant) chosen instead of the default
    workers: int | None = None  # None: one per core; 0: in this process (no limits)
    timeout_s: float = 120.0  # per file
    memory_mb: int = 4096  # per worker address space: the backstop of file_memory_mb
    # per file: what reading one file may add to its worker's resident memory (kbc.engines.workers
    # watches it); docs/limits.md says what it costs
    file_memory_mb: int | None = 2048
    # a kbc.stages.chunk.ChunkPlan: the worker chunks what it extracted, so that chunking (token
    # counting) runs on every core, not on the driver alone
    chunking: object | None = None


def guarded_extract(src: SourceFile, opts: ExtractOptions) -> Extracted:
    try:
        ex = extract_file(src, passwords=opts.passwords, clean=opts.clean, encoding=opts.encoding,
                          variants=opts.variants)
        if opts.chunking is not None and ex.documents:
            try:
                ex.chunk_records = opts.chunking.records(ex)
            except Exception:  # the driver chunks it instead, and reports what goes wrong there
                ex.chunk_records = None
        return ex
    except MemoryError:
        reason = f"exceeded the per-file memory limit ({opts.memory_mb} MB)"
    except RecursionError:
        reason = "parser recursion too deep (malformed structure)"
    except Exception as e:  # a reader's library failing on bytes it did not expect
        reason = f"the {src.kind} reader failed: {type(e).__name__}: {' '.join(str(e).split())[:160]}"
    out = Extracted(src, "", 0, 0)
    try:
        out.size = src.path.stat().st_size
    except OSError:
        pass
    out.problems.append(Problem(src.rel, "skipped", reason))
    return out



# --------------------------------------------------------------------------- cache form (JSON, never pickle)

def to_cache(ex: Extracted) -> dict:
    return {"sha256": ex.sha256, "size": ex.size, "page_count": ex.page_count,
            "documents": [{"text": d.text, "record_id": d.record_id, "title": d.title,
                           "headings": [list(h) for h in d.headings], "attributes": d.attributes,
                           "pages": [[p.number, p.label, p.start, p.end] for p in d.pages]} for d in ex.documents],
            "problems": [[p.severity, p.reason] for p in ex.problems]}


def from_cache(src: SourceFile, data: dict) -> Extracted:
    ex = Extracted(src, data["sha256"], data["size"], data["page_count"])
    ex.documents = [Document(src.rel, d["text"], [Page(*p) for p in d["pages"]], d.get("record_id"), d.get("title"),
                             [(int(a), int(b), str(t)) for a, b, t in d.get("headings", [])],
                             d["attributes"] if isinstance(d.get("attributes"), dict) else {})
                    for d in data["documents"]]
    ex.problems = [Problem(src.rel, sev, reason) for sev, reason in data["problems"]]
    return ex


def cacheable(ex: Extracted) -> bool:
    """Outcomes that depend on the machine (time/memory limits, crashed workers) are not cached."""
    transient = ("took longer", "memory limit", "process died", "cannot read", "reader failed")
    return bool(ex.sha256) and not any(t in p.reason for p in ex.problems for t in transient)
