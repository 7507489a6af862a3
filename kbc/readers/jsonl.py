"""JSONL corpora: one document per record."""

from __future__ import annotations

import json

from ..records import Extracted, Problem, SourceFile
from .textclean import clean_text, join_pages
from . import ReadOptions, register_reader
from .text import decode_text


@register_reader("records", suffixes=(".jsonl",), description="JSONL records with an id and a text (BEIR corpus.jsonl)")
def read_records(src: SourceFile, data: bytes, out: Extracted, opts: ReadOptions) -> None:
    """One document per record (`_id` or `id`; `text` or `contents`; optional `title` and `metadata`,
    an object whose values become the record's attributes). A bad line
    is reported and skipped; the file's other records are kept."""
    text = decode_text(src, data, out, opts)
    if text is None:
        return
    seen: set[str] = set()
    bad: list[str] = []
    # "\n" only: str.splitlines() also breaks at U+2028 and U+0085, which JSON strings may hold raw
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            rid = rec.get("_id", rec.get("id"))
            body = rec.get("text", rec.get("contents", ""))
            title = rec.get("title") or ""
            metadata = rec.get("metadata")
        except (ValueError, AttributeError, RecursionError):
            bad.append(f"line {lineno}: not a JSON object")
            continue
        if rid is None or isinstance(rid, (dict, list)) or not isinstance(body, str) or not isinstance(title, str):
            bad.append(f"line {lineno}: record needs an id and a text string")
            continue
        rid = str(rid)
        if rid in seen:
            bad.append(f"line {lineno}: duplicate record id {rid[:40]!r}")
            continue
        seen.add(rid)
        full = f"{title} {body}".strip() if title else body.strip()
        if opts.clean:
            full = clean_text(full)
        if full:
            doc = join_pages(src.rel, [full], [None])
            doc.record_id = rid
            # the record's attributes (FORMAT.md §2.10): its title and its `metadata` object's values
            doc.attributes = {**({"title": title} if title else {}),
                              **(metadata if isinstance(metadata, dict) else {})}
            out.documents.append(doc)
    out.page_count = len(out.documents)
    if bad:
        shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
        severity = "degraded" if out.documents else "skipped"
        out.problems.append(Problem(src.rel, severity, f"{len(bad)} bad line(s) skipped: {shown}"))
    if not out.documents and not bad:
        out.problems.append(Problem(src.rel, "skipped", "no records with text"))
