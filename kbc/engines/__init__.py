"""Engines move records between the build stages; they decide where work runs, never what it is.

An engine has two jobs, both order-preserving, and `close()`:

- `extract_files(sources, options)`: one `Extracted` per source, in input order;
- `embed(embedder, items)`: for each `(tag, texts)` in order, `(tag, vectors)`, with several
  windows in flight where the engine can overlap them.

Cache lookups, chunking and writing stay on the driver (`kbc.pipeline`), so every engine builds the
same bytes. A new engine is one file in this package with `@register_engine("name")` on a class
whose constructor takes keyword options (`address`, `cpus`).
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator, Protocol, Sequence, TypeVar

import numpy as np

from ..errors import InputError, option
from ..extract import ExtractOptions
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


def prefetch(items: Iterator[T], *, depth: int = 4) -> Iterator[T]:
    """Run `items` in a background thread, so that the stages after it overlap with it. Exceptions
    come out where the item would have; closing the result stops the thread. At most `depth`
    items wait: memory stays bounded when the producer is faster."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def run() -> None:
        try:
            for item in items:
                if stop.is_set():
                    break
                q.put((item, None))
                if stop.is_set():  # the consumer left while we waited for room: pull nothing more
                    break
        except BaseException as e:  # surfaced in the consumer
            q.put((None, e))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    pass
            q.put((done, None))

    thread = threading.Thread(target=run, name="kbc-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # drain, so a producer blocked on a full queue sees `stop`
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass


from . import local, ray  # noqa: E402,F401  (the built-in engines register themselves)

from ..plugins import load_plugins  # noqa: E402

load_plugins()
