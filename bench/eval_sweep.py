"""Retrieval quality by chunking setting, on BEIR sets: the measurement behind kbc's defaults.

    python bench/eval_sweep.py [--set ../shared/eval/scifact-train] [--configs default,document,...]

For every eval set (a folder with corpus.jsonl, queries.jsonl, qrels.tsv) and every configuration
below, builds a bundle with `kbc build` (shared cache: identical chunk texts are embedded once) and
scores it with `kbc eval`. Prints a table: set, config, chunks, nDCG@10, recall@10, recall@100,
MRR@10, build and eval seconds. Build times after the first config benefit from the cache, so
compare them only for the first row or with --no-cache.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"

CONFIGS: dict[str, list[str]] = {
    "document": ["--chunk-unit", "document"],  # MTEB's setting: one chunk per record, truncated by the model
    "document-int8": ["--chunk-unit", "document", "--backend", "onnx-int8"],
    "default": [],
    "default-no-clean": ["--no-clean"],
    "tokens-128/16": ["--chunk-unit", "tokens", "--chunk-size", "128", "--chunk-overlap", "16"],
    "tokens-192/32": ["--chunk-unit", "tokens", "--chunk-size", "192", "--chunk-overlap", "32"],
    "tokens-max/0": ["--chunk-unit", "tokens", "--chunk-overlap", "0"],
    "tokens-max/32": ["--chunk-unit", "tokens", "--chunk-overlap", "32"],  # max: the model's budget (254 for MiniLM)
    "tokens-max/64": ["--chunk-unit", "tokens", "--chunk-overlap", "64"],
    "tokens-96/16": ["--chunk-unit", "tokens", "--chunk-size", "96", "--chunk-overlap", "16"],
    "tokens-64/8": ["--chunk-unit", "tokens", "--chunk-size", "64", "--chunk-overlap", "8"],
    "chars-1000/200": ["--chunk-unit", "chars", "--chunk-size", "1000", "--chunk-overlap", "200"],
    "chars-500/100": ["--chunk-unit", "chars", "--chunk-size", "500", "--chunk-overlap", "100"],
}


def kbc(*args: str) -> tuple[float, dict]:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "kbc", *args, "--json"], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"kbc {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return time.perf_counter() - t, json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", action="append", type=Path, help="eval set folder (repeatable); default: every "
                    "folder in ../shared/eval")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names from: " + ", ".join(CONFIGS))
    ap.add_argument("--no-cache", action="store_true", help="build every config from scratch (slower, fair build times)")
    args = ap.parse_args()
    sets = args.set or sorted(p for p in (SHARED / "eval").iterdir() if (p / "qrels.tsv").exists())
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown config(s): {', '.join(unknown)}")
    head = f"{'set':<16} {'config':<18} {'chunks':>7} {'dense metrics (document- or page-level)':<70} {'build s':>8} {'eval s':>7}"
    print(head)
    print("-" * len(head), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for s in sets:
            for name in names:
                out = Path(tmp) / f"{s.name}-{name.replace('/', '_')}.kbpack"
                extra = ["--no-cache"] if args.no_cache else []
                corpus = s / "corpus.jsonl" if (s / "corpus.jsonl").exists() else s / "pdfs"
                build_s, rep = kbc("build", str(corpus), "-o", str(out), *CONFIGS[name], *extra)
                # chunking is judged on the vectors alone; bench/retrieval_sweep.py compares search modes
                eval_s, ev = kbc("eval", str(out), "--queries", str(s / "queries.jsonl"), "--qrels", str(s / "qrels.tsv"),
                                 "--mode", "dense")
                shown = " ".join(f"{k} {v:.4f}" for k, v in list(ev["metrics"].items())[:5])
                print(f"{s.name:<16} {name:<18} {rep['chunks']:>7} {shown:<70} {build_s:>8.1f} {eval_s:>7.1f}", flush=True)
                out.unlink()


if __name__ == "__main__":
    main()
