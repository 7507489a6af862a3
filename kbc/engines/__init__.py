"""Engines move records between the build stages; they decide where work runs, never what it is.

An engine has two jobs, both order-preserving, and `close()`:

- `extract_files(sources, options)`: one `Extracted` per source, in input order;
- `embed(embedder, items)`: for each `(tag, texts)` in order, `(tag, vectors)`, with several
  windows in flight where the engine can overlap them.

Cache lookups and writing stay on the driver (`kbc.pipeline`); chunking runs wherever a file is
extracted (ExtractOptions.chunking: the same records on every engine), so every engine builds the
same bytes. A new engine is one file in this package with `@register_engine("name")` on a class
whose constructor takes keyword options (`address`, `cpus`).
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator, Protocol, Sequence, TypeVar

import numpy as np

from ..errors import InputError, option
from ..readers.guarded import ExtractOptions
from ..records import Extracted, SourceFile

T = TypeVar("T")


class Engine(Protocol):
    name: str

    def extract_files(self, sources: Sequence[SourceFile], options: ExtractOptions) -> Iterator[Extracted]: ...

    def embed(self, embedder, items: Iterator[tuple[T, list[str]]]) -> Iterator[tuple[T, np.ndarray]]: ...

    def close(self) -> None: ...


ENGINES: dict[str, Callable[..., Engine]] = {}
DESCRIPTIONS: dict[str, str] = {}


def register_engine(name: str, *, description: str):
    def add(cls):
        ENGINES[name] = cls
        DESCRIPTIONS[name] = description
        cls.name = name
        return cls
    return add


def open_engine(name: str, **options) -> Engine:
    if name not in ENGINES:
        raise InputError(f"{option('engine')} must be one of {', '.join(ENGINES)}, not {name!r}")
    return ENGINES[name](**options)


_DONE = object()


class prefetch(Iterator[T]):
    """Run `items` in a background thread, started at once, so that the stages after it overlap
    with it (and with whatever the caller does before its first `next`). Exceptions come out where
    the item would have. At most `depth` items wait: memory stays bounded when the producer is
    faster. `close()` stops the producer after its current item and waits for it; the producer
    alone touches `items` (closing it in its own thread), so closing from another thread is safe."""

    def __init__(self, items: Iterator[T], *, depth: int = 4):
        self._items = items
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._produce, name="kbc-prefetch", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            for item in self._items:
                if self._stop.is_set() or not self._offer((item, None)):
                    break
        except BaseException as e:  # surfaced in the consumer
            self._offer((None, e))
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    pass
            self._offer((_DONE, None))

    def _offer(self, entry) -> bool:
        """Queue `entry`, waiting for room; False once the consumer has left."""
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def __iter__(self) -> "prefetch[T]":
        return self

    def __next__(self) -> T:
        while not self._finished:
            try:
                item, error = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():  # closed (from another thread): end here
                    break
                continue
            if error is not None:
                self._finished = True
                raise error
            if item is _DONE:
                break
            return item
        self._finished = True
        raise StopIteration

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


from . import local, ray  # noqa: E402,F401  (the built-in engines register themselves)

from ..infra.plugins import load_plugins  # noqa: E402

load_plugins()
