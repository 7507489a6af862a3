"""Embedder probes: fixed texts with the vectors the build's embedder gave them, stored in the bundle.

A device embeds queries with its own engine (llama.cpp, onnxruntime, Core ML, ...). Its vectors
match the bundle's only if model, tokenisation, truncation, pooling, normalisation, prompt and
precision all match. The probes make that checkable: the device (or CI for it) embeds the probe
texts exactly as it embeds user questions, and `kbc probe --vectors` compares with the reference.

The probes are embedded as *queries*: the bundle's `query_prompt` is prepended, because query
embedding is what runs on the device. The set covers short and long inputs, one input exactly at
the model's token limit and one past it (an engine that does not truncate at `max_seq_length`
fails there), punctuation, digits, code and several scripts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError
from .sources import read_text_file

PROBE_SET_VERSION = 1
# Pass when every probe's cosine to its reference is at least this. fp32 engines of the same model
# give >= 0.9999; an engine that does not truncate at the model's limit, a different model, a
# missing prompt or a different pooling falls below. int8 weights land near it: see the README.
DEFAULT_THRESHOLD = 0.99

FIXED_PROBES: tuple[tuple[str, str], ...] = (
    ("short", "hello"),
    ("question", "What is the boiling point of water at sea level?"),
    ("sentence", "The quick brown fox jumps over the lazy dog near the riverbank."),
    ("punctuation", "Wait... what?! (Really) -- yes; [maybe] {no}: \"quoted\" & 'single' / \\ | @#%^*~"),
    ("digits", "Order 66: 3.14159 + 2,718 = 1e6? Call +1 (555) 010-9999 before 2024-12-31 at 23:59."),
    ("acronyms", "NASA's JWST and ESA's GAIA: HTTP/2 vs TCP/IP, CamelCase and snake_case identifiers."),
    ("code", "fn main() { let v: Vec<u32> = (0..10).map(|x| x * x).collect(); println!(\"{:?}\", v); }"),
    ("german", "Die Würde des Menschen ist unantastbar. Straße, Größe, Äpfel und Öl."),
    ("french", "Où est la bibliothèque ? L'été dernier, nous étions à Montréal."),
    ("russian", "Быстрая коричневая лиса прыгает через ленивую собаку."),
    ("chinese", "知识库在设备上离线运行，无需网络连接。"),
    ("arabic", "مرحبا بالعالم، هذه قاعدة معرفة تعمل دون اتصال."),
    ("symbols", "Ship it 🚀 — naïve café ✓ ≤ ≥ ∑ x² ½ ©"),
    ("whitespace", "  leading and trailing spaces\tand a tab   inside  "),
    ("paragraph", "Retrieval-augmented generation pairs a small language model with a search over "
                  "a local knowledge base. The documents are split into passages, each passage is "
                  "embedded once ahead of time, and at question time only the question is embedded "
                  "on the device and compared with the stored vectors by cosine similarity."),
)

_FILLER = ("Edge devices load the knowledge base at start-up, verify its checksums, map the vectors "
           "into memory and answer questions offline. Section {n} describes how chunks keep their "
           "page numbers, how vectors are normalised, and why the query embedder must match the "
           "document embedder exactly, including its prompt, pooling and truncation. ")


def _filler(words: int) -> str:
    out: list[str] = []
    n = 1
    while len(out) < words:
        out.extend(_FILLER.format(n=n).split())
        n += 1
    return " ".join(out[:words])


def probe_texts(counter, *, max_seq_length: int, prompt: str) -> list[dict]:
    """The probe set for one model: fixed texts plus one at and one past the token limit."""
    def tokens(text: str) -> int:
        return counter.count_batch([prompt + text])[0]

    lo, hi = 1, 8
    while tokens(_filler(hi)) <= max_seq_length:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # the longest filler that still fits, special tokens and prompt included
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if tokens(_filler(mid)) <= max_seq_length else (lo, mid)
    at_limit = _filler(lo)
    past_limit = _filler(lo * 3 // 2 + 8)
    probes = [{"kind": kind, "text": text} for kind, text in FIXED_PROBES]
    probes += [{"kind": "at_token_limit", "text": at_limit}, {"kind": "past_token_limit", "text": past_limit}]
    for p in probes:
        p["tokens"] = tokens(p["text"])
    return probes


@dataclass
class ProbeSet:
    """What the `probes` section holds, with the reference vectors from `probe_vectors`."""
    meta: dict
    vectors: np.ndarray

    @property
    def texts(self) -> list[str]:
        return [p["text"] for p in self.meta["probes"]]

    @property
    def prompt(self) -> str:
        return self.meta.get("prompt", "")

    def inputs(self) -> list[str]:
        """Exactly what an engine must embed: prompt + text."""
        return [self.prompt + t for t in self.texts]


def make_probe_meta(probes: Sequence[dict], *, prompt: str, max_seq_length: int) -> dict:
    return {"version": PROBE_SET_VERSION, "role": "query", "prompt": prompt, "max_seq_length": max_seq_length,
            "threshold": DEFAULT_THRESHOLD, "probes": list(probes)}


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
