"""The Java binding's dense search against libkbpack called from C, on the same bundle and queries:
100,000 x 384 random unit vectors as float32 (bench/c_vectors.py's bundle and C driver), the median
and p90 of one search timed inside each process (no process start, the first search and its
checksums apart), and the sizes of kbpack.jar and libkbpack_jni.so.

    .venv/bin/python runtimes/java/bench.py [--count 100000] [--dim 384] [--queries 200] [-k 10] [--rounds 3]

Needs a JDK, a C compiler and libzstd. Run it on an idle machine: it prints the load average.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from c_vectors import DRIVER, cpu_model, random_unit_set  # noqa: E402  the C side, as bench/c_vectors.py measures it

from kbc.format.bundle import write_bundle  # noqa: E402


def parse(out: str) -> dict[str, float]:
    return {k: float(v) for k, v in (line.split() for line in out.splitlines() if line.strip())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="C and JVM runs, alternated (the medians are reported)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="java-bench-"))
    try:
        cc = os.environ.get("CC") or shutil.which("cc") or "gcc"
        build = work / "build"
        subprocess.run(["make", "-s", "-C", str(ROOT / "runtimes" / "c"), f"BUILD={build}", f"CC={cc}"], check=True)
        subprocess.run(["make", "-s", "-C", str(ROOT / "runtimes" / "java"), f"BUILD={work / 'java'}", f"CC={cc}",
                        f"LIBKBPACK={build / 'libkbpack.a'}", "all", "test-classes"], check=True)
        (work / "driver.c").write_text(DRIVER)
        subprocess.run([cc, "-std=c99", "-O2", f"-I{ROOT / 'runtimes' / 'c'}", "-o", str(work / "driver"),
                        str(work / "driver.c"), str(build / "libkbpack.a"), "-lzstd", "-lm"], check=True)
        vectors, queries, qfile = random_unit_set(args.count, args.dim, args.queries, work)
        bundle = work / "f32.kbpack"
        write_bundle(bundle, manifest={}, vectors=vectors, chunks=[{"text": str(i)} for i in range(args.count)])

        jar, so = work / "java" / "kbpack.jar", work / "java" / "libkbpack_jni.so"
        java = [shutil.which("java"), f"-Dkbpack.library={so}", "-cp", f"{jar}{os.pathsep}{work / 'java' / 'test-classes'}",
                "dev.kbc.kbpack.Bench"]
        print(f"cpu: {cpu_model()} ({os.cpu_count()} cores), load average at start: "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"{args.count:,} x {args.dim} float32, {args.queries} queries, k = {args.k}, dense, one thread, warm page cache")
        runs: dict[str, list[dict]] = {"C (libkbpack.a)": [], "JVM (KbPack, JNI)": []}
        for _ in range(args.rounds):
            c = subprocess.run([str(work / "driver"), str(bundle), str(qfile), str(args.queries), str(args.k)],
                               capture_output=True, text=True, check=True)
            j = subprocess.run([*java, str(bundle), str(qfile), str(args.queries), str(args.k)], capture_output=True,
                               text=True, check=True)
            runs["C (libkbpack.a)"].append(parse(c.stdout))
            runs["JVM (KbPack, JNI)"].append(parse(j.stdout))
        checks = {name: {round(r["checksum"], 4) for r in rs} for name, rs in runs.items()}
        assert len(set.union(*checks.values())) == 1, checks  # the same hits from both
        print(f"{'':20} {'open ms':>8} {'1st query ms':>13} {'median ms':>10} {'p90 ms':>8}")
        for name, rs in runs.items():
            med = {k: float(np.median([r[k] for r in rs])) for k in ("open_ms", "first_ms", "median_ms", "p90_ms")}
            print(f"{name:20} {med['open_ms']:8.2f} {med['first_ms']:13.1f} {med['median_ms']:10.3f} {med['p90_ms']:8.3f}")
        print(f"kbpack.jar {jar.stat().st_size:,} bytes; libkbpack_jni.so {so.stat().st_size:,} bytes "
              f"(libkbpack linked in, libzstd dynamic)")
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
