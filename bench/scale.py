"""Scale benchmark: N synthetic chunks end to end with a tiny model, on each engine.

    python bench/scale.py --chunks 10000 100000 1000000 --engine local ray [--no-lexical] [--out DIR]

The corpus is JSONL records (one chunk each, 12 words from a 20,000-word Zipf vocabulary) in
files of 10,000 records; the model is the 2-layer, 32-d random BERT the tests make, so embedding
is cheap and the pipeline around it is what is measured. Each build runs in a child process with
an empty cache (`use_cache=False`) and reports: wall time, the driver's own peak RSS (the bundle
writer runs in the driver; extraction workers and Ray workers are separate processes), the peak
RSS of its largest child, and the bundle's size. Also, at the largest N: Flat vs HNSW32 vs IVF-PQ
search time and recall@10 against Flat, over the built vectors.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

CHILD = r"""
import json, resource, sys, time
import kbc
args = json.loads(sys.argv[1])
t = time.perf_counter()
r = kbc.build([args["docs"]], args["out"], model=args["model"], use_cache=False, engine=args["engine"],
              lexical=args["lexical"])
wall = time.perf_counter() - t
def peak_rss_mb():
    # VmHWM is this process's own high-water mark. ru_maxrss is not: Linux carries the pre-exec
    # image's peak into it, and subprocess starts this child with vfork from the benchmark, whose
    # tiny-model export holds torch (about 380 MB), so ru_maxrss read that floor at every size.
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"wall_s": wall, "chunks": r.chunks, "bytes": r.output_bytes, "seconds": r.seconds,
                  "driver_rss_mb": peak_rss_mb(),
                  "largest_child_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def make_corpus(folder: Path, n: int, *, per_file: int = 10_000, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(20_000)]
    p = 1.0 / np.arange(1, len(words) + 1)
    p /= p.sum()
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(0, n, per_file):
        with open(folder / f"part{f // per_file:05d}.jsonl", "w") as out:
            for i in range(f, min(n, f + per_file)):
                ids = rng.choice(len(words), size=12, p=p)
                out.write(json.dumps({"_id": str(i), "text": " ".join(words[j] for j in ids)}) + "\n")


def index_table(bundle: Path) -> list[dict]:
    import time

    import faiss

    from kbc.format.bundle import Bundle

    with Bundle(bundle) as b:
        x = np.ascontiguousarray(b.vectors, dtype=np.float32)
    rng = np.random.default_rng(1)
    q = x[rng.choice(len(x), 1000, replace=False)] + rng.normal(0, 0.05, (1000, x.shape[1])).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    t = time.perf_counter()
    _, truth = flat.search(q, 10)
    rows = [{"index": "Flat", "build_s": 0.0, "ms_per_query": (time.perf_counter() - t) * 1000 / len(q),
             "recall@10": 1.0}]
    for factory, params in (("HNSW32", {"efSearch": 64}), ("IVF1024,PQ16", {"nprobe": 16})):
        index = faiss.index_factory(x.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        t = time.perf_counter()
        index.train(x)
        index.add(x)
        build_s = time.perf_counter() - t
        for k, v in params.items():
            faiss.ParameterSpace().set_index_parameter(index, k, v)
        t = time.perf_counter()
        _, got = index.search(q, 10)
        ms = (time.perf_counter() - t) * 1000 / len(q)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth)])
        rows.append({"index": f"{factory} {params}", "build_s": build_s, "ms_per_query": ms, "recall@10": recall})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--engine", nargs="+", default=["local"])
    ap.add_argument("--no-lexical", action="store_true")
    ap.add_argument("--no-index-table", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    out = Path(a.out or tempfile.mkdtemp(prefix="kbc-scale-"))
    from conftest import make_tiny_model

    model = out / "tiny-model"
    if not (model / "config.json").exists():
        model.mkdir(parents=True, exist_ok=True)
        make_tiny_model(model)
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000", "KBC_CACHE_DIR": str(out / "cache")}
    # the tiny model's ONNX export (made once, with torch) goes into the cache first: the measured
    # builds then run as every build after a model's first does
    warm = out / "warm"
    if not warm.exists():
        make_corpus(warm, 10)
    subprocess.run([sys.executable, "-m", "kbc", "build", str(warm), "-o", str(out / "warm.kbpack"), "-q",
                    "--model", str(model)], env=env, cwd=ROOT, check=True, capture_output=True)
    print(f"{'chunks':>9} {'engine':>6} {'wall s':>8} {'chunks/s':>9} {'driver RSS MB':>14} "
          f"{'largest child MB':>17} {'bundle MB':>10}", flush=True)
    last = None
    for n in a.chunks:
        docs = out / f"corpus-{n}"
        if not docs.exists():
            make_corpus(docs, n)
        for engine in a.engine:
            bundle = out / f"{engine}-{n}.kbpack"
            args = {"docs": str(docs), "out": str(bundle), "model": str(model), "engine": engine,
                    "lexical": not a.no_lexical}
            proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True,
                                  env=env, cwd=ROOT)
            if proc.returncode != 0:
                print(f"{n:>9} {engine:>6} failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{n:>9} {engine:>6} {r['wall_s']:>8.1f} {r['chunks'] / r['wall_s']:>9.0f} "
                  f"{r['driver_rss_mb']:>14.0f} {r['largest_child_rss_mb']:>17.0f} {r['bytes'] / 2**20:>10.1f}"
                  f"   stages {json.dumps(r['seconds'])}", flush=True)
            last = bundle
        same = {(out / f"{e}-{n}.kbpack").read_bytes() == (out / f"{a.engine[0]}-{n}.kbpack").read_bytes()
                for e in a.engine if (out / f"{e}-{n}.kbpack").exists()}
        if len(a.engine) > 1:
            print(f"{n:>9} bundles identical across engines: {same == {True}}", flush=True)
    if last is not None and not a.no_index_table:
        print("\nindex at the largest size (1,000 noisy queries from the corpus, k=10):")
        for row in index_table(last):
            print(f"  {row['index']:<28} build {row['build_s']:7.1f} s  {row['ms_per_query']:7.3f} ms/query  "
                  f"recall@10 {row['recall@10']:.3f}", flush=True)


if __name__ == "__main__":
    main()
