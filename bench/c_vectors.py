"""libkbpack's search on 100,000 x 384 random unit vectors stored as f32, f16, int8 and binary
(int8 + codes): file size, `kbpack verify` time and peak RSS, open and first-query time (the first
query also checks the sections' SHA-256 and the values), and the median time of one dense search
measured inside a small C program linked to libkbpack (no process start in it), with its peak RSS.

    .venv/bin/python bench/c_vectors.py [--count 100000] [--dim 384] [--queries 200] [-k 10]

Needs a C compiler and libzstd (runtimes/c/Makefile). Bundles go to a temporary folder (about
330 MB for the four) unless --keep DIR. Run it on an idle machine: it prints the load average.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kbc.format.bundle import write_bundle  # noqa: E402

PRESETS = {"f32": ("float32", False), "f16": ("float16", False), "int8": ("int8", False), "binary": ("int8", True)}

DRIVER = r"""
#define _DEFAULT_SOURCE  /* wait4 (BSD, glibc) */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
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

static long status_kb(const char *key) { /* a line of /proc/self/status, in kB; -1 elsewhere */
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long v = -1;
  size_t n = strlen(key);
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, key, n) == 0 && line[n] == ':') v = atol(line + n + 1);
  if (f) fclose(f);
  return v;
}

/* --exec PROGRAM ARGS...: runs it and prints its wall time, exit code and peak RSS. Linux counts
 * what a process had before exec in its peak, so a program started straight from Python would
 * report Python's; this small process stands in between. */
static int run_child(char **argv) {
  double t0 = now_ms();
  pid_t pid = fork();
  if (pid == 0) {
    dup2(2, 1); /* the child's output goes to stderr: stdout is for the measurements */
    execv(argv[0], argv);
    _exit(127);
  }
  int status;
  struct rusage ru;
  if (pid < 0 || wait4(pid, &status, 0, &ru) != pid) return 2;
  printf("wall_ms %.3f\nrc %d\nmaxrss_kb %ld\n", now_ms() - t0, WIFEXITED(status) ? WEXITSTATUS(status) : 128,
         ru.ru_maxrss);
  return 0;
}

