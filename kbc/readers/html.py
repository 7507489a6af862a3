"""HTML: the page's main text (navigation, footers and boilerplate removed) by trafilatura, kept
as Markdown so its headings become section headings; the title from the page's metadata.

trafilatura is chosen for quality: it leads the open article-extraction benchmarks (ScrapingHub's,
and its own comparison against readability, jusText, newspaper and goose), keeps headings, lists
and tables, and reads any encoding the page declares or that it detects.

A page is untrusted markup. Its parser (libxml2's, through lxml) never expands entities and stops
at 256 levels of nesting, silently dropping whatever lies deeper; so a page nested deeper than
`MAX_HTML_DEPTH`, or one whose document type declaration declares entities (billion laughs,
external entities naming local files), is a skipped file with that reason, not text quietly lost."""

from __future__ import annotations

from ..records import Extracted, Problem, SourceFile
from .textclean import clean_text, join_pages, with_markdown_structure
from . import ReadOptions, register_reader
from .archive import html_declares_entities

# the deepest nesting read whole, <html> being level 1: libxml2's HTML parser keeps 256 levels unless
# told XML_PARSE_HUGE and drops deeper elements with their text, so a page that reaches 256 may
# already have lost some
MAX_HTML_DEPTH = 255


class MarkupRefused(Exception):
    """The page is refused before extraction; the message is the reason."""


def markup_depth(data: bytes | str, *, limit: int = MAX_HTML_DEPTH) -> int:
    """How deep the page's elements nest as the HTML parser reads them (at most limit + 1: the
    walk stops there); 0 when the parser finds no document."""
    from lxml import etree, html

    try:
        root = html.document_fromstring(data.encode("utf-8") if isinstance(data, str) else data)
    except (etree.ParserError, ValueError):  # empty, or nothing the parser calls a document
        return 0
    depth = deepest = 0
    for event, _ in etree.iterwalk(root, events=("start", "end")):
        depth += 1 if event == "start" else -1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest


def check_markup(data: bytes | str) -> None:
    """MarkupRefused for a page kbc will not extract: entity declarations, or nesting deeper than
    the parser keeps."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if html_declares_entities(raw):
        raise MarkupRefused("its document type declares XML entities (<!ENTITY>), which kbc does not expand")
    if markup_depth(raw) > MAX_HTML_DEPTH:
        raise MarkupRefused(f"markup nested deeper than {MAX_HTML_DEPTH} levels, where the HTML parser "
                            "stops reading")


def html_to_markdown(data: bytes | str) -> tuple[str, str | None]:
    """(main text as Markdown, title); ("", None) when the page holds no text. MarkupRefused for a
    page `check_markup` refuses."""
    check_markup(data)
    import logging

    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    import trafilatura

    text = trafilatura.extract(data, output_format="markdown", include_tables=True, include_formatting=True,
                               include_links=False, include_images=False, include_comments=False,
                               favor_recall=True, deduplicate=False) or ""
    meta = trafilatura.extract_metadata(data)
    title = " ".join(meta.title.split()) if meta is not None and meta.title else None
    if text and title and not text.lstrip().startswith("#"):
        # trafilatura lifts a page's leading <h1> into the metadata: put it back as the heading
        # the rest of the page sits under
        text = f"# {title}\n\n{text}"
    return text, title


def markdown_document(src: SourceFile, text: str, title: str | None, out: Extracted, opts: ReadOptions) -> None:
    """A Markdown-shaped text as one page with its heading paths (shared by HTML, DOCX, EPUB)."""
    text = clean_text(text) if opts.clean else text.strip()
    if not text:
        out.problems.append(Problem(src.rel, "skipped", "no text found"))
        return
    out.page_count = max(out.page_count, 1)
    doc = join_pages(src.rel, [text], [None])
    with_markdown_structure(doc, title)
    out.documents.append(doc)


@register_reader("html", suffixes=(".html", ".htm", ".xhtml"), description="HTML main text (trafilatura), headings kept")
def read_html(src: SourceFile, data: bytes, out: Extracted, opts: ReadOptions) -> None:
    try:
        text, title = html_to_markdown(data)
    except MarkupRefused as e:
        out.problems.append(Problem(src.rel, "skipped", f"refused HTML: {e}"))
        return
    markdown_document(src, text, title, out, opts)
