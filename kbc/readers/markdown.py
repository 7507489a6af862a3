"""Markdown (UTF-8): the text as written; its first heading is the title, and each heading path
("Install > On Linux") the section heading of the text it covers."""

from __future__ import annotations

from ..records import Extracted, SourceFile
from .textclean import with_markdown_structure
from . import ReadOptions, register_reader
from .text import read_plain


@register_reader("markdown", suffixes=(".md", ".markdown"), description="Markdown, headings kept for context")
def read_markdown(src: SourceFile, data: bytes, out: Extracted, opts: ReadOptions) -> None:
    doc = read_plain(src, data, out, opts)
    if doc is not None:
        with_markdown_structure(doc)
