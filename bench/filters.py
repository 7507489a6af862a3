"""What a filter costs in libkbpack (issue 39, FORMAT.md §2.10): dense, lexical and hybrid search on
100,000 random 384-d unit vectors (float32) with a BM25 index over random 12-word texts, from 1,000
sources of 100 chunks each with 5 attribute keys, unfiltered and with filters keeping 1% and 50% of
the chunks (10 and 500 sources spread over the file); and the bytes the attributes add to the file.

    .venv/bin/python bench/filters.py [--count 100000] [--dim 384] [--sources 1000] [--queries 100] [-k 10]

Times are medians of one search inside a small C program linked to libkbpack (no process start in
it), the three variants of a mode interleaved query by query so that a busy neighbour slows all
three alike; the filter's compile time is reported apart (once per scope, not per question). Needs
a C compiler and libzstd (runtimes/c/Makefile). Prints the CPU and the load average.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from c_vectors import cpu_model, measured  # noqa: E402

from kbc.format.attributes import AttributeRows  # noqa: E402
from kbc.format.bm25 import LexicalBuilder  # noqa: E402
from kbc.format.bundle import write_bundle  # noqa: E402
from kbc.format.retrieval import RetrievalSettings  # noqa: E402

FILTERS = {"1%": "segment<1", "50%": "segment<50"}  # segment = source % 100

DRIVER = r"""
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "kbpack.h"

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* BUNDLE QUERIES.f32 QUESTIONS.txt N_QUERIES K COND_1PCT COND_50PCT */
int main(int argc, char **argv) {
  if (argc != 8) return 2;
  size_t nq = (size_t)atol(argv[4]), k = (size_t)atol(argv[5]);
  kbp_bundle *kb;
  kbp_error err;
  if (kbp_open(argv[1], &kb, &err) != KBP_OK) return fprintf(stderr, "%s\n", err.message), 3;
  size_t dim = kbp_dim(kb);
  float *q = malloc(nq * dim * sizeof *q);
  FILE *f = fopen(argv[2], "rb");
  if (!q || !f || fread(q, sizeof *q, nq * dim, f) != nq * dim) return 2;
  fclose(f);
  char **questions = malloc(nq * sizeof *questions), line[4096];
  f = fopen(argv[3], "r");
  for (size_t i = 0; i < nq; i++) {
    if (!f || !fgets(line, sizeof line, f)) return 2;
    line[strcspn(line, "\n")] = 0;
    questions[i] = strdup(line);
  }
  fclose(f);
  kbp_filter *filters[3] = {NULL, NULL, NULL};
  const char *names[3] = {"none", "1pct", "50pct"};
  for (int v = 1; v < 3; v++) {
    const char *cond = argv[5 + v];
    double t0 = now_ms();
    if (kbp_filter_compile(kb, &cond, 1, &filters[v]) != KBP_OK) return fprintf(stderr, "%s\n", kbp_last_error(kb)->message), 3;
    printf("compile_%s_ms %.4f\nmatched_%s %llu\n", names[v], now_ms() - t0, names[v],
           (unsigned long long)kbp_filter_matched(filters[v]));
  }
  kbp_hit *hits = malloc(k * sizeof *hits);
  double *ms = malloc(3 * nq * sizeof *ms), checksum = 0;
  size_t n;
  static const kbp_mode modes[3] = {KBP_MODE_DENSE, KBP_MODE_LEXICAL, KBP_MODE_HYBRID};
  static const char *mode_names[3] = {"dense", "lexical", "hybrid"};
  for (int m = 0; m < 3; m++) {
    for (int v = 0; v < 3; v++) /* warm: the first search checks the sections */
      if (kbp_search_filtered(kb, q, questions[0], k, modes[m], filters[v], hits, &n) != KBP_OK)
        return fprintf(stderr, "%s\n", kbp_last_error(kb)->message), 3;
    for (size_t i = 0; i < nq; i++)
      for (int v = 0; v < 3; v++) { /* interleaved: a busy neighbour slows the three alike */
        double t0 = now_ms();
        if (kbp_search_filtered(kb, q + i * dim, questions[i], k, modes[m], filters[v], hits, &n) != KBP_OK) return 3;
        ms[v * nq + i] = now_ms() - t0;
        checksum += n ? hits[0].score : 0;
        if (n != k) return fprintf(stderr, "%s %s: %zu hits, not %zu\n", mode_names[m], names[v], n, k), 4;
      }
    for (int v = 0; v < 3; v++) {
      qsort(ms + v * nq, nq, sizeof *ms, by_value);
      printf("%s_%s_median_ms %.4f\n", mode_names[m], names[v], ms[v * nq + nq / 2]);
    }
  }
  printf("checksum %.6f\n", checksum);
  for (int v = 0; v < 3; v++) kbp_filter_free(filters[v]);
  kbp_close(kb);
  return 0;
}
"""


def make_bundle(path: Path, count: int, dim: int, n_sources: int, rng, *, attributes: bool) -> Path:
    words = [f"w{i}" for i in range(5000)]
    zipf = 1.0 / np.arange(1, len(words) + 1)
    zipf /= zipf.sum()
    texts = [" ".join(words[j] for j in rng.choice(len(words), 12, p=zipf)) for _ in range(count)]
    vecs = rng.standard_normal((count, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    per = count // n_sources
    sources = [{"path": f"docs/product{s % 10}/doc{s:04d}.md", "kind": "markdown", "size": 1000, "sha256": "0" * 64,
                "pages": 1, "chunks": per} for s in range(n_sources)]
    chunks = [{"text": t, "source": min(i // per, n_sources - 1), "seq": i % per, "page_start": 1, "page_end": 1,
               "char_start": 0, "char_end": len(t), "tokens": 16} for i, t in enumerate(texts)]
    lex = LexicalBuilder()
    lex.add_many(texts)
    lex_meta, lex_sections = lex.finish()
    manifest = {"embedder": {"name": "bench", "dim": dim, "normalize": True}, "sources": sources,
                "index": {"factory": "Flat", "metric": "inner_product", "stored": False},
                "lexical": lex_meta, "retrieval": RetrievalSettings().to_manifest()}
    extra = list(lex_sections)
    if attributes:
        rows = AttributeRows()
        for s in range(n_sources):  # 5 keys a document: what a product manual's front matter says
            rows.add(s * per, s, {"product": f"x{s % 10}00", "year": 2015 + s % 10, "segment": s % 100,
                                  "tags": ["en", "hardware", "howto"][: 1 + s % 3],
                                  "released": f"20{15 + s % 10}-{1 + s % 12:02d}-{1 + s % 28:02d}"})
        manifest["attributes"], data = rows.section(sources)
        extra.append(("attributes", "json", data))
    return write_bundle(path, manifest=manifest, vectors=vecs, chunks=chunks, extra_sections=extra)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--sources", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--keep", type=Path, help="write the bundles here and keep them")
    args = ap.parse_args()

    folder = args.keep or Path(tempfile.mkdtemp(prefix="kbc-filters-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, folder)
    finally:
        if args.keep is None:  # two 160 MB bundles: never left behind in /tmp
            shutil.rmtree(folder, ignore_errors=True)


def run(args, folder: Path) -> int:
    build = folder / "libkbpack"
    subprocess.run(["make", "-s", "-C", str(ROOT / "runtimes" / "c"), f"BUILD={build}"], check=True)
    driver = folder / "filters_driver"
    (folder / "filters_driver.c").write_text(DRIVER)
    subprocess.run(["cc", "-std=c99", "-O2", f"-I{ROOT / 'runtimes' / 'c'}", "-o", str(driver),
                    str(folder / "filters_driver.c"), str(build / "libkbpack.a"), "-lzstd", "-lm"], check=True)

    t = time.perf_counter()
    with_attrs = make_bundle(folder / "with.kbpack", args.count, args.dim, args.sources, np.random.default_rng(39),
                             attributes=True)
    without = make_bundle(folder / "without.kbpack", args.count, args.dim, args.sources, np.random.default_rng(39),
                          attributes=False)
    print(f"bundles written in {time.perf_counter() - t:.0f} s")
    a, b = with_attrs.stat().st_size, without.stat().st_size
    print(f"size: {a} bytes with attributes, {b} without: +{a - b} bytes = {100 * (a - b) / b:.3f}% "
          f"({args.count} chunks, {args.sources} files, 5 keys + kind)")

    rng = np.random.default_rng(7)
    q = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    (folder / "q.f32").write_bytes(q.astype("<f4").tobytes())
    zipf = 1.0 / np.arange(1, 5001)
    zipf /= zipf.sum()
    (folder / "questions.txt").write_text("".join(
        " ".join(f"w{j}" for j in rng.choice(5000, 4, p=zipf)) + "\n" for _ in range(args.queries)))
    print(f"CPU: {cpu_model()}, load average {os.getloadavg()[0]:.2f}; {args.queries} queries, k={args.k}")
    r = measured([str(driver), str(with_attrs), str(folder / "q.f32"), str(folder / "questions.txt"),
                  str(args.queries), str(args.k), FILTERS["1%"], FILTERS["50%"]])
    for v in ("1pct", "50pct"):
        print(f"filter {v}: keeps {int(r[f'matched_{v}'])} chunks, compiled in {r[f'compile_{v}_ms']:.2f} ms")
    print("| mode | unfiltered ms | keep 1% ms (x) | keep 50% ms (x) |\n|---|---|---|---|")
    for mode in ("dense", "lexical", "hybrid"):
        base = r[f"{mode}_none_median_ms"]
        one, half = r[f"{mode}_1pct_median_ms"], r[f"{mode}_50pct_median_ms"]
        print(f"| {mode} | {base:.3f} | {one:.3f} ({one / base:.2f}x) | {half:.3f} ({half / base:.2f}x) |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
