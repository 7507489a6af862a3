"""Write stage: one streaming writer takes each window's records and vectors as they come, the
lexical index is built alongside, and the FAISS index, probes and manifest close the file."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np

from ..format import vectors as vec_enc
from ..format.attributes import SECTION as ATTRIBUTES_SECTION, AttributeRows
from ..format.writer import BundleWriter
from ..errors import InputError, option
from ..search.dense import build_index
from ..format.bm25 import LexicalBuilder
from ..infra.memory import MemoryTrimmer
from .chunk import ATTRIBUTES_KEY


def declared_attributes(build_options) -> list[tuple[str | None, dict]]:
    """The builder's attributes (FORMAT.md §2.10) as the build options record them: `attr` items
    `[GLOB:]KEY=VALUE` (`--attr`, and kbc.toml's [[attributes]] tables, which kbc.cli.config spells
    so), in order, later ones winning: (glob or None for every file, {key: value}). A value with a
    ',' is a list, digits an integer (a date stays text until its type is settled). They live in
    build_options because they decide content: `kbc build --from-bundle` declares them again."""
    from ..format.attributes import valid_key

    if not isinstance(build_options, dict):
        return []
    out: list[tuple[str | None, dict]] = []
    for item in build_options.get("attr") or []:
        head, eq, value = item.partition("=") if isinstance(item, str) else ("", "", "")
        glob, _, key = head.rpartition(":")
        key = key.strip()
        if not eq or not valid_key(key):
            raise InputError(f"{option('attr')} {str(item)[:80]!r}: expected [GLOB:]KEY=VALUE, KEY an attribute name "
                             "([A-Za-z_][A-Za-z0-9_.-]*, at most 64 characters, not path)")
        value = value.strip()
        parsed = ([v.strip() for v in value.split(",")] if "," in value
                  else int(value) if re.fullmatch(r"-?[0-9]{1,16}", value) else value)
        out.append((glob.strip() or None, {key: parsed}))
    return out


class BundleSink:
    def __init__(self, output, *, dim: int, vectors: str, lexical: bool, index: str, layout: str = "fixed"):
        # postings past the builder's memory budget spill next to the bundle, where its own
        # temporary file is: the same disk, and removed with it on failure
        self.lexicon = LexicalBuilder(spill_dir=str(Path(output).resolve().parent)) if lexical else None
        self.index_factory = index
        self.seconds: dict[str, float] = {}
        preset = vec_enc.PRESETS[vectors]
        self.vectors = vectors
        # last: it makes the temporary file
        self.writer = BundleWriter(output, dim=dim, dtype=preset.dtype, binary=preset.binary, layout=layout)
        # every window passes through here: where the driver hands back what the windows freed
        self.trimmer = MemoryTrimmer()
        self.attributes = AttributeRows()  # FORMAT.md §2.10: one row per run of chunks

    @property
    def count(self) -> int:
        return self.writer.count

    def add(self, records: list[dict], vectors: np.ndarray) -> None:
        first = self.writer.count
        stored = []
        for i, r in enumerate(records):  # a document's attributes leave its first record here
            values = r.get(ATTRIBUTES_KEY)
            self.attributes.add(first + i, r.get("source", 0), values)
            # a copy without them: the caller's record (perhaps a cache's) stays as it was
            stored.append({k: v for k, v in r.items() if k != ATTRIBUTES_KEY} if values is not None else r)
        records = stored
        if self.lexicon is not None:
            self.lexicon.add_chunks(records)
        try:
            self.writer.add(records, vectors)
        except ValueError as e:  # a model whose values float16 cannot hold: the user's choice to change
            raise InputError(f"{option('vectors')} {self.vectors}: {e}") from None
        self.trimmer.maybe_trim()

    def finish(self, manifest: dict, *, probes: tuple[dict, np.ndarray], encoder=None) -> dict:
        """Index, lexical sections, probes, the encoder (`(meta, graph path, tokenizer path)`, with
        --with-encoder) and `manifest` written; returns the index's manifest part."""
        t = time.perf_counter()
        idx = build_index(self.writer.vectors_view(), self.index_factory)
        self.seconds["index"] = time.perf_counter() - t
        t = time.perf_counter()
        probe_meta, probe_vectors = probes
        manifest = {**manifest, "index": idx.manifest}
        extra = [("probes", "json", json.dumps(probe_meta, ensure_ascii=False, sort_keys=True).encode()),
                 ("probe_vectors", "f32le", np.ascontiguousarray(probe_vectors, dtype="<f4").tobytes())]
        if self.lexicon is not None:
            t_lex = time.perf_counter()
            manifest["lexical"], sections = self.lexicon.finish(stream=True)
            extra += sections
            # tokenising happened window by window during embedding (and is inside "embed" too)
            self.seconds["lexical"] = time.perf_counter() - t_lex + self.lexicon.seconds
        manifest["attributes"], attribute_bytes = self.attributes.section(
            manifest.get("sources") or [], declared_attributes(manifest.get("build_options")))
        extra.append((ATTRIBUTES_SECTION, "json", attribute_bytes))
        if encoder is not None:
            meta, graph, tokenizer = encoder
            manifest["encoder"] = meta
            extra += [(meta["graph"], "onnx", graph), (meta["tokenizer"], "json", tokenizer)]
        try:
            self.writer.finish(manifest, index=idx.data, extra_sections=extra)
        finally:
            for _, _, data in extra:  # the lexical postings spool: an unlinked file, gone once closed
                if hasattr(data, "close"):
                    data.close()
        self.seconds["write"] = time.perf_counter() - t
        return idx.manifest

    def abort(self) -> None:
        if self.lexicon is not None:
            self.lexicon.close()
        self.writer.abort()
