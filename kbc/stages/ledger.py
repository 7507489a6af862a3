"""What a build met, file by file: the manifest's `sources`, `skipped`, `degraded` and `counts`,
and the chunk records of each file, grouped into the windows the embed stage takes."""

from __future__ import annotations

import time
from typing import Callable, Iterable, Iterator

from ..errors import InputError, StrictError, option
from ..records import Extracted, Problem


MAX_IGNORED_LISTED = 1000


class Ledger:
    def __init__(self, walk_skipped: Iterable[tuple[str, str]], walk_ignored: Iterable[tuple[str, str]] = (), *,
                 strict: bool, total_files: int, progress: Callable[[str, int, "int | None"], None]):
        self.skipped: list[Problem] = [Problem(rel, "skipped", why) for rel, why in walk_skipped]
        self.ignored = list(walk_ignored)  # not built by choice (hidden, excluded, unsupported): never an error
        self.degraded: list[Problem] = []
        self.sources: list[dict] = []
        self.strict, self.total_files, self.progress = strict, total_files, progress
        self.stats = {"pages": 0, "chunks": 0, "truncated": 0, "max_tokens": 0}
        self.seconds = 0.0  # chunking
        self.max_seq_length = 0

    def add(self, ex: Extracted, records: list[dict]) -> list[dict]:
        """Book one file and its records; returns the records to embed (none once --strict has
        seen a problem: the build will fail, so nothing more is embedded)."""
        src_index = len(self.sources)
        for r in records:
            r["source"] = src_index
            self.stats["max_tokens"] = max(self.stats["max_tokens"], r["tokens"])
            if r["tokens"] > self.max_seq_length:
                self.stats["truncated"] += 1
        self.stats["pages"] += ex.page_count
        self.stats["chunks"] += len(records)
        entry = {"path": ex.source.rel, "kind": ex.source.kind, "size": ex.size, "sha256": ex.sha256,
                 "pages": ex.page_count, "chunks": len(records),
                 "status": "degraded" if any(p.source == ex.source.rel for p in self.degraded) else "ok"}
        if ex.source.kind == "records":
            entry["records"] = len(ex.documents)
        self.sources.append(entry)
        return [] if self.strict and (self.skipped or self.degraded) else records

    def windows(self, files: Iterator[Extracted], chunk_records: Callable[[Extracted], list[dict]],
                size: int, *, first: int | None = None) -> Iterator[list[dict]]:
        """Chunk records, file after file in input order, in lists of `size` (`first` for the first
        one; the last one shorter): the unit the embed stage looks up, embeds and writes. A file of
        many chunks spans several windows, so what the embed stage holds at once (the texts, their
        token encodings) is bounded by `size` whatever the files hold."""
        pending: list[dict] = []
        want = first or size
        while True:
            ex = next(files, None)
            if ex is None:
                break
            self.progress("extract", 1, self.total_files)
            for p in ex.problems:
                (self.skipped if p.severity == "skipped" else self.degraded).append(p)
            if not ex.documents:
                continue
            t = time.perf_counter()
            records = self.add(ex, chunk_records(ex))
            del ex  # its documents: only the records travel on
            self.seconds += time.perf_counter() - t
            pending = pending + records if pending else records
            start = 0
            while len(pending) - start >= want:
                yield pending[start:start + want]
                start, want = start + want, size
            pending = pending[start:] if start else pending
        if pending:
            yield pending

    def check(self, paths, written: int) -> None:
        if self.strict and (self.skipped or self.degraded):
            raise StrictError(f"{option('strict')}: {len(self.skipped)} skipped and {len(self.degraded)} degraded file(s): "
                              + "; ".join(f"{p.source}: {p.reason}" for p in self.skipped + self.degraded))
        if written == 0:
            raise InputError(f"{', '.join(str(p) for p in paths)}: no text could be extracted from any input "
                             f"({len(self.skipped)} file(s) skipped); nothing to build")

    def manifest(self, written: int) -> dict:
        return {"sources": self.sources,
                "skipped": [{"path": p.source, "reason": p.reason} for p in self.skipped],
                "degraded": [{"path": p.source, "reason": p.reason} for p in self.degraded],
                # the first MAX_IGNORED_LISTED (a node_modules folder can hold 100,000 files); all are counted
                "ignored": [{"path": p, "reason": r} for p, r in self.ignored[:MAX_IGNORED_LISTED]],
                "counts": {"files": len(self.sources), "pages": self.stats["pages"], "chunks": written,
                           "truncated_chunks": self.stats["truncated"], "skipped_files": len(self.skipped),
                           "ignored_files": len(self.ignored)}}
