"""CSV and TSV as text rows: each row becomes one line `column: value; column: value` (the header
row names the columns), so a chunk of rows reads on its own; the dialect is sniffed for CSV."""

from __future__ import annotations

import csv
import io

from ..records import Extracted, Problem, SourceFile
from .textclean import join_pages
from . import ReadOptions, register_reader
from .text import decode_text

MAX_FIELD_CHARS = 10_000  # one cell of a hostile file must not hold the whole document


def _rows_as_text(text: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(text[:64_000], delimiters=",;|\t").delimiter
        except csv.Error:
            delimiter = ","
    csv.field_size_limit(MAX_FIELD_CHARS)
    rows = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = [" ".join(h.split()) for h in next(rows, [])]
    lines = []
    for row in rows:
        cells = [" ".join(c.split()) for c in row]
        pairs = [f"{header[i] if i < len(header) and header[i] else f'column {i + 1}'}: {c}"
                 for i, c in enumerate(cells) if c]
        if pairs:
            lines.append("; ".join(pairs))
    return lines


def _read(src: SourceFile, data: bytes, out: Extracted, opts: ReadOptions, delimiter: str | None) -> None:
    text = decode_text(src, data, out, opts)
    if text is None:
        return
    try:
        lines = _rows_as_text(text, delimiter)
    except csv.Error as e:
        out.problems.append(Problem(src.rel, "skipped", f"unreadable table: {e}"))
        return
    if not lines:
        out.problems.append(Problem(src.rel, "skipped", "no rows with values"))
        return
    out.page_count = 1
    out.documents.append(join_pages(src.rel, ["\n".join(lines)], [None]))


@register_reader("csv", suffixes=(".csv",), description="CSV rows as 'column: value' lines")
def read_csv(src: SourceFile, data: bytes, out: Extracted, opts: ReadOptions) -> None:
    _read(src, data, out, opts, None)


@register_reader("tsv", suffixes=(".tsv", ".tab"), description="TSV rows as 'column: value' lines")
def read_tsv(src: SourceFile, data: bytes, out: Extracted, opts: ReadOptions) -> None:
    _read(src, data, out, opts, "\t")
