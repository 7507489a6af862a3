"""Org mode as structured text: `*`, `**` ... headline lines give each part its heading path
(TODO keywords, priorities and tags left out of the path); `#+TITLE:` is the title."""

from __future__ import annotations

import re

from ..records import Extracted, SourceFile
from .textclean import heading_marks, heading_spans, meaningful_title
from . import ReadOptions, register_reader
from .text import read_plain

_HEADLINE = re.compile(r"^(\*+)[ \t]+(?:(?:TODO|DONE)[ \t]+)?(?:\[#[A-Z]\][ \t]+)?(.+?)(?:[ \t]+:[\w@#%:]+:)?[ \t]*$", re.M)
_TITLE = re.compile(r"^#\+TITLE:[ \t]*(.+)$", re.M | re.I)


@register_reader("org", suffixes=(".org",), description="Org mode, headlines kept for context")
def read_org(src: SourceFile, data: bytes, out: Extracted, opts: ReadOptions) -> None:
    doc = read_plain(src, data, out, opts)
    if doc is not None:
        doc.headings = heading_spans(doc.text, heading_marks(doc.text, _HEADLINE))
        title = _TITLE.search(doc.text)
        doc.title = meaningful_title(title.group(1)) if title else None
