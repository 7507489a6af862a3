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

from dataclasses import dataclass
from typing import Sequence

import numpy as np


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
