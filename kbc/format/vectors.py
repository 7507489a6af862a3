"""How a bundle stores its vectors (FORMAT.md §2.7): float32, float16, or int8 with one scale per
dimension, optionally with binary codes that make dense search two-stage.

The writer, the reader, `kbc eval --vectors` and the benchmarks all quantise and search through
this module, so a bundle built with `--vectors int8` scores exactly as `kbc eval` predicted.
Importing it is cheap: numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Encoding:
    dtype: str  # the manifest's vectors.dtype
    section_encoding: str  # the vectors section's table encoding
    numpy: np.dtype
    quantised: bool  # rows are integers that need vector_scales


ENCODINGS = {
    "float32": Encoding("float32", "f32le", np.dtype("<f4"), False),
    "float16": Encoding("float16", "f16le", np.dtype("<f2"), False),
    "int8": Encoding("int8", "i8", np.dtype("i1"), True),
}

# The largest |value| each dtype stores finitely (int8: 128 x its scale must stay a float32).
_FLOAT32_MAX = float(np.finfo(np.float32).max)
LARGEST = {"float32": _FLOAT32_MAX, "float16": float(np.finfo(np.float16).max), "int8": _FLOAT32_MAX / 128 * 127}

SCALES_SECTION = "vector_scales"
BINARY_SECTION = "vectors_binary"
BINARY_ENCODING = "b1"
# Two-stage search takes the max(multiplier x k, candidates) nearest codes by Hamming distance and
# rescores them. Measured at k = 10 against exact search over the same int8 rows (2026-11-30): the
# top 10 share 98.4% / 97.1% of their chunks with 200 candidates, 99.9% / 99.8% with 1000, on
# scifact-train (10k chunks) / financebench-dev (16k). Rescoring 1000 rows costs less than the
# Hamming scan of 100k codes, so 1000 it is.
BINARY_CANDIDATES = 1000
BINARY_MULTIPLIER = 10
BINARY_LIMITS = {"candidates": 65536, "multiplier": 1024}


@dataclass(frozen=True)
class Preset:
    """What `--vectors NAME` writes."""
    name: str
    dtype: str
    binary: bool
    description: str


PRESETS = {
    "f32": Preset("f32", "float32", False, "float32, exact (default)"),
    "f16": Preset("f16", "float16", False, "float16: half the size, same results"),
    "int8": Preset("int8", "int8", False, "int8 with one scale per dimension: a quarter of the size"),
    "binary": Preset("binary", "int8", True, "int8 plus 1-bit codes searched first: a device keeps dim/8 bytes per chunk resident"),
}


def row_bytes(dtype: str, dim: int, *, binary: bool = False) -> int:
    """Bytes one chunk's vector takes in the file."""
    return ENCODINGS[dtype].numpy.itemsize * dim + (binary_row_bytes(dim) if binary else 0)


def binary_row_bytes(dim: int) -> int:
    return (dim + 7) // 8


# ----------------------------------------------------------------------------- int8


def int8_scales(absmax: np.ndarray) -> np.ndarray:
    """One symmetric scale per dimension from the corpus's largest |x|: nothing saturates."""
    return (np.asarray(absmax, dtype=np.float32) / np.float32(127)).astype("<f4")


