"""The plain records that flow between build stages: a source file, its extracted documents and
pages, and the problems met. Every stage takes and returns these (or lists of chunk dicts, the
records the bundle stores), so an engine only has to move them."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SourceFile:
    path: Path
    rel: str  # POSIX path stored in the bundle
    kind: str  # a reader's kind (kbc.readers)


@dataclass
class Page:
    number: int  # 1-based physical page
    label: str | None  # the PDF's own page label ("iv", "A-3"), when it differs from the number
    start: int  # character span of this page in Document.text
    end: int


@dataclass
class Document:
    source: str  # relative path of the file
    text: str
    pages: list[Page]
    record_id: str | None = None  # for JSONL corpora: the record's id
    title: str | None = None  # the document's own title: PDF metadata, a Markdown file's first heading
    # section headings as (start, end, text): the character span of Document.text each one covers
    headings: list[tuple[int, int, str]] = field(default_factory=list)
    # what the document says of itself (front matter, metadata): FORMAT.md §2.10 attributes
    attributes: dict = field(default_factory=dict)

    def heading_at(self, pos: int) -> str:
        """The heading that covers character `pos` ("" if none); headings are in text order."""
        i = bisect.bisect_right(self.headings, pos, key=lambda h: h[0]) - 1
        return self.headings[i][2] if i >= 0 and pos < self.headings[i][1] else ""


@dataclass
class Problem:
    source: str
    severity: str  # "skipped" (nothing from this file is in the bundle) or "degraded" (some is)
    reason: str


@dataclass
class Extracted:
    source: SourceFile
    sha256: str
    size: int
    page_count: int
    documents: list[Document] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # the file's chunk records, when the extraction worker also chunked it (ExtractOptions.chunking)
    chunk_records: list[dict] | None = None

