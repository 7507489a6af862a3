"""`kbc build --with-encoder`: the bundle carries the ONNX graph that made its vectors and the
tokenizer, and a script with no kbc import (runtimes/python/kbpack_encoder.py: numpy, onnxruntime,
tokenizers) embeds the probe texts from the bundle alone and passes `kbc probe`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, run_kbc
from forge import rebuild, sections
from kbc.format.bundle import Bundle

SCRIPT = ROOT / "runtimes" / "python" / "kbpack_encoder.py"


@pytest.fixture(scope="module", params=["onnx", "onnx-int8"])
def with_encoder(request, tmp_path_factory, tiny_model):
    out = tmp_path_factory.mktemp("enc") / f"kb-{request.param}.kbpack"
    run_kbc("build", str(ROOT / "sample_docs"), "-o", str(out), "--model", str(tiny_model), "--backend",
            request.param, "--with-encoder", "-q", check=True)
    return out, request.param


def test_a_script_without_kbc_embeds_the_probes_from_the_bundle_and_passes(with_encoder, tmp_path):
    bundle, backend = with_encoder
    probes = tmp_path / "probes.npy"
    subprocess.run([sys.executable, str(SCRIPT), str(bundle), "--probes", str(probes)], check=True, timeout=120)
    proc = run_kbc("probe", str(bundle), "--vectors", str(probes), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["min"] > 0.9999  # the same graph: the same vectors, bar summation order
    question = tmp_path / "q.f32"
    subprocess.run([sys.executable, str(SCRIPT), str(bundle), "how do I water seedlings", "--out", str(question)],
                   check=True, timeout=120)
    with Bundle(bundle) as b:
        meta = b.manifest["encoder"]
        assert (meta["precision"], meta["format"]) == ("int8" if backend == "onnx-int8" else "float32", "onnx")
        assert meta["graph_sha256"] == b.manifest["embedder"]["runtime"]["graph_sha256"]
        assert np.fromfile(question, dtype="<f4").shape == (b.dim,)
        b.verify()


def test_an_encoder_that_is_not_the_one_recorded_is_refused(with_encoder, tmp_path):
    bundle, _ = with_encoder
    data = bundle.read_bytes()
    graph = bytearray(sections(data)["encoder_graph"][1])
    graph[-100] ^= 0xFF  # a different graph, every checksum recomputed
    forged = tmp_path / "forged.kbpack"
    forged.write_bytes(rebuild(data, {"encoder_graph": bytes(graph)}))
    proc = run_kbc("inspect", str(forged), "--verify")
    assert proc.returncode == 3 and "encoder_graph: differs from the manifest's encoder.graph_sha256" in proc.stderr


@pytest.mark.parametrize("key, value", [("query_prompt", "not the prompt: "), ("max_seq_length", 99),
                                        ("do_lower_case", True), ("graph_sha256", "0" * 64)])
def test_an_encoder_record_that_disagrees_with_the_embedder_is_refused(with_encoder, tmp_path, key, value):
    forged = _disagreeing(with_encoder, tmp_path, key, value)
    proc = run_kbc("inspect", str(forged), "--verify")
    assert proc.returncode == 3 and f"encoder.{key} disagrees with embedder" in proc.stderr


def _disagreeing(with_encoder, tmp_path, key, value):
    bundle, _ = with_encoder
    data = bundle.read_bytes()
    manifest = json.loads(sections(data)["manifest"][1])
    if key == "graph_sha256":  # the graph matches its own record, but not the vectors' embedder
        manifest["embedder"]["runtime"]["graph_sha256"] = value
    else:
        assert manifest["encoder"][key] != value
        manifest["encoder"][key] = value
    forged = tmp_path / "forged.kbpack"
    forged.write_bytes(rebuild(data, {"manifest": json.dumps(manifest).encode()}))
    return forged


@pytest.mark.parametrize("key", ["query_prompt", "do_lower_case", "graph_sha256"])
def test_libkbpack_refuses_the_same_disagreeing_encoders(with_encoder, tmp_path, key, kbpack_tool):
    value = {"query_prompt": "not the prompt: ", "do_lower_case": True, "graph_sha256": "0" * 64}[key]
    forged = _disagreeing(with_encoder, tmp_path, key, value)
    proc = subprocess.run([str(kbpack_tool), "verify", str(forged)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and f"encoder.{key} disagrees with embedder" in proc.stderr


def test_with_encoder_needs_an_onnx_backend(tmp_path, tiny_model):
    proc = run_kbc("build", str(ROOT / "sample_docs"), "-o", str(tmp_path / "kb.kbpack"), "--model", str(tiny_model),
                   "--backend", "torch", "--with-encoder")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "--with-encoder needs --backend onnx or onnx-int8" in proc.stderr and not (tmp_path / "kb.kbpack").exists()
