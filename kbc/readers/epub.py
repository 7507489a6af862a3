"""EPUB books with EbookLib: each chapter of the reading order (spine) is one page, its HTML read
like any page (main text, headings kept); the title from the book's metadata."""

from __future__ import annotations

import io

from ..records import Extracted, Problem, SourceFile
from ..textclean import clean_text, join_pages, one_line, with_markdown_structure
from . import ReadOptions, register_reader
from .html import html_to_markdown


@register_reader("epub", suffixes=(".epub",), description="EPUB books (EbookLib): one page per chapter")
def read_epub(src: SourceFile, data: bytes, out: Extracted, opts: ReadOptions) -> None:
    import warnings

    import ebooklib
    from ebooklib import epub

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            book = epub.read_epub(io.BytesIO(data), options={"ignore_ncx": True})
    except Exception as e:
        out.problems.append(Problem(src.rel, "skipped", f"unreadable EPUB: {one_line(e)}"))
        return
    chapters: list[str] = []
    for item_id, _ in book.spine:
        item = book.get_item_with_id(item_id)
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT:
            continue
        text, _ = html_to_markdown(item.get_content())
        text = clean_text(text) if opts.clean else text.strip()
        if text:
            chapters.append(text)
    if not chapters:
        out.problems.append(Problem(src.rel, "skipped", "no text in any chapter"))
        return
    out.page_count = len(chapters)
    doc = join_pages(src.rel, chapters, [None] * len(chapters))
    titles = book.get_metadata("DC", "title")
    with_markdown_structure(doc, titles[0][0] if titles else None)
    out.documents.append(doc)
