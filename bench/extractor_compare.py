"""kbc's PDF readers side by side on a folder of PDFs: serial extraction time, characters, pages,
problems, and (with --eval) the retrieval quality of a default build with each.

    python bench/extractor_compare.py ../shared/eval/financebench-dev [--reader pdfium] [--eval --out /tmp/xc]

Timing: every file through `kbc.readers.guarded.extract_file` with the reader variant (what a build's
worker does: open, text per page, rows joined, cleaning, headings), serially in this process.
For a figure to quote, time one reader per process with farm-bench, e.g.
`farm-bench --vs '.venv/bin/python bench/extractor_compare.py DIR --reader pypdf' -- .venv/bin/python bench/extractor_compare.py DIR --reader pdfium`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kbc.readers.guarded import extract_file  # noqa: E402
from kbc.readers import variants_of  # noqa: E402
from kbc.stages.sources import discover  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", help="a folder of PDFs, or an eval set with pdfs/, queries.jsonl and qrels.tsv")
    ap.add_argument("--reader", action="append", choices=variants_of("pdf"), help="default: every PDF reader")
    ap.add_argument("--eval", action="store_true", help="also build with each reader and run kbc eval")
    ap.add_argument("--out", default="/tmp/xc")
    a = ap.parse_args()
    root = Path(a.folder)
    pdfs = root / "pdfs" if (root / "pdfs").is_dir() else root
    sources = [s for s in discover([pdfs]) if s.kind == "pdf"]
    for reader in a.reader or variants_of("pdf"):
        t = time.perf_counter()
        chars = pages = 0
        problems = []
        for src in sources:
            ex = extract_file(src, variants=(("pdf", reader),))
            chars += sum(len(d.text) for d in ex.documents)
            pages += ex.page_count
            problems += [f"{p.source}: {p.severity}: {p.reason}" for p in ex.problems]
        print(f"{reader:<8} {len(sources)} files, {pages} pages, {chars} characters: {time.perf_counter() - t:.2f} s "
              f"serial; {len(problems)} problems", flush=True)
        for p in problems:
            print(f"  {p}")
        if a.eval:
            evaluate_build(root, reader, Path(a.out))


def evaluate_build(root: Path, reader: str, out: Path) -> None:
    from kbc.tools.evaluate import evaluate, read_qrels, read_queries
    from kbc.query.knowledge_base import KnowledgeBase
    from kbc.pipeline import build

    out.mkdir(parents=True, exist_ok=True)
    bundle = out / f"{reader}.kbpack"
    rep = build([root / "pdfs"], bundle, pdf_reader=reader, cache_dir=out / "cache")
    with KnowledgeBase(bundle, sessions=2) as kb:
        ev = evaluate(kb, read_queries(root / "queries.jsonl"), read_qrels(root / "qrels.tsv"))
    print(f"{reader:<8} {rep.chunks} chunks, build {rep.seconds['total']:.0f} s; "
          + "; ".join(f"{m}: " + " ".join(f"{k} {v:.3f}" for k, v in ms.items()) for m, ms in ev.modes.items()),
          flush=True)


if __name__ == "__main__":
    main()
