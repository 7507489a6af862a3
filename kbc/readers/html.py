"""HTML: the page's main text (navigation, footers and boilerplate removed) by trafilatura, kept
as Markdown so its headings become section headings; the title from the page's metadata.

trafilatura is chosen for quality: it leads the open article-extraction benchmarks (ScrapingHub's,
and its own comparison against readability, jusText, newspaper and goose), keeps headings, lists
and tables, and reads any encoding the page declares or that it detects."""

from __future__ import annotations

from ..records import Extracted, Problem, SourceFile
from ..textclean import clean_text, join_pages, with_markdown_structure
from . import ReadOptions, register_reader


def html_to_markdown(data: bytes | str) -> tuple[str, str | None]:
    """(main text as Markdown, title); ("", None) when the page holds no text."""
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
    text, title = html_to_markdown(data)
    markdown_document(src, text, title, out, opts)
