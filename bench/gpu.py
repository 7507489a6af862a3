"""The GPU path, ready to run on a machine that has one: `make bench-gpu`.

    python bench/gpu.py [--chunks 100000] [--financebench DIR] [--no-install] [--sample 1000]

1. Finds an NVIDIA GPU (`nvidia-smi -L`); without one it says so in one line and exits 2.
2. Chooses how kbc embeds on it: `--backend torch --device cuda` when this Python's torch sees
   CUDA (a CUDA machine image usually has it), else `--backend onnx --device cuda` when
   onnxruntime has the CUDA provider; else it installs onnxruntime-gpu (`pip install`, or from
   the wheels in $KBC_GPU_WHEELS with no index, for a machine that reaches no registry) and checks
   again. `--no-install` refuses instead. What it could not find is one line, exit 2.
3. Builds, with an empty cache each: financebench-dev's filings (../shared/eval/financebench-dev,
   skipped when absent) and a synthetic corpus of --chunks one-chunk records (bench/scale.py's),
   both with the default model on the GPU. Prints chunks/s, the GPU's peak memory in use during
   each build over what was in use before it (nvidia-smi, sampled every 0.2 s), and how close
   the GPU's vectors are to the CPU's: --sample chunks of each bundle re-embedded on the CPU by
   the same backend, cosine min / mean. GPU floats are not the CPU's, so bytes differ; the
   manifest records `runtime.device: cuda` for that reason.

Sized for one call of under 10 minutes on a lent machine: the default model on 100k short records
and 30 filings, and the CPU check on a sample only.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

NO_GPU = 2  # the exit code for "this machine cannot run the GPU path", as kbc's bad-usage code


class NotRunnable(Exception):
    """One line: why the GPU path cannot run here."""


def gpus() -> list[str]:
    """The GPUs nvidia-smi lists; NotRunnable when it is missing or lists none."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        raise NotRunnable("no NVIDIA GPU here: nvidia-smi is not on PATH; run make bench-gpu on a machine with one")
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NotRunnable(f"no NVIDIA GPU here: nvidia-smi -L failed ({e})") from None
    listed = [line.strip() for line in out.stdout.splitlines() if line.startswith("GPU ")]
    if out.returncode != 0 or not listed:
        why = " ".join((out.stderr or out.stdout).split())[:200] or "it lists no GPU"
        raise NotRunnable(f"no NVIDIA GPU here: nvidia-smi -L: {why}")
    return listed


def torch_sees_cuda() -> bool:
    try:
        import torch
    except Exception:
        return False
    try:
        return bool(torch.cuda.is_available())
    except Exception:
        return False


def ort_has_cuda() -> bool:
    try:
        import onnxruntime as ort
    except Exception:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def choose_backend(*, torch_cuda: bool, ort_cuda: bool) -> str | None:
    """torch when it sees CUDA (sentence-transformers on the GPU), else onnxruntime's CUDA provider."""
    if torch_cuda:
        return "torch"
    if ort_cuda:
        return "onnx"
    return None


def install_onnxruntime_gpu() -> None:
    wheels = os.environ.get("KBC_GPU_WHEELS")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    cmd += ["--no-index", "--find-links", wheels, "onnxruntime-gpu"] if wheels else ["onnxruntime-gpu"]
    print("installing onnxruntime-gpu:", " ".join(cmd[3:]), flush=True)
    # both wheels install the module `onnxruntime`: the CPU one goes first, and comes back if the GPU one fails
    pip = [sys.executable, "-m", "pip"]
    had_cpu = subprocess.run(pip + ["show", "-q", "onnxruntime"], capture_output=True).returncode == 0
    if had_cpu:
        subprocess.run(pip + ["uninstall", "-y", "-q", "onnxruntime"], capture_output=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 and had_cpu:
        subprocess.run(pip + ["install", "-q", "onnxruntime"], capture_output=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1][:200]
        raise NotRunnable(f"a GPU is here but neither torch nor onnxruntime can use it, and pip install "
                          f"onnxruntime-gpu failed: {last}")
    importlib.invalidate_caches()
    for name in [m for m in sys.modules if m == "onnxruntime" or m.startswith("onnxruntime.")]:
        del sys.modules[name]


def select(*, install: bool) -> tuple[list[str], str]:
    """(GPUs, backend) or NotRunnable."""
    listed = gpus()
    backend = choose_backend(torch_cuda=torch_sees_cuda(), ort_cuda=ort_has_cuda())
    if backend is None and install:
        install_onnxruntime_gpu()
        backend = choose_backend(torch_cuda=False, ort_cuda=ort_has_cuda())
    if backend is None:
        raise NotRunnable("a GPU is here but this Python's torch does not see CUDA and onnxruntime has no CUDA "
                          "provider" + ("" if install else " (--no-install: onnxruntime-gpu not installed)"))
    return listed, backend


class GpuMemory:
    """Peak of nvidia-smi's memory.used (MiB, all GPUs summed) while the block runs, over the value before."""

    def __enter__(self) -> "GpuMemory":
        self.before = self.peak = self._used()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _used(self) -> int:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30).stdout
        return sum(int(x) for x in out.split() if x.strip().isdigit())

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self._used())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._used())

    @property
    def mib(self) -> int:
        return self.peak - self.before


