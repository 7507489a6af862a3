"""The fast embedding path: an ONNX export of the same weights, run by onnxruntime.

`import onnxruntime, tokenizers` costs ~0.1 s against ~5-13 s for sentence-transformers, which is
what makes `kbc query` answer in a fraction of a second. The graph (transformer + pooling +
normalisation in one) is made once per model and kept in the cache directory, keyed by the
weights' sha256: written directly from the safetensors weights for BERT-family models
(kbc.backends.bert_onnx: no torch import, under 1 s), with torch.onnx.export for anything else.
int8 is dynamic per-channel quantisation of MatMul weights only (per-tensor quantisation of every
op loses too much: cosine 0.94 to fp32): written by the converter for BERT-family models,
onnxruntime's `quantize_dynamic` on the torch export otherwise.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from .model import EmbedderSpec, ModelRef, check_model_folder, load_tokenizer
from ..errors import ModelError, option
from . import bert_onnx, register_backend

# Bump when a graph changes for the same weights; each precision has its own version, recorded in
# the manifest and part of the vector cache key, so a new int8 graph leaves fp32 caches and
# --reuse of fp32 bundles intact. fp32 2: the torch-free BERT converter. int8 3: written by the
# converter (was quantize_dynamic of the fp32 graph), vocabulary table quantised too.
EXPORT_VERSION = "2"
INT8_EXPORT_VERSION = "3"
INT8_GRAPH = f"model.int8-v{INT8_EXPORT_VERSION}.onnx"
OPSET = 17
_SUPPORTED_POOLING = {"mean", "cls", "max"}


def export_dir(spec: EmbedderSpec) -> Path:
    from ..infra.cache import cache_dir

    return cache_dir() / "onnx" / f"{spec.weights_sha256[:24]}-v{EXPORT_VERSION}"


def _check_modules(ref: ModelRef, spec: EmbedderSpec) -> None:
    if spec.pooling not in _SUPPORTED_POOLING:
        raise ModelError(f"{ref.path}: pooling {spec.pooling!r} has no ONNX export yet; use {option('backend')} torch")
    if any("Dense" in k for k in spec.files) or any(k.split("/")[0].endswith("_Dense") for k in spec.files):
        raise ModelError(f"{ref.path}: models with Dense layers have no ONNX export yet; use {option('backend')} torch")


def exporter_of(graph: Path) -> str:
    try:
        return (graph.parent / "exporter.txt").read_text().strip() or "torch.onnx.export"
    except OSError:
        return "torch.onnx.export"


def _export_fp32(ref: ModelRef, spec: EmbedderSpec, target: Path) -> None:
    """The export prints torch's tracer warnings and transformers' loading bars, which say nothing
    to a kbc user (the export is checked against torch by the test suite): they are silenced."""
    import warnings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        _export_fp32_quietly(ref, spec, target)


def _export_fp32_quietly(ref: ModelRef, spec: EmbedderSpec, target: Path) -> None:
    import torch
    from transformers import AutoModel

    # never code from the folder (trust_remote_code), and a pickle only when the user allowed it
    model = AutoModel.from_pretrained(str(ref.path), attn_implementation="eager", local_files_only=True,
                                      trust_remote_code=False,
                                      use_safetensors=None if ref.allow_pickle_weights else True)
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
    """onnxruntime's dynamic quantisation, for graphs the BERT converter does not write."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it logs "consider pre-processing" on the root logger every time
    try:
        quantize_dynamic(str(src), str(target), per_channel=True, op_types_to_quantize=["MatMul"],
                         weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def _mark_used(graph: Path) -> None:
    """The graph's mtime is its last use, for `kbc cache prune` (refreshed at most hourly)."""
    import time

    from ..infra.cache import TOUCH_EVERY_S

    try:
        if graph.stat().st_mtime < time.time() - TOUCH_EVERY_S:
            os.utime(graph)
    except OSError:  # a read-only cache: its exports just look older
        pass


def ensure_export(ref: ModelRef, spec: EmbedderSpec, *, quantized: bool) -> Path:
    """Path of the ONNX graph for this model and precision, exporting it on first use."""
    d = export_dir(spec)
    fp32, int8 = d / "model.onnx", d / INT8_GRAPH
    want = int8 if quantized else fp32
    if want.is_file():
        _mark_used(want)
        return want
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=d):
            pass
    except OSError as e:  # a read-only or full cache directory must not fail the build
        import sys

        print(f"kbc: warning: cannot write the ONNX export to {d} ({e.strerror}); exporting to a "
              "temporary folder for this run only", file=sys.stderr)
        d = Path(tempfile.mkdtemp(prefix="kbc-onnx-"))
        fp32, int8 = d / "model.onnx", d / INT8_GRAPH
        want = int8 if quantized else fp32
    _check_modules(ref, spec)
    # BERT-family models get both graphs from kbc's converter, each written directly; others get
    # the torch export, which onnxruntime quantises for the int8 preset.
    converted = bert_onnx.supported(ref.path, spec.pooling) is None
    exporter = bert_onnx.CONVERTER_VERSION if converted else "torch.onnx.export"

    def make(target: Path, write) -> None:
        # built under a temporary name and renamed: concurrent builds never see half a graph
        with tempfile.TemporaryDirectory(dir=d) as tmp:
            part = Path(tmp) / target.name
            try:
                write(part)
            except ModelError:
                raise
            except Exception as e:
                raise ModelError(f"{ref.path}: ONNX export failed ({type(e).__name__}: {str(e)[:200]}); "
                                 f"use {option('backend')} torch") from None
            (d / "exporter.txt").write_text(exporter)
            os.replace(part, target)

    if converted:
        make(want, lambda part: bert_onnx.convert(ref.path, part, pooling=spec.pooling, normalize=spec.normalize,
                                                  opset=OPSET, quantize=quantized))
        return want
    if not fp32.is_file():
        make(fp32, lambda part: _export_fp32(ref, spec, part))
    if quantized:
        make(int8, lambda part: _quantize(fp32, part))
    return want


