"""The exporter registry: a bundle's chunks and vectors in a format another runtime loads.

An exporter is one function `write(bundle, out, tick) -> [files written]` that joins the registry
with `@register_exporter("name", extensions=(".json",), description=..., streams=True)` in one new
file of this package, imported at the bottom of this module. Helpers below give every exporter
atomic output (a temporary file renamed into place, or stdout for `-`), rows in bounded memory
and floats that round-trip: Python's shortest repr of the stored float32 value, so parsing them
back and casting to float32 gives the stored bits exactly.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..format.bundle import Bundle
from ..errors import InputError, option
from ..stages.sources import check_output_path

_ROWS = 4096  # vectors converted per step: bounds memory whatever the bundle size

WriteFn = Callable[[Bundle, Path, Callable[[int], None]], list]


@dataclass(frozen=True)
class Exporter:
    name: str
    description: str
    write: WriteFn
    extensions: tuple[str, ...] = ()
    streams: bool = True  # one file, written front to back: `-` (stdout) works
    extra_outputs: Callable[[Path], list] = lambda out: []  # sidecar files it also writes


EXPORTERS: dict[str, Exporter] = {}


def register_exporter(name: str, *, description: str, extensions: tuple[str, ...] = (), streams: bool = True,
                      extra_outputs: Callable[[Path], list] | None = None):
    def add(fn: WriteFn) -> WriteFn:
        EXPORTERS[name] = Exporter(name, description, fn, extensions, streams, extra_outputs or (lambda out: []))
        return fn
    return add


def exporter_for(out: str | os.PathLike) -> str:
    """The format a file name asks for by its extension (`kb.jsonl` -> jsonl)."""
    name = str(out).lower()
    for e in EXPORTERS.values():
        if any(name.endswith(ext) for ext in e.extensions):
            return e.name
    raise InputError(f"{out}: cannot tell the format from the name; pass {option('fmt', '--to')} "
                     f"({', '.join(EXPORTERS)})")


def export(bundle_path: str | os.PathLike, fmt: str, out: str | os.PathLike, *,
           progress: Callable[[int], None] | None = None) -> list[Path]:
    """Write `bundle_path` as `fmt` to `out` (`-`: stdout); returns the files written."""
    if fmt not in EXPORTERS:
        raise InputError(f"{option('fmt', '--to')} must be one of {', '.join(EXPORTERS)}, not {fmt!r}")
    exporter = EXPORTERS[fmt]
    out = Path(out)
    if str(out) == "-":
        if not exporter.streams:
            raise InputError(f"-: {fmt} writes more than one file; name a file instead of stdout")
    else:
        for path in [out, *exporter.extra_outputs(out)]:
            check_output_path(path, inputs=[Path(bundle_path)])
    with Bundle(bundle_path) as b:
        b.check_vectors_finite()  # before the first byte goes out, stdout included
        return exporter.write(b, out, progress or (lambda n: None))


@contextmanager
def atomic(path: Path, mode: str = "w"):
    """A temp file next to `path`, renamed over it only when the block succeeds; `-` is stdout."""
    if str(path) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    if path.is_dir():
        raise InputError(f"{path}: output path is a directory")
    if not path.parent.is_dir():
        raise InputError(f"{path}: output directory {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def rows(bundle: Bundle) -> Iterator[tuple[int, dict, np.ndarray]]:
    chunks = bundle.iter_chunks()
    for start in range(0, bundle.count, _ROWS):
        block = bundle.vector_rows(start, start + _ROWS)  # float32; int8 dequantised
        for j in range(len(block)):
            yield start + j, next(chunks), block[j]


def floats(vec: np.ndarray) -> str:
    return json.dumps(vec.tolist())


def provenance(b: Bundle, i: int, ch: dict) -> dict:
    d = {"chunk_id": i, "source": b.source_path(ch)}
    for key in ("record", "page_start", "page_end", "label_start", "label_end", "char_start", "char_end"):
        if ch.get(key) is not None:
            d[key] = ch[key]
    return d


from . import edge_slm_json, jsonl_export, npy  # noqa: E402,F401  (the built-in exporters register themselves)

from ..infra.plugins import load_plugins  # noqa: E402

load_plugins()
