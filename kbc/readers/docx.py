"""Word documents (.docx) with python-docx: paragraphs in order, `Heading N` and `Title` styles as
Markdown headings (so they become section headings), tables as ` | `-separated rows.

A .docx is an untrusted zip archive: python-docx reads the bounded copy `archive.open_archive`
makes of it (entry count, sizes and compression ratio checked first), and a part with a document
type declaration is refused: the Open Packaging Conventions forbid DTDs in a package (ECMA-376
Part 2, M1.17), so one is only there for entity expansion or an external entity."""

from __future__ import annotations

import re


from ..records import Extracted, Problem, SourceFile
from .textclean import one_line
from . import ReadOptions, register_reader
from .archive import declares_dtd, open_or_skip
from .html import markdown_document


def _refused_part(parts: dict[str, bytes]) -> str | None:
    dtd = next((name for name, body in parts.items() if declares_dtd(body)), None)
    return None if dtd is None else (f"part {dtd!r} has a document type declaration, which Office files "
                                     "never hold (entities are not expanded)")


def _heading_level(style_name: str) -> int:
    """Markdown level of a paragraph style: Title 1, Heading N N+1 (Word's Title sits above Heading 1)."""
    name = (style_name or "").lower()
    if name == "title":
        return 1
    if name.startswith("heading "):
        try:
            return max(2, min(6, int(name.split()[1]) + 1))
        except ValueError:
            return 0
    return 0


@register_reader("docx", suffixes=(".docx",), description="Word .docx (python-docx), headings kept")
def read_docx(src: SourceFile, data: bytes, out: Extracted, opts: ReadOptions) -> None:
    from docx import Document as open_docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    package = open_or_skip(src, data, out, opts, kind="DOCX", refuse=_refused_part)
    if package is None:
        return
    try:
        document = open_docx(package)
    except Exception as e:  # not a zip, not a Word package, damaged XML
        out.problems.append(Problem(src.rel, "skipped", f"unreadable DOCX: {one_line(e)}"))
        return
    lines: list[str] = []
    for block in document.element.body.iterchildren():
        tag = block.tag.rsplit("}", 1)[-1]
        if tag == "p":
            p = Paragraph(block, document)
            text = " ".join(p.text.split())
            if not text:
                continue
            level = _heading_level(p.style.name if p.style is not None else "")
            lines.append(("#" * level + " " + text) if level else text)
        elif tag == "tbl":
            for row in Table(block, document).rows:
                cells = [" ".join(c.text.split()) for c in row.cells]
                if any(cells):
                    lines.append(" | ".join(cells))
    title = document.core_properties.title or None
    before = len(out.documents)
    markdown_document(src, "\n\n".join(lines), title, out, opts)
    if len(out.documents) > before:
        out.documents[-1].attributes = _core_properties(document.core_properties)


# what python-docx's own template writes: a generator's default, not the document's author
_GENERATOR_AUTHORS = {"python-docx", "python-docx-template"}


def _core_properties(core) -> dict:
    """The document's own author, language, subject, category and keywords (a list), where set
    (FORMAT.md §2.10 attributes). Dates are left out: the template's are the generator's, not the
    document's."""
    found = {}
    for name, key in (("author", "author"), ("language", "language"), ("subject", "subject"),
                      ("category", "category")):
        value = " ".join(str(getattr(core, name, "") or "").split())
        if value and not (name == "author" and value in _GENERATOR_AUTHORS):
            found[key] = value
    keywords = [k.strip() for k in re.split(r"[,;]", str(getattr(core, "keywords", "") or "")) if k.strip()]
    if keywords:
        found["keywords"] = keywords
    return found
