"""The manifest's `retrieval` object (FORMAT.md §2.5, §2.8): how a bundle asks every runtime to rank.

The ranking itself is kbc/search/fusion.py."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

from ..modes import Fusion, Mode, Unit


MAX_DEPTH = 10_000
MAX_PAGE_CHUNKS = 100
# a chunk's context is its document's identity, then this, then its section heading (FORMAT.md §2.9)
HEADING_SEPARATOR = " | "
CONTEXT_MATCH_KEYS = ("path_weight", "heading_weight")  # added in 1.6: absent means 0
# added in 1.8 (FORMAT.md §2.5.1): absent means off, the ranking of 1.7
PER_QUESTION_KEYS = {"standout_weighting": False}


def path_stem(path: str) -> str:
    """A source path without its extension ("10k/NETFLIX_2017_10K.pdf" -> "10k/NETFLIX_2017_10K"):
    the words a chunk's context starts with, and the path part of the context match (§2.9)."""
    return path.rsplit(".", 1)[0] if "." in path.rsplit("/", 1)[-1] else path


@dataclass(frozen=True)
class RetrievalSettings:
    # defaults chosen by bench/retrieval_sweep.py on scifact-train and financebench-dev (README)
    default_mode: str = Mode.hybrid.value
    fusion: str = Fusion.tmm.value
    weight: float = 0.4  # share of the lexical list in the fused score
    depth: int = 100  # candidates taken from each list
    rrf_k: int = 60
    # pages as the unit (format 1.5): the unit a query returns unless it asks, and how pages rank
    unit: str = Unit.chunk.value
    page_depth: int = 100  # chunks of the mode's ranking grouped into pages
    page_share: float = 0.0  # weight of a page's other chunks' scores next to its best one
    page_chunks: int = 3  # chunks returned with each page, best first
    # context match (format 1.6, FORMAT.md §2.9): hybrid candidates whose file path or section
    # heading holds the question's words gain these shares of the fused score
    path_weight: float = 0.1
    heading_weight: float = 0.05
    # per question (format 1.8, FORMAT.md §2.5.1; measured leaving each development set out in turn,
    # docs/retrieval-quality.md): each list's share of `weight` scaled by how far its best stands out
    standout_weighting: bool = True
    # answer strength (format 1.8, FORMAT.md §2.11): the first hit's cosine with the question under
    # which a runtime reports "no confident answer"; None: the bundle records none (not calibrated)
    min_strength: float | None = None

    def to_manifest(self) -> dict:
        return asdict(self)

    @classmethod
    def from_manifest(cls, d) -> "RetrievalSettings":
        """The bundle's settings; ValueError naming what is wrong."""
        if not isinstance(d, Mapping):
            raise ValueError("retrieval settings are not an object")
        # a bundle written before 1.6 ranks as it was written: without the context match
        # and one written before 1.8 without the per-question rules
        s = cls(**{**dict.fromkeys(CONTEXT_MATCH_KEYS, 0.0), **PER_QUESTION_KEYS,
                   **{k: d[k] for k in asdict(cls()) if k in d}})
        s.check()
        return s

    def check(self) -> None:
        if self.default_mode not in {m.value for m in Mode}:
            raise ValueError(f"unknown mode {self.default_mode!r}")
        if self.fusion not in {f.value for f in Fusion}:
            raise ValueError(f"unknown fusion {self.fusion!r}")
        if not isinstance(self.weight, (int, float)) or isinstance(self.weight, bool) or not 0 <= self.weight <= 1:
            raise ValueError(f"fusion weight must be within [0, 1], not {self.weight!r}")
        for name, v, hi in (("depth", self.depth, MAX_DEPTH), ("rrf_k", self.rrf_k, 10_000),
                            ("page_depth", self.page_depth, MAX_DEPTH), ("page_chunks", self.page_chunks, MAX_PAGE_CHUNKS)):
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= hi:
                raise ValueError(f"{name} must be an integer within [1, {hi}], not {v!r}")
        if self.unit not in {u.value for u in Unit}:
            raise ValueError(f"unknown unit {self.unit!r}")
        if not isinstance(self.standout_weighting, bool):
            raise ValueError(f"standout_weighting must be true or false, not {self.standout_weighting!r}")
        v = self.min_strength
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or not -1 <= v <= 1):
            raise ValueError(f"min_strength must be null or within [-1, 1], not {v!r}")
        for name in ("page_share", *CONTEXT_MATCH_KEYS):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 1:
                raise ValueError(f"{name} must be within [0, 1], not {v!r}")
