"""The torch-free BERT converter (kbc.backends.bert_onnx) against the references: torch's ONNX export
and sentence-transformers itself, on the probe set (short, long, past the model's limit, many
scripts), for every pooling and with and without normalisation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from kbc.backends.bert_onnx import convert, supported
from kbc.backends.onnx import OnnxEmbedder, _export_fp32
from kbc.backends.model import TokenCounter, read_spec, resolve_model
from kbc.format.probes import probe_texts


def _variant(tiny_model: Path, tmp_path: Path, pooling: str, normalize: bool) -> Path:
    d = tmp_path / f"tiny-{pooling}-{normalize}"
    shutil.copytree(tiny_model, d)
    flags = {"pooling_mode_cls_token": pooling == "cls", "pooling_mode_mean_tokens": pooling == "mean",
             "pooling_mode_max_tokens": pooling == "max"}
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **flags}))
    modules = json.loads((d / "modules.json").read_text())
    if not normalize:  # kbc normalises when the model's similarity is cosine
        (d / "modules.json").write_text(json.dumps([m for m in modules if "Normalize" not in m["type"]]))
        st = json.loads((d / "config_sentence_transformers.json").read_text())
        (d / "config_sentence_transformers.json").write_text(json.dumps({**st, "similarity_fn_name": "dot"}))
    return d


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _texts(ref, spec) -> list[str]:
    counter = TokenCounter(ref.path, do_lower_case=spec.do_lower_case)
    return [p["text"] for p in probe_texts(counter, max_seq_length=spec.max_seq_length, prompt=spec.document_prompt)]


@pytest.mark.parametrize("pooling, normalize", [("mean", True), ("cls", True), ("max", True), ("mean", False)])
def test_converter_equals_torch_export_and_sentence_transformers(tiny_model, tmp_path, pooling, normalize):
    from kbc.backends.torch import SentenceTransformerEmbedder

    ref = resolve_model(str(_variant(tiny_model, tmp_path, pooling, normalize)))
    spec = read_spec(ref)
    assert (spec.pooling, spec.normalize) == (pooling, normalize) and supported(ref.path, pooling) is None
    ours, torchs = tmp_path / "ours.onnx", tmp_path / "torch.onnx"
    convert(ref.path, ours, pooling=pooling, normalize=normalize, check=True)
    _export_fp32(ref, spec, torchs)
    texts = _texts(ref, spec)
    a = OnnxEmbedder(ours, ref.path / "tokenizer.json", spec).embed_documents(texts)
    b = OnnxEmbedder(torchs, ref.path / "tokenizer.json", spec).embed_documents(texts)
    c = SentenceTransformerEmbedder(ref, spec).embed_documents(texts)
    assert _cosines(a, b).min() >= 0.99999 and _cosines(a, c).min() >= 0.99999
    assert np.abs(a - b).max() < 1e-4


def test_converter_matches_sentence_transformers_on_the_default_model(tmp_path):
    from kbc.backends.torch import SentenceTransformerEmbedder

    ref = resolve_model(None)
    spec = read_spec(ref)
    graph = tmp_path / "m.onnx"
    convert(ref.path, graph, pooling=spec.pooling, normalize=spec.normalize, check=True)
    texts = _texts(ref, spec)
    a = OnnxEmbedder(graph, ref.path / "tokenizer.json", spec).embed_documents(texts)
    c = SentenceTransformerEmbedder(ref, spec).embed_documents(texts)
    assert len(texts) >= 10 and _cosines(a, c).min() >= 0.99999


def test_int8_graph_quantises_as_onnxruntime_does_and_the_vocabulary_too(tiny_model, tmp_path, caplog):
    """The converter's int8 graph: every weight MatMul's int8 weights and scales are those of
    onnxruntime's quantize_dynamic, bit for bit; the word-embedding table (left fp32 by
    quantize_dynamic) is int8 rows with a scale each, within half a step of the fp32 table; and the
    vectors stay close to both quantize_dynamic's and the fp32 graph's."""
    import onnx
    from onnx import numpy_helper

    from kbc.backends.bert_onnx import quantize_columns
    from kbc.backends.onnx import _quantize

    ref = resolve_model(str(tiny_model))
    spec = read_spec(ref)
    fp32, ours, theirs = tmp_path / "m.onnx", tmp_path / "ours.int8.onnx", tmp_path / "theirs.int8.onnx"
    convert(ref.path, fp32, pooling=spec.pooling, normalize=spec.normalize)
    convert(ref.path, ours, pooling=spec.pooling, normalize=spec.normalize, quantize=True, check=True)
    import logging

    with caplog.at_level(logging.WARNING):
        _quantize(fp32, theirs)
    assert not caplog.records  # quantize_dynamic's "consider pre-processing" on the root logger is silenced

    def weights(path):
        return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}

    original, mine, reference = weights(fp32), weights(ours), weights(theirs)
    quantized = [k for k in reference if k.endswith(".weight_quantized")]
    assert len(quantized) == 6 * 2  # six MatMuls per layer, two layers
    for k in quantized:
        base = k[:-len("_quantized")]
        q, scale = quantize_columns(original[base])
        assert np.array_equal(q, reference[k]) and np.array_equal(scale, reference[base + "_scale"])
        assert np.array_equal(mine[k], reference[k]) and np.array_equal(mine[base + "_scale"], reference[base + "_scale"])
    table = "embeddings.word_embeddings.weight"
    assert table in reference and table not in mine and mine[table + "_quantized"].dtype == np.int8
    restored = mine[table + "_quantized"].astype(np.float32) * mine[table + "_scale"]
    assert np.all(np.abs(restored - reference[table]) <= mine[table + "_scale"] / 2 + 1e-7)

    texts = _texts(ref, spec)
    a = OnnxEmbedder(ours, ref.path / "tokenizer.json", spec).embed_documents(texts)
    b = OnnxEmbedder(theirs, ref.path / "tokenizer.json", spec).embed_documents(texts)
    full = OnnxEmbedder(fp32, ref.path / "tokenizer.json", spec).embed_documents(texts)
    assert _cosines(a, b).min() > 0.99 and _cosines(a, full).min() > 0.98
    assert ours.stat().st_size < 0.7 * theirs.stat().st_size


@pytest.mark.parametrize("edit, reason", [
    ({"model_type": "roberta"}, "model_type 'roberta' is not bert"),
    ({"hidden_act": "gelu_new"}, "hidden_act 'gelu_new'"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
])
def test_other_architectures_are_left_to_the_torch_export(tiny_model, tmp_path, edit, reason):
    d = tmp_path / "m"
    shutil.copytree(tiny_model, d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, **edit}))
    assert reason in supported(d, "mean")


def test_a_default_build_and_query_never_import_torch(tmp_path):
    """A CI runner's cold build: empty cache, the default model converted without torch."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Pumps\n\nThe pump moves water uphill.\n")
    code = ("import sys, kbc; kbc.build([sys.argv[1]], sys.argv[2]); "
            "kb = kbc.open(sys.argv[2]); kb.search('pump', k=1); "
            "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules))")
    env = {**__import__("os").environ, "KBC_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code, str(docs), str(tmp_path / "kb.kbpack")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]" and out.stderr == ""
