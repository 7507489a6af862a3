"""Search modes and fusion methods: plain enums, importable without numpy (the CLI lists them)."""

from enum import Enum


class Mode(str, Enum):
    dense = "dense"
    lexical = "lexical"
    hybrid = "hybrid"


class Fusion(str, Enum):
    tmm = "tmm"
    minmax = "minmax"
    rrf = "rrf"


class ContextMode(str, Enum):
    auto = "auto"
    none = "none"


class Unit(str, Enum):
    chunk = "chunk"  # the best chunks, each on its own
    page = "page"  # the best pages (a PDF page, a record), each once with its best chunks
