"""The Ray engine: the same stages on a Ray cluster (`ray.init(address=...)`), or on a local one.

- Extraction: Ray tasks over small batches of files; each task runs kbc's own extraction worker
  (a child process under the same per-file time and address-space limits as the local engine).
- Embedding: an actor pool; each actor loads the embedder once (the driver sends the recipe: model
  files' paths, exact spec, ONNX graph) and embeds the windows it is sent, one single-threaded
  session per CPU it was given, so its vectors are bit-identical to the local engine's.
- Cache lookups and writing stay on the driver: only cache misses are sent (and chunked by the
  task that extracts them), new vectors come back to the driver's cache, and one streaming writer
  makes the bundle.

Windows are sent to the actors in order, round robin, at most two per actor in flight, and their
vectors are taken back in order: the driver holds a bounded number of windows whatever the corpus
size. We use actors directly rather than `Dataset.map_batches`: the records are produced by the
driver as it goes (streaming, with cache hits removed), and a Dataset per window would restart
the actors, i.e. reload the model, every time.

Every node must see the model directory and the input files at the same paths (a shared file
system, or the same checkout), and have kbc installed (`pip install 'kbc[ray]'`).
"""

from __future__ import annotations

import collections
import logging
import os
from typing import Iterator, Sequence

import numpy as np

from ..errors import InputError, option
from ..readers.guarded import ExtractOptions
from ..records import Extracted, SourceFile
from . import register_engine

FILES_PER_TASK = 4
# Extraction tasks and embedding actors share the cluster's CPUs: an actor asks for most of one
# CPU and a task for the rest, so extraction never waits behind actors that wait for it.
ACTOR_CPUS = 0.75
TASK_CPUS = 0.25


def _extract_batch(sources: list[SourceFile], options: ExtractOptions) -> list[Extracted]:
    from dataclasses import replace

    from .workers import extract_all

    return list(extract_all(sources, replace(options, workers=1)))


class _EmbedActor:
    def __init__(self, embedder, batch_size: int):
        resize = getattr(embedder, "with_sessions", None)
        self.embedder = resize(1) if resize else embedder  # one single-threaded session per actor
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.embedder.embed_documents(texts, batch_size=self.batch_size), dtype=np.float32)


@register_engine("ray", description="a Ray cluster (--ray-address), or a local one: extraction tasks, "
                                    "an embedding actor pool")
class RayEngine:
    def __init__(self, *, address: str | None = None, cpus: int | None = None, actors: int | None = None,
                 device: str | None = None, **_):
        try:
            import ray
        except ImportError:
            raise InputError(f"{option('engine')} ray needs Ray: pip install 'kbc[ray]'") from None
        self.ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
            logging.getLogger("ray").setLevel(logging.ERROR)  # no third-party notices on the terminal
            try:
                ray.init(address=address, num_cpus=None if address else (cpus or os.cpu_count() or 1),
                         include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                         configure_logging=False)
            except Exception as e:  # unreachable address, version mismatch
                raise InputError(f"{option('engine')} ray: cannot start or join a Ray cluster "
                                 f"({str(e).splitlines()[0][:200]})") from None
        resources = ray.cluster_resources()
        total = int(resources.get("GPU", 0)) if device == "cuda" else int(resources.get("CPU", 1))
        self.n_actors = actors or max(1, total)
        self._extract = ray.remote(num_cpus=TASK_CPUS)(_extract_batch)
        # --device cuda: each embedding actor asks Ray for a GPU (the driver, which embeds the
        # probe set, loads the same backend on its own GPU)
        self._actor_cls = ray.remote(num_cpus=ACTOR_CPUS, num_gpus=1 if device == "cuda" else 0)(_EmbedActor)
        self._actors: list = []

    def extract_files(self, sources: Sequence[SourceFile], options: ExtractOptions) -> Iterator[Extracted]:
        batches = [list(sources[i:i + FILES_PER_TASK]) for i in range(0, len(sources), FILES_PER_TASK)]
        in_flight: collections.deque = collections.deque()
        ahead = 2 * self.n_actors + 2
        pending = iter(batches)
        try:
            for batch in pending:
                in_flight.append(self._extract.remote(batch, options))
                if len(in_flight) >= ahead:
                    yield from self.ray.get(in_flight.popleft())
            while in_flight:
                yield from self.ray.get(in_flight.popleft())
        finally:
            for ref in in_flight:
                self.ray.cancel(ref, force=True)

    def embed(self, embedder, items, *, batch_size: int = 32) -> Iterator[tuple[object, np.ndarray]]:
        if not self._actors:
            self._actors = [self._actor_cls.remote(embedder, batch_size) for _ in range(self.n_actors)]
        in_flight: collections.deque = collections.deque()
        turn = 0
        for tag, texts in items:
            if texts:
                in_flight.append((tag, self._actors[turn % len(self._actors)].embed.remote(texts)))
                turn += 1
            else:
                in_flight.append((tag, np.zeros((0, embedder.spec.dim), dtype=np.float32)))
            while len(in_flight) > 2 * len(self._actors):
                yield self._take(in_flight.popleft())
        while in_flight:
            yield self._take(in_flight.popleft())

    def _take(self, item) -> tuple[object, np.ndarray]:
        tag, value = item
        return tag, value if isinstance(value, np.ndarray) else self.ray.get(value)

    def close(self) -> None:
        for a in self._actors:
            self.ray.kill(a)
        self._actors = []
        if self._started:
            self.ray.shutdown()
