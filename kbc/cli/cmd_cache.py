"""`kbc cache info|clear|prune`: the local build cache."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import InputError
from .typer_app import _emit_json, _human_bytes, app, handle_errors, quote_name

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
    from ..infra.cache import cache_info

    info = cache_info(cache_dir)
    if as_json:
        _emit_json(info)
        return
    e = info["entries"]
    print(f"{quote_name(info['path'])}: {_human_bytes(info['bytes'])}" + ("" if info["exists"] else " (does not exist yet)"))
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
    from ..infra.cache import clear_cache

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
    from ..infra.cache import prune_cache

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
