"""llama.cpp, the edge-slm app's engine, checked against a bundle's probes. `make conformance` only.

It needs a Python with llama-cpp-python (KBC_LLAMA_PYTHON) and GGUF conversions of the default
model (KBC_GGUF_DIR/minilm-f32.gguf, minilm-q8_0.gguf); `make conformance` builds both
(bench/conformance_setup.sh: about 5 minutes of compiling on 2 cores).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import run_kbc

pytestmark = pytest.mark.conformance

LLAMA_PYTHON = os.environ.get("KBC_LLAMA_PYTHON")
GGUF_DIR = Path(os.environ.get("KBC_GGUF_DIR", "."))
EMBED = Path(__file__).parent / "conformance" / "llama_embed.py"


@pytest.fixture(scope="module")
def probe_runs(sample_bundle, tmp_path_factory):
    if not LLAMA_PYTHON:
        pytest.skip("KBC_LLAMA_PYTHON not set: run `make conformance`")
    d = tmp_path_factory.mktemp("llama")
    probes = d / "probes.json"
    probes.write_text(run_kbc("probe", str(sample_bundle), "--texts", "--json", check=True).stdout)
    results = {}
    for quant in ("f32", "q8_0"):
        for mode in ("as-is", "truncate"):
            out = d / f"{quant}-{mode}.npy"
            subprocess.run([LLAMA_PYTHON, str(EMBED), str(probes), str(GGUF_DIR / f"minilm-{quant}.gguf"), str(out), mode],
                           check=True, capture_output=True, text=True)
            proc = run_kbc("probe", str(sample_bundle), "--vectors", str(out), "--json")
            rep = json.loads(proc.stdout)
            rep["exit"] = proc.returncode
            results[(quant, mode)] = rep
    print("\nllama.cpp vs the bundle's probes (cosine):")
    kinds = [p["kind"] for p in next(iter(results.values()))["probes"]]
    print(f"{'probe':<18}" + "".join(f"{q + ' ' + m:>16}" for q, m in results))
    for i, k in enumerate(kinds):
        print(f"{k:<18}" + "".join(f"{r['probes'][i]['cosine']:>16.6f}" for r in results.values()))
    print(f"{'min':<18}" + "".join(f"{r['min']:>16.6f}" for r in results.values()))
    print(f"{'exit code':<18}" + "".join(f"{r['exit']:>16}" for r in results.values()))
    return results


def test_llamacpp_f32_matches_once_it_truncates_like_the_model(probe_runs):
    assert probe_runs[("f32", "truncate")]["exit"] == 0 and probe_runs[("f32", "truncate")]["min"] > 0.999


def test_llamacpp_without_truncation_is_caught_by_the_probes(probe_runs):
    rep = probe_runs[("f32", "as-is")]
    by_kind = {p["kind"]: p["cosine"] for p in rep["probes"]}
    assert rep["exit"] == 6 and by_kind["past_token_limit"] < 0.99 and by_kind["short"] > 0.999


def test_llamacpp_q8_0_passes_when_truncating(probe_runs):
    assert probe_runs[("q8_0", "truncate")]["exit"] == 0
