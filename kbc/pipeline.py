"""The build: sources -> extract -> chunk -> embed -> write, one stage after another.

The stages (`kbc.stages`) own their settings, cache lookups and manifest parts; the engine
(`kbc.engines`: local processes, or Ray) runs extraction and embedding. Extraction runs ahead in a
background thread while the driver chunks and embeds what has arrived; chunk records travel in
windows and are streamed into the bundle writer, so memory stays flat as the corpus grows. Every
problem met on the way is collected and reported at the end.
"""

from __future__ import annotations

import contextlib
import inspect
import datetime as _dt
import os
import sqlite3
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__
from .engines import open_engine, prefetch
from . import options as build_options
from .errors import InputError, cli_names, option
from .search.dense import DEFAULT_INDEX, check_factory
from .records import Problem
from .format.retrieval import RetrievalSettings
from .stages.sources import check_output_path, discover
from .format.vectors import PRESETS
from .stages.chunk import CHUNK_RECORDS_VERSION, ChunkStage, embedded_text  # noqa: F401 (re-exported)
from .stages.embed import EmbedStage, ReusedVectors, embedder_identity  # noqa: F401 (re-exported)
from .stages.extract import ExtractStage
from .stages.ledger import Ledger
from .stages.write import BundleSink
from .backends.model import is_default_model

# progress(stage, advance, total): stage is "extract" or "embed"; for "embed" the total is the chunks
# known so far (it grows while extraction runs)
ProgressFn = Callable[[str, int, "int | None"], None]

# the bounds of the options that have them, declared in kbc.options (kept here for older callers)
MAX_BATCH_SIZE = build_options.MAX_BATCH_SIZE
MAX_FILE_TIMEOUT_S = build_options.MAX_FILE_TIMEOUT_S
MAX_WORKERS = build_options.MAX_WORKERS


@dataclass
class BuildReport:
    output: str
    files: int
    pages: int
    chunks: int
    truncated_chunks: int
    skipped: list[Problem]
    degraded: list[Problem]
    seconds: dict[str, float]
    output_bytes: int
    embedder: dict[str, Any]
    chunking: dict[str, Any]
    index: dict[str, Any]
    max_chunk_tokens: int = 0
    cache: dict[str, int] = field(default_factory=dict)
    ignored: list[dict[str, str]] = field(default_factory=list)  # not built by choice: {path, reason}
    config_file: str | None = None  # the kbc.toml / pyproject.toml the options came from
    vectors: str = "f32"  # how the bundle stores them (kbc.format.vectors.PRESETS)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["skipped"] = [asdict(p) for p in self.skipped]
        d["degraded"] = [asdict(p) for p in self.degraded]
        return d


def created_timestamp() -> str:
    """ISO 8601 UTC; honours SOURCE_DATE_EPOCH so that builds can be reproducible."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is not None:
        try:
            moment = _dt.datetime.fromtimestamp(int(epoch), tz=_dt.timezone.utc)
        except (ValueError, OverflowError, OSError):
            raise InputError(f"SOURCE_DATE_EPOCH={epoch!r} is not a Unix timestamp") from None
    else:
        moment = _dt.datetime.now(tz=_dt.timezone.utc).replace(microsecond=0)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_combinations(o: dict[str, Any]) -> RetrievalSettings:
    """What no single option's declaration can say: options that must agree with each other."""
    index, vectors, lexical = o["index"], o["vectors"], o["lexical"]
    if o["with_encoder"] and o["backend"] not in ("onnx", "onnx-int8"):
        raise InputError(f"{option('with_encoder')} needs {option('backend')} onnx or onnx-int8 (it stores the "
                         f"ONNX graph that made the vectors), not {o['backend']}")
    if (index.strip() or DEFAULT_INDEX) != DEFAULT_INDEX and PRESETS[vectors].dtype == "int8":
        why = ("is itself an index (its codes are searched first)" if PRESETS[vectors].binary else
               "is searched exactly over its bytes; a FAISS index would hold float copies of them again")
        raise InputError(f"{option('vectors')} {vectors} {why}: it needs {option('index')} Flat, not {index}")
    mode = o["default_mode"] or ("hybrid" if lexical else "dense")
    if mode != "dense" and not lexical:
        raise InputError(f"{option('default_mode')} {mode} needs the lexical index; " + ("drop --no-lexical" if cli_names() else "pass lexical=True"))
    retrieval = RetrievalSettings(default_mode=mode, unit=o["default_unit"] or RetrievalSettings.unit)
    try:
        retrieval.check()
    except ValueError as e:
        raise InputError(f"{option('default_unit' if 'unit' in str(e) else 'default_mode')}: {e}") from None
    return retrieval


def unit_for(sources: Sequence[dict]) -> str:
    """The default unit a bundle records when --default-unit is not given: page when most chunks
    come from documents of more than one page (PDFs), whose judged answers are pages; chunk
    otherwise (a text file is one "page": as the unit it would return one hit per file). Measured
    on every development set: docs/retrieval-quality.md, "Per question ... pages"."""
    paged = sum(s["chunks"] for s in sources if s.get("pages", 0) > 1 and s.get("kind") != "records")
    total = sum(s["chunks"] for s in sources)
    return "page" if total and 2 * paged > total else RetrievalSettings.unit


