"""`kbc inspect`: options -> the bundle's manifest, sections and chunks (and --verify) -> render."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from .typer_app import _emit_json, _safe, app, handle_errors, quote_name
from .render import _print_inspect


def _print_attributes(attributes) -> None:
    """`attributes:` then a line per key: its type, how many chunks have it, its frequent values."""
    from .typer_app import _safe

    if attributes is None:
        print("attributes: none (built before format 1.7): kbc query --where cannot filter this bundle")
        return
    if "error" in attributes:
        print(f"attributes: unreadable: {_safe(attributes['error'])}")
        return
    print(f"attributes: {len(attributes)} keys (kbc query --where KEY=VALUE, path:GLOB)")
    for a in attributes:
        shown = ", ".join(f"{_safe(str(v['value']))[:40]} ({v['chunks']})" for v in a["values"])
        more = f", ... {a['distinct'] - len(a['values'])} more" if a["distinct"] > len(a["values"]) else ""
        print(f"  {_safe(a['name'])} ({a['type']}, {a['chunks']} chunks): {shown}{more}")


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
    from ..errors import BundleError
    from ..format.bundle import Bundle

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
        try:  # 1.7: each key, its type and its most frequent values (FORMAT.md §2.10); null before 1.7
            table = b.attributes() if not error else None
            info["attributes"] = None if table is None else table.summary()
        except BundleError as e:
            info["attributes"] = {"error": e.detail}
        shown = [b.chunk(i) for i in range(min(chunks, b.count))] if chunks and not error else []
        if as_json:
            if shown:
                info["chunks"] = shown
            _emit_json(info)
        else:
            _print_inspect(info, shown, b.source_path)
            _print_attributes(info["attributes"])
        if error:
            if not as_json:
                print(f"kbc: error: {quote_name(bundle)}: {_safe(error['section'])}: {_safe(error['message'])}", file=sys.stderr)
            raise typer.Exit(3)
