"""Document attributes (FORMAT.md §2.10): what a build records of each document (its reader kind,
title, front matter, JSONL metadata, what the builder declares) and the bundle's `attributes`
section that holds them, one row per run of chunks sharing a source and the same values.

The writer side (`AttributeRows`) collects rows as chunks stream past and settles each key's type
at the end; the reader side (`AttributeTable.parse`) checks a section from an untrusted bundle
against every bound the spec gives before a filter reads it. libkbpack's attributes.c makes the
same checks in the same order, so both readers refuse the same bundles.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

SECTION = "attributes"
VERSION = 1
MAX_KEYS = 64
MAX_KEY_CHARS = 64
MAX_STRING_CHARS = 1024
MAX_LIST_ITEMS = 64
MAX_INTEGER = (1 << 53) - 1  # every reader holds it exactly, doubles included
MAX_SECTION_BYTES = 64 << 20
TYPES = ("string", "list", "integer", "date")
RESERVED = ("path",)  # `path:GLOB` reads the source's path, not a stored value

KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")


class AttributeFormatError(ValueError):
    def __init__(self, section: str, message: str):
        super().__init__(message)
        self.section = section


def valid_key(name: Any) -> bool:
    return (isinstance(name, str) and 0 < len(name) <= MAX_KEY_CHARS and KEY_RE.match(name) is not None
            and name not in RESERVED)


def valid_date(text: Any) -> bool:
    """YYYY-MM-DD, a real day of years 0001..9999 (the spec's rule, not datetime's looser parser)."""
    if not isinstance(text, str) or not DATE_RE.match(text):
        return False
    try:
        datetime.date(int(text[:4]), int(text[5:7]), int(text[8:]))
    except ValueError:
        return False
    return True


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -MAX_INTEGER <= value <= MAX_INTEGER


# --------------------------------------------------------------------------- writing


def _kind_of(value: Any) -> str | None:
    """The type a single value would have on its own; None: left out (null, objects, floats that
    are no number)."""
    if isinstance(value, bool):
        return "string"
    if isinstance(value, int):
        return "integer" if is_integer(value) else "string"
    if isinstance(value, str):
        return "date" if valid_date(value) else "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, float):
        return "string" if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, datetime.date):
        return "date"
    return None


def _as_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime.date):
        return value.isoformat()
    return str(value)[:MAX_STRING_CHARS]


def _as_list(value: Any) -> list[str]:
    items = value if isinstance(value, (list, tuple)) else [value]
    return [_as_string(v) for v in items if _kind_of(v) not in (None, "list")][:MAX_LIST_ITEMS]


def clean_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """A document's attributes as a build may record them: valid keys only, nulls and nested
    objects left out, strings cut to the bound. Types are settled later, over every document."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if not valid_key(key) or _kind_of(value) is None:
            continue
        if isinstance(value, (list, tuple)):
            out[key] = _as_list(value)
        elif isinstance(value, str):
            out[key] = value[:MAX_STRING_CHARS]
        elif isinstance(value, datetime.date):
            out[key] = value.isoformat()
        else:
            out[key] = value
    return out


def _settle(kinds: set[str]) -> str:
    """The most general type of a key's values: one type as it is; any list makes a list;
    otherwise mixed types are strings."""
    if len(kinds) == 1:
        return next(iter(kinds))
    return "list" if "list" in kinds else "string"


def _stored(value: Any, kind: str) -> Any:
    if kind == "list":
        return _as_list(value)
    if kind == "string":
        return _as_string(value) if not isinstance(value, str) else value[:MAX_STRING_CHARS]
    if kind == "date" and isinstance(value, datetime.date):
        return value.isoformat()
    return value


