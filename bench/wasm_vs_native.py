"""libkbpack in WebAssembly (runtimes/js, under Node) against native libkbpack, on the same bundles and
the same queries: 100,000 x 384 random unit vectors stored as float32 (with a BM25 index over
synthetic texts: dense, lexical and hybrid search), int8 and int8 with binary codes (dense), k = 10.
Each side runs its queries in one process after a first, untimed search (which checks the sections'
SHA-256); cells are the median query time, wall and the process's CPU time, and the ids of every
answer are compared between the two (they must be equal). Also: the .wasm's size.

    .venv/bin/python bench/wasm_vs_native.py [--count 100000] [--dim 384] [--queries 100]

Needs a C compiler with libzstd, node, and the wasm toolchain of runtimes/js/Makefile.
Issue 40's target: dense float32 in WebAssembly <= 3x native; int8 and binary reported.
"""

from __future__ import annotations

import argparse
import json
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

from c_vectors import cpu_model  # noqa: E402
from kbc.format.bm25 import LexicalBuilder  # noqa: E402
from kbc.format.bundle import write_bundle  # noqa: E402

NATIVE = r"""
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "kbpack.h"

static double now_ms(clockid_t c) { struct timespec t; clock_gettime(c, &t); return t.tv_sec * 1e3 + t.tv_nsec / 1e6; }

/* BUNDLE MODE QUERIES.f32 QUESTIONS.txt N: one line per query, "wall_ms cpu_ms id id ..." */
int main(int argc, char **argv) {
  if (argc != 6) return 2;
  kbp_bundle *kb;
  kbp_error err;
  if (kbp_open(argv[1], &kb, &err) != KBP_OK) return fprintf(stderr, "%s\n", err.message), 3;
  kbp_mode mode = strcmp(argv[2], "dense") == 0 ? KBP_MODE_DENSE : strcmp(argv[2], "lexical") == 0 ? KBP_MODE_LEXICAL : KBP_MODE_HYBRID;
  size_t dim = kbp_dim(kb), nq = (size_t)atoi(argv[5]), n;
  float *q = malloc(nq * dim * sizeof *q);
  FILE *f = fopen(argv[3], "rb"), *t = fopen(argv[4], "r");
  if (!q || !f || !t || fread(q, sizeof *q, nq * dim, f) != nq * dim) return 2;
  char (*questions)[256] = malloc(nq * 256);
  for (size_t i = 0; i < nq; i++) {
    if (!fgets(questions[i], 256, t)) return 2;
    questions[i][strcspn(questions[i], "\n")] = 0;
  }
  kbp_hit hits[10];
  if (kbp_search(kb, q, questions[0], 10, mode, hits, &n) != KBP_OK) return fprintf(stderr, "%s\n", kbp_last_error(kb)->message), 3;
  for (size_t i = 0; i < nq; i++) {
    double w0 = now_ms(CLOCK_MONOTONIC), c0 = now_ms(CLOCK_PROCESS_CPUTIME_ID);
    if (kbp_search(kb, q + i * dim, questions[i], 10, mode, hits, &n) != KBP_OK) return 3;
    printf("%.4f %.4f", now_ms(CLOCK_MONOTONIC) - w0, now_ms(CLOCK_PROCESS_CPUTIME_ID) - c0);
    for (size_t j = 0; j < n; j++) printf(" %llu", (unsigned long long)hits[j].id);
    printf("\n");
  }
  kbp_close(kb);
  return 0;
}
"""

WASM = r"""
import { readFileSync } from "node:fs";
import { openFile, loadModule } from "KBPACK_MJS";
const [wasm, bundle, mode, qfile, tfile, nq] = process.argv.slice(2);
const kb = await openFile(bundle, { wasm: await loadModule(wasm) });
const dim = kb.dim, n = Number(nq);
const raw = readFileSync(qfile);
const q = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
const questions = readFileSync(tfile, "utf8").split("\n");
kb.search({ vector: q.subarray(0, dim), question: questions[0], k: 10, mode });
const lines = [];
for (let i = 0; i < n; i++) {
  const vector = q.subarray(i * dim, (i + 1) * dim);
  const w0 = performance.now(), c0 = process.cpuUsage();
  const { hits } = kb.search({ vector, question: questions[i], k: 10, mode });
  const wall = performance.now() - w0, cpu = process.cpuUsage(c0);
  lines.push(`${wall.toFixed(4)} ${((cpu.user + cpu.system) / 1000).toFixed(4)} ${hits.map((h) => h.id).join(" ")}`);
}
kb.close();
console.log(lines.join("\n"));
"""


