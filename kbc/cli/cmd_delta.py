"""`kbc delta` and `kbc apply`: options -> kbc/tools/delta.py -> one line (or --json)."""

from __future__ import annotations

from pathlib import Path

import typer

from .typer_app import _emit_json, _human_bytes, app, handle_errors


@app.command()
@handle_errors
def delta(
    old: Path = typer.Argument(..., help="The bundle the device has."),
    new: Path = typer.Argument(..., help="The bundle it should have."),
    out: Path = typer.Option(..., "-o", "--output", help="The .kbdelta file to write (atomically)."),
    level: int = typer.Option(9, "--level", min=1, max=15, help="zstd level, 1 to 15 (16 and above lose the "
                              "matches into OLD on large bundles): 3 is faster, about 10% larger."),
    as_json: bool = typer.Option(False, "--json", help="The delta's header as JSON."),
):
    """Write the update that turns OLD into NEW: the new bundle compressed against the old one, both named
    by SHA-256. A device applies it with `kbc apply` or libkbpack's kbp_apply_delta (`kbpack apply`).

    Example: kbc delta kb-1.4.kbpack kb-1.5.kbpack -o kb-1.4-to-1.5.kbdelta"""
    from ..tools.delta import make_delta

    h = make_delta(old, new, out, level=level)
    if as_json:
        _emit_json({"output": str(out), **h.to_dict()})
    else:
        size = h.to_dict()["size"]
        print(f"{out}: {_human_bytes(size)} ({100 * size / max(1, h.new_size):.2f}% of the new bundle's "
              f"{_human_bytes(h.new_size)})")


@app.command()
@handle_errors
def apply(
    old: Path = typer.Argument(..., help="The bundle the delta was made from."),
    delta_file: Path = typer.Argument(..., metavar="DELTA", help="A .kbdelta from `kbc delta`."),
    out: Path = typer.Option(..., "-o", "--output", help="Where the new bundle goes (may be OLD itself: it is "
                             "replaced only by a verified new bundle)."),
    as_json: bool = typer.Option(False, "--json", help="The delta's header as JSON."),
):
    """Rebuild the new bundle from OLD and DELTA. Refused with one line, exit 3, when OLD is not the
    delta's base or the delta is damaged; the result is checked against the new bundle's SHA-256 before
    anything is written, then renamed into place (OLD is never modified).

    Example: kbc apply kb.kbpack update.kbdelta -o kb.kbpack"""
    from ..tools.delta import apply_delta

    h = apply_delta(old, delta_file, out)
    if as_json:
        _emit_json({"output": str(out), **h.to_dict()})
    else:
        print(f"{out}: {_human_bytes(h.new_size)}, SHA-256 {h.new_sha256.hex()} verified")
