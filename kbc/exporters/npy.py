"""The vectors as a NumPy array (dtype as stored), and `<name>.ids.jsonl`, one line per row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..bundle import Bundle
from . import _ROWS, atomic, provenance, register_exporter


def ids_path(out: Path) -> Path:
    """The sidecar: `x.npy` -> `x.ids.jsonl`."""
    return out.with_name(out.name[:-4] + ".ids.jsonl" if out.name.endswith(".npy") else out.name + ".ids.jsonl")


@register_exporter("npy", extensions=(".npy",), description="vectors as .npy plus an .ids.jsonl sidecar",
                   streams=False, extra_outputs=lambda out: [ids_path(out)])
def write_npy(b: Bundle, out: Path, tick) -> list[Path]:
    sidecar = ids_path(out)
    with atomic(out, "wb") as f, atomic(sidecar) as ids:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.lib.format.dtype_to_descr(b.dtype), "fortran_order": False, "shape": (b.count, b.dim)})
        vectors = b.vectors
        for start in range(0, b.count, _ROWS):
            f.write(np.ascontiguousarray(vectors[start:start + _ROWS]).tobytes())
        for i, ch in enumerate(b.iter_chunks()):
            ids.write(json.dumps(provenance(b, i, ch), ensure_ascii=False) + "\n")
            tick(1)
    return [out, sidecar]
