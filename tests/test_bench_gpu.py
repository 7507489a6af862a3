"""bench/gpu.py (`make bench-gpu`) without a GPU: how it chooses a backend, that every way of not
having a usable GPU is one line and exit 2, and that the rest of its path runs (on the CPU)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu.py"
sys.path.insert(0, str(ROOT / "bench"))

import gpu  # noqa: E402


def fake_smi(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    smi = folder / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + body)
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    return folder


def run(*args: str, path: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)


def one_line_exit_2(proc: subprocess.CompletedProcess, words: str) -> None:
    assert proc.returncode == gpu.NO_GPU == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("bench-gpu: ") and words in proc.stderr, proc.stderr


def test_torch_is_chosen_when_it_sees_cuda_then_onnxruntime_then_nothing():
    assert gpu.choose_backend(torch_cuda=True, ort_cuda=True) == "torch"
    assert gpu.choose_backend(torch_cuda=True, ort_cuda=False) == "torch"
    assert gpu.choose_backend(torch_cuda=False, ort_cuda=True) == "onnx"
    assert gpu.choose_backend(torch_cuda=False, ort_cuda=False) is None


def test_no_nvidia_smi_is_one_line_exit_2(tmp_path):
    one_line_exit_2(run(path=str(tmp_path)), "nvidia-smi is not on PATH")


def test_a_failing_nvidia_smi_is_one_line_with_its_reason(tmp_path):
    bin_ = fake_smi(tmp_path / "bin", "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver\"\nexit 9\n")
    one_line_exit_2(run(path=f"{bin_}:/usr/bin:/bin"), "couldn't communicate with the NVIDIA driver")


def test_an_nvidia_smi_listing_no_gpu_is_one_line(tmp_path):
    bin_ = fake_smi(tmp_path / "bin", "echo 'No devices were found'\nexit 6\n")
    one_line_exit_2(run(path=f"{bin_}:/usr/bin:/bin"), "No devices were found")


@pytest.mark.skipif(gpu.torch_sees_cuda() or gpu.ort_has_cuda(), reason="this machine can use a GPU")
def test_a_gpu_no_runtime_can_use_is_one_line_and_nothing_installed(tmp_path):
    bin_ = fake_smi(tmp_path / "bin", "echo 'GPU 0: NVIDIA H200 (UUID: GPU-0)'\n")
    one_line_exit_2(run("--no-install", path=f"{bin_}:/usr/bin:/bin"), "torch does not see CUDA")


def test_the_rest_of_the_path_runs_on_the_cpu(tmp_path):
    """--device cpu: corpus, build, the CPU agreement check and the table, on a small corpus."""
    proc = run("--device", "cpu", "--chunks", "150", "--sample", "40", "--financebench", str(tmp_path / "absent"),
               path=os.environ["PATH"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = next(line for line in proc.stdout.splitlines() if line.startswith("synthetic 150"))
    cols = row.split()
    assert cols[2] == "150" and float(cols[6]) > 0.9999, row  # chunks, then cosine min: CPU against CPU
    assert "financebench-dev" in proc.stdout and "not present, skipped" in proc.stdout
