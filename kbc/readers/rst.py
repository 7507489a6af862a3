"""reStructuredText as structured text: the text as written; section titles (a line underlined,
optionally overlined, by a repeated punctuation character) give each part its heading path,
levels in the order the document first uses each adornment, as docutils assigns them."""

from __future__ import annotations

import re

from ..records import Extracted, SourceFile
from .textclean import heading_spans, meaningful_title
from . import ReadOptions, register_reader
from .text import read_plain

_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1{2,}[ \t]*$")


def rst_headings(text: str) -> list[tuple[int, int, str]]:
    lines = text.split("\n")
    starts, pos = [], 0
    for line in lines:
        starts.append(pos)
        pos += len(line) + 1
    styles: list[tuple[str, bool]] = []
    marks = []
    i = 0
    while i + 1 < len(lines):
        over = bool(_ADORNMENT.match(lines[i])) and i + 2 < len(lines) and lines[i + 2][:1] == lines[i][:1] \
            and bool(_ADORNMENT.match(lines[i + 2]))
        title_at = i + 1 if over else i
        title, under = lines[title_at].strip(), lines[title_at + 1] if title_at + 1 < len(lines) else ""
        if title and not _ADORNMENT.match(lines[title_at]) and _ADORNMENT.match(under) \
                and len(under.rstrip()) >= len(title):
            style = (under[0], over)
            if style not in styles:
                styles.append(style)
            marks.append((starts[i], styles.index(style) + 1, " ".join(title.split())))
            i = title_at + 2
            continue
        i += 1
    return heading_spans(text, marks)


@register_reader("rst", suffixes=(".rst", ".rest"), description="reStructuredText, section titles kept for context")
def read_rst(src: SourceFile, data: bytes, out: Extracted, opts: ReadOptions) -> None:
    from .markdown import split_front_matter

    # the same `---` block as Markdown's (Sphinx's MyST and many static-site tools accept it)
    attributes, data = split_front_matter(data)
    doc = read_plain(src, data, out, opts)
    if doc is not None:
        doc.attributes = attributes
        doc.headings = rst_headings(doc.text)
        doc.title = meaningful_title(doc.headings[0][2].split(" > ")[0]) if doc.headings else None