int main(int argc, char **argv) { /* BUNDLE QUERIES.f32 N_QUERIES K, or --exec PROGRAM ARGS... */
  if (argc > 2 && strcmp(argv[1], "--exec") == 0) return run_child(argv + 2);
  if (argc != 5) return 2;
  size_t nq = (size_t)atol(argv[3]), k = (size_t)atol(argv[4]);
  double t0 = now_ms();
  kbp_bundle *kb;
  kbp_error err;
  if (kbp_open(argv[1], &kb, &err) != KBP_OK) return fprintf(stderr, "%s\n", err.message), 3;
  double t_open = now_ms() - t0;
  size_t dim = kbp_dim(kb);
  float *q = malloc(nq * dim * sizeof *q);
  FILE *f = fopen(argv[2], "rb");
  if (!q || !f || fread(q, sizeof *q, nq * dim, f) != nq * dim) return 2;
  fclose(f);
  kbp_hit *hits = malloc(k * sizeof *hits);
  double *ms = malloc(nq * sizeof *ms), checksum = 0;
  size_t n;
  t0 = now_ms();
  if (kbp_search(kb, q, NULL, k, KBP_MODE_DENSE, hits, &n) != KBP_OK)
    return fprintf(stderr, "%s\n", kbp_last_error(kb)->message), 3;
  double t_first = now_ms() - t0;
  for (size_t i = 0; i < nq; i++) {
    t0 = now_ms();
    if (kbp_search(kb, q + i * dim, NULL, k, KBP_MODE_DENSE, hits, &n) != KBP_OK) return 3;
    ms[i] = now_ms() - t0;
    checksum += hits[0].score;
  }
  qsort(ms, nq, sizeof *ms, by_value);
  printf("open_ms %.3f\nfirst_ms %.3f\nmedian_ms %.4f\np90_ms %.4f\nmin_ms %.4f\nmaxrss_kb %ld\nrss_anon_kb %ld\n"
         "rss_file_kb %ld\nchecksum %.6f\n", t_open, t_first, ms[nq / 2], ms[nq * 9 / 10], ms[0], status_kb("VmHWM"),
         status_kb("RssAnon"), status_kb("RssFile"), checksum);
  kbp_close(kb);
  return 0;
}
"""


def random_unit_set(count: int, dim: int, n_queries: int, work: Path) -> tuple[np.ndarray, np.ndarray, Path]:
    """`count` random unit vectors and `n_queries` random unit queries (seed 0, so every benchmark that
    uses it measures the same set), the queries also written to work/queries.f32 for the C drivers."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = rng.standard_normal((n_queries, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    qfile = work / "queries.f32"
    queries.astype("<f4").tofile(qfile)
    return vectors, queries, qfile


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measured(cmd: list[str]) -> dict[str, float]:
    """`name value` lines a driver prints, as numbers; a failure stops the benchmark."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return {key: float(value) for key, value in (line.split() for line in proc.stdout.splitlines())}


def drop_cache_hint(path: Path) -> None:
    """With --cold: ask the kernel to forget the file's pages, so verify and the first query read
    it from disk where the kernel agrees (posix_fadvise; not guaranteed)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--keep", type=Path, help="write the bundles here and keep them")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--cold", action="store_true", help="drop each bundle's pages from the page cache before "
                                                         "verify and before the search (default: warm, as written)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="c-vectors-"))
    out_dir = args.keep or work
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        build = work / "build"
        cc = os.environ.get("CC") or shutil.which("cc") or "gcc"
        subprocess.run(["make", "-s", "-C", str(ROOT / "runtimes" / "c"), f"BUILD={build}", f"CC={cc}"], check=True)
        (work / "driver.c").write_text(DRIVER)
        subprocess.run([cc, "-std=c99", "-O2", f"-I{ROOT / 'runtimes' / 'c'}", "-o", str(work / "driver"),
                        str(work / "driver.c"), str(build / "libkbpack.a"), "-lzstd", "-lm"], check=True)

        print(f"cpu: {cpu_model()} ({os.cpu_count()} cores), load average at start: "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"{args.count:,} x {args.dim} random unit vectors, {args.queries} random unit queries, k = {args.k}, "
              f"dense search, one thread, files {'dropped from' if args.cold else 'warm in'} the page cache\n")
        vectors, queries, qfile = random_unit_set(args.count, args.dim, args.queries, work)
        chunks = [{"text": str(i)} for i in range(args.count)]

        header = (f"{'vectors':8} {'file MB':>8} {'verify s':>9} {'verify RSS MB':>14} {'open ms':>8} "
                  f"{'1st query ms':>13} {'query ms':>9} {'p90 ms':>7} {'search RSS MB':>14} {'anon MB':>8}")
        print(header)
        print("-" * len(header))
        for name in args.presets.split(","):
            dtype, binary = PRESETS[name]
            path = out_dir / f"{name}.kbpack"
            write_bundle(path, manifest={}, vectors=vectors, chunks=chunks, dtype=dtype, binary=binary)
            size_mb = path.stat().st_size / 1e6
            if args.cold:
                drop_cache_hint(path)
            v = measured([str(work / "driver"), "--exec", str(build / "kbpack"), "verify", str(path)])
            if v["rc"] != 0:
                raise SystemExit(f"{name}: kbpack verify exited {v['rc']:.0f}")
            verify_s, verify_rss = v["wall_ms"] / 1e3, v["maxrss_kb"]
            if args.cold:
                drop_cache_hint(path)
            m = measured([str(work / "driver"), str(path), str(qfile), str(args.queries), str(args.k)])
            print(f"{name:8} {size_mb:8.1f} {verify_s:9.3f} {verify_rss / 1024:14.1f} {m['open_ms']:8.2f} "
                  f"{m['first_ms']:13.1f} {m['median_ms']:9.3f} {m['p90_ms']:7.3f} {m['maxrss_kb'] / 1024:14.1f} "
                  f"{m['rss_anon_kb'] / 1024:8.1f}", flush=True)
            if not args.keep:
                path.unlink()
        print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print("verify RSS, search RSS: peak resident set of the process, the mapped file's pages included "
              "(the first query reads every section it uses once, for its SHA-256); anon: memory of its own "
              "after the queries")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
