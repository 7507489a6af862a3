"""One chunk per line: provenance, text and its vector."""

from __future__ import annotations

import json
from pathlib import Path

from ..format.bundle import Bundle
from . import atomic, floats, provenance, register_exporter, rows


@register_exporter("jsonl", extensions=(".jsonl",), description="one chunk per line: provenance, text, embedding")
def write_jsonl(b: Bundle, out: Path, tick) -> list[Path]:
    with atomic(out) as f:
        for i, ch, vec in rows(b):
            f.write(json.dumps(provenance(b, i, ch), ensure_ascii=False)[:-1]
                    + ', "text": ' + json.dumps(ch["text"], ensure_ascii=False)
                    + ', "embedding": ' + floats(vec) + "}\n")
            tick(1)
    return [out]
