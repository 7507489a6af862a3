"""Extract stage: one source file in, plain text with page spans out, plus any problems found.

Extraction runs in worker processes (see `extract_all`) so that one file that makes the parser
spin or balloon is stopped by a time and memory limit instead of sinking the build.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import re
import unicodedata
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .sources import SourceFile

EXTRACTOR_VERSION = "6"  # bump when output for the same input changes (it keys the build cache)


@dataclass
class Page:
    number: int  # 1-based physical page
    label: str | None  # the PDF's own page label ("iv", "A-3"), when it differs from the number
    start: int  # character span of this page in Document.text
    end: int


@dataclass
class Document:
    source: str  # relative path of the file
    text: str
    pages: list[Page]
    record_id: str | None = None  # for JSONL corpora: the record's id
    title: str | None = None  # the document's own title: PDF metadata, a Markdown file's first heading
    # section headings as (start, end, text): the character span of Document.text each one covers
    headings: list[tuple[int, int, str]] = field(default_factory=list)

    def heading_at(self, pos: int) -> str:
        """The heading that covers character `pos` ("" if none); headings are in text order."""
        i = bisect.bisect_right(self.headings, pos, key=lambda h: h[0]) - 1
        return self.headings[i][2] if i >= 0 and pos < self.headings[i][1] else ""


@dataclass
class Problem:
    source: str
    severity: str  # "skipped" (nothing from this file is in the bundle) or "degraded" (some is)
    reason: str


@dataclass
class Extracted:
    source: SourceFile
    sha256: str
    size: int
    page_count: int
    documents: list[Document] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


# --------------------------------------------------------------------------- cleaning

# Typographic ligatures and Latin presentation forms -> letters. Chosen over NFKC because NFKC also
# rewrites superscripts (x² -> x2), fractions, full-width CJK punctuation and more, changing meaning.
_LIGATURES = str.maketrans({
    "\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl", "\ufb05": "st", "\ufb06": "st",
    "\u00ad": "",  # soft hyphen: invisible unless a line breaks there
    "\u00a0": " ", "\u2002": " ", "\u2003": " ", "\u2009": " ", "\u200a": " ", "\u202f": " ",
    "\u200b": "", "\ufeff": "",
    # control characters (NULs and the like from broken text layers) carry no text; tabs, line
    # and page breaks are whitespace and handled below
    **{c: " " for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F, *range(0x80, 0xA0), 0xFFFE, 0xFFFF)},
})
_HYPHEN_BREAK = re.compile(r"([^\W\d_]+)-([ \t]*)\n[ \t]*(?=([^\W\d_]+))")
_HYPHENATED = re.compile(r"[^\W\d_]+-[^\W\d_]+")
_SPACES = re.compile(r"[ \t\f\v]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")
_PAGE_NUMBER = re.compile(r"^(?:page\s+)?[\divxlc]{1,6}(?:\s*(?:/|of)\s*\d{1,6})?$|^[-–—]\s*\d{1,6}\s*[-–—]$", re.I)


def clean_text(text: str) -> str:
    """Letters from ligatures, rejoined hyphenated line breaks, tidy whitespace; line breaks kept."""
    text = unicodedata.normalize("NFC", text.translate(_LIGATURES))
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _rejoin_hyphen_breaks(text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _MANY_NEWLINES.sub("\n\n", "\n".join(lines)).strip()


def _rejoin_hyphen_breaks(text: str) -> str:
    """`exam-\nple` -> `example`; `non- \nnormal` and `well-\nknown` (when the document also has
    `well-known`) -> keep the hyphen. A space before the line break means the generator wrote a
    real hyphen; a typesetter's break has none."""
    if "-" not in text:
        return text
    hyphenated: set[str] | None = None

    def join(m: re.Match) -> str:
        nonlocal hyphenated
        first, space, second = m.group(1), m.group(2), m.group(3)
        if space or not second[0].islower():
            return f"{first}-"
        if hyphenated is None:
            hyphenated = {w.lower() for w in _HYPHENATED.findall(text)}
        return f"{first}-" if f"{first}-{second}".lower() in hyphenated else first

    return _HYPHEN_BREAK.sub(join, text)


def _line_key(line: str) -> str:
    return re.sub(r"\d+", "#", line.strip().lower())