def synthetic_texts(rng, count: int) -> tuple[list[str], list[str]]:
    """Chunk texts of 30-60 words drawn Zipf-like from 20,000 made-up words, and the words by rank."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = sorted({"".join(rng.choice(letters, rng.integers(4, 10))) for _ in range(22_000)})[:20_000]
    rng.shuffle(words)
    ranks = np.minimum(rng.zipf(1.2, size=count * 60) - 1, len(words) - 1)
    lengths = rng.integers(30, 61, size=count)
    texts, at = [], 0
    for n in lengths:
        texts.append(" ".join(words[r] for r in ranks[at:at + n]))
        at += n
    return texts, words


def parse(stdout: str) -> tuple[list[float], list[float], list[str]]:
    walls, cpus, ids = [], [], []
    for line in stdout.strip().splitlines():
        wall, cpu, *hit_ids = line.split()
        walls.append(float(wall))
        cpus.append(float(cpu))
        ids.append(" ".join(hit_ids))
    return walls, cpus, ids


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--zstd-src", help="a folder with zstd.c and zstd.h (default: runtimes/c's `make zstd-src`)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wasm-vs-native-"))
    try:
        cc = os.environ.get("CC") or shutil.which("cc") or "gcc"
        subprocess.run(["make", "-s", "-C", str(ROOT / "runtimes" / "c"), f"BUILD={work / 'c'}", f"CC={cc}"], check=True)
        (work / "native.c").write_text(NATIVE)
        subprocess.run([cc, "-std=c99", "-O2", f"-I{ROOT / 'runtimes' / 'c'}", "-o", str(work / "native"),
                        str(work / "native.c"), str(work / "c" / "libkbpack.a"), "-lzstd", "-lm"], check=True)
        zstd = [f"ZSTD_SRC={Path(args.zstd_src).resolve()}"] if args.zstd_src else [f"PYTHON={sys.executable}"]
        subprocess.run(["make", "-s", "-C", str(ROOT / "runtimes" / "js"), f"BUILD={work / 'js'}", *zstd], check=True)
        wasm = work / "js" / "kbpack.wasm"
        (work / "bench.mjs").write_text(WASM.replace("KBPACK_MJS", (ROOT / "runtimes" / "js" / "kbpack.mjs").as_uri()))

        rng = np.random.default_rng(0)
        vectors = rng.standard_normal((args.count, args.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        queries = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        queries.astype("<f4").tofile(work / "q.f32")
        texts, words = synthetic_texts(rng, args.count)
        # questions of 3-6 words, from the common to the rare
        questions = [" ".join(words[int(r)] for r in rng.integers(0, 2000, rng.integers(3, 7))) for _ in range(args.queries)]
        (work / "questions.txt").write_text("\n".join(questions) + "\n")
        chunks = [{"text": t} for t in texts]
        builder = LexicalBuilder()
        builder.add_many(texts)
        lexical, lex_sections = builder.finish()
        bundles = {
            "float32": write_bundle(work / "f32.kbpack", manifest={"lexical": lexical, "retrieval": {"default_mode": "hybrid"}},
                                    vectors=vectors, chunks=chunks, extra_sections=lex_sections),
            "int8": write_bundle(work / "int8.kbpack", manifest={}, vectors=vectors, chunks=chunks, dtype="int8"),
            "binary": write_bundle(work / "binary.kbpack", manifest={}, vectors=vectors, chunks=chunks, dtype="int8",
                                   binary=True),
        }
        print(f"cpu: {cpu_model()} ({os.cpu_count()} cores), node {subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()}, "
              f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"kbpack.wasm: {wasm.stat().st_size:,} bytes")
        print(f"{args.count:,} x {args.dim}, {args.queries} queries, k = 10, one thread; median ms per query\n")
        header = (f"{'search':16} {'native wall':>12} {'wasm wall':>10} {'ratio':>6} {'native CPU':>11} {'wasm CPU':>9} "
                  f"{'ratio':>6} {'same ids':>9}")
        print(header)
        print("-" * len(header))
        cases = [("float32", "dense"), ("float32", "lexical"), ("float32", "hybrid"), ("int8", "dense"), ("binary", "dense")]
        results = {}
        for dtype, mode in cases:
            common = [str(bundles[dtype]), mode, str(work / "q.f32"), str(work / "questions.txt"), str(args.queries)]
            native = subprocess.run([str(work / "native"), *common], capture_output=True, text=True, check=True)
            wasm_run = subprocess.run(["node", str(work / "bench.mjs"), str(wasm), *common], capture_output=True,
                                      text=True, check=True)
            (nw, nc, nids), (ww, wc, wids) = parse(native.stdout), parse(wasm_run.stdout)
            same = sum(a == b for a, b in zip(nids, wids))
            row = {"native_wall": statistics.median(nw), "wasm_wall": statistics.median(ww),
                   "native_cpu": statistics.median(nc), "wasm_cpu": statistics.median(wc), "same": same}
            results[f"{dtype} {mode}"] = row
            print(f"{dtype + ' ' + mode:16} {row['native_wall']:12.3f} {row['wasm_wall']:10.3f} "
                  f"{row['wasm_wall'] / row['native_wall']:6.2f} {row['native_cpu']:11.3f} {row['wasm_cpu']:9.3f} "
                  f"{row['wasm_cpu'] / row['native_cpu']:6.2f} {f'{same}/{args.queries}':>9}", flush=True)
        print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(json.dumps({"wasm_bytes": wasm.stat().st_size, **results}))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
