"""The build pipeline: sources -> extract -> chunk -> embed -> index -> bundle.

Extraction runs in worker processes, fed from a background thread, while the main thread chunks
and embeds what has arrived; chunks are embedded in windows and streamed into the bundle writer, so memory stays flat as the
corpus grows. Every problem met on the way is collected and reported at the end.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import json
import os
import queue
import sqlite3
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import __version__
from .bundle import BundleWriter
from .cache import vector_key
from .chunk import (CONTEXT_HEADING_SEPARATOR, CONTEXT_MAX_TOKENS, CONTEXT_SEPARATOR, Chunk, Chunker,
                    document_context, resolve_spec, section_context, token_budget, whole_document_chunks)
from .embed import Embedder, EmbedderSpec, TokenCounter, read_spec, resolve_model
from .errors import InputError, KbcError, StrictError
from .extract import (EXTRACTOR_VERSION, Extracted, ExtractOptions, Problem, cacheable, extract_all, from_cache,
                      has_words, to_cache)
from .index import DEFAULT_INDEX, build_index
from .lexical import LexicalBuilder
from .retrieval import RetrievalSettings
from .sources import DEFAULT_MAX_FILE_BYTES, check_output_path, discover

# Bump when the chunk records made from the same extracted text change (it keys the chunk cache).
CHUNK_RECORDS_VERSION = "3"  # 2: contexts, furniture-only chunks dropped; 3: from PDFs only

# progress(stage, advance, total): stage is "extract" or "embed"; total may be None when unknown
ProgressFn = Callable[[str, int, "int | None"], None]


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


def load_embedder(spec: EmbedderSpec, ref, *, backend: str, device: str | None, sessions: int = 1) -> Embedder:
    if backend in ("onnx", "onnx-int8"):
        from .onnx_backend import OnnxEmbedder

        return OnnxEmbedder.for_model(ref, spec, quantized=backend == "onnx-int8", sessions=sessions)
    if backend != "torch":
        raise InputError(f"--backend must be torch, onnx or onnx-int8, not {backend!r}")
    from .embed import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(ref, spec, device=device)


def _embed_probes(embedder, spec: EmbedderSpec, counter: TokenCounter, cache,
                  identity: str) -> tuple[dict, np.ndarray]:
    """Reference vectors for the probe set, embedded as queries (see kbc.probe); cached like chunks."""
    from .probe import make_probe_meta, probe_texts

    probes = probe_texts(counter, max_seq_length=spec.max_seq_length, prompt=spec.query_prompt)
    texts = [p["text"] for p in probes]
    keys = [vector_key(identity, "query:" + spec.query_prompt, t) for t in texts]
    found = cache.get_vectors(keys, spec.dim) if cache is not None else [None] * len(texts)
    if any(v is None for v in found):
        vectors = np.asarray(embedder.embed_queries(texts), dtype=np.float32)
        if cache is not None:
            cache.put_vectors(zip(keys, vectors))
    else:
        vectors = np.stack(found).astype(np.float32)
    return make_probe_meta(probes, prompt=spec.query_prompt, max_seq_length=spec.max_seq_length), vectors


# Chunks wait for embedding in windows of 8 batches: a bigger batch would hold more records in memory.
MAX_BATCH_SIZE = 4096


def build(paths: Sequence[str | os.PathLike], output: str | os.PathLike, *, model: str | None = None,
          chunk_unit: str | None = None, chunk_size: int | None = None, chunk_overlap: int | None = None,
          batch_size: int = 32, device: str | None = None, index: str = DEFAULT_INDEX, backend: str = "onnx",
          include: Sequence[str] = (), exclude: Sequence[str] = (), strict: bool = False,
          passwords: Sequence[str] = (), clean: bool = True, query_prompt: str | None = None,
          document_prompt: str | None = None, vector_dtype: str = "float32", workers: int | None = None,
          file_timeout: float = 120.0, use_cache: bool = True, cache_dir: str | os.PathLike | None = None,
          reuse: Sequence[str | os.PathLike] = (), context: str = "auto", lexical: bool = True,
          default_mode: str | None = None, follow_symlinks: bool = False,
          max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
          progress: ProgressFn | None = None) -> BuildReport:
    """Build a .kbpack bundle from files and folders. Returns a report; raises KbcError on failure."""
    t_start = time.perf_counter()
    seconds: dict[str, float] = {}
    output = Path(output)
    if output.is_dir():
        raise InputError(f"{output}: output path is a directory")
    if not output.parent.is_dir():
        raise InputError(f"{output}: output directory {output.parent} does not exist")
    if not 0 < batch_size <= MAX_BATCH_SIZE:
        raise InputError(f"--batch-size must be between 1 and {MAX_BATCH_SIZE}, not {batch_size}")
    if not (math.isfinite(file_timeout) and file_timeout > 0):
        raise InputError(f"--file-timeout must be a positive number of seconds, not {file_timeout}")
    if workers is not None and workers < 0:
        raise InputError(f"--workers must be 0 (in-process) or more, not {workers}")
    if max_file_bytes is not None and max_file_bytes <= 0:
        raise InputError(f"--max-file-mb must be positive, not {max_file_bytes / 2**20:g}")
    walk_skipped: list[tuple[str, str]] = []
    sources = discover(paths, include=include, exclude=exclude, follow_symlinks=follow_symlinks,
                       max_file_bytes=max_file_bytes, skipped=walk_skipped)
    check_output_path(output, inputs=[s.path for s in sources])
    progress = progress or (lambda stage, n, total: None)
    ref = resolve_model(model)  # fail fast, before any worker starts

    cache = _open_cache(cache_dir) if use_cache else None
    cache_stats = {"files_cached": 0, "files_extracted": 0, "chunks_cached": 0, "chunks_embedded": 0}

    # Extraction runs in worker processes, fed from a thread started once the options are validated.
    # Files whose content was extracted before with the same settings come from the cache instead.
    results: queue.Queue = queue.Queue()
    opts = ExtractOptions(passwords=tuple(passwords), clean=clean, workers=workers, timeout_s=file_timeout)
    settings = hashlib.sha256(json.dumps([EXTRACTOR_VERSION, clean, sorted(passwords)]).encode()).hexdigest()[:16]
    extract_wall = {}
    need_work, misses_found, stop = threading.Event(), [], threading.Event()

    def run_extraction() -> None:
        t = time.perf_counter()
        try:
            hits, keys, misses = {}, {}, []
            for i, src in enumerate(sources):
                if cache is not None:
                    try:
                        keys[i] = f"{cache.file_sha256(src.path)}:{src.kind}:{settings}"
                    except OSError:
                        keys[i] = None
                    got = cache.get_extracted(keys[i]) if keys[i] else None
                    if got is not None:
                        try:
                            hits[i] = from_cache(src, got)
                            continue
                        except (KeyError, TypeError, ValueError):
                            pass  # a stale or damaged entry: extract again
                misses.append(i)
            misses_found.extend(misses)
            need_work.set()
            fresh = extract_all([sources[i] for i in misses], opts)
            for i in range(len(sources)):
                if i in hits:
                    cache_stats["files_cached"] += 1
                    results.put(hits[i])
                    continue
                if stop.is_set():
                    fresh.close()  # kills the worker processes
                    break
                ex = next(fresh)
                cache_stats["files_extracted"] += 1
                if cache is not None and keys.get(i) and cacheable(ex):
                    cache.put_extracted(keys[i], to_cache(ex))
                results.put(ex)
        except BaseException as e:  # surfaced in the main thread
            results.put(e)
        need_work.set()
        extract_wall["s"] = time.perf_counter() - t
        results.put(None)


    t = time.perf_counter()
    spec = read_spec(ref, query_prompt=query_prompt, document_prompt=document_prompt,
                     file_hasher=cache.file_sha256 if cache is not None else None)
    counter = TokenCounter(ref.path, do_lower_case=spec.do_lower_case)
    budget = token_budget(counter, spec.max_seq_length, spec.document_prompt)
    whole_docs = chunk_unit == "document"
    cspec = resolve_spec(unit="tokens" if whole_docs else chunk_unit, size=chunk_size, overlap=chunk_overlap,
                         budget=budget)
    if context not in ("auto", "none"):
        raise InputError(f"--context must be auto or none, not {context!r}")
    chunker = Chunker(cspec, counter, max_seq_length=spec.max_seq_length, document_prompt=spec.document_prompt)
    lexicon = LexicalBuilder() if lexical else None
    if default_mode is None:
        default_mode = "hybrid" if lexical else "dense"
    if default_mode != "dense" and not lexical:
        raise InputError(f"--default-mode {default_mode} needs the lexical index; drop --no-lexical")
    retrieval = RetrievalSettings(default_mode=default_mode)
    try:
        retrieval.check()
    except ValueError as e:
        raise InputError(f"--default-mode: {e}") from None
    embedder = load_embedder(spec, ref, backend=backend, device=device, sessions=os.cpu_count() or 1)
    spec = embedder.spec
    identity = embedder_identity(spec)
    # Everything that can reject the options has run: now start extracting. (ONNX sessions are
    # created lazily, so model setup above is cheap and extraction loses nothing by starting here.)
    extractor = threading.Thread(target=run_extraction, name="kbc-extract", daemon=True)
    extractor.start()

    # While extraction runs, get first-use costs (ONNX session, langchain import) out of the way on
    # the idle core; only when some file missed the cache: a rebuild with nothing new must not pay.
    def warm_up() -> None:
        need_work.wait()
        if misses_found:
            getattr(embedder, "warm", lambda: None)()
            chunker.splitter  # noqa: B018 - imports langchain ahead of need

    warm = threading.Thread(target=warm_up, daemon=True)
    warm.start()
    reused = ReusedVectors(identity, spec) if reuse else None
    for old in reuse:
        cache_stats.setdefault("reused_from_bundles", 0)
        cache_stats["reused_from_bundles"] += reused.add_bundle(old)
    seconds["model_load"] = time.perf_counter() - t

    chunk_settings = hashlib.sha256(json.dumps(
        [cspec.to_manifest(), whole_docs, spec.weights_sha256, spec.document_prompt, spec.max_seq_length,
         spec.do_lower_case, settings, context, CONTEXT_SEPARATOR, CONTEXT_HEADING_SEPARATOR,
         CONTEXT_MAX_TOKENS, CHUNK_RECORDS_VERSION]).encode()).hexdigest()[:24]
    sources_manifest: list[dict] = []
    skipped: list[Problem] = [Problem(rel, "skipped", why) for rel, why in walk_skipped]
    degraded: list[Problem] = []
    pending: list[dict] = []  # chunk records awaiting embedding
    stats = {"pages": 0, "chunks": 0, "truncated": 0, "max_tokens": 0}
    t_chunk = t_embed = 0.0
    window = max(batch_size * 8, 256)  # torch sorts each window by length: big windows pad less

    writer = BundleWriter(output, dim=spec.dim, dtype=vector_dtype)
    try:
        def flush() -> None:
            nonlocal t_embed, pending
            if not pending:
                return
            te = time.perf_counter()
            texts = [embedded_text(p) for p in pending]
            if lexicon is not None:
                lexicon.add_chunks(pending)
            vecs = np.zeros((len(texts), spec.dim), dtype=np.float32)
            todo = list(range(len(texts)))
            keys = ([vector_key(identity, spec.document_prompt, t) for t in texts]
                    if cache is not None or reused is not None else [])
            if cache is not None:
                found = cache.get_vectors(keys, spec.dim)
                todo = [i for i, v in enumerate(found) if v is None]
                for i, v in enumerate(found):
                    if v is not None:
                        vecs[i] = v
            n_reused = 0
            if reused is not None and todo:
                still = []
                for i in todo:
                    v = reused.get(keys[i])
                    if v is None:
                        still.append(i)
                    else:
                        vecs[i] = v
                n_reused, todo = len(todo) - len(still), still
            if todo:
                fresh = embedder.embed_documents([texts[i] for i in todo], batch_size=batch_size)
                vecs[todo] = fresh
                if cache is not None:
                    cache.put_vectors((keys[i], fresh[j]) for j, i in enumerate(todo))
            cache_stats["chunks_cached"] += len(texts) - len(todo) - n_reused
            cache_stats["chunks_embedded"] += len(todo)
            if reused is not None:
                cache_stats["chunks_reused"] = cache_stats.get("chunks_reused", 0) + n_reused
            writer.add(pending, vecs)
            t_embed += time.perf_counter() - te
            progress("embed", len(pending), None)
            pending = []

        while True:
            item = results.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            ex: Extracted = item
            progress("extract", 1, len(sources))
            for p in ex.problems:
                (skipped if p.severity == "skipped" else degraded).append(p)
            if not ex.documents:
                continue
            doomed = strict and (skipped or degraded)
            tc = time.perf_counter()
            src_index = len(sources_manifest)
            records = None
            ckey = f"chunks:{ex.sha256}:{chunk_settings}" if cache is not None and ex.sha256 else None
            if ckey:
                records = cache.get_extracted(ckey)
                if not isinstance(records, list):
                    records = None
            if records is None:
                records = _chunk_records(ex, chunker, counter, spec.document_prompt, whole_docs, context)
                if ckey:
                    cache.put_extracted(ckey, records)
            n_chunks = len(records)
            for record in records:
                record["source"] = src_index
                stats["max_tokens"] = max(stats["max_tokens"], record["tokens"])
                if record["tokens"] > spec.max_seq_length:
                    stats["truncated"] += 1
                if not doomed:
                    pending.append(record)
            t_chunk += time.perf_counter() - tc
            stats["pages"] += ex.page_count
            stats["chunks"] += n_chunks
            entry = {"path": ex.source.rel, "kind": ex.source.kind, "size": ex.size, "sha256": ex.sha256,
                     "pages": ex.page_count, "chunks": n_chunks,
                     "status": "degraded" if any(p.source == ex.source.rel for p in degraded) else "ok"}
            if ex.source.kind == "records":
                entry["records"] = len(ex.documents)
            sources_manifest.append(entry)
            if len(pending) >= window:
                flush()
        flush()
        extractor.join()
        seconds["extract"] = extract_wall.get("s", 0.0)
        seconds["chunk"] = t_chunk
        seconds["embed"] = t_embed

        if strict and (skipped or degraded):
            raise StrictError(f"--strict: {len(skipped)} skipped and {len(degraded)} degraded file(s): "
                              + "; ".join(f"{p.source}: {p.reason}" for p in skipped + degraded))
        if writer.count == 0:
            raise InputError(f"{', '.join(str(p) for p in paths)}: no text could be extracted from any input "
                             f"({len(skipped)} file(s) skipped); nothing to build")

        t = time.perf_counter()
        probe_meta, probe_vectors = _embed_probes(embedder, spec, counter, cache, identity)
        seconds["probes"] = time.perf_counter() - t

        t = time.perf_counter()
        idx = build_index(writer.vectors_view(), index)
        seconds["index"] = time.perf_counter() - t

        t = time.perf_counter()
        manifest = {
            "kbc_version": __version__,
            "created": created_timestamp(),
            "embedder": spec.to_manifest(),
            "chunking": {**cspec.to_manifest(), "unit": "document" if whole_docs else cspec.unit,
                         "token_budget": budget,
                         "context": {"mode": context, "separator": CONTEXT_SEPARATOR,
                                     "heading_separator": CONTEXT_HEADING_SEPARATOR,
                                     "max_tokens": CONTEXT_MAX_TOKENS}},
            "extraction": {"extractor": "pypdf", "clean": clean},
            "index": idx.manifest,
            "sources": sources_manifest,
            "skipped": [{"path": p.source, "reason": p.reason} for p in skipped],
            "degraded": [{"path": p.source, "reason": p.reason} for p in degraded],
            "counts": {"files": len(sources_manifest), "pages": stats["pages"], "chunks": writer.count,
                       "truncated_chunks": stats["truncated"], "skipped_files": len(skipped)},
        }
        extra = [("probes", "json", json.dumps(probe_meta, ensure_ascii=False, sort_keys=True).encode()),
                 ("probe_vectors", "f32le", np.ascontiguousarray(probe_vectors, dtype="<f4").tobytes())]
        manifest["retrieval"] = retrieval.to_manifest()
        if lexicon is not None:
            t_lex = time.perf_counter()
            manifest["lexical"], sections = lexicon.finish()
            extra += sections
            # tokenising happened chunk by chunk during embedding (and is inside "embed" too)
            seconds["lexical"] = time.perf_counter() - t_lex + lexicon.seconds
        writer.finish(manifest, index=idx.data, extra_sections=extra)
        seconds["write"] = time.perf_counter() - t
    except BaseException:
        writer.abort()
        raise
    finally:
        if reused is not None:
            if reused.rejected:
                cache_stats["reuse_rejected"] = reused.rejected  # non-finite or not unit length: re-embedded
            reused.close()
        # Stop and wait for helpers: an onnxruntime session still being created, or a worker still
        # starting, when the interpreter exits aborts the process or prints tracebacks.
        stop.set()
        need_work.set()
        warm.join()
        while extractor.is_alive():
            try:
                results.get(timeout=0.1)
            except queue.Empty:
                pass
    seconds["total"] = time.perf_counter() - t_start
    return BuildReport(
        output=str(output), files=len(sources_manifest), pages=stats["pages"], chunks=stats["chunks"],
        truncated_chunks=stats["truncated"], skipped=skipped, degraded=degraded,
        seconds={k: round(v, 3) for k, v in seconds.items()}, output_bytes=output.stat().st_size,
        embedder={"name": spec.name, "dim": spec.dim, "max_seq_length": spec.max_seq_length,
                  "backend": spec.backend, "precision": spec.precision, "weights_sha256": spec.weights_sha256},
        chunking=manifest["chunking"], index=idx.manifest, max_chunk_tokens=stats["max_tokens"], cache=cache_stats)


def embedded_text(record: dict) -> str:
    """What the embedder sees of a chunk: its context, then its text (the lexical index weighs the
    two fields itself: LexicalBuilder.add_chunks)."""
    ctx = record.get("context")
    return f"{ctx}{CONTEXT_SEPARATOR}{record['text']}" if ctx else record["text"]


def _without_title(heading: str, title: str | None) -> str:
    """A heading path without the document title the context already starts with."""
    if title and (heading == title or heading.startswith(title + " > ")):
        return heading[len(title) + 3:]
    return heading


def _chunk_records(ex: Extracted, chunker: Chunker, counter: TokenCounter, prompt: str,
                   whole_docs: bool, context: str = "auto") -> list[dict]:
    """Chunk records of one file, in bundle form (the caller sets "source")."""
    records: list[dict] = []
    for doc in ex.documents:
        # Files get their identity (path words, title) and, per chunk, the section heading that
        # covers its start; JSONL records already carry their title in the text.
        base = document_context(doc.source, doc.title, counter) if context == "auto" and doc.record_id is None else ""
        by_heading = {h: section_context(base, _without_title(h, doc.title), counter)
                      for _, _, h in doc.headings} if base else {}
        # chunks are sized for the longest context of the document, so none overflows the model
        longest = max([base, *by_heading.values()], key=lambda c: counter.count(c)) if base else ""
        chunks: list[Chunk] = (whole_document_chunks(doc, counter, prompt, context=longest) if whole_docs
                               else chunker.split(doc, context=longest))
        contexts = [by_heading.get(doc.heading_at(c.char_start), base) if base else "" for c in chunks]
        if any(ctx != longest for ctx in contexts):
            counts = counter.count_batch([prompt + (ctx + CONTEXT_SEPARATOR if ctx else "") + c.text
                                          for ctx, c in zip(contexts, chunks)])
            for c, n in zip(chunks, counts):
                c.n_tokens = n
        labels = {p.number: p.label for p in doc.pages if p.label}
        for c, ctx in zip(chunks, contexts):
            if ex.source.kind == "pdf" and not whole_docs and not has_words(c.text):  # page furniture
                continue
            record = {"text": c.text, "seq": len(records), "page_start": c.page_start, "page_end": c.page_end,
                      "char_start": c.char_start, "char_end": c.char_end, "tokens": c.n_tokens}
            if ctx:
                record["context"] = ctx
            if doc.record_id is not None:
                record["record"] = doc.record_id
            if c.page_start in labels or c.page_end in labels:
                record["label_start"] = labels.get(c.page_start, str(c.page_start))
                record["label_end"] = labels.get(c.page_end, str(c.page_end))
            records.append(record)
    return records


def embedder_identity(spec: EmbedderSpec) -> str:
    """Everything that decides a chunk's vector besides its text and prompt."""
    parts = [spec.weights_sha256, spec.backend, spec.precision, spec.pooling, str(spec.normalize),
             str(spec.max_seq_length), str(spec.do_lower_case), json.dumps(spec.runtime, sort_keys=True)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _open_cache(cache_dir):
    from .cache import Cache

    try:
        return Cache(cache_dir)
    except (OSError, sqlite3.Error) as e:
        print(f"kbc: warning: cache unavailable ({e}); building without it", file=sys.stderr)
        return None


class ReusedVectors:
    """--reuse: vectors of earlier bundles made by the identical embedder, offered chunk by chunk.

    A bundle is untrusted input (its checksums prove nothing about who wrote it), so its vectors
    never enter the shared cache, where later builds without --reuse would ship them: they serve
    this build only, and only when finite (and of unit length for a normalising embedder).
    """

    def __init__(self, identity: str, spec: EmbedderSpec):
        self.identity, self.spec = identity, spec
        self._rows: dict[bytes, tuple[np.ndarray, int]] = {}
        self._bundles: list = []
        self.rejected = 0

    def add_bundle(self, path) -> int:
        """Index one bundle's chunks; returns how many it offers (0 for another embedder)."""
        from .bundle import Bundle

        old = Bundle(path)
        rec = old.manifest.get("embedder", {})
        try:
            same = (embedder_identity(EmbedderSpec(**rec)) == self.identity
                    and rec.get("document_prompt") == self.spec.document_prompt
                    and old.manifest["vectors"]["dtype"] == "float32" and old.dim == self.spec.dim)
        except (TypeError, ValueError, AttributeError, KeyError):
            same = False
        if not same:  # another model, precision or prompt: its vectors are not ours
            old.close()
            return 0
        self._bundles.append(old)  # closed by close(), also when reading it fails below
        vectors = old.vectors
        for i, chunk in enumerate(old.iter_chunks()):
            self._rows[vector_key(self.identity, self.spec.document_prompt, embedded_text(chunk))] = (vectors, i)
        return old.count

    def get(self, key: bytes) -> np.ndarray | None:
        hit = self._rows.get(key)
        if hit is None:
            return None
        v = np.asarray(hit[0][hit[1]], dtype=np.float32)
        if not np.isfinite(v).all() or (self.spec.normalize and abs(float(np.linalg.norm(v)) - 1.0) > 1e-3):
            self.rejected += 1
            return None
        return v

    def close(self) -> None:
        self._rows.clear()
        for b in self._bundles:
            b.close()
