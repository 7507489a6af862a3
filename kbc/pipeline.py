"""The build: sources -> extract -> chunk -> embed -> write, one stage after another.

The stages (`kbc.stages`) own their settings, cache lookups and manifest parts; the engine
(`kbc.engines`: local processes, or Ray) runs extraction and embedding. Extraction runs ahead in a
background thread while the driver chunks and embeds what has arrived; chunk records travel in
windows and are streamed into the bundle writer, so memory stays flat as the corpus grows. Every
problem met on the way is collected and reported at the end.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
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
from .errors import InputError, cli_names, option
from .search.dense import DEFAULT_INDEX
from .records import Problem
from .format.retrieval import RetrievalSettings
from .stages.sources import DEFAULT_MAX_FILE_BYTES, check_output_path, discover
from .format.vectors import PRESETS
from .stages.chunk import CHUNK_RECORDS_VERSION, ChunkStage, embedded_text  # noqa: F401 (re-exported)
from .stages.embed import EmbedStage, ReusedVectors, embedder_identity  # noqa: F401 (re-exported)
from .stages.extract import ExtractStage
from .stages.ledger import Ledger
from .stages.write import BundleSink

# progress(stage, advance, total): stage is "extract" or "embed"; for "embed" the total is the chunks
# known so far (it grows while extraction runs)
ProgressFn = Callable[[str, int, "int | None"], None]

# Chunks wait for embedding in windows of 8 batches: a bigger batch would hold more records in memory.
MAX_BATCH_SIZE = 4096
MAX_FILE_TIMEOUT_S = 86_400
MAX_WORKERS = 4 * (os.cpu_count() or 1)


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


def _check_options(*, batch_size: int, file_timeout: float, workers: int | None, max_file_bytes: int | None,
                   lexical: bool, default_mode: str | None, vectors: str, index: str,
                   default_unit: str | None = None) -> RetrievalSettings:
    if not 0 < batch_size <= MAX_BATCH_SIZE:
        raise InputError(f"{option('batch_size')} must be between 1 and {MAX_BATCH_SIZE}, not {batch_size}")
    if not (math.isfinite(file_timeout) and 0 < file_timeout <= MAX_FILE_TIMEOUT_S):
        raise InputError(f"{option('file_timeout')} must be a number of seconds in (0, {MAX_FILE_TIMEOUT_S}], not {file_timeout}")
    if workers is not None and not 0 <= workers <= MAX_WORKERS:
        raise InputError(f"{option('workers')} must be 0 (in-process) to {MAX_WORKERS} (4 per core), not {workers}")
    if max_file_bytes is not None and max_file_bytes <= 0:
        raise InputError(f"--max-file-mb must be positive, not {max_file_bytes / 2**20:g}" if cli_names()
                         else f"max_file_bytes must be positive, not {max_file_bytes}")
    if vectors not in PRESETS:
        raise InputError(f"{option('vectors')} must be one of {', '.join(PRESETS)}, not {vectors!r}")
    if (index.strip() or DEFAULT_INDEX) != DEFAULT_INDEX and PRESETS[vectors].dtype == "int8":
        why = ("is itself an index (its codes are searched first)" if PRESETS[vectors].binary else
               "is searched exactly over its bytes; a FAISS index would hold float copies of them again")
        raise InputError(f"{option('vectors')} {vectors} {why}: it needs {option('index')} Flat, not {index}")
    mode = default_mode or ("hybrid" if lexical else "dense")
    if mode != "dense" and not lexical:
        raise InputError(f"{option('default_mode')} {mode} needs the lexical index; " + ("drop --no-lexical" if cli_names() else "pass lexical=True"))
    retrieval = RetrievalSettings(default_mode=mode, unit=default_unit or RetrievalSettings.unit)
    try:
        retrieval.check()
    except ValueError as e:
        raise InputError(f"{option('default_unit' if 'unit' in str(e) else 'default_mode')}: {e}") from None
    return retrieval


def build(paths: Sequence[str | os.PathLike], output: str | os.PathLike, *, model: str | None = None,
          chunk_unit: str | None = None, chunk_size: int | None = None, chunk_overlap: int | None = None,
          batch_size: int = 32, device: str | None = None, index: str = DEFAULT_INDEX, backend: str = "onnx",
          include: Sequence[str] = (), exclude: Sequence[str] = (), code: bool = False, strict: bool = False,
          passwords: Sequence[str] = (), clean: bool = True, query_prompt: str | None = None,
          document_prompt: str | None = None, vectors: str = "f32", workers: int | None = None,
          file_timeout: float = 120.0, use_cache: bool = True, cache_dir: str | os.PathLike | None = None,
          reuse: Sequence[str | os.PathLike] = (), context: str = "auto", lexical: bool = True,
          default_mode: str | None = None, default_unit: str | None = None, follow_symlinks: bool = False,
          max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES, engine: str = "local",
          ray_address: str | None = None, encoding: str | None = None, with_encoder: bool = False,
          pdf_reader: str | None = None, build_options: dict | None = None, config_file: str | None = None,
          progress: ProgressFn | None = None) -> BuildReport:
    """Build a .kbpack bundle from files and folders. Returns a report; raises KbcError on failure.

    `code`: read source code and config files too (the opt-in `code` reader).
    `pdf_reader`: which PDF reader variant (kbc.readers.variants_of("pdf"): pdfium, pypdf); None, the default.
    `vectors`: how the bundle stores them, a kbc.format.vectors.PRESETS name (f32, f16, int8, binary).
    `with_encoder`: store the ONNX graph that made the vectors and its tokenizer.json in the bundle,
    so that a device embeds questions with exactly that (onnx and onnx-int8 backends).
    `build_options`: the options as `kbc build` spells them, recorded in the manifest so that
    `kbc build --from-bundle` can rebuild with them (the CLI passes them; see kbc.cli.config)."""
    t_start = time.perf_counter()
    output = Path(output)
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if output.is_dir():
        raise InputError(f"{output}: output path is a directory")
    if not output.parent.is_dir():
        raise InputError(f"{output}: output directory {output.parent} does not exist")
    if with_encoder and backend not in ("onnx", "onnx-int8"):
        raise InputError(f"{option('with_encoder')} needs {option('backend')} onnx or onnx-int8 (it stores the "
                         f"ONNX graph that made the vectors), not {backend}")
    retrieval = _check_options(batch_size=batch_size, file_timeout=file_timeout, workers=workers,
                               max_file_bytes=max_file_bytes, lexical=lexical, default_mode=default_mode,
                               vectors=vectors, index=index, default_unit=default_unit)
    walk_skipped: list[tuple[str, str]] = []
    walk_ignored: list[tuple[str, str]] = []
    sources = discover(paths, include=include, exclude=exclude, follow_symlinks=follow_symlinks,
                       max_file_bytes=max_file_bytes, skipped=walk_skipped, ignored=walk_ignored,
                       opted_in=("code",) if code else ())
    check_output_path(output, inputs=[s.path for s in sources])
    progress = progress or (lambda stage, n, total: None)

    # The stages, each validating its options before any worker starts.
    t = time.perf_counter()
    cache = _open_cache(cache_dir) if use_cache else None
    with contextlib.ExitStack() as cleanup:  # closed in reverse: helpers stop before the stages they use
        if cache is not None:
            cleanup.callback(cache.close)
        extract = ExtractStage(passwords=passwords, clean=clean, workers=workers, file_timeout=file_timeout,
                               encoding=encoding, readers={"pdf": pdf_reader} if pdf_reader else None, cache=cache)
        embed = EmbedStage(model=model, backend=backend, device=device, query_prompt=query_prompt,
                           document_prompt=document_prompt, batch_size=batch_size, sessions=os.cpu_count() or 1,
                           cache=cache, reuse=reuse)
        cleanup.callback(embed.close)
        described = embed.described  # the model's own files: enough to chunk while it loads
        chunk = ChunkStage(spec=described, counter=embed.counter, unit=chunk_unit, size=chunk_size,
                           overlap=chunk_overlap, context=context, extract_settings=extract.settings, cache=cache)
        # files that miss the cache are chunked where they are extracted (the engine's workers)
        extract.options = replace(extract.options, chunking=chunk.plan(embed.ref.path))
        ledger = Ledger(walk_skipped, walk_ignored, strict=strict, total_files=len(sources), progress=progress)
        ledger.max_seq_length = described.max_seq_length
        # --device auto or cuda: the engine asks for a GPU only if the backend found one
        runner = open_engine(engine, address=ray_address,
                             device=device if device in (None, "cpu") else embed.spec.runtime.get("device", device))
        cleanup.callback(runner.close)
        seconds = {"setup": time.perf_counter() - t}

        warm = _warm_up_when_needed(extract, embed, chunk)
        cleanup.callback(warm.join)
        cleanup.callback(extract.misses_known.set)  # a build that fails before extracting: the warm-up ends
        sink = None
        try:
            # made inside the try: an interrupt right after its temporary file exists still removes it
            sink = BundleSink(output, dim=described.dim, vectors=vectors, lexical=lexical, index=index)
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
                        "retrieval": retrieval.to_manifest()}
            if build_options is not None:
                manifest["build_options"] = build_options
            encoder = None
            if with_encoder:
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
