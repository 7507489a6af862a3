"""kbc vs the hand-glued LangChain baseline, side by side in one run on one machine.

    python bench/run_bench.py [--corpus DIR] [--baseline-python /tmp/lc/bin/python] [--runs 3]

Runs, alternating, the baseline (../shared/bench/langchain_baseline.py, in its own venv: never a
project dependency) and `kbc build` with an empty cache, in fp32 and with the int8 preset; then an incremental rebuild after adding
one file, a fully cached rebuild, cold `kbc query` and `kbc inspect`. "kbc build (no cache)" starts
from an empty KBC_CACHE_DIR, as a CI runner does (the model's ONNX graph is made in the run);
"kbc build (model cached)" is the same build with the graph already made. Prints medians of wall time
and peak RSS (os.wait4: the largest of the process and the children it reaped) and the ratios.
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB (of the process and the children it waited for), stdout."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err.read()[-2000:]}")
        return wall, usage.ru_maxrss / 1024, out.read()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=str(SHARED / "bench" / "rustbook-pdf"))
    ap.add_argument("--baseline", default=str(SHARED / "bench" / "langchain_baseline.py"))
    ap.add_argument("--baseline-python", default="/tmp/lc/bin/python")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--extra-file", default=str(SHARED / "pdfs" / "pdflatex-4-pages.pdf"))
    ap.add_argument("--scale", type=int, default=0, help="also build a corpus of N copies of every file "
                    "(no cache) and rebuild it with one file added: peak memory and incremental ratio at scale")
    a = ap.parse_args()
    kbc = [sys.executable, "-m", "kbc"]
    work = Path(tempfile.mkdtemp(prefix="kbc-bench-"))
    corpus = work / "corpus"
    shutil.copytree(a.corpus, corpus)
    have_baseline = Path(a.baseline_python).exists() and Path(a.baseline).exists()
    model_cache = work / "model-cache"
    # The ONNX export is a one-off per model (like installing it): made once here, reused by every run.
    env_export = {"KBC_CACHE_DIR": str(model_cache)}
    timed(kbc + ["build", str(corpus), "-o", str(work / "warmup.kbpack"), "-q", "--no-cache"], env_export)

    rows: dict[str, list[tuple[float, float]]] = {}
    kbc_stages, base_stages = [], []
    for run in range(a.runs):
        if have_baseline:
            w, r, out = timed([a.baseline_python, a.baseline, str(corpus), str(work / f"lc-{run}")])
            rows.setdefault("baseline build", []).append((w, r))
            base_stages.append(json.loads(out))
        # what a CI runner pays: an empty KBC_CACHE_DIR, so the model's ONNX graph is made too
        w, r, out = timed(kbc + ["build", str(corpus), "-o", str(work / "kb.kbpack"), "--json"],
                          {"KBC_CACHE_DIR": str(work / f"empty-cache-{run}")})
        rows.setdefault("kbc build (no cache)", []).append((w, r))
        kbc_stages.append(json.loads(out))
        # the int8 preset, also from an empty cache (its graph is written directly, no fp32 graph first)
        w, r, _ = timed(kbc + ["build", str(corpus), "-o", str(work / "kb8.kbpack"), "-q", "--backend", "onnx-int8"],
                        {"KBC_CACHE_DIR": str(work / f"empty-cache-int8-{run}")})
        rows.setdefault("kbc build int8 (no cache)", []).append((w, r))
        # second: the model's graph already made (a developer's machine), nothing else cached
        w, r, _ = timed(kbc + ["build", str(corpus), "-o", str(work / "kb.kbpack"), "-q", "--no-cache"], env_export)
        rows.setdefault("kbc build (model cached)", []).append((w, r))

    # incremental: a fresh build cache per run, filled by one full build, then one file added
    for run in range(a.runs):
        env = {"KBC_CACHE_DIR": str(model_cache), "XDG_CACHE_HOME": str(work / f"xdg-{run}")}
        cache = ["--cache-dir", str(work / f"cache-{run}")]
        timed(kbc + ["build", str(corpus), "-o", str(work / "inc.kbpack"), "-q"] + cache, env)
        extra = corpus / "zz-added.pdf"
        shutil.copy(a.extra_file, extra)
        w, r, _ = timed(kbc + ["build", str(corpus), "-o", str(work / "inc.kbpack"), "-q"] + cache, env)
        rows.setdefault("kbc rebuild, one file added", []).append((w, r))
        extra.unlink()
        w, r, _ = timed(kbc + ["build", str(corpus), "-o", str(work / "inc2.kbpack"), "-q"] + cache, env)
        rows.setdefault("kbc rebuild, nothing changed", []).append((w, r))
    for _ in range(a.runs):
        rows.setdefault("kbc query (cold process)", []).append(
            timed(kbc + ["query", str(work / "kb.kbpack"), "How do I handle errors with Result?"], env_export)[:2])
        rows.setdefault("kbc inspect --verify", []).append(
            timed(kbc + ["inspect", str(work / "kb.kbpack"), "--verify"], env_export)[:2])

    if a.scale > 1:
        big = work / f"corpus-x{a.scale}"
        big.mkdir()
        for n in range(a.scale):
            for f in sorted(corpus.iterdir()):
                shutil.copy(f, big / f"copy{n:02d}-{f.name}")
        env = {"KBC_CACHE_DIR": str(model_cache), "XDG_CACHE_HOME": str(work / "xdg-scale")}
        cache = ["--cache-dir", str(work / "cache-scale")]
        w, r, out = timed(kbc + ["build", str(big), "-o", str(work / "big.kbpack"), "--json", "--no-cache"], env_export)
        rows.setdefault(f"kbc build x{a.scale} (no cache)", []).append((w, r))
        timed(kbc + ["build", str(big), "-o", str(work / "big.kbpack"), "-q"] + cache, env)
        shutil.copy(a.extra_file, big / "zz-added.pdf")
        w2, r2, _ = timed(kbc + ["build", str(big), "-o", str(work / "big.kbpack"), "-q"] + cache, env)
        rows.setdefault(f"kbc rebuild x{a.scale}, one file added", []).append((w2, r2))
        print(f"x{a.scale}: {json.loads(out)['chunks']} chunks; incremental / full at this scale: {w2 / w:.3f}")

    med = {k: (statistics.median(x[0] for x in v), max(x[1] for x in v)) for k, v in rows.items()}
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown CPU") if Path("/proc/cpuinfo").exists() else "unknown CPU"
    print(f"corpus: {a.corpus} ({sum(1 for _ in corpus.iterdir())} files); runs: {a.runs}; cpus: {os.cpu_count()} "
          f"({cpu})")
    print(f"{'step':<32}{'median wall s':>14}{'peak RSS MB':>13}")
    for k, (w, r) in med.items():
        print(f"{k:<32}{w:>14.2f}{r:>13.0f}")
    full = med["kbc build (no cache)"][0]
    if have_baseline:
        pairs = [k[0] / b[0] for k, b in zip(rows["kbc build (no cache)"], rows["baseline build"])]
        print(f"kbc / baseline wall, run by run: {', '.join(f'{p:.2f}' for p in pairs)} "
              f"(median {statistics.median(pairs):.2f})")
        pairs8 = [k[0] / b[0] for k, b in zip(rows["kbc build int8 (no cache)"], rows["baseline build"])]
        print(f"kbc int8 / baseline wall, run by run: {', '.join(f'{p:.2f}' for p in pairs8)} "
              f"(median {statistics.median(pairs8):.2f})")
        s = base_stages[-1]
        print("baseline stages (last run):", json.dumps(s["seconds"]), f"chunks {s['chunks']}, out {s['out_bytes']} B")
    print(f"incremental / full: one file added {med['kbc rebuild, one file added'][0] / full:.3f}, "
          f"nothing changed {med['kbc rebuild, nothing changed'][0] / full:.3f}")
    k = kbc_stages[-1]
    print("kbc stages (last run):", json.dumps(k["seconds"]),
          f"chunks {k['chunks']}, truncated {k['truncated_chunks']}, out {k['output_bytes']} B")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
