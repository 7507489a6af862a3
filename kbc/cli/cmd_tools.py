"""`kbc export`, `kbc probe` and `kbc diff`: options -> the tool -> its report."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from .choices import _EXPORT_HELP, ExportChoice
from .typer_app import _emit_json, _fail, _human_bytes, _Progress, _safe, app, handle_errors, quote_name


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
    from ..exporters import export as run_export
    from ..exporters import exporter_for
    from ..format.bundle import Bundle

    fmt = to.value if to is not None else exporter_for(out)
    with Bundle(bundle) as b:
        total = b.count
    to_stdout = str(out) == "-"
    with _Progress(enabled=not quiet and sys.stderr.isatty()) as progress:
        written = run_export(bundle, fmt, out, progress=lambda n: progress("export", n, total))
    if not quiet and not to_stdout:
        print(", ".join(f"{quote_name(p)} ({_human_bytes(p.stat().st_size)})" for p in written) + f": {total} chunks as {fmt}")


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
    from ..format.bundle import Bundle
    from ..tools.probe import compare, read_vectors

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
    from ..tools.diff import diff_bundles

    d = diff_bundles(old, new)
    if as_json:
        _emit_json(d.to_dict())
    else:
        lines = []
        for label, items in (("added", d.sources_added), ("removed", d.sources_removed), ("changed", d.sources_changed)):
            lines += [f"{'+-~'[('added', 'removed', 'changed').index(label)]} {quote_name(p)}" for p in items]
        lines.append(f"chunks: {d.chunks_added} added, {d.chunks_removed} removed, {d.chunks_kept} kept")
        for key, fields in d.settings.items():
            for f, (a, b) in fields.items():
                lines.append(f"{key}.{f}: {_safe(json.dumps(a))[:80]} -> {_safe(json.dumps(b))[:80]}")
        if d.vectors_changed and not d.settings.get("embedder") and not d.settings.get("vectors") \
                and not (d.chunks_added or d.chunks_removed):
            lines.append("vectors: differ (same embedder settings and chunks: another engine or machine?)")
        if d.delta_bytes is not None:
            lines.append(f"delta: {_human_bytes(d.delta_bytes)} ({100 * d.delta_bytes / max(1, d.new_bytes):.2f}% of the "
                         f"new bundle's {_human_bytes(d.new_bytes)}; kbc delta OLD NEW -o FILE writes it)")
        else:
            lines.append(f"delta: not measured ({d.delta_unavailable})")
        lines.append("bundles differ" if d.changed else "no differences")
        print("\n".join(lines))
    raise typer.Exit(7 if d.changed else 0)
