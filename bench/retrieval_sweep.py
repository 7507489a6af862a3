"""Compare search modes, fusion settings and lexical tokeniser variants on built bundles.

    python bench/retrieval_sweep.py BUNDLE --queries Q --qrels R [--json OUT]

The query vectors are embedded once; every row re-ranks with the same vectors, so rows differ
only in what they name. Lexical variants are indexed in memory from the bundle's own chunks
(`fields`: what is indexed, the chunk text alone or its context and text), so one build serves
every tokeniser row. Prints one table row per configuration with `kbc eval`'s metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kbc.tools.evaluate import evaluate, read_qrels, read_queries  # noqa: E402
from kbc.query.knowledge_base import KnowledgeBase  # noqa: E402
from kbc.format.bm25 import LexicalBuilder, LexicalIndex, TokenizerOptions  # noqa: E402
from kbc.pipeline import embedded_text  # noqa: E402
from kbc.format.retrieval import RetrievalSettings
from kbc.search.fusion import Retriever  # noqa: E402


def lexical_index(bundle, *, fields: str, options: TokenizerOptions, k1: float, b: float) -> LexicalIndex:
    builder = LexicalBuilder(options=options, k1=k1, b=b)
    for ch in bundle.iter_chunks():
        if fields == "context x2 + text":  # the product's way (LexicalBuilder.add_chunks)
            builder.add(ch["text"], context=ch.get("context") or "")
        else:
            builder.add(embedded_text(ch) if fields == "context+text" else ch["text"])
    meta, sections = builder.finish()
    return LexicalIndex(meta, {name: data for name, _, data in sections}, count=bundle.count)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("--queries", required=True)
    ap.add_argument("--qrels", required=True)
    ap.add_argument("--json", help="write all rows here")
    ap.add_argument("--quick", action="store_true", help="only the main fusion rows")
    a = ap.parse_args()
    queries, qrels = read_queries(a.queries), read_qrels(a.qrels)
    kb = KnowledgeBase(a.bundle, sessions=2)
    texts = list(queries)
    t = time.perf_counter()
    vectors = kb.embed_queries([queries[q] for q in texts])
    print(f"embedded {len(texts)} queries in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    by_text = {queries[q]: v for q, v in zip(texts, vectors)}
    kb.embed_queries = lambda batch, **_: np.stack([by_text[t] for t in batch])  # every row reuses them

    has_context = any("context" in ch for ch in kb.bundle.iter_chunks(0, min(kb.bundle.count, 200)))
    main = "context x2 + text" if has_context else "text"
    lex_variants = [(main, TokenizerOptions(), 0.9, 0.4)]
    if not a.quick:
        lex_variants += [
            (main, TokenizerOptions(stop_words=False), 0.9, 0.4),
            (main, TokenizerOptions(stem=None), 0.9, 0.4),
            (main, TokenizerOptions(stem="snowball-english"), 0.9, 0.4),
            (main, TokenizerOptions(), 1.2, 0.75),
        ]
        if has_context:
            lex_variants += [("context+text", TokenizerOptions(), 0.9, 0.4), ("text", TokenizerOptions(), 0.9, 0.4)]
    fusions = [RetrievalSettings(fusion=f, weight=w, depth=d)
               for f, ws in (("tmm", (0.1, 0.2, 0.3, 0.4, 0.5)), ("minmax", (0.2, 0.3, 0.5)), ("rrf", (0.3, 0.5)))
               for w in ws for d in (100,)]
    fusions += [RetrievalSettings(fusion="tmm", weight=0.4, depth=d) for d in (20, 50, 200)]
    # the context match (FORMAT.md 2.9): off, each part alone, stronger
    fusions += [RetrievalSettings(path_weight=i, heading_weight=h)
                for i, h in ((0.0, 0.0), (0.1, 0.0), (0.0, 0.05), (0.0, 0.1), (0.1, 0.1), (0.2, 0.1), (0.1, 0.2))]
    if a.quick:
        fusions = [RetrievalSettings(fusion="tmm", weight=w) for w in (0.3, 0.4)] + [
            RetrievalSettings(fusion="rrf", weight=0.5)]
    rows = []

    def run(label: str, lexical, settings: RetrievalSettings, modes) -> None:
        kb._retriever = Retriever(searcher=kb.searcher, lexical=lexical, settings=settings, contexts=kb.context_parts)
        rep = evaluate(kb, queries, qrels, modes=modes)
        for mode, m in rep.modes.items():
            name = f"{mode} {label}".strip()
            rows.append({"row": name, **m})
            print(f"{name:<58}" + "  ".join(f"{k} {v:.4f}" for k, v in m.items()), flush=True)

    first = True
    for fields, opts, k1, b in lex_variants:
        t = time.perf_counter()
        lex = lexical_index(kb.bundle, fields=fields, options=opts, k1=k1, b=b)
        tag = (f"[{fields}; stop={'on' if opts.stop_words else 'off'}; stem={opts.stem or 'off'}; "
               f"k1={k1} b={b}]")
        print(f"indexed {tag} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        run(tag, lex, RetrievalSettings(), ["dense", "lexical"] if first else ["lexical"])
        settings = fusions if first else [RetrievalSettings()]
        for s in settings:
            context = ("" if (s.path_weight, s.heading_weight) == (RetrievalSettings.path_weight,
                                                                        RetrievalSettings.heading_weight)
                       else f" context={s.path_weight}/{s.heading_weight}")
            run(f"{s.fusion} w={s.weight} depth={s.depth}{context} {tag if not first else ''}".strip(), lex, s, ["hybrid"])
        first = False
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