# The default model's "no confident answer" threshold: under it fall 10% or fewer of the answerable
# questions of every development set (the lowest set's 10th percentile, 0.442; docs/retrieval-quality.md).
# Another model's cosines live on another scale, so it gets none unless --min-score gives one.
DEFAULT_MODEL_MIN_STRENGTH = 0.44


def min_strength_for(o: dict) -> float | None:
    if o["min_score"] is not None:
        return float(o["min_score"])
    return DEFAULT_MODEL_MIN_STRENGTH if is_default_model(o["model"]) else None


def build(paths: Sequence[str | os.PathLike], output: str | os.PathLike, *, config_file: str | None = None,
          progress: ProgressFn | None = None, **options: Any) -> BuildReport:
    """Build a .kbpack bundle from files and folders. Returns a report; raises KbcError on failure.

    The keyword options are kbc.options.BUILD_OPTIONS (the flags of `kbc build`, with the same
    defaults, types and ranges; `lexical=False` is `--no-lexical`, `passwords` is `--password`,
    `use_cache=False` is `--no-cache`). The bundle records those that decide its content
    (manifest `build_options`), so that `kbc build --from-bundle` rebuilds it alike.
    `config_file`: where the CLI found them, for the report; `progress(stage, advance, total)`."""
    t_start = time.perf_counter()
    o = build_options.checked(options)
    output = Path(output)
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if output.is_dir():
        raise InputError(f"{output}: output path is a directory")
    if not output.parent.is_dir():
        raise InputError(f"{output}: output directory {output.parent} does not exist")
    retrieval = _check_combinations(o)
    model, backend, batch_size, vectors, lexical = o["model"], o["backend"], o["batch_size"], o["vectors"], o["lexical"]
    max_file_bytes = int(o["max_file_mb"] * 2**20)
    walk_skipped: list[tuple[str, str]] = []
    walk_ignored: list[tuple[str, str]] = []
    sources = discover(paths, include=o["include"], exclude=o["exclude"], follow_symlinks=o["follow_symlinks"],
                       max_file_bytes=max_file_bytes, skipped=walk_skipped, ignored=walk_ignored,
                       opted_in=("code",) if o["code"] else ())
    check_output_path(output, inputs=[s.path for s in sources])
    progress = progress or (lambda stage, n, total: None)

    # The stages, each validating its options before any worker starts.
    t = time.perf_counter()
    cache = _open_cache(o["cache_dir"]) if o["use_cache"] else None
    with contextlib.ExitStack() as cleanup:  # closed in reverse: helpers stop before the stages they use
        if cache is not None:
            cleanup.callback(cache.close)
        extract = ExtractStage(passwords=o["passwords"], clean=o["clean"], workers=o["workers"],
                               file_timeout=o["file_timeout"], encoding=o["encoding"],
                               readers={"pdf": o["pdf_reader"]} if o["pdf_reader"] else None, cache=cache)
        embed = EmbedStage(model=model, backend=backend, device=o["device"], query_prompt=o["query_prompt"],
                           document_prompt=o["document_prompt"], batch_size=batch_size, sessions=os.cpu_count() or 1,
                           cache=cache, reuse=o["reuse"], allow_pickle_weights=o["allow_pickle_weights"])
        cleanup.callback(embed.close)
        described = embed.described  # the model's own files: enough to chunk while it loads
        check_factory(o["index"], described.dim)  # a mistyped --index fails now, not after embedding
        chunk = ChunkStage(spec=described, counter=embed.counter, unit=o["chunk_unit"], size=o["chunk_size"],
                           overlap=o["chunk_overlap"], context=o["context"], extract_settings=extract.settings,
                           cache=cache)
        # files that miss the cache are chunked where they are extracted (the engine's workers)
        extract.options = replace(extract.options, chunking=chunk.plan(embed.ref.path))
        ledger = Ledger(walk_skipped, walk_ignored, strict=o["strict"], total_files=len(sources), progress=progress)
        ledger.max_seq_length = described.max_seq_length
        # --device auto or cuda: the engine asks for a GPU only if the backend found one
        device = o["device"]
        runner = open_engine(o["engine"], address=o["ray_address"],
                             device=device if device in (None, "cpu") else embed.spec.runtime.get("device", device))
        cleanup.callback(runner.close)
        seconds = {"setup": time.perf_counter() - t}

        warm = _warm_up_when_needed(extract, embed, chunk)
        cleanup.callback(warm.join, 1.0)  # a daemon thread: an interrupt must not wait out its imports
        cleanup.callback(extract.misses_known.set)  # a build that fails before extracting: the warm-up ends
        sink = None
        try:
            # made inside the try: an interrupt right after its temporary file exists still removes it
            sink = BundleSink(output, dim=described.dim, vectors=vectors, lexical=lexical, index=o["index"],
                              layout=o["layout"] or "fixed")
            # Extraction, and chunking a window ahead of embedding, start now in their own threads,
            # while the model may still be loading. The first window is small so that the embedder
            # starts early, the rest big enough to keep every session busy.
            # (a short queue: the engine holds the results that wait, bounded by their bytes)
            files = prefetch(extract.run(sources, runner.extract_files), depth=2)
            windows = prefetch(ledger.windows(files, chunk.records, max(batch_size * 8, 256),
                                              first=max(batch_size * 2, 64)), depth=1)
            # when the build stops early: hashing and extraction first, then the threads, each of
            # which then finds its input ended
            cleanup.callback(windows.close)
            cleanup.callback(files.close)
            cleanup.callback(extract.stop.set)
            embedder = embed.embedder  # waits for the model if it is still loading
            t = time.perf_counter()
            waited = _Stopwatch()
            todo = ((w, w.todo_texts) for w in (embed.prepare(records) for records in waited(windows)))
            for w, fresh in runner.embed(embedder, todo, batch_size=batch_size):
                sink.add(w.records, embed.complete(w, fresh))
                progress("embed", len(w.records), ledger.stats["chunks"])
            # chunking and extraction overlap embedding: "embed" is the loop's time less its waits for them
            seconds.update(model_load=embed.load_seconds, extract=extract.seconds, chunk=ledger.seconds,
                           embed=time.perf_counter() - t - waited.seconds)
            ledger.check(paths, sink.count)

            t = time.perf_counter()
            probes = embed.probes()
            seconds["probes"] = time.perf_counter() - t
            manifest = {"kbc_version": __version__, "created": created_timestamp(), **embed.manifest(),
                        **chunk.manifest(), **extract.manifest(), **ledger.manifest(sink.count),
                        "retrieval": replace(retrieval, unit=o["default_unit"] or unit_for(ledger.sources),
                                             min_strength=min_strength_for(o)).to_manifest()}
            manifest["build_options"] = build_options.record(o)
            encoder = None
            if o["with_encoder"]:
                describe = getattr(embedder, "encoder_description", None)
                if describe is None:
                    raise InputError(f"{option('with_encoder')}: backend {backend} has no ONNX graph to store")
                encoder = describe()
            index_manifest = sink.finish(manifest, probes=probes, encoder=encoder)
            seconds.update(sink.seconds)
        except BaseException:
            if sink is not None:
                sink.abort()
            raise
    seconds["total"] = time.perf_counter() - t_start
    spec = embed.spec
    return BuildReport(
        output=str(output), files=len(ledger.sources), pages=ledger.stats["pages"], chunks=ledger.stats["chunks"],
        truncated_chunks=ledger.stats["truncated"], skipped=ledger.skipped, degraded=ledger.degraded,
        seconds={k: round(v, 3) for k, v in seconds.items()}, output_bytes=output.stat().st_size,
        embedder={"name": spec.name, "dim": spec.dim, "max_seq_length": spec.max_seq_length,
                  "backend": spec.backend, "precision": spec.precision, "weights_sha256": spec.weights_sha256},
        chunking=manifest["chunking"], index=index_manifest, max_chunk_tokens=ledger.stats["max_tokens"],
        cache={**extract.stats, **embed.stats}, config_file=config_file, vectors=vectors, ignored=[{"path": p, "reason": r} for p, r in walk_ignored])


