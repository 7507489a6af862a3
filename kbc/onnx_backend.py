"""The fast embedding path: an ONNX export of the same weights, run by onnxruntime.

`import onnxruntime, tokenizers` costs ~0.1 s against ~5-13 s for sentence-transformers, which is
what makes `kbc query` answer in a fraction of a second. The export (transformer + pooling +
normalisation in one graph) is made once per model with torch and kept in the cache directory,
keyed by the weights' sha256; int8 is onnxruntime's dynamic per-channel quantisation of MatMul
weights only (per-tensor quantisation of every op loses too much: cosine 0.94 to fp32).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from .embed import EmbedderSpec, ModelRef
from .errors import ModelError

EXPORT_VERSION = "1"  # bump when the exported graph changes for the same weights
OPSET = 17
_SUPPORTED_POOLING = {"mean", "cls", "max"}


def export_dir(spec: EmbedderSpec) -> Path:
    from .cache import cache_dir

    return cache_dir() / "onnx" / f"{spec.weights_sha256[:24]}-v{EXPORT_VERSION}"


def _export_fp32(ref: ModelRef, spec: EmbedderSpec, target: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel

    if spec.pooling not in _SUPPORTED_POOLING:
        raise ModelError(f"{ref.path}: pooling {spec.pooling!r} has no ONNX export yet; use --backend torch")
    if any("Dense" in k for k in spec.files) or any(k.split("/")[0].endswith("_Dense") for k in spec.files):
        raise ModelError(f"{ref.path}: models with Dense layers have no ONNX export yet; use --backend torch")
    model = AutoModel.from_pretrained(str(ref.path), attn_implementation="eager", local_files_only=True)
    model.eval()
    pooling, normalize = spec.pooling, spec.normalize
    takes_types = "token_type_ids" in model.forward.__code__.co_varnames

    class Pooled(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            hidden = self.inner(**kwargs).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            if pooling == "cls":
                out = hidden[:, 0]
            elif pooling == "max":
                out = (hidden + (mask - 1.0) * 1e9).max(dim=1).values
            else:
                out = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if normalize:
                out = torch.nn.functional.normalize(out, p=2.0, dim=1)
            return out

    wrapped = Pooled(model)
    ids = torch.ones((2, 8), dtype=torch.long)
    args = (ids, torch.ones_like(ids)) + ((torch.zeros_like(ids),) if takes_types else ())
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if takes_types else [])
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["embedding"] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(wrapped, args, str(target), input_names=names, output_names=["embedding"],
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True)


def _quantize(src: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(target), per_channel=True, op_types_to_quantize=["MatMul"],
                     weight_type=QuantType.QInt8)


def ensure_export(ref: ModelRef, spec: EmbedderSpec, *, quantized: bool) -> Path:
    """Path of the ONNX graph for this model and precision, exporting it on first use."""
    d = export_dir(spec)
    fp32, int8 = d / "model.onnx", d / "model.int8.onnx"
    want = int8 if quantized else fp32
    if want.is_file():
        return want
    d.mkdir(parents=True, exist_ok=True)
    # Build under a temporary name and rename: concurrent builds never see half a graph.
    if not fp32.is_file():
        with tempfile.TemporaryDirectory(dir=d) as tmp:
            part = Path(tmp) / "model.onnx"
            try:
                _export_fp32(ref, spec, part)
            except ModelError:
                raise
            except Exception as e:
                raise ModelError(f"{ref.path}: ONNX export failed ({type(e).__name__}: {str(e)[:200]}); "
                                 "use --backend torch") from None
            os.replace(part, fp32)
    if quantized and not int8.is_file():
        with tempfile.TemporaryDirectory(dir=d) as tmp:
            part = Path(tmp) / "model.int8.onnx"
            _quantize(fp32, part)
            os.replace(part, int8)
    return want


class OnnxEmbedder:
    """Tokenise with the model's own tokenizer.json, run the exported graph with onnxruntime."""

    def __init__(self, graph: Path, tokenizer_json: Path, spec: EmbedderSpec, *, threads: int | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.spec = spec
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or os.cpu_count() or 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(graph), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ModelError(f"{graph}: onnxruntime cannot load the graph: {str(e)[:200]}") from None
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        self.tokenizer.enable_truncation(max_length=spec.max_seq_length)
        self.tokenizer.no_padding()

    @classmethod
    def for_model(cls, ref: ModelRef, spec: EmbedderSpec, *, quantized: bool) -> "OnnxEmbedder":
        graph = ensure_export(ref, spec, quantized=quantized)
        precision = "int8" if quantized else "float32"
        desc = replace(spec, backend="onnxruntime", precision=precision,
                       runtime={"graph_sha256": _graph_sha(graph), "export_version": EXPORT_VERSION,
                                "opset": OPSET, "quantization": "dynamic per-channel int8, MatMul weights only"
                                if quantized else "none"})
        return cls(graph, ref.path / "tokenizer.json", desc)

    def _encode(self, texts: Sequence[str], prompt: str, batch_size: int) -> np.ndarray:
        out = np.zeros((len(texts), self.spec.dim), dtype=np.float32)
        if not texts:
            return out
        prep = [(prompt + t).lower() if self.spec.do_lower_case else prompt + t for t in texts]
        encs = self.tokenizer.encode_batch(prep, add_special_tokens=True)
        # Length-sorted batches: far less padding than input order on real chunk lengths.
        order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(encs[i].ids) for i in idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            types = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                e = encs[i]
                n = len(e.ids)
                ids[row, :n] = e.ids
                mask[row, :n] = 1
                types[row, :n] = e.type_ids
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            vecs = self.session.run(None, {k: feed[k] for k in self.inputs})[0]
            out[idx] = vecs
        return out

    def embed_documents(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        return self._encode(texts, self.spec.document_prompt, batch_size)

    def embed_queries(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        return self._encode(texts, self.spec.query_prompt, batch_size)


_GRAPH_SHA: dict[str, str] = {}


def _graph_sha(graph: Path) -> str:
    key = str(graph)
    if key not in _GRAPH_SHA:
        from .cache import cached_file_hasher

        _GRAPH_SHA[key] = cached_file_hasher()(graph)
    return _GRAPH_SHA[key]
