"""int8 schemes against fp32 for the default model, side by side in one process.

    python bench/int8_schemes.py KB.kbpack     # a bundle built from the bench corpus (its chunk texts)

Compares kbc's int8 graph (dynamic: activations quantised per run) with onnxruntime's static QDQ
quantisation (per-channel weights, MinMax calibration on 100 of the bundle's chunks, int8 or uint8
activations): cosine to fp32 on 100 chunks and on the probe set, time for those texts on one
session with one thread, and graph size. Prints one line per scheme.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from tokenizers import Tokenizer

from kbc.backends.bert_onnx import convert
from kbc.format.bundle import Bundle
from kbc.backends.model import TokenCounter, read_spec, resolve_model
from kbc.format.probes import probe_texts


def main(bundle: str) -> None:
    ref = resolve_model(None)
    spec = read_spec(ref)
    d = Path(tempfile.mkdtemp())
    convert(ref.path, d / "fp32.onnx", pooling=spec.pooling, normalize=spec.normalize)
    convert(ref.path, d / "dynamic.onnx", pooling=spec.pooling, normalize=spec.normalize, quantize=True)
    tok = Tokenizer.from_file(str(ref.path / "tokenizer.json"))
    tok.enable_truncation(max_length=spec.max_seq_length)
    with Bundle(bundle) as b:
        chunks = [c["text"] for c in b.iter_chunks()]
    calibration = [tok.encode(t) for t in chunks[200:300]]

    def feed(e) -> dict:
        n = len(e.ids)
        return {"input_ids": np.asarray([e.ids]), "attention_mask": np.ones((1, n), dtype=np.int64),
                "token_type_ids": np.asarray([e.type_ids])}

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(calibration)

        def get_next(self):
            e = next(self.items, None)
            return None if e is None else feed(e)

    logging.getLogger().setLevel(logging.ERROR)
    for name, activations in (("static_qdq_int8", QuantType.QInt8), ("static_qdq_uint8", QuantType.QUInt8)):
        quantize_static(str(d / "fp32.onnx"), str(d / f"{name}.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=activations, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["MatMul"], calibrate_method=CalibrationMethod.MinMax)
    probes = [p["text"] for p in probe_texts(TokenCounter(ref.path), max_seq_length=spec.max_seq_length, prompt="")]
    texts = [tok.encode(t) for t in chunks[:100]] + [tok.encode(t) for t in probes]
    names = ["fp32", "dynamic", "static_qdq_int8", "static_qdq_uint8"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sessions = {n: ort.InferenceSession(str(d / f"{n}.onnx"), options) for n in names}
    vectors, seconds = {}, {}
    for _ in range(2):  # the second round is the one reported
        for n in names:
            inputs = [i.name for i in sessions[n].get_inputs()]
            t = time.perf_counter()
            vectors[n] = np.array([sessions[n].run(None, {k: v for k, v in feed(e).items() if k in inputs})[0][0]
                                   for e in texts])
            seconds[n] = time.perf_counter() - t
    for n in names:
        cos = (vectors[n] * vectors["fp32"]).sum(1) / np.linalg.norm(vectors[n], axis=1)
        print(f"{n:18s} {seconds[n]:6.2f} s  {(d / f'{n}.onnx').stat().st_size / 2**20:6.1f} MB  cosine to fp32: "
              f"chunks min {cos[:100].min():.4f} mean {cos[:100].mean():.4f}, probes min {cos[100:].min():.4f}")


if __name__ == "__main__":
    main(sys.argv[1])
