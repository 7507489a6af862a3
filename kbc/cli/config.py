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

A config file is untrusted input too (a repository's kbc.toml comes with the repository): it must be
a regular UTF-8 file of at most MAX_CONFIG_BYTES with arrays and inline tables nested at most
MAX_CONFIG_NESTING deep, checked before it is parsed, and every value must be of the type and in the
range of the flag it stands for (SPECS): a string where a number belongs, a float for a count, a bool
for an int, NaN or infinity, a huge integer, a table or a list where a scalar belongs, and an unknown
key (named with the closest known one) are each one InputError (exit 2) naming the file and the key.
Plugins are never named here: a `plugins` key is refused, because importing a module runs its code
(they load only from the KBC_PLUGINS environment variable and installed entry points, kbc.plugins).
"""

from __future__ import annotations

import difflib
import math
import os
import re
import stat
from pathlib import Path
from typing import Any, Sequence

from ..errors import InputError
from ..options import BUILD_OPTIONS, MAX_PATTERNS, MAX_STRING, BuildOption

# A config file is input like any other: it is bounded before it is parsed, and every value is
# checked against the type and range of the `kbc build` flag it stands for.
MAX_CONFIG_BYTES = 1 << 20  # 1 MiB: a real kbc.toml or pyproject.toml is a few KB
MAX_CONFIG_NESTING = 32  # arrays and inline tables inside each other (tomllib recurses on them)
_PLUGIN_KEYS = ("plugins", "plugin", "kbc_plugins")

# key (as `kbc build` spells it, underscores) -> its declaration (kbc.options): the flag's type, its
# choices, and the bounds the build checks, so that a huge integer never reaches a stage
SPECS: dict[str, BuildOption] = {o.key: o for o in BUILD_OPTIONS if o.config}
# key -> the TOML types it takes (kept for callers of the older table)
OPTIONS: dict[str, tuple[type, ...]] = {k: o.types for k, o in SPECS.items()}
# what a bundle records (manifest `build_options`) to be rebuilt from: everything that decides its
# content; not machine-specific settings (workers, engine, cache), never secrets, and never the
# switches that protect a build from its inputs or widen what it reads (follow-symlinks, max-file-mb,
# code: a code base's config files may hold secrets): a bundle comes from anywhere, and only the
# person running the build may lift those
RECORDED = tuple(o.key for o in BUILD_OPTIONS if o.recorded)

# what can open an array or inline table, outside comments and strings (the pre-parse nesting scan)
_TOKENS = re.compile(r'''#[^\n]*|"""(?:\\.|[^\\])*?"""|\'\'\'.*?\'\'\'|"(?:\\.|[^"\\\n])*"|'[^'\n]*'|[\[\]{}]''', re.S)


def _nesting_at(text: str) -> int | None:
    """The line where arrays / inline tables first nest deeper than MAX_CONFIG_NESTING, else None."""
    depth = 0
    for m in _TOKENS.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > MAX_CONFIG_NESTING:
                return text.count("\n", 0, m.start()) + 1
        elif c in "]}":
            depth = max(0, depth - 1)
    return None


def _load_toml(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path}: not a regular file")
        if st.st_size > MAX_CONFIG_BYTES:
            raise InputError(f"{path}: {st.st_size:,} bytes; a config file may hold at most "
                             f"{MAX_CONFIG_BYTES:,} bytes (1 MiB)")
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(data) > MAX_CONFIG_BYTES:  # it grew while we looked
        raise InputError(f"{path}: more than {MAX_CONFIG_BYTES:,} bytes; a config file may hold at most 1 MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(f"{path}: not valid TOML (line {line}: byte 0x{data[e.start]:02x} is not UTF-8; "
                         "TOML files are UTF-8)") from None
    line = _nesting_at(text)
    if line is not None:
        raise InputError(f"{path}: not valid TOML (line {line}: arrays or inline tables nested more than "
                         f"{MAX_CONFIG_NESTING} deep)")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML ({_one_line(str(e))})") from None
    except (ValueError, RecursionError, MemoryError) as e:  # a number of thousands of digits, say
        m = re.search(r"[0-9_]{1000,}", text)
        if m:
            raise InputError(f"{path}: not valid TOML (line {text.count(chr(10), 0, m.start()) + 1}: a number of "
                             f"{len(m.group()):,} digits)") from None
        raise InputError(f"{path}: not valid TOML ({_one_line(str(e))[:200]})") from None


def _one_line(s: str) -> str:
    return " ".join(s.split())


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
    """The options in `path`, checked: the file's size and nesting before it is parsed, then every
    key and value (type and range); each problem is one InputError naming the file and the key."""
    path = Path(path)
    data = _load_toml(path)
    where = str(path)
    if path.name == "pyproject.toml":
        tool = data.get("tool")
        data = tool.get("kbc", {}) if isinstance(tool, dict) else {}
        where = f"{path} [tool.kbc]"
        if not isinstance(data, dict):
            raise InputError(f"{where}: must be a table of options, not {_type(data)}")
    return checked_options(data, where=where, base=path.parent)


def _type(value: Any) -> str:
    return {dict: "table", list: "list"}.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    """A value as an error message shows it: one line, short."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"a {value.bit_length()}-bit integer"
    if isinstance(value, (dict, list)):
        return _type(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:60] + "..." + text[-10:]


def _name(raw_key: Any) -> str:
    """A key as an error message names it: as written when it is a plain one, else quoted (one line)."""
    key = str(raw_key)
    if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", key):
        return key
    return _show(key)


def _check_string(s: str, where: str, name: str, what: str = "") -> None:
    if len(s) > MAX_STRING:
        raise InputError(f"{where}: {name}{what} is {len(s):,} characters; at most {MAX_STRING} are allowed")
    if "\0" in s:
        raise InputError(f"{where}: {name}{what} holds a NUL character, which no option allows")


def check_value(key: str, value: Any, *, where: str, name: str | None = None) -> Any:
    """`value` for option `key` (underscores) if it is of the flag's type and in its range, else an
    InputError naming `where`, the key (`name`, as written) and what is allowed."""
    spec = SPECS[key]
    name = name or key
    types = spec.types
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        shown = "" if isinstance(value, (dict, list)) else f" ({_show(value)})"
        raise InputError(f"{where}: {name} must be {' or '.join(t.__name__ for t in types)}, not {_type(value)}"
                         f"{shown}; allowed: {spec.allowed()}")
    if spec.kind in ("int", "number"):
        inside = (math.isfinite(value) and (value > spec.lo if spec.lo_open else value >= spec.lo)
                  and value <= spec.hi)
        if not inside:
            raise InputError(f"{where}: {name} must be {spec.allowed()}, not {_show(value)}")
    elif spec.kind in ("str", "path"):
        _check_string(value, where, name)
        if spec.choices is not None and value not in spec.names():
            raise InputError(f"{where}: {name} must be {spec.allowed()}, not {_show(value)}")
        if key == "encoding":
            import codecs

            try:
                codecs.lookup(value)
            except LookupError:
                raise InputError(f"{where}: {name} {_show(value)} is not an encoding Python knows "
                                 "(e.g. utf-8, latin-1, utf-16)") from None
    elif spec.kind in ("list", "paths"):
        if len(value) > MAX_PATTERNS:
            raise InputError(f"{where}: {name} holds {len(value):,} items; allowed: {spec.allowed()}")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise InputError(f"{where}: {name} must be a list of strings, not a list holding {_type(item)} "
                                 f"({_show(item)}) at item {i + 1}")
            _check_string(item, where, name, f" item {i + 1}")
    return value


def _attribute_tables(data: dict, where: str) -> dict:
    """`[[attributes]]` tables (`match = "manuals/x200/**"`, then KEY = value pairs: a string, an
    integer, a date as a string, or a list of strings) as `attr` items `GLOB:KEY=VALUE` after any
    `attr` the file sets, so a file and the CLI declare attributes one way (FORMAT.md §2.10)."""
    from ..format.attributes import valid_key

    tables = data["attributes"]
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise InputError(f"{where}: attributes must be [[attributes]] tables, not {_type(tables)}")
    items = list(data.get("attr") or []) if isinstance(data.get("attr") or [], list) else data["attr"]
    for i, table in enumerate(tables, 1):
        glob = table.get("match", "**")
        if not isinstance(glob, str) or not glob or ":" in glob or "=" in glob:
            raise InputError(f"{where}: attributes table {i}: match must be a path glob without ':' or '=', "
                             f"not {_show(glob)}")
        for key, value in table.items():
            if key == "match":
                continue
            if not valid_key(key):
                raise InputError(f"{where}: attributes table {i}: {_name(key)} is no attribute name "
                                 "([A-Za-z_][A-Za-z0-9_.-]*, at most 64 characters, not path)")
            values = value if isinstance(value, list) else [value]
            if isinstance(value, list) and len(value) < 2 or not all(
                    isinstance(v, str) and "," not in v or isinstance(v, int) and not isinstance(v, bool)
                    for v in values):
                raise InputError(f"{where}: attributes table {i}: {key} must be a string, an integer or a list of at "
                                 f"least two strings (none holding ','), not {_show(value)}")
            items.append(f"{glob}:{key}={','.join(str(v) for v in values)}")
    rest = {k: v for k, v in data.items() if k != "attributes"}
    rest["attr"] = items
    return rest


def checked_options(data: dict, *, where: str, base: Path | None = None,
                    allowed: Sequence[str] | None = None) -> dict[str, Any]:
    """`data` as options; `allowed` narrows the keys (a bundle's record may only hold RECORDED).
    Each key must be an option of `kbc build` and each value of its flag's type and range; any
    other is one InputError naming `where`, the key and what it takes."""
    if not isinstance(data, dict):
        raise InputError(f"{where}: must be a table of options, not {_type(data)}")
    if "attributes" in data and allowed is None:
        data = _attribute_tables(data, where)
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for raw_key, value in data.items():
        name = _name(raw_key)
        quoted = name if name != str(raw_key) else repr(name)  # _name quoted an odd key already
        key = str(raw_key).replace("-", "_")
        if key.lower() in _PLUGIN_KEYS:
            raise InputError(f"{where}: {name} is refused: plugins load only from the KBC_PLUGINS environment "
                             "variable (or installed kbc.plugins entry points), never from a config file or a bundle")
        if allowed is not None and key not in allowed:
            raise InputError(f"{where}: {quoted} is not an option a bundle records")
        if key.lower() in ("password", "passwords"):
            raise InputError(f"{where}: passwords are not read from files; pass --password")
        if key not in SPECS:
            dashed = "-" in str(raw_key) or "_" not in str(raw_key)
            known = [k.replace("_", "-") if dashed else k for k in SPECS]
            close = difflib.get_close_matches(str(raw_key).lower() if len(str(raw_key)) <= 64 else "", known, n=1,
                                              cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(known)}"
            raise InputError(f"{where}: unknown option {quoted} ({hint})")
        if key in spelled:
            raise InputError(f"{where}: {name} is given twice (as {spelled[key]} and {name}): keep one")
        spelled[key] = name
        value = check_value(key, value, where=where, name=name)
        if SPECS[key].relative and base is not None and not Path(value).is_absolute():
            try:
                if (base / value).exists():
                    value = str((base / value).resolve())
            except (OSError, ValueError):  # a name too long for the file system: left as written
                pass
        out[key] = value
    return out