def cpu_agreement(bundle: Path, backend: str, sample: int) -> tuple[float, float]:
    """Cosine between the bundle's GPU vectors and the same chunks embedded on the CPU."""
    import numpy as np

    from kbc.format.bundle import Bundle
    from kbc.query.knowledge_base import KnowledgeBase

    with Bundle(bundle) as b:
        n = len(b.vectors)
        ids = np.linspace(0, n - 1, min(sample, n)).astype(int)
        gpu = np.asarray(b.vectors[ids], dtype=np.float32)
    from kbc.stages.chunk import embedded_text

    with KnowledgeBase(bundle, backend=backend, device="cpu", allow_model_mismatch=True) as kb:
        records = [kb.bundle.chunk(int(i)) for i in ids]
        cpu = kb.embedder.embed_documents([embedded_text(r) for r in records])
    cos = (gpu * cpu).sum(1) / (np.linalg.norm(gpu, axis=1) * np.linalg.norm(cpu, axis=1))
    return float(cos.min()), float(cos.mean())


def build(docs: Path, out: Path, backend: str, cache: Path, device: str) -> tuple[dict, int | None]:
    import contextlib

    import kbc

    with GpuMemory() if device == "cuda" else contextlib.nullcontext() as mem:
        t = time.perf_counter()
        r = kbc.build([str(docs)], str(out), backend=backend, device=device, use_cache=True, cache_dir=str(cache))
        wall = time.perf_counter() - t
    return {"chunks": r.chunks, "wall_s": wall, "seconds": r.seconds}, (mem.mib if mem else None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=100_000, help="records in the synthetic corpus")
    ap.add_argument("--financebench", default=str(SHARED / "eval" / "financebench-dev"))
    ap.add_argument("--sample", type=int, default=1000, help="chunks re-embedded on the CPU per bundle")
    ap.add_argument("--no-install", action="store_true", help="never pip install onnxruntime-gpu")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                    help="cpu: the same steps with no GPU (the script's own test; the cosine is then 1)")
    a = ap.parse_args()
    if a.device == "cpu":
        listed, backend = ["none (--device cpu)"], "onnx"
    else:
        try:
            listed, backend = select(install=not a.no_install)
        except NotRunnable as e:
            print(f"bench-gpu: {e}", file=sys.stderr)
            return NO_GPU
    print(f"gpus: {'; '.join(listed)}; backend: {backend} --device {a.device}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="kbc-gpu-"))
    corpora = []
    fb = Path(a.financebench)
    fb_docs = fb / "pdfs" if (fb / "pdfs").is_dir() else None
    if fb_docs is not None:
        corpora.append(("financebench-dev", fb_docs))
    else:
        print(f"financebench-dev: {fb} not present, skipped", flush=True)
    from scale import make_corpus

    synthetic = work / f"synthetic-{a.chunks}"
    make_corpus(synthetic, a.chunks)
    corpora.append((f"synthetic {a.chunks:,}", synthetic))
    print(f"{'corpus':<20}{'chunks':>9}{'wall s':>9}{'chunks/s':>10}{'GPU MiB':>9}{'cos min':>9}{'cos mean':>9}")
    for name, docs in corpora:
        out = work / (name.split()[0] + ".kbpack")
        r, mib = build(docs, out, backend, work / f"cache-{name.split()[0]}", a.device)
        lo, mean = cpu_agreement(out, backend, a.sample)
        print(f"{name:<20}{r['chunks']:>9}{r['wall_s']:>9.1f}{r['chunks'] / r['wall_s']:>10.0f}{'-' if mib is None else mib:>9}"
              f"{lo:>9.4f}{mean:>9.4f}   stages {json.dumps(r['seconds'])}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
