"""What extraction gives on real PDFs, before and after kbc's cleaning; serial vs parallel time.

    python bench/extract_table.py [DIR]                # default ../shared/pdfs
    python bench/extract_table.py --workers-vs DIR     # default ../shared/bench/rustbook-pdf

The table: file, pages, characters extracted (after cleaning), words per page, ligature
characters, hyphenated line breaks and over-long "words" (run-together text) in pypdf's raw output
and after cleaning, kbc's warnings, seconds; then the same raw counts with pypdf's layout mode,
the alternative for multi-column pages. --workers-vs extracts a folder in-process and with one
worker per core and checks the outputs are identical.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"

from kbc.readers.guarded import ExtractOptions, extract_file  # noqa: E402
from kbc.engines.workers import extract_all  # noqa: E402
from kbc.stages.sources import discover  # noqa: E402

LIGATURES = re.compile("[\ufb00-\ufb06]")
HYPHEN_BREAK = re.compile(r"[a-zà-ÿ]-\n[a-zà-ÿ]")
RUN_TOGETHER = re.compile(r"[^\W\d_]{25,}")  # 25+ letters with no space: words glued together
WIDE_GAPS = re.compile(r"\S {4,}\S")  # runs of spaces inside a line: layout mode's column padding


def raw_pages(path: Path, mode: str) -> list[str]:
    from pypdf import PdfReader

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    reader = PdfReader(io.BytesIO(path.read_bytes()), strict=False)
    if reader.is_encrypted and not reader.decrypt(""):
        return []
    out = []
    for page in reader.pages:
        try:
            out.append(page.extract_text(extraction_mode=mode) or "")
        except Exception:
            out.append("")
    return out


def counts(text: str) -> tuple[int, int, int]:
    return len(LIGATURES.findall(text)), len(HYPHEN_BREAK.findall(text)), len(RUN_TOGETHER.findall(text))


def table(folder: Path) -> None:
    sources = [s for s in discover([folder]) if s.kind in ("pdf", "text", "records")]
    head = (f"{'file':<36} {'pages':>5} {'chars':>7} {'w/page':>6} {'lig raw>clean':>13} {'hyph raw>clean':>14} "
            f"{'glued raw>clean':>15} {'sec':>5}  {'layout: hyph glued gaps sec':<27}  warnings")
    print(head)
    print("-" * len(head))
    for src in sources:
        t = time.perf_counter()
        ex = extract_file(src)
        secs = time.perf_counter() - t
        text = "\n".join(d.text for d in ex.documents)
        warn = "; ".join(f"{p.severity}: {p.reason}" for p in ex.problems) or "-"
        if src.kind != "pdf" or ex.page_count == 0:
            print(f"{src.rel:<36} {ex.page_count:>5} {len(text):>7} {'':>6} {'':>13} {'':>14} {'':>15} {secs:>5.2f}  {'':<27}  {warn}")
            continue
        try:
            raw = "\n".join(raw_pages(src.path, "plain"))
            t = time.perf_counter()
            lay = "\n".join(raw_pages(src.path, "layout"))
            lay_s = time.perf_counter() - t
        except Exception as e:  # the cleaned column already says why
            raw, lay, lay_s = "", "", 0.0
        (lr, hr, gr), (lc, hc, gc) = counts(raw), counts(text)
        _, hl, gl = counts(lay)
        gaps = len(WIDE_GAPS.findall(lay))
        words = len(text.split()) / max(ex.page_count, 1)
        print(f"{src.rel:<36} {ex.page_count:>5} {len(text):>7} {words:>6.0f} {f'{lr}>{lc}':>13} {f'{hr}>{hc}':>14} "
              f"{f'{gr}>{gc}':>15} {secs:>5.2f}  {f'{hl:>5} {gl:>5} {gaps:>5} {lay_s:>5.2f}':<27}  {warn}")


def workers_vs(folder: Path) -> None:
    sources = [s for s in discover([folder]) if s.kind in ("pdf", "text", "records")]
    results = {}
    for label, workers in (("serial (in-process)", 0), (f"parallel ({os.cpu_count()} workers)", None)):
        t = time.perf_counter()
        out = list(extract_all(sources, ExtractOptions(workers=workers)))
        secs = time.perf_counter() - t
        results[label] = out
        pages = sum(e.page_count for e in out)
        print(f"{label:<24} {len(out)} files, {pages} pages: {secs:.2f} s")
    a, b = results.values()
    same = all(x.sha256 == y.sha256 and x.documents == y.documents and x.problems == y.problems for x, y in zip(a, b))
    print(f"outputs identical: {same}")
    if not same:
        raise SystemExit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", nargs="?", type=Path)
    ap.add_argument("--workers-vs", action="store_true", help="time serial vs parallel extraction of the folder")
    args = ap.parse_args()
    if args.workers_vs:
        workers_vs(args.folder or SHARED / "bench" / "rustbook-pdf")
    else:
        table(args.folder or SHARED / "pdfs")


if __name__ == "__main__":
    main()
