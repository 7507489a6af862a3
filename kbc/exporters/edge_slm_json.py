"""The file the deepsense-ai/edge-slm Android app loads:
`{"chunks": [{"metadata": {"source", "chunk_id"}, "content", "embedding"}]}`."""

from __future__ import annotations

import json
from pathlib import Path

from ..format.bundle import Bundle
from . import atomic, floats, register_exporter, rows


@register_exporter("edge-slm-json", extensions=(".json",),
                   description="the edge-slm Android app's embeddings file")
def write_edge_slm_json(b: Bundle, out: Path, tick) -> list[Path]:
    with atomic(out) as f:
        f.write('{"chunks": [')
        for i, ch, vec in rows(b):
            item = {"metadata": {"source": b.source_path(ch), "chunk_id": i}, "content": ch["text"]}
            f.write(("\n" if i == 0 else ",\n") + json.dumps(item, ensure_ascii=False)[:-1]
                    + ', "embedding": ' + floats(vec) + "}")
            tick(1)
        f.write("\n]}\n")
    return [out]
