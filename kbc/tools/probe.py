"""`kbc probe`: another engine's vectors for the probe texts against the bundle's reference.

The probe set itself (what the `probes` section holds and how a build makes it) is
kbc/format/probes.py; this module reads the vectors a device's engine produced and compares.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..format.probes import DEFAULT_THRESHOLD
from ..stages.sources import read_text_file


def read_vectors(path: str | os.PathLike) -> np.ndarray:
    """Vectors from another engine: .npy (no pickles), or JSON: a list of lists, or an object with
    `vectors`/`embeddings`, or a list of objects with `embedding` (llama.cpp server style)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix.lower() == ".npy":
        try:
            # the header's shape must fit the file before anything is allocated for it
            arr = np.load(path, allow_pickle=False, mmap_mode="r")
            if arr.nbytes > path.stat().st_size:
                raise ValueError(f"header declares {arr.nbytes} bytes, the file has {path.stat().st_size}")
            arr = np.array(arr)
        except (ValueError, OSError, MemoryError) as e:
            raise InputError(f"{path}: not a readable .npy array ({str(e)[:200]})") from None
    else:
        try:
            data = json.loads(read_text_file(path))
        except ValueError as e:
            raise InputError(f"{path}: not JSON ({e})") from None
        if isinstance(data, dict):
            data = data.get("vectors", data.get("embeddings", data.get("data")))
        if isinstance(data, list) and data and isinstance(data[0], dict):
            data = [d.get("embedding") for d in data]
        try:
            arr = np.asarray(data, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{path}: expected a list of equal-length number lists") from None
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"{path}: expected a 2-d array of numbers (one row per probe), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{path}: contains NaN or infinite values")
    return arr.astype(np.float64)


@dataclass
class ProbeResult:
    cosines: list[float]
    min: float
    mean: float
    threshold: float
    passed: bool
    worst: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def compare(reference: np.ndarray, candidate: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD,
            source: str = "vectors") -> ProbeResult:
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if cand.shape[0] != ref.shape[0]:
        raise InputError(f"{source}: {cand.shape[0]} vectors, but the bundle has {ref.shape[0]} probes "
                         f"(embed every line of `kbc probe BUNDLE --texts`, in order)")
    if cand.shape[1] != ref.shape[1]:
        raise InputError(f"{source}: {cand.shape[1]}-d vectors, but the bundle's embedder makes {ref.shape[1]}-d ones")
    num = np.sum(ref * cand, axis=1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-300), 0.0)
    worst = int(np.argmin(cos))
    return ProbeResult(cosines=[float(c) for c in cos], min=float(cos.min()), mean=float(cos.mean()),
                       threshold=threshold, passed=bool(cos.min() >= threshold), worst=worst)
