"""Markdown (UTF-8): the text as written; its first heading is the title, and each heading path
("Install > On Linux") the section heading of the text it covers. A front matter block (`---`
first, `key: value` lines, `---`) becomes the document's attributes (FORMAT.md §2.10), not text."""

from __future__ import annotations

import re

from ..records import Extracted, SourceFile
from .textclean import with_markdown_structure
from . import ReadOptions, register_reader
from .text import read_plain

MAX_FRONT_MATTER_BYTES = 64 << 10  # an author's few lines of metadata; a longer block is text
_OPEN = re.compile(rb"\A(?:\xef\xbb\xbf)?---[ \t]*\r?\n")
_CLOSE = re.compile(rb"^(?:---|\.\.\.)[ \t]*\r?$", re.M)
_KEY_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_.\-]*)[ \t]*:(?:[ \t]+(.*))?\Z")
_INTEGER = re.compile(r"-?[0-9]{1,16}\Z")


def _scalar(text: str):
    """A YAML-style scalar as kbc reads it: quoted text stays text, an unquoted integer is one,
    true/false are booleans; anything else (a date too, typed later) is text."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if _INTEGER.match(text):
        return int(text)
    if text in ("true", "false"):
        return text == "true"
    return text


def parse_front_matter(block: str) -> dict:
    """`key: value`, `key: [a, b]` and `key:` followed by `- item` lines; comments, blank and
    indented (nested) lines are skipped. The subset of YAML front matter a filter can use; never
    evaluates anything."""
    out: dict = {}
    list_key = None
    for line in block.split("\n"):
        line = line.rstrip("\r")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if list_key is not None and stripped.startswith("- "):
            out[list_key].append(_scalar(stripped[2:]))
            continue
        list_key = None
        if line[:1] in " \t":
            continue
        m = _KEY_LINE.match(stripped)
        if not m:
            continue
        key, value = m.group(1), (m.group(2) or "").strip()
        if not value:
            out[key] = []
            list_key = key
        elif value.startswith("[") and value.endswith("]"):
            out[key] = [_scalar(v) for v in value[1:-1].split(",") if v.strip()]
        elif not value.startswith(("{", "|", ">", "&", "*", "!")):
            out[key] = _scalar(value.split(" #")[0])
    return {k: v for k, v in out.items() if v != []}


def split_front_matter(data: bytes) -> tuple[dict, bytes]:
    """(attributes, the rest of the file) when `data` opens with a front matter block, else ({}, data)."""
    opening = _OPEN.match(data)
    if not opening:
        return {}, data
    close = _CLOSE.search(data, opening.end(), opening.end() + MAX_FRONT_MATTER_BYTES)
    if not close:
        return {}, data
    block = data[opening.end():close.start()].decode("utf-8", "replace")
    rest = data[close.end():]
    return parse_front_matter(block), rest[1:] if rest[:1] == b"\n" else rest


@register_reader("markdown", suffixes=(".md", ".markdown"), description="Markdown, headings kept for context")
def read_markdown(src: SourceFile, data: bytes, out: Extracted, opts: ReadOptions) -> None:
    attributes, data = split_front_matter(data)
    doc = read_plain(src, data, out, opts)
    if doc is not None:
        with_markdown_structure(doc)
        doc.attributes = attributes
