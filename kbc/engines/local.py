"""The local engine: extraction in worker processes on this machine (one per core, each under a
time and memory limit), embedding in this process with one single-threaded onnxruntime session
per core."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from ..readers.guarded import ExtractOptions
from ..records import Extracted, SourceFile
from . import register_engine


@register_engine("local", description="this machine: extraction workers, one embedding session per core")
class LocalEngine:
    def __init__(self, **_options):
        pass

    def extract_files(self, sources: Sequence[SourceFile], options: ExtractOptions) -> Iterator[Extracted]:
        from .workers import extract_all

        return extract_all(sources, options)

    def embed(self, embedder, items, *, batch_size: int = 32) -> Iterator[tuple[object, np.ndarray]]:
        for tag, texts in items:
            yield tag, (embedder.embed_documents(texts, batch_size=batch_size) if texts
                        else np.zeros((0, embedder.spec.dim), dtype=np.float32))

    def close(self) -> None:
        pass