def strip_running_lines(pages: list[str], *, edge: int = 2) -> list[str]:
    """Drop running headers/footers and bare page numbers.

    A line counts as running when it sits among the first or last `edge` lines of a page and the
    same line (digits ignored) sits there on at least half of the pages (and at least 3).
    """
    if not pages:
        return pages
    split = [p.split("\n") for p in pages]
    counts: Counter[str] = Counter()
    for lines in split:
        e = min(edge, len(lines) // 2)  # on short pages the edges must not meet in the body
        edges = {_line_key(l) for l in lines[:e] + lines[len(lines) - e:] if l.strip() and len(l) <= 120}
        counts.update(edges)
    threshold = max(3, (len(pages) + 1) // 2)
    running = {k for k, c in counts.items() if c >= threshold}
    out = []
    for lines in split:
        n = len(lines)
        e = min(edge, n // 2)
        keep = []
        for i, line in enumerate(lines):
            at_edge = i < e or i >= n - e
            if at_edge and line.strip() and (_line_key(line) in running or _PAGE_NUMBER.match(line.strip())):
                continue
            keep.append(line)
        out.append("\n".join(keep).strip())
    return out


# --------------------------------------------------------------------------- per-format readers


def _join_pages(source: str, texts: list[str], labels: list[str | None]) -> Document:
    parts, pages, pos = [], [], 0
    for i, (t, label) in enumerate(zip(texts, labels)):
        if parts:
            parts.append("\n\n")
            pos += 2
        pages.append(Page(number=i + 1, label=label, start=pos, end=pos + len(t)))
        parts.append(t)
        pos += len(t)
    return Document(source=source, text="".join(parts), pages=pages)


def _read_pdf(src: SourceFile, data: bytes, out: Extracted, *, passwords: Sequence[str], clean: bool) -> None:
    import io

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            opened = False
            for pw in ("", *passwords):
                try:
                    if reader.decrypt(pw):
                        opened = True
                        break
                except Exception as e:  # missing crypto backend, unsupported algorithm
                    out.problems.append(Problem(src.rel, "skipped", f"encrypted: cannot decrypt ({_one_line(e)})"))
                    return
            if not opened:
                out.problems.append(Problem(src.rel, "skipped", "encrypted: needs a password (use --password)"))
                return
        n = len(reader.pages)
        out.page_count = n
        title = _pdf_title(reader)
        try:
            raw_labels = list(reader.page_labels)
        except Exception:
            raw_labels = []
        texts: list[str] = []
        failed: list[int] = []
        for i in range(n):
            try:
                texts.append(reader.pages[i].extract_text() or "")
            except (FileNotDecryptedError, MemoryError, RecursionError):
                raise
            except Exception:
                texts.append("")
                failed.append(i + 1)
    except FileNotDecryptedError:
        out.problems.append(Problem(src.rel, "skipped", "encrypted: needs a password (use --password)"))
        return
    except (MemoryError, RecursionError):
        raise
    except (PdfReadError, Exception) as e:  # pypdf raises many types on broken files
        out.problems.append(Problem(src.rel, "skipped", f"unreadable PDF: {_one_line(e)}"))
        return
    if clean:
        texts = strip_running_lines([clean_text(t) for t in texts])
    else:
        texts = [t.strip() for t in texts]
    labels = [raw_labels[i] if i < len(raw_labels) and raw_labels[i] != str(i + 1) else None for i in range(n)]
    empty = [i + 1 for i, t in enumerate(texts) if not t.strip()]
    if n == 0:
        out.problems.append(Problem(src.rel, "skipped", "PDF has no pages"))
        return
    if failed:
        out.problems.append(Problem(src.rel, "degraded", f"text extraction failed on pages {_ranges(failed)}"))
    if len(empty) == n:
        out.problems.append(Problem(src.rel, "skipped", f"no text layer on any of its {n} pages (scanned? OCR is not done)"))
        return
    if empty:
        blank = [p for p in empty if p not in failed]
        if blank:
            out.problems.append(Problem(src.rel, "degraded", f"no text on pages {_ranges(blank)} (scanned or image-only?)"))
    doc = _join_pages(src.rel, texts, labels)
    doc.title = title
    if clean:
        doc.headings = [(p.start, p.end, h) for p in doc.pages if (h := page_heading(doc.text[p.start:p.end]))]
    out.documents.append(doc)


# a word of three letters or more: what separates text from page furniture, titles from numbers
_LETTER_WORD = re.compile(r"[^\W\d_]{3,}")
_FILE_NAME = re.compile(r"^\S+\.[A-Za-z0-9]{1,5}$")
_GENERATOR_PREFIX = re.compile(r"^(?:microsoft (?:word|powerpoint|excel) - |untitled\b)", re.I)


def meaningful_title(raw) -> str | None:
    """A metadata title worth showing: words, not an accession number, a file name or 'Untitled'."""
    if not isinstance(raw, str):
        return None
    title = " ".join(clean_text(raw).split())[:200]
    title = _GENERATOR_PREFIX.sub("", title).strip()
    title = re.sub(r"\.(?:docx?|pptx?|xlsx?|pdf|indd|tex)$", "", title, flags=re.I)
    if _FILE_NAME.match(title):  # "10811.exe", "zen_of_python.txt": the generator's input file
        return None
    return title if has_words(title) else None


def has_words(text: str) -> bool:
    """True when text holds a word of three letters; "70 4.1." (page furniture) does not."""
    return _LETTER_WORD.search(text) is not None


def _pdf_title(reader) -> str | None:
    try:
        meta = reader.metadata
        return meaningful_title(meta.get("/Title")) if meta else None
    except Exception:  # damaged info dictionaries are common and never fatal
        return None


_MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)
MAX_HEADING_CHARS = 80


def heading_like(line: str) -> bool:
    """A short line most of whose words (of three letters or more) start with a capital: "CONSOLIDATED BALANCE SHEETS",
    "Note 5 - Acquisitions and Divestitures". Prose lines are longer or mostly lower case."""
    line = line.strip()
    if not 3 <= len(line) <= MAX_HEADING_CHARS:
        return False
    words = _LETTER_WORD.findall(line)
    return bool(words) and sum(w[0].isupper() for w in words) * 2 > len(words)


def page_heading(page_text: str, *, max_lines: int = 3) -> str:
    """What a page says it is about: its first heading-like lines (up to three, joined by " — "),
    e.g. "NETFLIX, INC. — CONSOLIDATED BALANCE SHEETS". Running headers were already removed; a
    page that starts mid-sentence has none. Chunks from the middle of a statement page carry it."""
    lines = []
    for line in page_text.split("\n"):
        if not line.strip():
            continue
        if len(lines) == max_lines or not heading_like(line):
            break
        lines.append(" ".join(line.split()))
    return " — ".join(lines)


def markdown_headings(text: str) -> list[tuple[int, int, str]]:
    """Each Markdown heading covers the text up to the next heading; its text is the heading path
    ("Install > On Linux")."""
    marks = [(m.start(), len(m.group(1)), " ".join(m.group(2).split())) for m in _MD_HEADING.finditer(text)]
    out, path = [], []
    for i, (start, level, title) in enumerate(marks):
        path = [p for p in path if p[0] < level] + [(level, title)]
        end = marks[i + 1][0] if i + 1 < len(marks) else len(text)
        out.append((start, end, " > ".join(t for _, t in path)))
    return out


def _decode_text(src: SourceFile, data: bytes, out: Extracted) -> str | None:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        out.problems.append(Problem(src.rel, "skipped", f"not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r})"))
        return None


def _read_text(src: SourceFile, data: bytes, out: Extracted, *, clean: bool) -> None:
    text = _decode_text(src, data, out)
    if text is None:
        return
    out.page_count = 1
    text = clean_text(text) if clean else text.strip()
    if not text:
        out.problems.append(Problem(src.rel, "skipped", "file is empty"))
        return
    doc = _join_pages(src.rel, [text], [None])
    if src.kind == "markdown":
        first = _MD_HEADING.search(text)
        doc.title = meaningful_title(first.group(2)) if first else None
        doc.headings = markdown_headings(text)
    out.documents.append(doc)


def _read_records(src: SourceFile, data: bytes, out: Extracted, *, clean: bool) -> None:
    """JSONL corpora (BEIR corpus.jsonl or any lines with id/title/text): one document per record."""
    text = _decode_text(src, data, out)
    if text is None:
        return
    seen: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            rid = rec.get("_id", rec.get("id"))
            body = rec.get("text", rec.get("contents", ""))
            title = rec.get("title") or ""
        except (ValueError, AttributeError):
            out.problems.append(Problem(src.rel, "skipped", f"line {lineno}: not a JSON object"))
            out.documents.clear()
            return
        if rid is None or not isinstance(body, str) or not isinstance(title, str):
            out.problems.append(Problem(src.rel, "skipped", f"line {lineno}: record needs an id and a text string"))
            out.documents.clear()
            return
        rid = str(rid)
        if rid in seen:
            out.problems.append(Problem(src.rel, "skipped", f"line {lineno}: duplicate record id {rid!r}"))
            out.documents.clear()
            return
        seen.add(rid)
        full = f"{title} {body}".strip() if title else body.strip()
        if clean:
            full = clean_text(full)
        if full:
            doc = _join_pages(src.rel, [full], [None])
            doc.record_id = rid
            out.documents.append(doc)
    out.page_count = len(out.documents)
    if not out.documents:
        out.problems.append(Problem(src.rel, "skipped", "no records with text"))


def extract_file(src: SourceFile, *, passwords: Sequence[str] = (), clean: bool = True) -> Extracted:
    """Read and extract one file. Never raises for bad content: problems are returned."""
    try:
        data = src.path.read_bytes()
    except OSError as e:
        out = Extracted(src, "", 0, 0)
        out.problems.append(Problem(src.rel, "skipped", f"cannot read: {e.strerror or e}"))
        return out
    out = Extracted(src, hashlib.sha256(data).hexdigest(), len(data), 0)
    if src.kind == "pdf":
        if not data:
            out.problems.append(Problem(src.rel, "skipped", "unreadable PDF: file is empty (0 bytes)"))
        else:
            _read_pdf(src, data, out, passwords=passwords, clean=clean)
    elif src.kind == "records":
        _read_records(src, data, out, clean=clean)
    else:
        _read_text(src, data, out, clean=clean)
    del data
    for doc in out.documents:
        if len(doc.text) > MAX_DOCUMENT_CHARS:
            _cut(doc, MAX_DOCUMENT_CHARS)
            out.problems.append(Problem(src.rel, "degraded", f"text cut at {MAX_DOCUMENT_CHARS:,} characters "
                                        f"(page {doc.pages[-1].number}): split the document to keep the rest"))
    return out


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


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg if len(msg) <= 200 else msg[:197] + "..."


def _ranges(nums: list[int]) -> str:
    out, start, prev = [], None, None
    for n in nums:
        if start is None:
            start = prev = n
        elif n == prev + 1:
            prev = n
        else:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = n
    if start is not None:
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ", ".join(out)


# --------------------------------------------------------------------------- worker processes

@dataclass(frozen=True)
class ExtractOptions:
    passwords: tuple[str, ...] = ()
    clean: bool = True
    workers: int | None = None  # None: one per core; 0: in this process (no limits)
    timeout_s: float = 120.0  # per file
    memory_mb: int = 4096  # per worker address space


def _guarded_extract(src: SourceFile, opts: ExtractOptions) -> Extracted:
    try:
        return extract_file(src, passwords=opts.passwords, clean=opts.clean)
    except MemoryError:
        reason = f"exceeded the per-file memory limit ({opts.memory_mb} MB)"
    except RecursionError:
        reason = "parser recursion too deep (malformed structure)"
    out = Extracted(src, "", 0, 0)
    try:
        out.size = src.path.stat().st_size
    except OSError:
        pass
    out.problems.append(Problem(src.rel, "skipped", reason))
    return out


def _worker_main(conn, memory_mb: int) -> None:
    try:
        import resource

        limit = memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        idx, src, opts = msg
        conn.send((idx, _guarded_extract(src, opts)))


@contextmanager
def _main_module_hidden():
    """Spawned workers re-run the parent's main script (the `kbc` entry point imports the CLI,
    typer and pydantic: ~0.1 s per worker) although `_worker_main` needs none of it. Hiding
    `__main__`'s file and spec while the worker starts makes the child skip that import."""
    import sys

    main = sys.modules.get("__main__")
    saved = {k: getattr(main, k) for k in ("__file__", "__spec__") if main is not None and hasattr(main, k)}
    try:
        for k in saved:
            if k == "__file__":
                del main.__file__
            else:
                main.__spec__ = None
        yield
    finally:
        for k, v in saved.items():
            setattr(main, k, v)


def extract_all(sources: Sequence[SourceFile], opts: ExtractOptions = ExtractOptions()):
    """Yield one Extracted per source, in input order, extracting in parallel worker processes.

    A worker that runs past `timeout_s` on one file, or dies, is killed and replaced; that file
    is reported as skipped. Output is identical to a serial run: each file is extracted by the
    same pure function, and results are re-ordered before they are yielded.
    """
    import os

    if opts.workers == 0 or not sources:
        for src in sources:
            yield _guarded_extract(src, opts)
        return
    import multiprocessing as mp
    import time
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")  # safe even after torch or other threaded libraries are loaded
    n_workers = max(1, min(opts.workers or os.cpu_count() or 1, len(sources)))
    todo = list(enumerate(sources))
    todo.reverse()
    done: dict[int, Extracted] = {}
    next_out = 0
    workers: list[dict] = []

    def start_worker() -> dict:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(child, opts.memory_mb), daemon=True)
        with _main_module_hidden():
            proc.start()
        child.close()
        return {"proc": proc, "conn": parent, "task": None, "since": 0.0}

    def assign(w: dict) -> None:
        if todo:
            idx, src = todo.pop()
            w["task"], w["since"] = (idx, src), time.monotonic()
            w["conn"].send((idx, src, opts))

    def fail(w: dict, reason: str) -> None:
        idx, src = w["task"]
        out = Extracted(src, "", 0, 0)
        out.problems.append(Problem(src.rel, "skipped", reason))
        done[idx] = out
        w["proc"].kill()
        w["proc"].join()
        w["conn"].close()
        workers.remove(w)

    try:
        for _ in range(n_workers):
            w = start_worker()
            workers.append(w)
            assign(w)
        while next_out < len(sources):
            while next_out in done:
                yield done.pop(next_out)
                next_out += 1
            if next_out >= len(sources):
                break
            busy = [w for w in workers if w["task"] is not None]
            now = time.monotonic()
            wait_for = min((w["since"] + opts.timeout_s - now for w in busy), default=0.1)
            ready = wait([w["conn"] for w in busy], timeout=max(0.0, wait_for))
            for w in list(busy):
                if w["conn"] in ready:
                    try:
                        idx, result = w["conn"].recv()
                        done[idx] = result
                        w["task"] = None
                        assign(w)
                        continue
                    except (EOFError, OSError):
                        code = w["proc"].exitcode
                        fail(w, f"extractor process died (exit code {code}); file may be malformed")
                elif time.monotonic() - w["since"] > opts.timeout_s:
                    fail(w, f"extraction took longer than {opts.timeout_s:g} s; stopped")
                else:
                    continue
                if todo:
                    nw = start_worker()
                    workers.append(nw)
                    assign(nw)
    finally:
        for w in workers:
            try:
                w["conn"].send(None)
            except (OSError, ValueError):
                pass
        for w in workers:
            w["proc"].join(timeout=1)
            if w["proc"].is_alive():
                w["proc"].kill()
                w["proc"].join()


# --------------------------------------------------------------------------- cache form (JSON, never pickle)

def to_cache(ex: Extracted) -> dict:
    return {"sha256": ex.sha256, "size": ex.size, "page_count": ex.page_count,
            "documents": [{"text": d.text, "record_id": d.record_id, "title": d.title,
                           "headings": [list(h) for h in d.headings],
                           "pages": [[p.number, p.label, p.start, p.end] for p in d.pages]} for d in ex.documents],
            "problems": [[p.severity, p.reason] for p in ex.problems]}


def from_cache(src: SourceFile, data: dict) -> Extracted:
    ex = Extracted(src, data["sha256"], data["size"], data["page_count"])
    ex.documents = [Document(src.rel, d["text"], [Page(*p) for p in d["pages"]], d.get("record_id"), d.get("title"),
                             [(int(a), int(b), str(t)) for a, b, t in d.get("headings", [])])
                    for d in data["documents"]]
    ex.problems = [Problem(src.rel, sev, reason) for sev, reason in data["problems"]]
    return ex


def cacheable(ex: Extracted) -> bool:
    """Outcomes that depend on the machine (time/memory limits, crashed workers) are not cached."""
    transient = ("took longer", "memory limit", "process died", "cannot read")
    return bool(ex.sha256) and not any(t in p.reason for p in ex.problems for t in transient)