class OnnxEmbedder:
    """Tokenise with the model's own tokenizer.json, run the exported graph with onnxruntime.

    Each text runs alone, unpadded. Measured on 614 chunks of the benchmark corpus (2 cores) that
    is faster than padded batches (10.6 s vs 12.4 s), and it makes every vector a function of its
    text only, never of its batch companions: that is what lets a cached rebuild be byte-identical
    to a clean one. Throughput comes from one single-threaded session per core instead.
    """

    def __init__(self, graph: Path, tokenizer_json: Path, spec: EmbedderSpec, *, sessions: int = 1,
                 providers: tuple[str, ...] = ("CPUExecutionProvider",)):
        self.spec = spec
        self._graph, self._tokenizer_json, self._providers = graph, tokenizer_json, providers
        self._n_sessions = max(1, min(sessions, os.cpu_count() or 1))
        self._sessions: list | None = None  # created on first use: a fully cached build never needs them
        self._lock = __import__("threading").Lock()
        self.tokenizer = load_tokenizer(tokenizer_json)  # its size checked before it is parsed
        self.tokenizer.enable_truncation(max_length=spec.max_seq_length)
        self.tokenizer.no_padding()

    @property
    def sessions(self) -> list:
        return self._get_sessions(self._n_sessions)

    def warm(self) -> None:
        """Create the first session ahead of need (called from a background thread)."""
        self._get_sessions(1)

    def _get_sessions(self, wanted: int) -> list:
        with self._lock:
            return self._make_sessions(wanted)

    def _make_sessions(self, wanted: int) -> list:
        # Sessions cost ~0.1 s each to create: a rebuild that embeds a handful of chunks uses one.
        if self._sessions is not None and len(self._sessions) < wanted:
            self._sessions = None
        if self._sessions is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # One thread per session, always: a vector must not depend on how many sessions ran
            # (a small window uses one, a big one one per core) nor on the engine or machine
            # size that ran it; that is what makes builds byte-identical across engines.
            opts.intra_op_num_threads = 1
            opts.log_severity_level = 3
            try:
                self._sessions = [ort.InferenceSession(str(self._graph), sess_options=opts,
                                                       providers=list(self._providers))
                                  for _ in range(wanted)]
            except Exception as e:
                raise ModelError(f"{self._graph}: onnxruntime cannot load the graph: {str(e)[:200]}") from None
            self.inputs = [i.name for i in self._sessions[0].get_inputs()]
        return self._sessions

    def encoder_description(self) -> tuple[dict, Path, Path]:
        """What `--with-encoder` stores: the manifest's `encoder` object (how to run the graph on a
        question so the vector matches the bundle's), the graph file and tokenizer.json."""
        session = self._get_sessions(max(1, len(self._sessions or [])))[0]
        spec = self.spec
        meta = {"format": "onnx", "graph": "encoder_graph", "tokenizer": "encoder_tokenizer",
                "graph_sha256": spec.runtime["graph_sha256"], "precision": spec.precision,
                "inputs": [i.name for i in session.get_inputs()], "output": session.get_outputs()[0].name,
                "pooling": spec.pooling, "normalized": spec.normalize, "query_prompt": spec.query_prompt,
                "do_lower_case": spec.do_lower_case, "max_seq_length": spec.max_seq_length,
                "truncation": "the tokenizer's encoding of query_prompt + question, with special tokens, "
                              "cut to max_seq_length tokens",
                "batching": "one text per run, unpadded: attention_mask all ones, token_type_ids all zeros",
                "opset": OPSET}
        return meta, self._graph, self._tokenizer_json

    def __reduce__(self):
        """Sent to another process (a Ray actor) as its recipe, not its sessions: the receiver
        opens the same graph and tokenizer, one session per CPU it was given."""
        return (_restore, (self._graph, self._tokenizer_json, self.spec, self._providers, self._n_sessions))

    def with_sessions(self, sessions: int) -> "OnnxEmbedder":
        """The same embedder running `sessions` sessions (a Ray actor uses the CPUs it was given)."""
        return _restore(self._graph, self._tokenizer_json, self.spec, self._providers, sessions)

    @classmethod
    def for_model(cls, ref: ModelRef, spec: EmbedderSpec, *, quantized: bool, sessions: int = 1) -> "OnnxEmbedder":
        check_model_folder(ref.path, allow_pickle_weights=ref.allow_pickle_weights)
        graph = ensure_export(ref, spec, quantized=quantized)
        precision = "int8" if quantized else "float32"
        desc = replace(spec, backend="onnxruntime", precision=precision,
                       runtime={"graph_sha256": _graph_sha(graph),
                                "export_version": INT8_EXPORT_VERSION if quantized else EXPORT_VERSION,
                                "exporter": exporter_of(graph),
                                "opset": OPSET, "batching": "one text per run, unpadded",
                                "quantization": "dynamic per-channel int8, MatMul weights only"
                                if quantized else "none"})
        return cls(graph, ref.path / "tokenizer.json", desc, sessions=sessions)

    def _run(self, session, enc) -> np.ndarray:
        n = len(enc.ids)
        feed = {"input_ids": np.asarray([enc.ids], dtype=np.int64),
                "attention_mask": np.ones((1, n), dtype=np.int64),
                "token_type_ids": np.asarray([enc.type_ids], dtype=np.int64)}
        return session.run(None, {k: feed[k] for k in self.inputs})[0][0]

    def _encode(self, texts: Sequence[str], prompt: str) -> np.ndarray:
        out = np.zeros((len(texts), self.spec.dim), dtype=np.float32)
        if not texts:
            return out
        prep = [(prompt + t).lower() if self.spec.do_lower_case else prompt + t for t in texts]
        encs = self.tokenizer.encode_batch(prep, add_special_tokens=True)
        # A few texts run on one session, unless the sessions are made already (the probes after a
        # build): making a session costs ~0.1 s, more than a handful of texts take.
        made = self._sessions is not None and len(self._sessions) >= self._n_sessions
        if self._n_sessions == 1 or len(texts) < (2 if made else 64):
            session = (self._sessions or self._get_sessions(1))[0]
            for i, e in enumerate(encs):
                out[i] = self._run(session, e)
            return out
        import threading
        from concurrent.futures import ThreadPoolExecutor

        order = iter(sorted(range(len(encs)), key=lambda i: -len(encs[i].ids)))  # longest first: even finish
        lock = threading.Lock()
        stop = threading.Event()

        def worker(session) -> None:
            while not stop.is_set():
                with lock:
                    i = next(order, None)
                if i is None:
                    return
                out[i] = self._run(session, encs[i])  # onnxruntime releases the GIL while it runs

        with ThreadPoolExecutor(len(self.sessions)) as pool:
            futures = [pool.submit(worker, s) for s in self.sessions]
            try:
                for f in futures:
                    f.result()
            except BaseException:  # Ctrl-C, SIGTERM, a failed run: the pool's exit waits for the text
                stop.set()         # each worker runs now, not for every text left in the batch
                raise
        return out

    def embed_documents(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        return self._encode(texts, self.spec.document_prompt)

    def embed_queries(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        return self._encode(texts, self.spec.query_prompt)


def _restore(graph: Path, tokenizer_json: Path, spec: EmbedderSpec, providers: tuple[str, ...],
             sessions: int) -> "OnnxEmbedder":
    return OnnxEmbedder(graph, tokenizer_json, spec, sessions=sessions, providers=providers)


_GRAPH_SHA: dict[str, str] = {}


def _graph_sha(graph: Path) -> str:
    key = str(graph)
    if key not in _GRAPH_SHA:
        from ..infra.cache import cached_file_hasher

        _GRAPH_SHA[key] = cached_file_hasher()(graph)
    return _GRAPH_SHA[key]


def _providers(device: str | None) -> tuple[tuple[str, ...], str]:
    """onnxruntime providers for --device, and the device actually used."""
    import onnxruntime as ort

    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device in (None, "cpu") or (device == "auto" and not cuda):
        return ("CPUExecutionProvider",), "cpu"
    if device in ("cuda", "auto"):
        if not cuda:
            raise ModelError(f"{option('device')} cuda: this onnxruntime has no CUDA provider (pip install "
                             f"onnxruntime-gpu, or use {option('device')} cpu)")
        return ("CUDAExecutionProvider", "CPUExecutionProvider"), "cuda"
    raise ModelError(f"{option('device')} {device}: the onnx backends run on cpu or cuda")


def _load(ref: ModelRef, spec: EmbedderSpec, *, quantized: bool, device: str | None, sessions: int) -> OnnxEmbedder:
    providers, used = _providers(device)
    embedder = OnnxEmbedder.for_model(ref, spec, quantized=quantized, sessions=sessions if used == "cpu" else 1)
    if used != "cpu":  # recorded like any engine detail: GPU floats are not the CPU's
        embedder.spec = replace(embedder.spec, runtime={**embedder.spec.runtime, "device": used})
        embedder._providers = providers
    return embedder


@register_backend("onnx", description="onnxruntime, fp32: the same vectors as torch, faster (default)")
def load_onnx(ref: ModelRef, spec: EmbedderSpec, *, device: str | None = None, sessions: int = 1) -> OnnxEmbedder:
    return _load(ref, spec, quantized=False, device=device, sessions=sessions)


@register_backend("onnx-int8", description="onnxruntime, int8 MatMul weights: ~2x faster with VNNI, slightly lower quality")
def load_onnx_int8(ref: ModelRef, spec: EmbedderSpec, *, device: str | None = None, sessions: int = 1) -> OnnxEmbedder:
    return _load(ref, spec, quantized=True, device=device, sessions=sessions)
