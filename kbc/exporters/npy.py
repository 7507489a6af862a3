"""The vectors as a NumPy array (float32 or float16 as stored; int8 bundles dequantised to float32),
and `<name>.ids.jsonl`, one line per row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..format.bundle import Bundle
from . import _ROWS, atomic, provenance, register_exporter


def ids_path(out: Path) -> Path:
    """The sidecar: `x.npy` -> `x.ids.jsonl`."""
    return out.with_name(out.name[:-4] + ".ids.jsonl" if out.name.endswith(".npy") else out.name + ".ids.jsonl")


@register_exporter("npy", extensions=(".npy",), description="vectors as .npy plus an .ids.jsonl sidecar",
                   streams=False, extra_outputs=lambda out: [ids_path(out)])
def write_npy(b: Bundle, out: Path, tick) -> list[Path]:
    sidecar = ids_path(out)
    dtype = np.dtype("<f4") if b.scales() is not None else b.dtype  # an int8 matrix is useless without its scales
    with atomic(out, "wb") as f, atomic(sidecar) as ids:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (b.count, b.dim)})
        for start in range(0, b.count, _ROWS):
            f.write(np.ascontiguousarray(b.vector_rows(start, start + _ROWS), dtype=dtype).tobytes())
        for i, ch in enumerate(b.iter_chunks()):
            ids.write(json.dumps(provenance(b, i, ch), ensure_ascii=False) + "\n")
            tick(1)
    return [out, sidecar]
