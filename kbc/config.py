"""Build options from a file: `kbc.toml`, or `[tool.kbc]` in a `pyproject.toml`, found upward from
the first input, so a CI job runs plain `kbc build docs/ -o kb.kbpack`. Precedence, lowest first:
kbc's defaults, `--from-bundle` (the options recorded in an earlier bundle), the config file,
flags on the command line.

Keys are the options of `kbc build` without the leading dashes (`chunk-size = 200`, or
`chunk_size`); the on/off flags take booleans (`no-lexical = true`). Relative paths (`model`,
`cache-dir`) are relative to the file. Passwords are never read from a file: pass them as flags.
The search starts at the first input's parent folder: a file inside the (untrusted) docs folder
is never read as configuration. A bundle's recorded options (`--from-bundle`) may only hold
options that decide content (RECORDED), never machine settings such as `ray-address`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from .errors import InputError

# option (as `kbc build` spells it, underscores) -> the TOML types it takes
OPTIONS: dict[str, tuple[type, ...]] = {
    "model": (str,), "chunk_unit": (str,), "chunk_size": (int,), "chunk_overlap": (int,), "batch_size": (int,),
    "device": (str,), "backend": (str,), "engine": (str,), "ray_address": (str,), "index": (str,),
    "include": (list,), "exclude": (list,), "follow_symlinks": (bool,), "code": (bool,), "encoding": (str,), "pdf_reader": (str,),
    "query_prompt": (str,), "document_prompt": (str,), "float16": (bool,), "vectors": (str,), "no_clean": (bool,),
    "context": (str,), "no_lexical": (bool,), "with_encoder": (bool,), "default_mode": (str,), "default_unit": (str,), "workers": (int,), "file_timeout": (int, float),
    "max_file_mb": (int, float), "strict": (bool,), "no_cache": (bool,), "cache_dir": (str,),
}
_PATHS = {"model", "cache_dir"}
# what a bundle records (manifest `build_options`) to be rebuilt from: everything that decides its
# content; not machine-specific settings (workers, engine, cache), never secrets, and never the
# switches that protect a build from its inputs or widen what it reads (follow-symlinks, max-file-mb,
# code: a code base's config files may hold secrets): a bundle comes from anywhere, and only the
# person running the build may lift those
RECORDED = ("model", "chunk_unit", "chunk_size", "chunk_overlap", "backend", "index", "include", "exclude",
            "encoding", "pdf_reader", "query_prompt", "document_prompt", "float16", "vectors", "no_clean", "context",
            "no_lexical", "with_encoder", "default_mode", "default_unit", "strict")


def _load_toml(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML ({e})") from None


def find_config(inputs: Sequence[str | os.PathLike]) -> Path | None:
    """The nearest kbc.toml, or pyproject.toml with a [tool.kbc] table, from the first input up."""
    if not inputs:
        return None
    # From the input's parent up, never inside the input: a docs folder is untrusted, and a kbc.toml
    # dropped into it must not switch off the limits that protect the build from it.
    start = Path(inputs[0]).resolve()
    for folder in start.parents:
        if (folder / "kbc.toml").is_file():
            return folder / "kbc.toml"
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            try:
                tool = _load_toml(pyproject).get("tool")
                if isinstance(tool, dict) and "kbc" in tool:
                    return pyproject
            except InputError:
                pass  # someone else's broken pyproject is not ours to reject
    return None


def load_config(path: Path) -> dict[str, Any]:
    """The options in `path`, checked: unknown keys and wrong types are one-line errors naming both."""
    data = _load_toml(path)
    if path.name == "pyproject.toml":
        tool = data.get("tool")
        data = tool.get("kbc", {}) if isinstance(tool, dict) else {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: the kbc table must be a table of options")
    return checked_options(data, where=str(path), base=path.parent)


def checked_options(data: dict, *, where: str, base: Path | None = None,
                    allowed: Sequence[str] | None = None) -> dict[str, Any]:
    """`data` as options; `allowed` narrows the keys (a bundle's record may only hold RECORDED)."""
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if allowed is not None and key not in allowed:
            raise InputError(f"{where}: {raw_key!r} is not an option a bundle records")
        if key == "password":
            raise InputError(f"{where}: passwords are not read from files; pass --password")
        if key not in OPTIONS:
            raise InputError(f"{where}: unknown option {raw_key!r} (known: "
                             f"{', '.join(k.replace('_', '-') for k in OPTIONS)})")
        types = OPTIONS[key]
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            raise InputError(f"{where}: {raw_key} must be {' or '.join(t.__name__ for t in types)}, "
                             f"not {type(value).__name__}")
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise InputError(f"{where}: {raw_key} must be a list of strings")
        if key in _PATHS and base is not None and not Path(value).is_absolute() and (base / value).exists():
            value = str((base / value).resolve())
        out[key] = value
    return out


def recorded(options: dict[str, Any]) -> dict[str, Any]:
    return {k: options[k] for k in RECORDED if options.get(k) not in (None, [], ())}
