"""pypdf (kbc's extractor) against pypdfium2 on a folder of PDFs: extraction time, and retrieval
quality of a default build with each.

    python bench/extractor_compare.py ../shared/eval/financebench-dev [--out /tmp/xc]

Timing: each file extracted serially in this process, all pages, text only. Quality: two default
builds (`workers=0`, so the substituted reader runs in-process) and `kbc eval` on the set's
queries and qrels. pypdfium2 is not a kbc dependency: `pip install pypdfium2` to run this.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kbc.textclean as X  # noqa: E402
from kbc.readers import register_reader  # noqa: E402
from kbc.evaluate import evaluate, read_qrels, read_queries  # noqa: E402
from kbc.kb import KnowledgeBase  # noqa: E402
from kbc.pipeline import build  # noqa: E402


def pdfium_pages(data: bytes) -> list[str]:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(data)
    try:
        return [pdf[i].get_textpage().get_text_range() for i in range(len(pdf))]
    finally:
        pdf.close()


def pypdf_pages(data: bytes) -> list[str]:
    import io

    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data), strict=False)
    return [p.extract_text() or "" for p in reader.pages]


def read_pdf_with_pdfium(src, data, out, opts):
    """kbc's PDF reader with pypdfium2's text in place of pypdf's (same cleaning and headings)."""
    texts = [t.replace("\r\n", "\n").replace("\r", "\n") for t in pdfium_pages(data)]
    out.page_count = len(texts)
    texts = X.strip_running_lines([X.clean_text(t) for t in texts]) if opts.clean else [t.strip() for t in texts]
    doc = X.join_pages(src.rel, texts, [None] * len(texts))
    doc.headings = [(p.start, p.end, h) for p in doc.pages if (h := X.page_heading(doc.text[p.start:p.end]))]
    out.documents.append(doc)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("evalset")
    ap.add_argument("--out", default="/tmp/xc")
    ap.add_argument("--only", choices=["pypdf", "pypdfium2"], help="build with one extractor only")
    a = ap.parse_args()
    root = Path(a.evalset)
    pdfs = sorted((root / "pdfs").glob("*.pdf"))
    for name, fn in (("pypdf", pypdf_pages), ("pypdfium2", pdfium_pages)):
        t = time.perf_counter()
        chars = sum(len(x) for p in pdfs for x in fn(p.read_bytes()))
        print(f"{name:<10} extraction of {len(pdfs)} files: {time.perf_counter() - t:7.1f} s, {chars} characters",
              flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    queries, qrels = read_queries(root / "queries.jsonl"), read_qrels(root / "qrels.tsv")
    for name in [a.only] if a.only else ["pypdf", "pypdfium2"]:
        if name == "pypdfium2":
            register_reader("pdf", suffixes=(".pdf",), description="pypdfium2")(read_pdf_with_pdfium)
        bundle = out / f"{name}.kbpack"
        rep = build([root / "pdfs"], bundle, workers=0, cache_dir=out / f"cache-{name}")
        with KnowledgeBase(bundle, sessions=2) as kb:
            ev = evaluate(kb, queries, qrels)
        print(f"{name:<10} {rep.chunks} chunks, build {rep.seconds['total']:.0f} s; "
              + "; ".join(f"{m}: " + " ".join(f"{k} {v:.3f}" for k, v in ms.items()) for m, ms in ev.modes.items()),
              flush=True)


if __name__ == "__main__":
    main()
