"""PDF, the pdfium variant (the default; `--pdf-reader pdfium`): PDFium's text layer through
pypdfium2, with each table row on one line.

PDFium orders a page's text as its content stream draws it and breaks lines where the baseline
moves; a line item and its numbers are usually one line already, but a footnote marker set higher
("Restructuring charges" / "(4)" / "147 (34) 254") or a cell drawn separately breaks the row.
Lines that follow each other, share at least half their height and sit side by side (the next
starts right of where the last ended) are joined into one row with a space. Columns stay in the
content stream's order: lines are never re-sorted by position, so a two-column page keeps each
column whole. PDFium marks a word hyphenated at a line end with U+FFFE; it becomes "-" plus a line
break, which cleaning rejoins or keeps by the same rules as every reader's text.
"""

from __future__ import annotations

import re

from ..records import Extracted, Problem, SourceFile
from .textclean import meaningful_title, one_line
from . import ReadOptions, register_reader
from .pdf import finish_pdf, info_attributes

# pdfium's FPDF_GetLastError codes (fpdfview.h)
_ERR_PASSWORD = 4
_ERR_SECURITY = 5
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# two lines are one row when their vertical extents overlap by this share of the lower one's height
ROW_OVERLAP = 0.5
# ... and the second starts no more than this many points left of where the first ended
ROW_BACKTRACK_PT = 1.0


@register_reader("pdf", suffixes=(".pdf",), description="PDF text layer (pdfium, table rows kept); no OCR",
                 furniture=True, variant="pdfium", default=True)
def read_pdf_pdfium(src: SourceFile, data: bytes, out: Extracted, opts: ReadOptions) -> None:
    if not data:
        out.problems.append(Problem(src.rel, "skipped", "unreadable PDF: file is empty (0 bytes)"))
        return
    import pypdfium2 as pdfium

    pdf = None
    for password in (None, *opts.passwords):
        try:
            pdf = pdfium.PdfDocument(data, password=password)
            break
        except pdfium.PdfiumError as e:
            code = getattr(e, "err_code", None)
            if code == _ERR_PASSWORD:
                continue
            if code == _ERR_SECURITY:
                out.problems.append(Problem(src.rel, "skipped", "encrypted: unsupported security handler"))
            else:
                out.problems.append(Problem(src.rel, "skipped", f"unreadable PDF: {_reason(e)}"))
            return
    if pdf is None:
        out.problems.append(Problem(src.rel, "skipped", "encrypted: needs a password (use --password)"))
        return
    try:
        n = len(pdf)
        out.page_count = n
        title = _title(pdf)
        attributes = info_attributes(pdf.get_metadata_value)
        labels: list[str] = []
        texts: list[str] = []
        failed: list[int] = []
        for i in range(n):
            try:
                labels.append(pdf.get_page_label(i) or "")
            except Exception:  # a damaged label tree costs the labels, never the text
                labels.append("")
            page = textpage = None
            try:
                page = pdf[i]
                textpage = page.get_textpage()
                texts.append(page_text(textpage))
            except MemoryError:
                raise
            except Exception:
                texts.append("")
                failed.append(i + 1)
            finally:
                if textpage is not None:
                    textpage.close()
                if page is not None:
                    page.close()
    finally:
        pdf.close()
    finish_pdf(src, out, texts, labels, title, failed, clean=opts.clean, attributes=attributes)


def page_text(textpage) -> str:
    """One page's text, lines joined into table rows (see the module's docstring)."""
    text = textpage.get_text_range()
    if len(text) != textpage.count_chars():
        # pdfium left characters out of its text view: offsets no longer name boxes, so the page
        # keeps pdfium's own lines (rare: seen on no PDF of the test sets)
        return _plain(text)
    rows: list[list] = []  # [text, left, bottom, right, top]; None for a blank line
    start = 0
    for m in [*_LINE_BREAK.finditer(text), None]:
        end = m.start() if m else len(text)
        line = text[start:end]
        start = m.end() if m else len(text)
        stripped = line.strip()
        if not stripped:
            rows.append(None)
            continue
        first = end - len(line) + (len(line) - len(line.lstrip()))
        last = end - len(line) + len(line.rstrip()) - 1
        # loose boxes (the font's whole height): cells of a row are often set on baselines a few
        # points apart, and the tight boxes of "Proceeds from sale" and "846" then overlap by a third
        l1, b1, r1, t1 = textpage.get_charbox(first, loose=True)
        l2, b2, r2, t2 = textpage.get_charbox(last, loose=True)
        left, bottom, right, top = min(l1, l2), min(b1, b2), max(r1, r2), max(t1, t2)
        prev = rows[-1] if rows else None
        if prev is not None and left >= prev[3] - ROW_BACKTRACK_PT:
            height = min(prev[4] - prev[2], top - bottom)
            if height > 0 and min(prev[4], top) - max(prev[2], bottom) >= ROW_OVERLAP * height:
                prev[0] = f"{prev[0]} {stripped}"
                prev[2], prev[3], prev[4] = min(prev[2], bottom), right, max(prev[4], top)
                continue
        rows.append([stripped, left, bottom, right, top])
    return _plain("\n".join(r[0] if r else "" for r in rows))


def _plain(text: str) -> str:
    return _LINE_BREAK.sub("\n", text).replace("\ufffe", "-\n")


def _title(pdf) -> str | None:
    try:
        return meaningful_title(pdf.get_metadata_value("Title"))
    except Exception:  # damaged info dictionaries are common and never fatal
        return None


def _reason(e: Exception) -> str:
    """pypdfium2's 'Failed to load document (PDFium: Data format error).' -> 'PDFium: data format error'."""
    m = re.search(r"\(PDFium: ([^)]*)\)", str(e))
    return f"PDFium: {m.group(1).rstrip('.').lower()}" if m else one_line(e)
