"""Filters over document attributes (FORMAT.md §2.10.1): conditions such as `path:manuals/x200/**`,
`product=x200`, `tags=en,de` or `year>=2022`, ANDed, compiled against a bundle's attribute table
into the set of chunks a search may return. libkbpack's attributes.c parses and matches exactly
the same way (tests/test_c_filters.py compares them), so a filter means one thing on every runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .attributes import MAX_INTEGER, AttributeTable, valid_date

MAX_CONDITIONS = 64
MAX_GLOB_BYTES = 1024
MAX_MATCHED_PATH_BYTES = 4096  # a longer source path matches no glob: a forged 8 MB path costs nothing
PATH_PREFIX = "path:"
OPERATORS = (">=", "<=", "=", ">", "<")
SPACES = " \t"
GRAMMAR = "path:GLOB, key=value, key=v1,v2, key>=N, key<=N, key>N or key<N"


class FilterError(ValueError):
    """A condition this bundle cannot apply: the CLI prints it as one line, exit 2."""


# --------------------------------------------------------------------------- globs


def _segment_match(pattern: str, text: str) -> bool:
    """`*` any run, `?` one code point, all else literal; within one segment. The classic greedy
    match with one backtrack point: linear-ish, never exponential."""
    p = t = 0
    star, mark = -1, 0
    while t < len(text):
        if p < len(pattern) and (pattern[p] == "?" or (pattern[p] != "*" and pattern[p] == text[t])):
            p += 1
            t += 1
        elif p < len(pattern) and pattern[p] == "*":
            star, mark = p, t
            p += 1
        elif star >= 0:
            p = star + 1
            mark += 1
            t = mark
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


def glob_match(pattern: str, path: str) -> bool:
    """The path glob of FORMAT.md §2.10.1: segments split at '/', a segment `**` matches zero or
    more whole segments, others match one segment each. The same greedy algorithm as within a
    segment, over segments: `**` is the star."""
    if len(path.encode("utf-8", "surrogatepass")) > MAX_MATCHED_PATH_BYTES:
        return False
    pat, segs = pattern.split("/"), path.split("/")
    p = s = 0
    star, mark = -1, 0
    while s < len(segs):
        if p < len(pat) and pat[p] != "**" and _segment_match(pat[p], segs[s]):
            p += 1
            s += 1
        elif p < len(pat) and pat[p] == "**":
            star, mark = p, s
            p += 1
        elif star >= 0:
            p = star + 1
            mark += 1
            s = mark
        else:
            return False
    while p < len(pat) and pat[p] == "**":
        p += 1
    return p == len(pat)


# --------------------------------------------------------------------------- conditions


@dataclass(frozen=True)
class Condition:
    text: str  # as given
    key: str  # "path" for a glob
    op: str  # "glob", "=", ">=", "<=", ">", "<"
    values: tuple[Any, ...]  # the glob; or the values, as the key's type holds them


def _strip(s: str) -> str:
    return s.strip(SPACES)


def _integer(text: str) -> int | None:
    body = text[1:] if text.startswith("-") else text
    if not 1 <= len(body) <= 16 or not all("0" <= c <= "9" for c in body):
        return None
    value = int(text)
    return value if -MAX_INTEGER <= value <= MAX_INTEGER else None


def _keys_line(table: AttributeTable) -> str:
    return ", ".join(sorted(table.keys)) or "none"


def parse_condition(text: str, table: AttributeTable | None) -> Condition:
    """One condition, checked against the bundle's keys and their types."""
    if not isinstance(text, str):
        raise FilterError(f"a condition must be text, not {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise FilterError(f"{text!r}: not valid UTF-8") from None
    if table is None:
        raise FilterError(f"no attributes in this bundle (built before format 1.7): cannot apply {text!r}")
    stripped = _strip(text)
    if stripped.startswith(PATH_PREFIX):
        glob = _strip(stripped[len(PATH_PREFIX):])
        if not glob or len(glob.encode("utf-8")) > MAX_GLOB_BYTES:
            raise FilterError(f"{text!r}: a path glob must be 1 to {MAX_GLOB_BYTES} bytes")
        return Condition(text, "path", "glob", (glob,))
    at = min((i for i in (stripped.find(c) for c in "<>=") if i >= 0), default=-1)
    if at < 0:
        raise FilterError(f"{text!r} is not a condition: expected {GRAMMAR}")
    op = next(o for o in OPERATORS if stripped.startswith(o, at))
    key, raw = _strip(stripped[:at]), stripped[at + len(op):]
    if not key:
        raise FilterError(f"{text!r}: no attribute before {op}: expected {GRAMMAR}")
    if key not in table.keys:
        raise FilterError(f"unknown attribute {key!r} in {text!r}; this bundle has: {_keys_line(table)}")
    kind = table.keys[key]
    items = [_strip(v) for v in raw.split(",")]
    if any(not v for v in items):
        raise FilterError(f"{text!r}: an empty value for {key}")
    if op != "=" and len(items) > 1:
        raise FilterError(f"{text!r}: {op} takes one value")
    if kind in ("string", "list"):
        if op != "=":
            raise FilterError(f"{text!r}: {key} is a {kind}; only = applies ({key}=v or {key}=v1,v2)")
        return Condition(text, key, op, tuple(items))
    if kind == "integer":
        values = [_integer(v) for v in items]
        bad = next((v for v, n in zip(items, values) if n is None), None)
        if bad is not None:
            raise FilterError(f"{text!r}: {key} is an integer; {bad!r} is not one (at most 16 digits)")
        return Condition(text, key, op, tuple(values))
    bad = next((v for v in items if not valid_date(v)), None)
    if bad is not None:
        raise FilterError(f"{text!r}: {key} is a date; {bad!r} is not a YYYY-MM-DD date")
    return Condition(text, key, op, tuple(items))


def _compare(op: str, a, b) -> bool:
    return a >= b if op == ">=" else a <= b if op == "<=" else a > b if op == ">" else a < b


def _row_matches(cond: Condition, kind: str, value: Any) -> bool:
    if value is None:
        return False
    if cond.op == "=":
        if kind == "list":
            return any(v in value for v in cond.values)
        return value in cond.values
    return _compare(cond.op, value, cond.values[0])


@dataclass
class Filter:
    """A compiled filter: which chunks it keeps."""
    conditions: tuple[Condition, ...]
    mask: np.ndarray  # bool, one per chunk
    ids: np.ndarray  # the kept chunk ids, increasing (int64)

    @property
    def matched(self) -> int:
        return int(len(self.ids))


def normalise_where(where: str | Sequence[str] | None) -> list[str]:
    if where is None:
        return []
    if isinstance(where, str):
        return [where]
    return list(where)


def compile_filter(where: str | Sequence[str], table: AttributeTable | None, source_paths: Sequence[Any]) -> Filter:
    """Conditions (ANDed) against the bundle's table; FilterError names what cannot apply."""
    texts = normalise_where(where)
    if not texts:
        raise FilterError("an empty filter: give at least one condition")
    if len(texts) > MAX_CONDITIONS:
        raise FilterError(f"{len(texts)} conditions: at most {MAX_CONDITIONS}")
    conditions = tuple(parse_condition(t, table) for t in texts)
    assert table is not None  # parse_condition refuses a bundle without one
    columns = {name: i for i, name in enumerate(table.keys)}
    keep_row = np.ones(len(table.firsts), dtype=bool)
    glob_cache: dict[tuple[str, int], bool] = {}
    for cond in conditions:
        for r in np.flatnonzero(keep_row):
            if cond.op == "glob":
                source = table.sources[r]
                hit = glob_cache.get((cond.values[0], source))
                if hit is None:
                    path = source_paths[source] if source < len(source_paths) else None
                    hit = isinstance(path, str) and glob_match(cond.values[0], path)
                    glob_cache[(cond.values[0], source)] = hit
            else:
                hit = _row_matches(cond, table.keys[cond.key], table.values[r][columns[cond.key]])
            keep_row[r] = hit
    mask = np.zeros(table.count, dtype=bool)
    for (start, stop), keep in zip(table.row_runs(), keep_row):
        if keep:
            mask[start:stop] = True
    return Filter(conditions, mask, np.flatnonzero(mask).astype(np.int64))
