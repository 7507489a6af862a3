"""Export a bundle for runtimes that do not read .kbpack: streamed, in bounded memory, atomically.

- `edge-slm-json`: the file the deepsense-ai/edge-slm Android app loads,
  `{"chunks": [{"metadata": {"source", "chunk_id"}, "content", "embedding"}]}`;
- `jsonl`: one chunk per line with full provenance and its vector;
- `npy`: the vectors as a NumPy array (dtype as stored) plus `<name>.ids.jsonl`, one line per row.

Floats are written with Python's shortest round-trip repr of the stored float32 value, so parsing
them back and casting to float32 gives the stored bits exactly.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .bundle import Bundle
from .sources import check_output_path
from .errors import InputError

FORMATS = ("edge-slm-json", "jsonl", "npy")
_ROWS = 4096  # vectors converted per step: bounds memory whatever the bundle size


def _ids_path(out: Path) -> Path:
    """The npy export's sidecar: `x.npy` -> `x.ids.jsonl`."""
    return out.with_name(out.name[:-4] + ".ids.jsonl" if out.name.endswith(".npy") else out.name + ".ids.jsonl")


@contextmanager
def _atomic(path: Path, mode: str = "w"):
    """A temp file next to `path`, renamed over it only when the block succeeds; `-` is stdout."""
    if str(path) == "-":
        import sys

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


def _rows(bundle: Bundle) -> Iterator[tuple[int, dict, np.ndarray]]:
    vectors = bundle.vectors
    chunks = bundle.iter_chunks()
    for start in range(0, bundle.count, _ROWS):
        block = np.asarray(vectors[start:start + _ROWS], dtype=np.float32)
        for j in range(len(block)):
            yield start + j, next(chunks), block[j]


def _floats(vec: np.ndarray) -> str:
    return json.dumps(vec.tolist())


def export(bundle_path: str | os.PathLike, fmt: str, out: str | os.PathLike, *,
           progress: Callable[[int], None] | None = None) -> list[Path]:
    """Write `bundle_path` as `fmt` to `out`; returns the files written."""
    if fmt not in FORMATS:
        raise InputError(f"--to must be one of {', '.join(FORMATS)}, not {fmt!r}")
    out = Path(out)
    if str(out) == "-":
        if fmt == "npy":
            raise InputError("-: npy writes two files (vectors and ids); name a file instead of stdout")
    else:
        check_output_path(out, inputs=[Path(bundle_path)])
    if fmt == "npy":
        check_output_path(_ids_path(out), inputs=[Path(bundle_path)])
    tick = progress or (lambda n: None)
    with Bundle(bundle_path) as b:
        b.check_vectors_finite()  # before the first byte goes out, stdout included
        if fmt == "edge-slm-json":
            with _atomic(out) as f:
                f.write('{"chunks": [')
                for i, ch, vec in _rows(b):
                    item = {"metadata": {"source": b.source_path(ch), "chunk_id": i}, "content": ch["text"]}
                    f.write(("\n" if i == 0 else ",\n") + json.dumps(item, ensure_ascii=False)[:-1]
                            + ', "embedding": ' + _floats(vec) + "}")
                    tick(1)
                f.write("\n]}\n")
            return [out]
        if fmt == "jsonl":
            with _atomic(out) as f:
                for i, ch, vec in _rows(b):
                    f.write(json.dumps(_provenance(b, i, ch), ensure_ascii=False)[:-1]
                            + ', "text": ' + json.dumps(ch["text"], ensure_ascii=False)
                            + ', "embedding": ' + _floats(vec) + "}\n")
                    tick(1)
            return [out]
        # npy: header, then the stored rows as they are; ids beside it
        ids_path = _ids_path(out)
        with _atomic(out, "wb") as f, _atomic(ids_path) as ids:
            np.lib.format.write_array_header_1_0(
                f, {"descr": np.lib.format.dtype_to_descr(b.dtype), "fortran_order": False, "shape": (b.count, b.dim)})
            vectors = b.vectors
            for start in range(0, b.count, _ROWS):
                f.write(np.ascontiguousarray(vectors[start:start + _ROWS]).tobytes())
            for i, ch in enumerate(b.iter_chunks()):
                ids.write(json.dumps(_provenance(b, i, ch), ensure_ascii=False) + "\n")
                tick(1)
        return [out, ids_path]


def _provenance(b: Bundle, i: int, ch: dict) -> dict:
    d = {"chunk_id": i, "source": b.source_path(ch)}
    for key in ("record", "page_start", "page_end", "label_start", "label_end", "char_start", "char_end"):
        if ch.get(key) is not None:
            d[key] = ch[key]
    return d