class AttributeRows:
    """Rows collected while chunks stream into the writer: a chunk that starts a document brings
    that document's values, and a new row begins wherever the source or the values change."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, dict]] = []  # (first chunk, source, values)

    def add(self, chunk_id: int, source: int, values: Mapping[str, Any] | None) -> None:
        if self.rows:
            _, last_source, last_values = self.rows[-1]
            if source == last_source and (values is None or values == last_values):
                return
            if values is None and source != last_source:
                values = {}
        self.rows.append((chunk_id, source, dict(values or {})))

    def section(self, sources: Sequence[Mapping[str, Any]], declared: Sequence[tuple[str, Mapping[str, Any]]] = ()
                ) -> tuple[dict, bytes]:
        """(manifest object, section bytes). `kind` comes from the manifest's sources; `declared` are
        the builder's (glob, values) pairs in order (later ones win), applied over each document's own."""
        import json

        from .filters import glob_match

        rows = []
        for first, source, values in self.rows:
            src = sources[source] if 0 <= source < len(sources) else {}
            merged = dict(values)
            path = src.get("path", "")
            for pattern, extra in declared:
                if pattern is None or glob_match(pattern, path):
                    merged.update(clean_values(extra))
            kind = src.get("kind")
            if isinstance(kind, str):
                merged["kind"] = kind
            if rows and rows[-1][1] == source and rows[-1][2] == merged:
                continue  # a declared value made two runs of one source alike
            rows.append((first, source, merged))
        kinds: dict[str, set[str]] = {}
        for _, _, values in rows:
            for key, value in values.items():
                kinds.setdefault(key, set()).add(_kind_of(value))
        # kind and title first (what every document has), then the rest by name; at most MAX_KEYS
        names = sorted(kinds, key=lambda k: ({"kind": 0, "title": 1}.get(k, 2), k))[:MAX_KEYS]
        types = {k: _settle(kinds[k]) for k in names}
        table = [[first, source, *(_stored(values[k], types[k]) if k in values else None for k in names)]
                 for first, source, values in rows]
        meta = {"version": VERSION, "section": SECTION, "keys": [{"name": k, "type": types[k]} for k in names]}
        data = json.dumps({"rows": table}, ensure_ascii=False, sort_keys=True, separators=(",", ":"),
                          allow_nan=False).encode("utf-8")
        return meta, data


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class AttributeTable:
    """A checked attributes section: keys (name -> type, in column order) and its rows."""
    keys: dict[str, str]
    firsts: list[int]  # each row's first chunk, increasing from 0
    sources: list[int]
    values: list[list[Any]]  # per row, one value (or None) per key, in key order
    count: int  # chunks in the bundle

    @property
    def names(self) -> list[str]:
        return list(self.keys)

    @staticmethod
    def parse_keys(meta: Any) -> dict[str, str]:
        def fail(message: str):
            raise AttributeFormatError("manifest", f"attributes: {message}")

        if not isinstance(meta, dict):
            fail("not an object")
        if not is_integer(meta.get("version")) or meta["version"] != VERSION:
            fail(f"version must be {VERSION}")
        if meta.get("section") != SECTION:
            fail(f'section must be "{SECTION}"')
        keys = meta.get("keys")
        if not isinstance(keys, list) or len(keys) > MAX_KEYS:
            fail(f"keys must be a list of at most {MAX_KEYS} objects")
        out: dict[str, str] = {}
        for i, key in enumerate(keys):
            if not isinstance(key, dict):
                fail(f"key {i} is not an object")
            name, kind = key.get("name"), key.get("type")
            if not valid_key(name):
                fail(f"key {i}: name must match [A-Za-z_][A-Za-z0-9_.-]* (at most {MAX_KEY_CHARS} characters, not path)")
            if name in out:
                fail(f"key {i}: {name} appears twice")
            if kind not in TYPES:
                fail(f"key {name}: type must be string, list, integer or date")
            out[name] = kind
        return out

    @classmethod
    def parse(cls, keys: dict[str, str], data: bytes, *, count: int, n_sources: int) -> "AttributeTable":
        """The section's rows checked as FORMAT.md §2.10 bounds them (libkbpack: attributes.c)."""
        import json

        def fail(message: str):
            raise AttributeFormatError(SECTION, message)

        if len(data) > MAX_SECTION_BYTES:
            fail(f"{len(data)} bytes exceeds the {MAX_SECTION_BYTES}-byte limit")
        try:
            doc = json.loads(bytes(data).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            fail("not valid JSON")
        if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
            fail("not an object with a rows list")
        rows = doc["rows"]
        if len(rows) > count or (count and not rows):
            fail(f"{len(rows)} rows for {count} chunks (1 to {count} needed)")
        types = list(keys.values())
        width = 2 + len(types)
        firsts, sources, values = [], [], []
        previous = -1
        for r, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != width:
                fail(f"row {r} is not an array of {width} values")
            first, source = row[0], row[1]
            if not is_integer(first) or first <= previous or first >= count or (r == 0 and first != 0):
                fail(f"row {r}: first chunk must increase from 0 and stay below {count}")
            if not is_integer(source) or not 0 <= source < n_sources:
                fail(f"row {r}: source must be an index into the {n_sources} sources")
            for name, kind, value in zip(keys, types, row[2:]):
                if value is not None and not _value_ok(kind, value):
                    fail(f"row {r}: value of {name} is not a {kind} within the bounds")
            previous = first
            firsts.append(first)
            sources.append(source)
            values.append(row[2:])
        return cls(dict(keys), firsts, sources, values, count)

    def summary(self, top: int = 5) -> list[dict]:
        """Per key: its type, how many chunks have a value, and its most frequent values by chunks
        (a list's items each count), most first, then by value: what `kbc inspect` shows."""
        from collections import Counter

        runs = self.row_runs()
        out = []
        for column, (name, kind) in enumerate(self.keys.items()):
            counts: Counter = Counter()
            having = 0
            for (start, stop), row in zip(runs, self.values):
                value = row[column]
                if value is None:
                    continue
                having += stop - start
                for v in (value if kind == "list" else [value]):
                    counts[v] += stop - start
            frequent = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[:top]
            out.append({"name": name, "type": kind, "chunks": having, "distinct": len(counts),
                        "values": [{"value": v, "chunks": n} for v, n in frequent]})
        return out

    def row_runs(self) -> list[tuple[int, int]]:
        """(start, stop) chunk ids of each row."""
        stops = self.firsts[1:] + [self.count]
        return list(zip(self.firsts, stops))


def _value_ok(kind: str, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str) and len(value) <= MAX_STRING_CHARS
    if kind == "list":
        return (isinstance(value, list) and len(value) <= MAX_LIST_ITEMS
                and all(isinstance(v, str) and len(v) <= MAX_STRING_CHARS for v in value))
    if kind == "integer":
        return is_integer(value)
    return valid_date(value)
