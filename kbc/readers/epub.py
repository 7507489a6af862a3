"""EPUB books with EbookLib: each chapter of the reading order (spine) is one page, its HTML read
like any page (main text, headings kept); the title from the book's metadata.

An .epub is an untrusted zip archive: EbookLib reads the bounded copy `archive.open_archive` makes
of it (entry count, sizes and compression ratio checked first), and a book whose container,
package or chapters declare entities is refused (entity expansion, external entities naming local
files); chapters nested deeper than the HTML parser keeps are refused as HTML files are."""

from __future__ import annotations


from ..records import Extracted, Problem, SourceFile
from .textclean import clean_text, join_pages, one_line, with_markdown_structure
from . import ReadOptions, register_reader
from .archive import declares_entities, open_or_skip
from .html import MarkupRefused, html_to_markdown


def _refused_part(parts: dict[str, bytes]) -> str | None:
    declaring = next((name for name, body in parts.items() if declares_entities(body)), None)
    return None if declaring is None else f"{declaring!r} declares XML entities (<!ENTITY>), which kbc does not expand"


@register_reader("epub", suffixes=(".epub",), description="EPUB books (EbookLib): one page per chapter")
def read_epub(src: SourceFile, data: bytes, out: Extracted, opts: ReadOptions) -> None:
    import warnings

    import ebooklib
    from ebooklib import epub

    archive = open_or_skip(src, data, out, opts, kind="EPUB", refuse=_refused_part)
    if archive is None:
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            book = epub.read_epub(archive, options={"ignore_ncx": True})
    except Exception as e:
        out.problems.append(Problem(src.rel, "skipped", f"unreadable EPUB: {one_line(e)}"))
        return
    chapters: list[str] = []
    for item_id, _ in book.spine:
        item = book.get_item_with_id(item_id)
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT:
            continue
        try:
            text, _ = html_to_markdown(item.get_content())
        except MarkupRefused as e:
            out.problems.append(Problem(src.rel, "skipped", f"refused EPUB: chapter {item.get_name()!r}: {e}"))
            return
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
    doc.attributes = _dublin_core(book)
    out.documents.append(doc)


def _dublin_core(book) -> dict:
    """The book's own Dublin Core creator, language, subject and publisher, where set (FORMAT.md
    §2.10 attributes): one value as text, several as a list."""
    found = {}
    for name in ("creator", "language", "subject", "publisher"):
        try:
            values = [" ".join(str(v[0]).split()) for v in book.get_metadata("DC", name) if v and v[0]]
        except Exception:  # a malformed OPF entry: no attribute, the text is still read
            continue
        values = [v for v in values if v]
        if values:
            found["author" if name == "creator" else name] = values[0] if len(values) == 1 else values
    return found
