"""Plain text (UTF-8): one page, cleaned."""

from __future__ import annotations

from ..records import Extracted, Problem, SourceFile
from ..textclean import clean_text, join_pages
from . import ReadOptions, register_reader


def decode_utf8(src: SourceFile, data: bytes, out: Extracted) -> str | None:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        out.problems.append(Problem(src.rel, "skipped", f"not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r})"))
        return None


def read_plain(src: SourceFile, data: bytes, out: Extracted, opts: ReadOptions):
    """The document of a UTF-8 text file (None, with the problem recorded, when there is none)."""
    text = decode_utf8(src, data, out)
    if text is None:
        return None
    out.page_count = 1
    text = clean_text(text) if opts.clean else text.strip()
    if not text:
        out.problems.append(Problem(src.rel, "skipped", "file is empty"))
        return None
    doc = join_pages(src.rel, [text], [None])
    out.documents.append(doc)
    return doc


@register_reader("text", suffixes=(".txt",), description="UTF-8 plain text")
def read_text(src: SourceFile, data: bytes, out: Extracted, opts: ReadOptions) -> None:
    read_plain(src, data, out, opts)
