"""Extract stage: each source file's documents, from the cache when its bytes were read before with
the same reader settings, else from the engine's extraction workers."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import Callable, Iterator, Sequence

from ..readers.guarded import EXTRACTOR_VERSION, ExtractOptions, cacheable, from_cache, to_cache
from ..readers import READERS, VARIANTS, check_variants, reader_for
from ..records import Extracted, SourceFile

ExtractFiles = Callable[[Sequence[SourceFile], ExtractOptions], Iterator[Extracted]]


class ExtractStage:
    def __init__(self, *, passwords: Sequence[str], clean: bool, workers: int | None, file_timeout: float,
                 encoding: str | None = None, readers: dict[str, str] | None = None, cache=None):
        if encoding is not None:
            import codecs

            try:
                codecs.lookup(encoding)
            except LookupError:
                from ..errors import InputError, option

                raise InputError(f"{option('encoding')} {encoding}: unknown encoding") from None
        try:
            # every kind with several readers keys the cache by the one used, the default included
            variants = check_variants({**{k: READERS[k].variant for k in VARIANTS}, **(readers or {})})
        except ValueError as e:
            from ..errors import InputError, option

            raise InputError(f"{option('pdf_reader')}: {e}") from None
        self.options = ExtractOptions(passwords=tuple(passwords), clean=clean, encoding=encoding, variants=variants,
                                      workers=workers, timeout_s=file_timeout)
        self.cache = cache
        # keys the extraction cache and, through the chunk stage, the chunk cache
        key = [EXTRACTOR_VERSION, clean, sorted(passwords), encoding, [list(v) for v in variants]]
        self.settings = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
        self.stats = {"files_cached": 0, "files_extracted": 0}
        self.seconds = 0.0
        self.kinds: set[str] = set()
        self.misses_known = threading.Event()  # set once the cache lookups are done
        self.stop = threading.Event()  # set when the build ends early: no more hashing or extracting
        self.misses = 0

    def _key(self, src: SourceFile) -> str | None:
        try:
            return f"{self.cache.file_sha256(src.path)}:{src.kind}:{self.settings}"
        except OSError:
            return None

    def run(self, sources: Sequence[SourceFile], extract_files: ExtractFiles) -> Iterator[Extracted]:
        """One Extracted per source, in input order: cache hits as they are, the rest extracted by
        `extract_files` (the engine's), in parallel, and stored for next time."""
        t = time.perf_counter()
        hits: dict[int, Extracted] = {}
        keys: dict[int, str | None] = {}
        misses: list[int] = []
        try:
            for i, src in enumerate(sources):
                if self.stop.is_set():
                    return
                self.kinds.add(src.kind)
                if self.cache is not None:
                    keys[i] = self._key(src)
                    got = self.cache.get_extracted(keys[i]) if keys[i] else None
                    if got is not None:
                        try:
                            hits[i] = from_cache(src, got)
                            continue
                        except (KeyError, TypeError, ValueError):
                            pass  # a stale or damaged entry: extract again
                misses.append(i)
        finally:
            self.misses = len(misses)
            self.misses_known.set()
        fresh = extract_files([sources[i] for i in misses], self.options)
        # seconds: time spent finding or extracting files, not time waiting for the stages after it
        self.seconds += time.perf_counter() - t
        try:
            for i in range(len(sources)):
                if self.stop.is_set():
                    return
                if i in hits:
                    self.stats["files_cached"] += 1
                    yield hits.pop(i)
                    continue
                t = time.perf_counter()
                ex = next(fresh)
                self.stats["files_extracted"] += 1
                if self.cache is not None and keys.get(i) and cacheable(ex):
                    self.cache.put_extracted(keys[i], to_cache(ex))
                self.seconds += time.perf_counter() - t
                yield ex
        finally:
            close = getattr(fresh, "close", None)
            if close is not None:
                close()  # stops the engine's workers when the build stops early

    def reader(self, kind: str):
        return reader_for(kind, dict(self.options.variants).get(kind))

    def manifest(self) -> dict:
        return {"extraction": {"readers": {k: self.reader(k).description for k in sorted(self.kinds) if k in READERS},
                               "clean": self.options.clean}}