def quantise_int8(x: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """round_half_even(x / scale) clipped to -127..127; 0 where a dimension's scale is 0."""
    x = np.asarray(x, dtype=np.float32)
    safe = np.where(scales > 0, scales, np.float32(1))
    q = np.rint(x / safe)
    q[:, scales <= 0] = 0
    return np.clip(q, -127, 127).astype(np.int8)


def dequantise(stored: np.ndarray, scales: np.ndarray | None) -> np.ndarray:
    """The float32 values a row stands for."""
    if scales is None:
        return np.asarray(stored, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # a forged huge scale: inf, ranked last by search
        return np.asarray(stored, dtype=np.float32) * np.asarray(scales, dtype=np.float32)


def encode(x: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A whole float32 matrix in `dtype`: (stored rows, scales or None). Used where all rows are at
    hand (evaluation, write_bundle); the streaming writer keeps the same arithmetic."""
    x = np.asarray(x, dtype=np.float32)
    enc = ENCODINGS[dtype]
    if not enc.quantised:
        return x.astype(enc.numpy), None
    absmax = np.abs(x).max(axis=0) if len(x) else np.zeros(x.shape[1], np.float32)
    scales = int8_scales(absmax)
    return quantise_int8(x, scales), scales


# ----------------------------------------------------------------------------- binary


def binary_codes(x: np.ndarray) -> np.ndarray:
    """One bit per dimension, 1 where the value is > 0, most significant bit first."""
    return np.packbits(np.asarray(x) > 0, axis=1)


@dataclass(frozen=True)
class BinaryIndex:
    """A bundle's binary codes and how many candidates the second stage rescores."""
    codes: np.ndarray  # (count, ceil(dim / 8)) uint8
    candidates: int = BINARY_CANDIDATES
    multiplier: int = BINARY_MULTIPLIER

    def manifest(self) -> dict:
        return {"section": BINARY_SECTION, "candidates": self.candidates, "multiplier": self.multiplier}

    def shortlist(self, query: np.ndarray, k: int, *, allowed: np.ndarray | None = None) -> np.ndarray:
        """The R = min(count, max(multiplier x k, candidates)) rows nearest the query's bits by
        Hamming distance, lower chunk id first on equal distances (FORMAT.md §2.7); with `allowed`
        (a filter's increasing ids, §2.10.2) drawn from those rows only, count being their number."""
        if allowed is not None:
            r = min(len(allowed), max(self.multiplier * k, self.candidates))
            if r <= 0:
                return np.zeros(0, np.int64)
            bits = np.packbits(np.asarray(query) > 0)
            distance = _popcount(np.bitwise_xor(self.codes[allowed], bits)).sum(axis=1, dtype=np.int64)
            key = distance * len(self.codes) + allowed  # unique: distance, then id
            return np.sort(allowed[np.argpartition(key, r - 1)[:r]]) if r < len(allowed) else allowed
        n = len(self.codes)
        r = min(n, max(self.multiplier * k, self.candidates))
        if r <= 0:
            return np.zeros(0, np.int64)
        bits = np.packbits(np.asarray(query) > 0)
        codes = self.codes
        if codes.shape[1] % 8 == 0 and codes.flags.c_contiguous and getattr(np, "bitwise_count", None):
            codes, bits = codes.view("<u8"), bits.view("<u8")  # 64 bits at a time: 8x fewer elements
        distance = _popcount(np.bitwise_xor(codes, bits)).sum(axis=1, dtype=np.int64)
        key = distance * n + np.arange(n, dtype=np.int64)  # unique: distance, then id
        if r < n:
            return np.sort(np.argpartition(key, r - 1)[:r])
        return np.arange(n, dtype=np.int64)


_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(b: np.ndarray) -> np.ndarray:
    """Set bits per byte: numpy 2's bitwise_count, or a table on numpy 1.x."""
    count = getattr(np, "bitwise_count", None)
    return count(b) if count is not None else _BYTE_POPCOUNT[b]


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best by score, lower id first on ties; a score that is no number ranks last."""
    scores = np.where(np.isnan(scores), -np.inf, scores).astype(np.float32)
    order = np.lexsort((ids, -scores))[:k]
    return scores[order], ids[order]


def preset_of(dtype: str, binary: bool) -> str:
    """The --vectors name a bundle was built with, from its manifest's dtype and binary codes."""
    for preset in PRESETS.values():
        if preset.dtype == dtype and preset.binary == binary:
            return preset.name
    return dtype + (" + binary" if binary else "")


@dataclass(frozen=True)
class Encoded:
    """Vectors as a bundle holds them: rows as stored, int8's scales, binary codes."""
    rows: np.ndarray
    scales: np.ndarray | None = None
    binary: BinaryIndex | None = None


def simulate(x: np.ndarray, preset: str) -> Encoded:
    """From float32 rows, what a bundle built with `--vectors preset` holds. The writer's
    arithmetic, searched by the reader's code, so `kbc eval --vectors` predicts the built bundle
    exactly."""
    p = PRESETS[preset]
    stored, scales = encode(x, p.dtype)
    return Encoded(stored, scales, BinaryIndex(binary_codes(x)) if p.binary else None)
