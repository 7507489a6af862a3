"""The local engine: extraction in worker processes on this machine (one per core, each under a
time and memory limit), embedding in this process with one single-threaded onnxruntime session
per core."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from ..readers.guarded import ExtractOptions
from ..records import Extracted, SourceFile
from . import register_engine

# A window (256 chunks or more) is embedded in slices of this many texts: Ctrl-C reaches the driver
# between two of them, and the sessions' threads finish the slice they run before the build can
# stop (a whole window took 10-20 s on 2 loaded cores with the default model; a slice about 1 s).
# 64 keeps every session busy (an embedder runs fewer texts on one session) at a cost of one
# thread pool per slice, microseconds against the slice's second. Only an embedder that runs one
# text at a time is sliced: its vectors do not depend on the texts beside them; a padded batch's
# (torch sorts a call's texts by length into batches) could change in the last bits.
EMBED_SLICE = 64


@register_engine("local", description="this machine: extraction workers, one embedding session per core")
class LocalEngine:
    def __init__(self, **_options):
        pass

    def extract_files(self, sources: Sequence[SourceFile], options: ExtractOptions) -> Iterator[Extracted]:
        from .workers import extract_all

        return extract_all(sources, options)

    def embed(self, embedder, items, *, batch_size: int = 32) -> Iterator[tuple[object, np.ndarray]]:
        for tag, texts in items:
            if not texts:
                yield tag, np.zeros((0, embedder.spec.dim), dtype=np.float32)
                continue
            runtime = getattr(embedder.spec, "runtime", None) or {}
            one_by_one = str(runtime.get("batching", "")).startswith("one text per run")
            step = EMBED_SLICE if one_by_one else len(texts)
            slices = [embedder.embed_documents(texts[i:i + step], batch_size=batch_size)
                      for i in range(0, len(texts), step)]
            yield tag, slices[0] if len(slices) == 1 else np.concatenate(slices)

    def close(self) -> None:
        pass
