"""libkbpack's dense scan with and without its SIMD kernels (runtimes/c/kernels.c), side by side in one
run: 100,000 x 384 random unit vectors stored as float32, float16 and int8, the median time of one
dense top-10 search in a small C program linked to libkbpack.a, built twice (as is, and with
-DKBP_PORTABLE_KERNELS: the portable C only). The runs alternate (build, dtype) over --rounds rounds
and each cell reports the median of its rounds' medians; the ids of every query's top 10 are compared
between the two builds (they must be equal) and with float32's (how many of the 10 int8/float16 keep).

    .venv/bin/python bench/simd_scan.py [--count 100000] [--dim 384] [--queries 200] [--rounds 5] [--clock cpu|wall]

Issue 40's targets: int8 <= 0.4x float32 and float16 <= 0.6x float32, in the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from c_vectors import cpu_model, random_unit_set  # noqa: E402
from kbc.format.bundle import write_bundle  # noqa: E402

DRIVER = r"""
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "kbpack.h"

static double now_ms(clockid_t clock) {
  struct timespec t;
  clock_gettime(clock, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
int main(int argc, char **argv) { /* BUNDLE QUERIES.f32 N_QUERIES IDS_OUT: prints the median wall and CPU ms */
  if (argc != 5) return 2;
  size_t nq = (size_t)atol(argv[3]), k = 10, n;
  kbp_bundle *kb;
  kbp_error err;
  if (kbp_open(argv[1], &kb, &err) != KBP_OK) return fprintf(stderr, "%s\n", err.message), 3;
  size_t dim = kbp_dim(kb);
  float *q = malloc(nq * dim * sizeof *q);
  FILE *f = fopen(argv[2], "rb"), *ids = fopen(argv[4], "w");
  if (!q || !f || !ids || fread(q, sizeof *q, nq * dim, f) != nq * dim) return 2;
  kbp_hit hits[10];
  double *ms = malloc(nq * sizeof *ms), *cpu = malloc(nq * sizeof *cpu);
  if (kbp_search(kb, q, NULL, k, KBP_MODE_DENSE, hits, &n) != KBP_OK) return 3; /* the first: checks the sections */
  for (size_t i = 0; i < nq; i++) {
    double t0 = now_ms(CLOCK_MONOTONIC), c0 = now_ms(CLOCK_THREAD_CPUTIME_ID);
    if (kbp_search(kb, q + i * dim, NULL, k, KBP_MODE_DENSE, hits, &n) != KBP_OK) return 3;
    ms[i] = now_ms(CLOCK_MONOTONIC) - t0;
    cpu[i] = now_ms(CLOCK_THREAD_CPUTIME_ID) - c0;
    for (size_t j = 0; j < n; j++) fprintf(ids, "%llu%c", (unsigned long long)hits[j].id, j + 1 < n ? ' ' : '\n');
  }
  qsort(ms, nq, sizeof *ms, by_value);
  qsort(cpu, nq, sizeof *cpu, by_value);
  printf("%.4f %.4f\n", ms[nq / 2], cpu[nq / 2]);
  kbp_close(kb);
  return 0;
}
"""

DTYPES = ("float32", "float16", "int8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                    help="the query's thread CPU time (default: steadier on a shared machine) or wall time")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="simd-scan-"))
    try:
        cc = os.environ.get("CC") or shutil.which("cc") or "gcc"
        drivers = {}
        (work / "driver.c").write_text(DRIVER)
        for build, extra in (("simd", ""), ("portable", " -DKBP_PORTABLE_KERNELS")):
            folder = work / build
            subprocess.run(["make", "-s", "-C", str(ROOT / "runtimes" / "c"), f"BUILD={folder}", f"CC={cc}",
                            f"CFLAGS=-std=c99 -O2 -Wall -Wextra -Werror{extra}"], check=True)
            drivers[build] = work / f"driver-{build}"
            subprocess.run([cc, "-std=c99", "-O2", f"-I{ROOT / 'runtimes' / 'c'}", "-o", str(drivers[build]),
                            str(work / "driver.c"), str(folder / "libkbpack.a"), "-lzstd", "-lm"], check=True)
        vectors, queries, qfile = random_unit_set(args.count, args.dim, args.queries, work)
        chunks = [{"text": str(i)} for i in range(args.count)]
        bundles = {}
        for dtype in DTYPES:
            bundles[dtype] = write_bundle(work / f"{dtype}.kbpack", manifest={}, vectors=vectors, chunks=chunks,
                                          dtype=dtype)
        print(f"cpu: {cpu_model()} ({os.cpu_count()} cores), load average at start: "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"{args.count:,} x {args.dim}, {args.queries} queries, k = 10, dense, one thread, "
              f"{args.rounds} alternating rounds; cells: median over rounds of each round's median query time "
              f"({'thread CPU' if args.clock == 'cpu' else 'wall'} ms)\n")
        times: dict[tuple[str, str], list[float]] = {}
        ids: dict[tuple[str, str], list[str]] = {}
        for _ in range(args.rounds):
            for dtype in DTYPES:
                for build in drivers:
                    out = work / f"ids-{build}-{dtype}.txt"
                    proc = subprocess.run([str(drivers[build]), str(bundles[dtype]), str(qfile), str(args.queries),
                                           str(out)], capture_output=True, text=True, check=True)
                    wall, cpu = map(float, proc.stdout.split())
                    times.setdefault((build, dtype), []).append(cpu if args.clock == "cpu" else wall)
                    ids[(build, dtype)] = out.read_text().splitlines()
        med = {key: statistics.median(v) for key, v in times.items()}
        print(f"{'dtype':8} {'SIMD ms':>8} {'portable ms':>12} {'SIMD / portable':>16} {'x f32 (SIMD)':>13} "
              f"{'x f32 (portable)':>17} {'top 10 SIMD = portable':>23} {'top-10 overlap with f32':>24}")
        for dtype in DTYPES:
            same = sum(a == b for a, b in zip(ids[("simd", dtype)], ids[("portable", dtype)]))
            overlap = statistics.mean(len(set(a.split()) & set(b.split())) / 10
                                      for a, b in zip(ids[("simd", dtype)], ids[("simd", "float32")]))
            print(f"{dtype:8} {med[('simd', dtype)]:8.3f} {med[('portable', dtype)]:12.3f} "
                  f"{med[('simd', dtype)] / med[('portable', dtype)]:16.2f} "
                  f"{med[('simd', dtype)] / med[('simd', 'float32')]:13.2f} "
                  f"{med[('portable', dtype)] / med[('portable', 'float32')]:17.2f} "
                  f"{f'{same}/{args.queries}':>23} {overlap:24.3f}")
        print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
