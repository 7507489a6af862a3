"""fp32 against int8 against bf16 for the default model on this machine's CPU, side by side in one process.

    python bench/precision.py [KB.kbpack]     # chunk texts from a bundle (default: a build of sample_docs)

For each precision: the graph kbc would run (fp32: kbc's torch-free converter; int8: the same
converter's dynamic int8 graph, as `--backend onnx-int8` uses; bf16: the fp32 graph with every
weight MatMul computed in bfloat16, weights stored as bf16 and activations cast around it), one
onnxruntime session with one thread, the same texts run twice and the second round timed.
Prints the CPU and the instruction-set flags that decide int8/bf16 speed (avx512_vnni, amx_int8,
amx_bf16, avx512_bf16), tokens per second on one core, and the cosine to fp32 on the chunks and on
kbc's probe set (the check a device must pass: minimum >= 0.99). A precision onnxruntime cannot
run on this CPU is printed with onnxruntime's reason.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kbc.backends.bert_onnx import convert  # noqa: E402
from kbc.format.bundle import Bundle  # noqa: E402
from kbc.backends.model import TokenCounter, read_spec, resolve_model  # noqa: E402
from kbc.format.probes import probe_texts  # noqa: E402

FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16", "avx512_bf16")


def cpu() -> tuple[str, list[str]]:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), []
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    return name, [f for f in FLAGS if f in flags]


def to_bf16(src: Path, target: Path) -> None:
    """Every MatMul whose second input is a weight initializer runs in bfloat16: the weight stored
    as bf16, the activation cast to bf16 before and the product cast back to float after."""
    model = onnx.load(str(src))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    nodes = []
    for i, node in enumerate(g.node):
        if node.op_type != "MatMul" or node.input[1] not in inits:
            nodes.append(node)
            continue
        w = inits[node.input[1]]
        bf = numpy_helper.to_array(w).astype(np.float32)
        # round to nearest even, as a bf16 conversion does
        bits = bf.view(np.uint32)
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        t = helper.make_tensor(w.name + "_bf16", TensorProto.BFLOAT16, bf.shape, bits.tobytes(), raw=True)
        g.initializer.append(t)
        a16, y16 = f"{node.input[0]}_to_bf16_{i}", f"{node.output[0]}_bf16_{i}"
        nodes += [helper.make_node("Cast", [node.input[0]], [a16], to=TensorProto.BFLOAT16),
                  helper.make_node("MatMul", [a16, t.name], [y16], name=node.name),
                  helper.make_node("Cast", [y16], [node.output[0]], to=TensorProto.FLOAT)]
    del g.node[:]
    g.node.extend(nodes)
    onnx.save(model, str(target))


def main(bundle: str | None) -> None:
    ref = resolve_model(None)
    spec = read_spec(ref)
    d = Path(tempfile.mkdtemp())
    if bundle is None:
        import kbc

        bundle = str(d / "sample.kbpack")
        kbc.build([str(ROOT / "sample_docs")], bundle, use_cache=False)
    convert(ref.path, d / "fp32.onnx", pooling=spec.pooling, normalize=spec.normalize)
    convert(ref.path, d / "int8.onnx", pooling=spec.pooling, normalize=spec.normalize, quantize=True)
    to_bf16(d / "fp32.onnx", d / "bf16.onnx")
    tok = Tokenizer.from_file(str(ref.path / "tokenizer.json"))
    tok.enable_truncation(max_length=spec.max_seq_length)
    with Bundle(bundle) as b:
        chunks = [c["text"] for c in b.iter_chunks()][:200]
    probes = [p["text"] for p in probe_texts(TokenCounter(ref.path), max_seq_length=spec.max_seq_length, prompt="")]
    texts = [tok.encode(t) for t in chunks] + [tok.encode(t) for t in probes]
    tokens = sum(len(e.ids) for e in texts)
    name, flags = cpu()
    print(f"cpu: {name}; {os.cpu_count()} cores; flags: {', '.join(flags) or 'none of ' + ', '.join(FLAGS)}; "
          f"onnxruntime {ort.__version__}; {len(chunks)} chunks + {len(probes)} probes, {tokens} tokens")

    def feed(e, inputs) -> dict:
        n = len(e.ids)
        full = {"input_ids": np.asarray([e.ids]), "attention_mask": np.ones((1, n), dtype=np.int64),
                "token_type_ids": np.asarray([e.type_ids])}
        return {k: v for k, v in full.items() if k in inputs}

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    vectors, seconds = {}, {}
    for n in ("fp32", "int8", "bf16"):
        try:
            session = ort.InferenceSession(str(d / f"{n}.onnx"), options, providers=["CPUExecutionProvider"])
            inputs = {i.name for i in session.get_inputs()}
            for _ in range(2):  # the second round is the one reported
                t = time.perf_counter()
                vectors[n] = np.array([session.run(None, feed(e, inputs))[0][0] for e in texts], dtype=np.float32)
                seconds[n] = time.perf_counter() - t
        except Exception as e:  # onnxruntime's own words: the reason this precision does not run here
            print(f"{n:5s} does not run on this CPU's onnxruntime: {' '.join(str(e).split())[:300]}")
    print(f"{'graph':5s} {'seconds':>8s} {'tokens/s/core':>14s} {'vs fp32':>8s} {'MB':>6s}  cosine to fp32")
    k = len(chunks)
    for n in vectors:
        v = vectors[n]
        cos = (v * vectors["fp32"]).sum(1) / (np.linalg.norm(v, axis=1) * np.linalg.norm(vectors["fp32"], axis=1))
        print(f"{n:5s} {seconds[n]:8.2f} {tokens / seconds[n]:14.0f} {seconds['fp32'] / seconds[n]:7.2f}x "
              f"{(d / f'{n}.onnx').stat().st_size / 2**20:6.1f}  chunks min {cos[:k].min():.4f} mean {cos[:k].mean():.4f}, "
              f"probes min {cos[k:].min():.4f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
