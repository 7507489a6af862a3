"""`kbc diff`: what changed between two bundles: sources (by content hash), chunks (by their text
and context), every setting that decides the vectors or the search, and (format 1.7) the attributes
of each file (`attributes.PATH`) and the attribute keys (`attributes.keys`)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..format.bundle import Bundle

# manifest objects whose changes are reported field by field (`files` is summarised by weights_sha256)
SETTINGS = ("embedder", "vectors", "chunking", "index", "retrieval", "lexical", "extraction")
# counts that follow from the content (reported as sources and chunks), not settings
_IGNORED_FIELDS = {("embedder", "files"), ("vectors", "count"), ("index", "count"), ("lexical", "doc_count"), ("lexical", "postings"),
                   ("lexical", "terms"), ("lexical", "avg_doc_length"), ("extraction", "readers")}


@dataclass
class BundleDiff:
    sources_added: list[str] = field(default_factory=list)
    sources_removed: list[str] = field(default_factory=list)
    sources_changed: list[str] = field(default_factory=list)
    chunks_added: int = 0
    chunks_removed: int = 0
    chunks_kept: int = 0
    settings: dict[str, dict[str, list[Any]]] = field(default_factory=dict)  # object -> field -> [old, new]
    vectors_changed: bool = False  # the vectors section differs (for any reason)
    # what `kbc delta OLD NEW` would write, and the new bundle's size; None with the reason when it cannot
    # be made here (kbc delta's compressor needs the cffi package)
    delta_bytes: int | None = None
    new_bytes: int = 0
    delta_unavailable: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.sources_added or self.sources_removed or self.sources_changed or self.chunks_added
                    or self.chunks_removed or self.settings or self.vectors_changed)

    def to_dict(self) -> dict:
        return {"changed": self.changed,
                "sources": {"added": self.sources_added, "removed": self.sources_removed,
                            "changed": self.sources_changed},
                "chunks": {"added": self.chunks_added, "removed": self.chunks_removed, "kept": self.chunks_kept},
                "settings": self.settings, "vectors_changed": self.vectors_changed,
                "delta": {"bytes": self.delta_bytes, "new_bundle_bytes": self.new_bytes,
                          **({"unavailable": self.delta_unavailable} if self.delta_unavailable else {})}}


def _chunk_hashes(b: Bundle) -> Counter:
    counts: Counter = Counter()
    for ch in b.iter_chunks():
        h = hashlib.sha256()
        for part in (b.source_path(ch), ch.get("context") or "", ch.get("text") or ""):
            data = str(part).encode("utf-8", "surrogatepass")
            h.update(len(data).to_bytes(8, "little") + data)
        counts[h.digest()[:16]] += 1
    return counts


def _object(manifest: dict, key: str) -> dict:
    value = manifest.get(key)
    return value if isinstance(value, dict) else {}


def _attributes_by_source(b: Bundle) -> tuple[dict, dict]:
    """(keys and types, path -> its rows' values): one dict for a file, a list of them for a file
    whose records differ (JSONL metadata). Only keys with a value; empty before format 1.7."""
    table = b.attributes()
    if table is None:
        return {}, {}
    rows: dict[str, list[dict]] = {}
    paths = b.source_paths()
    for source, values in zip(table.sources, table.values):
        row = {k: v for k, v in zip(table.keys, values) if v is not None}
        rows.setdefault(paths[source], []).append(row)
    return dict(table.keys), {p: r[0] if len(r) == 1 else r for p, r in rows.items()}


def _attribute_changes(old: Bundle, new: Bundle) -> dict[str, list[Any]]:
    """`keys` when keys or types differ, and each file present in both whose attributes differ
    (added and removed files are reported as sources already)."""
    (ka, ra), (kb, rb) = _attributes_by_source(old), _attributes_by_source(new)
    out: dict[str, list[Any]] = {}
    if ka != kb:
        out["keys"] = [ka, kb]
    for path in sorted(set(ra) & set(rb)):
        if json.dumps(ra[path], sort_keys=True) != json.dumps(rb[path], sort_keys=True):
            out[path] = [ra[path], rb[path]]
    return out


def diff_bundles(old_path, new_path) -> BundleDiff:
    out = BundleDiff()
    with Bundle(old_path) as old, Bundle(new_path) as new:
        a = {s["path"]: s.get("sha256") for s in old.sources}
        b = {s["path"]: s.get("sha256") for s in new.sources}
        out.sources_added = sorted(set(b) - set(a))
        out.sources_removed = sorted(set(a) - set(b))
        out.sources_changed = sorted(p for p in set(a) & set(b) if a[p] != b[p])
        ca, cb = _chunk_hashes(old), _chunk_hashes(new)
        out.chunks_added = sum((cb - ca).values())
        out.chunks_removed = sum((ca - cb).values())
        out.chunks_kept = sum((ca & cb).values())
        for key in SETTINGS:
            x, y = _object(old.manifest, key), _object(new.manifest, key)
            changed = {f: [x.get(f), y.get(f)] for f in sorted(set(x) | set(y))
                       if (key, f) not in _IGNORED_FIELDS and json.dumps(x.get(f), sort_keys=True)
                       != json.dumps(y.get(f), sort_keys=True)}
            if changed:
                out.settings[key] = changed
        attributes = _attribute_changes(old, new)  # reported with the settings: `attributes.PATH: old -> new`
        if attributes:
            out.settings["attributes"] = attributes
        out.vectors_changed = old.sections["vectors"].sha256 != new.sections["vectors"].sha256
    from .delta import delta_size

    out.new_bytes = Path(new_path).stat().st_size
    try:
        out.delta_bytes = delta_size(old_path, new_path)
    except InputError as e:  # no cffi, or a bundle over the delta's size limit: the diff itself stands
        out.delta_unavailable = str(e)
    return out
