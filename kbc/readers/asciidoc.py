"""AsciiDoc as structured text: `= Title`, `== Section` ... `====== Level 5` lines give each part
its heading path; the document title is the level-0 `=` line."""

from __future__ import annotations

import re

from ..records import Extracted, SourceFile
from .textclean import heading_marks, heading_spans, meaningful_title
from . import ReadOptions, register_reader
from .text import read_plain

_HEADING = re.compile(r"^(={1,6})[ \t]+(\S.*?)[ \t]*$", re.M)


@register_reader("asciidoc", suffixes=(".adoc", ".asciidoc", ".asc"), description="AsciiDoc, section titles kept for context")
def read_asciidoc(src: SourceFile, data: bytes, out: Extracted, opts: ReadOptions) -> None:
    doc = read_plain(src, data, out, opts)
    if doc is not None:
        marks = heading_marks(doc.text, _HEADING)
        doc.headings = heading_spans(doc.text, marks)
        doc.title = meaningful_title(marks[0][2]) if marks and marks[0][1] == 1 else None
