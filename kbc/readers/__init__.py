"""The reader registry: which kinds of file a build reads, and the function that reads each.

A reader is one function `read(src, data, out, opts)` that appends `Document`s and `Problem`s to
`out` (an `Extracted`) and never raises for bad content. It joins the registry with

    @register_reader("html", suffixes=(".html", ".htm"), description="HTML main text")
    def read_html(src, data, out, opts): ...

in one new file of this package, imported at the bottom of this module (or, outside kbc, from any
module imported before the build). The source walk, `--help` and the manifest take their lists
from here. Readers run in extraction worker processes, under their time and memory limits.

A kind may have several readers, each a `variant` (PDF: `pdfium`, `pypdf`): the one registered
with `default=True` reads unless the build chooses another (`--pdf-reader`, ReadOptions.variants).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Collection

from ..records import Extracted, SourceFile


@dataclass(frozen=True)
class ReadOptions:
    passwords: tuple[str, ...] = ()
    clean: bool = True
    encoding: str | None = None  # text files: force this encoding instead of detecting it
    variants: tuple[tuple[str, str], ...] = ()  # (kind, variant) the build chose instead of the default


ReadFn = Callable[[SourceFile, bytes, Extracted, ReadOptions], None]


@dataclass(frozen=True)
class Reader:
    kind: str
    suffixes: tuple[str, ...]  # lower case, with the dot
    read: ReadFn
    description: str
    # pages carry furniture (page numbers, running lines): chunks without a word are dropped
    furniture: bool = False
    # read only when the build asks for this kind (`--code`): a docs folder's scripts are not docs
    opt_in: bool = False
    variant: str | None = None  # which of the kind's readers this is, when it has several


class _Registry(dict):
    """kind -> Reader. It also answers for the compressed form of every kind (`markdown+gzip`,
    kbc/readers/compressed.py) without listing it: those kinds come and go with the files a walk
    finds, while iterating over the registry (supported suffixes, --help) sees registered readers only."""

    def __missing__(self, kind: str) -> Reader:
        reader = _compressed_reader(kind)
        if reader is None:
            raise KeyError(kind)
        return reader

    def __contains__(self, kind) -> bool:
        return dict.__contains__(self, kind) or (isinstance(kind, str) and _compressed_reader(kind) is not None)

    def get(self, kind, default=None):
        try:
            return self[kind]
        except KeyError:
            return default


def _compressed_reader(kind: str) -> Reader | None:
    from .compressed import read_compressed, split_kind

    parts = split_kind(kind)
    if parts is None or not dict.__contains__(READERS, parts[0]):
        return None
    inner = dict.__getitem__(READERS, parts[0])
    return Reader(kind, (), read_compressed, f"{parts[1]}-compressed, then the {parts[0]} reader",
                  inner.furniture, inner.opt_in)


def compressed_kind(kind: str, suffix: str) -> str | None:
    """The kind of a file of `kind` compressed as `suffix` says ('markdown', '.gz' -> 'markdown+gzip'),
    None when `suffix` is no compression kbc reads."""
    from .compressed import CODECS

    codec = CODECS.get(suffix.lower())
    return f"{kind}+{codec}" if codec else None


READERS: dict[str, Reader] = _Registry()  # kind -> the reader a build uses unless it chooses a variant
VARIANTS: dict[str, dict[str, Reader]] = {}  # kind -> variant -> reader, for kinds with several


def register_reader(kind: str, *, suffixes: tuple[str, ...], description: str, furniture: bool = False,
                    opt_in: bool = False, variant: str | None = None,
                    default: bool = True) -> Callable[[ReadFn], ReadFn]:
    def add(fn: ReadFn) -> ReadFn:
        taken = {s: r.kind for r in READERS.values() for s in r.suffixes if r.kind != kind}
        clash = [s for s in suffixes if s.lower() in taken]
        if clash:
            raise ValueError(f"reader {kind!r}: suffix {clash[0]} is already read by {taken[clash[0]]!r}")
        reader = Reader(kind, tuple(s.lower() for s in suffixes), fn, description, furniture, opt_in, variant)
        if variant is not None:
            VARIANTS.setdefault(kind, {})[variant] = reader
        if default or kind not in READERS:
            READERS[kind] = reader
        return fn
    return add


def variants_of(kind: str) -> list[str]:
    """The variant names a kind's readers go by, the default first ([] for a kind with one reader)."""
    names = list(VARIANTS.get(kind, {}))
    default = READERS[kind].variant if kind in READERS else None
    return sorted(names, key=lambda v: (v != default, v))


def kind_for(suffix: str, *, opted_in: Collection[str] = ()) -> str | None:
    """The kind of reader for a file suffix ('.PDF' -> 'pdf'), None when no reader takes it (an
    opt-in reader takes it only when its kind is in `opted_in`)."""
    suffix = suffix.lower()
    return next((r.kind for r in READERS.values()
                 if suffix in r.suffixes and (not r.opt_in or r.kind in opted_in)), None)


def opt_in_kind_for(suffix: str) -> str | None:
    """The opt-in reader that would take this suffix if asked ('.py' -> 'code')."""
    suffix = suffix.lower()
    return next((r.kind for r in READERS.values() if r.opt_in and suffix in r.suffixes), None)


def reader_for(kind: str, variant: str | None = None) -> Reader:
    """The kind's reader: the named variant, else the default. KeyError for an unknown one."""
    if variant is None:
        return READERS[kind]  # a compressed kind's reader picks its inner kind's variant itself
    return VARIANTS[kind][variant]


def check_variants(chosen: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """{kind: variant} as ReadOptions.variants; ValueError naming a kind or variant that is not there."""
    for kind, variant in chosen.items():
        if variant not in VARIANTS.get(kind, {}):
            known = ", ".join(variants_of(kind)) or "none"
            raise ValueError(f"no {kind} reader {variant!r} (known: {known})")
    return tuple(sorted(chosen.items()))


def supported_suffixes(*, opted_in: Collection[str] = ()) -> list[str]:
    return sorted(s for r in READERS.values() if not r.opt_in or r.kind in opted_in for s in r.suffixes)


# the built-in readers register themselves
from . import asciidoc, code, delimited, docx, epub, html, jsonl, markdown, org, pdf, pdf_pdfium, rst, text  # noqa: E402,F401

from ..infra.plugins import load_plugins  # noqa: E402

load_plugins()
