"""PDF, the pypdf variant (`--pdf-reader pypdf`): one page of text per physical page, labels kept,
running headers and footers removed, each page's heading lines as its section heading, encrypted
files opened with --password. `finish_pdf` is what every PDF reader does with its pages' text."""

from __future__ import annotations

import io
import logging
import re

from ..records import Extracted, Problem, SourceFile
from .textclean import clean_text, join_pages, meaningful_title, one_line, page_heading, ranges, strip_running_lines
from . import ReadOptions, register_reader


@register_reader("pdf", suffixes=(".pdf",), description="PDF text layer (pypdf); no OCR", furniture=True,
                 variant="pypdf", default=False)
def read_pdf(src: SourceFile, data: bytes, out: Extracted, opts: ReadOptions) -> None:
    passwords, clean = opts.passwords, opts.clean
    if not data:
        out.problems.append(Problem(src.rel, "skipped", "unreadable PDF: file is empty (0 bytes)"))
        return
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
                    out.problems.append(Problem(src.rel, "skipped", f"encrypted: cannot decrypt ({one_line(e)})"))
                    return
            if not opened:
                out.problems.append(Problem(src.rel, "skipped", "encrypted: needs a password (use --password)"))
                return
        n = len(reader.pages)
        out.page_count = n
        title = _pdf_title(reader)
        attributes = _pdf_attributes(reader)
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
        out.problems.append(Problem(src.rel, "skipped", f"unreadable PDF: {one_line(e)}"))
        return
    finish_pdf(src, out, texts, raw_labels, title, failed, clean=clean, attributes=attributes)


def finish_pdf(src: SourceFile, out: Extracted, texts: list[str], raw_labels: list[str], title: str | None,
               failed: list[int], *, clean: bool, attributes: dict | None = None) -> None:
    """Pages' raw text -> one Document (cleaned, running lines dropped, labels that differ from the
    page number, page headings), with the problems every PDF reader reports the same way."""
    n = len(texts)  # out.page_count is the reader's: set when it opened the file
    if clean:
        texts = strip_running_lines([clean_text(t) for t in texts])
    else:
        texts = [t.strip() for t in texts]
    labels = [raw_labels[i] if i < len(raw_labels) and raw_labels[i] and raw_labels[i] != str(i + 1) else None
              for i in range(n)]
    empty = [i + 1 for i, t in enumerate(texts) if not t.strip()]
    if n == 0:
        out.problems.append(Problem(src.rel, "skipped", "PDF has no pages"))
        return
    if failed:
        out.problems.append(Problem(src.rel, "degraded", f"text extraction failed on pages {ranges(failed)}"))
    if len(empty) == n:
        out.problems.append(Problem(src.rel, "skipped", f"no text layer on any of its {n} pages (scanned? OCR is not done)"))
        return
    if empty:
        blank = [p for p in empty if p not in failed]
        if blank:
            out.problems.append(Problem(src.rel, "degraded", f"no text on pages {ranges(blank)} (scanned or image-only?)"))
    doc = join_pages(src.rel, texts, labels)
    doc.title = title
    doc.attributes = dict(attributes or {})
    if clean:
        doc.headings = [(p.start, p.end, h) for p in doc.pages if (h := page_heading(doc.text[p.start:p.end]))]
    out.documents.append(doc)


# what generators write when nobody named an author: not the document's author
_GENERATOR_AUTHORS = {"user", "unknown", "administrator", "admin", "author", "owner", "default", "windows user",
                      "microsoft office user", "python-docx"}
MAX_INFO_CHARS = 500  # one Info entry read as an attribute (a forged one may be megabytes)


def info_attributes(get) -> dict:
    """The PDF's Info dictionary as FORMAT.md §2.10 attributes, where its author set them: `author`,
    `subject`, `keywords` (a list, split at commas and semicolons). `get(name)` reads an entry
    ("Author"); a generator's placeholder author and empty entries are left out, and dates too, as
    for DOCX: they say when a file was written, which a filter rarely means."""
    found: dict = {}
    for name, key in (("Author", "author"), ("Subject", "subject")):
        try:
            raw = get(name)
        except Exception:  # damaged info dictionaries are common and never fatal
            continue
        value = " ".join(str(raw or "")[:MAX_INFO_CHARS].split()) if isinstance(raw, str) else ""
        if value and not (key == "author" and value.lower() in _GENERATOR_AUTHORS):
            found[key] = value
    try:
        raw = get("Keywords")
    except Exception:
        raw = None
    if isinstance(raw, str):
        words = [k.strip() for k in re.split(r"[,;]", raw[:MAX_INFO_CHARS]) if k.strip()]
        if words:
            found["keywords"] = words
    return found


def _pdf_attributes(reader) -> dict:
    try:
        meta = reader.metadata
    except Exception:
        return {}
    return info_attributes(lambda name: meta.get("/" + name)) if meta else {}


def _pdf_title(reader) -> str | None:
    try:
        meta = reader.metadata
        return meaningful_title(meta.get("/Title")) if meta else None
    except Exception:  # damaged info dictionaries are common and never fatal
        return None
