"""JSONL corpora: one document per record."""

from __future__ import annotations

import json

from ..records import Extracted, Problem, SourceFile
from ..textclean import clean_text, join_pages
from . import ReadOptions, register_reader
from .text import decode_utf8


@register_reader("records", suffixes=(".jsonl",), description="JSONL records with an id and a text (BEIR corpus.jsonl)")
def read_records(src: SourceFile, data: bytes, out: Extracted, opts: ReadOptions) -> None:
    clean = opts.clean
    """JSONL corpora (BEIR corpus.jsonl or any lines with id/title/text): one document per record."""
    text = decode_utf8(src, data, out)
    if text is None:
        return
    seen: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            rid = rec.get("_id", rec.get("id"))
            body = rec.get("text", rec.get("contents", ""))
            title = rec.get("title") or ""
        except (ValueError, AttributeError):
            out.problems.append(Problem(src.rel, "skipped", f"line {lineno}: not a JSON object"))
            out.documents.clear()
            return
        if rid is None or not isinstance(body, str) or not isinstance(title, str):
            out.problems.append(Problem(src.rel, "skipped", f"line {lineno}: record needs an id and a text string"))
            out.documents.clear()
            return
        rid = str(rid)
        if rid in seen:
            out.problems.append(Problem(src.rel, "skipped", f"line {lineno}: duplicate record id {rid!r}"))
            out.documents.clear()
            return
        seen.add(rid)
        full = f"{title} {body}".strip() if title else body.strip()
        if clean:
            full = clean_text(full)
        if full:
            doc = join_pages(src.rel, [full], [None])
            doc.record_id = rid
            out.documents.append(doc)
    out.page_count = len(out.documents)
    if not out.documents:
        out.problems.append(Problem(src.rel, "skipped", "no records with text"))