def _signature() -> inspect.Signature:
    """build()'s signature as help() and editors show it: the declared options as keywords."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("paths", inspect.Parameter.POSITIONAL_OR_KEYWORD),
              inspect.Parameter("output", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(o.name, keyword, default=None if callable(o.default) else o.default)
               for o in build_options.BUILD_OPTIONS if o.library]
    params += [inspect.Parameter("config_file", keyword, default=None), inspect.Parameter("progress", keyword, default=None)]
    return inspect.Signature(params, return_annotation=BuildReport)


build.__signature__ = _signature()


class _Stopwatch:
    """Wraps an iterator; `seconds` is the time spent waiting for its items."""

    def __init__(self):
        self.seconds = 0.0

    def __call__(self, items):
        items = iter(items)
        while True:
            t = time.perf_counter()
            item = next(items, _END)
            self.seconds += time.perf_counter() - t
            if item is _END:
                return
            yield item


_END = object()


def _warm_up_when_needed(extract: ExtractStage, embed: EmbedStage, chunk: ChunkStage) -> threading.Thread:
    """While extraction runs, get first-use costs (the ONNX session, the langchain import) out of
    the way on the idle core, once some file missed the cache: a rebuild with nothing new must
    not pay them."""
    def run() -> None:
        extract.misses_known.wait()
        if extract.misses:
            embed.warm()
            chunk.warm()

    thread = threading.Thread(target=run, name="kbc-warm", daemon=True)
    thread.start()
    return thread


def _open_cache(cache_dir):
    from .infra.cache import Cache

    try:
        return Cache(cache_dir)
    except (OSError, sqlite3.Error) as e:
        print(f"kbc: warning: cache unavailable ({e}); building without it", file=sys.stderr)
        return None
