"""BERT-family sentence-transformers models to ONNX without torch: the graph is written op by op
with `onnx.helper` from `config.json` and the `.safetensors` weights (read as numpy, no pickle).

Covers what MiniLM, gte, bge and e5 are: `model_type` "bert" with absolute positions, exact (erf)
GELU, post-LayerNorm encoder layers; mean, CLS or max pooling; optional L2 normalisation. Anything
else (another architecture, `pytorch_model.bin` only, Dense layers) returns False and the caller
falls back to the torch export. The math follows transformers' BertModel line by line: the
attention mask adds float32's lowest value where the mask is 0, LayerNorm uses the config's eps,
`normalize` divides by max(norm, 1e-12) like torch.nn.functional.normalize.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CONVERTER_VERSION = "kbc-bert-1"
_GELU = {"gelu"}  # exact GELU; gelu_new/tanh variants are other functions: left to the torch export


def supported(model_dir: Path, pooling: str) -> str | None:
    """None when this converter can build the model's graph; else why not."""
    try:
        cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"config.json unreadable ({e})"
    if cfg.get("model_type") != "bert":
        return f"model_type {cfg.get('model_type')!r} is not bert"
    if cfg.get("hidden_act", "gelu") not in _GELU:
        return f"hidden_act {cfg.get('hidden_act')!r}"
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        return f"position_embedding_type {cfg.get('position_embedding_type')!r}"
    if pooling not in ("mean", "cls", "max"):
        return f"pooling {pooling!r}"
    if not list(model_dir.glob("*.safetensors")):
        return "no .safetensors weights"
    return None


def _weights(model_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    out: dict[str, np.ndarray] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(str(f)))
    # "bert.embeddings..." in some checkpoints, "embeddings..." in others; old ones say gamma/beta
    fixed = {}
    for k, v in out.items():
        k = k[5:] if k.startswith("bert.") else k
        k = k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        fixed[k] = np.asarray(v, dtype=np.float32)
    return fixed


def quantize_columns(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-column int8 (a column is an output channel of x @ W), exactly as onnxruntime's
    `quantize_dynamic(per_channel=True, weight_type=QInt8)` does it, column loop vectorised:
    scale = absmax / 127 (in float64, stored as float32; 1.0 for an all-zero column), q =
    round-half-even(W / scale) clipped to [-128, 127]. Returns (int8 [K, N], float32 scale [N])."""
    w = np.asarray(weight, dtype=np.float32)
    rmin = np.minimum(w.min(axis=0), np.float32(0))
    rmax = np.maximum(w.max(axis=0), np.float32(0))
    absmax = np.maximum(np.abs(rmin), np.abs(rmax))
    scale = (2.0 * absmax.astype(np.float64)) / 254.0
    scale = np.where(scale < np.finfo(np.float32).tiny, 1.0, scale).astype(np.float32)
    q = np.clip(np.round(w / scale), -128, 127).astype(np.int8)
    return q, scale


def convert(model_dir: Path, target: Path, *, pooling: str, normalize: bool, opset: int = 17,
            check: bool = False, quantize: bool = False) -> None:
    """Write the graph (inputs input_ids, attention_mask, token_type_ids; output `embedding`).

    `quantize` writes the int8 preset's graph directly: every weight MatMul as onnxruntime's
    dynamic quantisation writes it (DynamicQuantizeLinear on the input, MatMulInteger with the
    per-column int8 weights of `quantize_columns`, Cast, Mul by both scales), without its 2 s Python
    loop over 20,000 columns; and the word-embedding table as int8 rows with a scale each, which
    quantize_dynamic leaves in fp32 (MiniLM's int8 graph: 22 MB instead of 58 MB).

    `check` runs onnx's model checker on it: the tests do; a build does not, since the graph is
    the same code's output every time and the checker serialises all the weights once more
    (a third of the conversion time)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    w = _weights(model_dir)
    hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    head_dim = hidden // heads
    eps = float(cfg.get("layer_norm_eps", 1e-12))
    layers = int(cfg["num_hidden_layers"])
    nodes, inits = [], []
    counter = [0]

    def name(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(value, dtype=np.float32, label="c") -> str:
        n = name(label)
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), n))
        return n

    def weight(key: str, transpose: bool = False) -> str:
        if key not in w:
            raise KeyError(key)
        arr = w[key].T.copy() if transpose else w[key]
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, dtype=np.float32), key))
        return key

    def op(kind: str, inputs: list[str], **attrs) -> str:
        out = name(kind.lower())
        nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    quantized_inputs: dict[str, tuple[str, str, str]] = {}  # one DynamicQuantizeLinear per input

    def linear(x: str, prefix: str) -> str:
        if not quantize:
            return op("Add", [op("MatMul", [x, weight(f"{prefix}.weight", transpose=True)]), weight(f"{prefix}.bias")])
        key = f"{prefix}.weight"
        if key not in w:
            raise KeyError(key)
        q, scale = quantize_columns(w[key].T)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(q), f"{key}_quantized"))
        inits.append(numpy_helper.from_array(scale, f"{key}_scale"))
        inits.append(numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{key}_zero_point"))
        if x not in quantized_inputs:
            outs = (f"{x}_quantized", f"{x}_scale", f"{x}_zero_point")
            nodes.append(helper.make_node("DynamicQuantizeLinear", [x], list(outs)))
            quantized_inputs[x] = outs
        xq, xscale, xzero = quantized_inputs[x]
        both_scales = op("Mul", [xscale, f"{key}_scale"])
        product = op("MatMulInteger", [xq, f"{key}_quantized", xzero, f"{key}_zero_point"])
        y = op("Mul", [op("Cast", [product], to=TensorProto.FLOAT), both_scales])
        return op("Add", [y, weight(f"{prefix}.bias")])

    def layer_norm(x: str, prefix: str) -> str:
        return op("LayerNormalization", [x, weight(f"{prefix}.weight"), weight(f"{prefix}.bias")], axis=-1, epsilon=eps)

    def word_embeddings() -> str:
        """The input tokens' rows of the vocabulary table. In the int8 graph the table (half of
        MiniLM's weights) is int8 with one scale per row, and only the rows looked up are turned
        back into floats: the graph is a quarter of the size, and nothing else changes."""
        key = "embeddings.word_embeddings.weight"
        if not quantize:
            return op("Gather", [weight(key), "input_ids"], axis=0)
        q, scale = quantize_columns(w[key].T)  # a row of the table is a column of its transpose
        inits.append(numpy_helper.from_array(np.ascontiguousarray(q.T), f"{key}_quantized"))
        inits.append(numpy_helper.from_array(scale.reshape(-1, 1), f"{key}_scale"))
        rows = op("Cast", [op("Gather", [f"{key}_quantized", "input_ids"], axis=0)], to=TensorProto.FLOAT)
        return op("Mul", [rows, op("Gather", [f"{key}_scale", "input_ids"], axis=0)])

    # embeddings: words + positions 0..n-1 + token types, then LayerNorm
    seq_len = op("Slice", [op("Shape", ["input_ids"]), const([1], np.int64), const([2], np.int64)])
    positions = op("Slice", [weight("embeddings.position_embeddings.weight"), const([0], np.int64), seq_len,
                             const([0], np.int64)])
    x = op("Add", [word_embeddings(), positions])
    x = op("Add", [x, op("Gather", [weight("embeddings.token_type_embeddings.weight"), "token_type_ids"], axis=0)])
    x = layer_norm(x, "embeddings.LayerNorm")

    # attention bias [B, 1, 1, n]: 0 where attended, float32's lowest where masked (as transformers)
    mask_f = op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    bias = op("Mul", [op("Sub", [const(1.0), mask_f]), const(np.finfo(np.float32).min)])
    bias = op("Unsqueeze", [bias, const([1, 2], np.int64)])
    split_heads = const([0, 0, heads, head_dim], np.int64)
    merge_heads = const([0, 0, hidden], np.int64)
    scale = const(1.0 / np.sqrt(head_dim))

    for i in range(layers):
        p = f"encoder.layer.{i}"

        def heads_of(t: str) -> str:
            return op("Transpose", [op("Reshape", [t, split_heads])], perm=[0, 2, 1, 3])

        q = heads_of(linear(x, f"{p}.attention.self.query"))
        k = heads_of(linear(x, f"{p}.attention.self.key"))
        v = heads_of(linear(x, f"{p}.attention.self.value"))
        scores = op("Add", [op("Mul", [op("MatMul", [q, op("Transpose", [k], perm=[0, 1, 3, 2])]), scale]), bias])
        context = op("MatMul", [op("Softmax", [scores], axis=-1), v])
        context = op("Reshape", [op("Transpose", [context], perm=[0, 2, 1, 3]), merge_heads])
        attended = layer_norm(op("Add", [linear(context, f"{p}.attention.output.dense"), x]),
                              f"{p}.attention.output.LayerNorm")
        inner = linear(attended, f"{p}.intermediate.dense")
        gelu = op("Mul", [op("Mul", [inner, const(0.5)]),
                          op("Add", [op("Erf", [op("Div", [inner, const(np.sqrt(2.0))])]), const(1.0)])])
        x = layer_norm(op("Add", [linear(gelu, f"{p}.output.dense"), attended]), f"{p}.output.LayerNorm")

    # pooling over the attended tokens
    mask3 = op("Unsqueeze", [mask_f, const([2], np.int64)])  # [B, n, 1]
    if pooling == "cls":
        pooled = op("Squeeze", [op("Slice", [x, const([0], np.int64), const([1], np.int64), const([1], np.int64)]),
                                const([1], np.int64)])
    elif pooling == "max":
        masked = op("Add", [x, op("Mul", [op("Sub", [mask3, const(1.0)]), const(1e9)])])
        pooled = op("ReduceMax", [masked], axes=[1], keepdims=0)
    else:
        summed = op("ReduceSum", [op("Mul", [x, mask3]), const([1], np.int64)], keepdims=0)
        count = op("Max", [op("ReduceSum", [mask3, const([1], np.int64)], keepdims=0), const(1e-9)])
        pooled = op("Div", [summed, count])
    if normalize:
        norm = op("Sqrt", [op("ReduceSumSquare", [pooled], axes=[1], keepdims=1)])
        pooled = op("Div", [pooled, op("Max", [norm, const(1e-12)])])
    nodes.append(helper.make_node("Identity", [pooled], ["embedding"]))

    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
              for n in ("input_ids", "attention_mask", "token_type_ids")]
    output = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", hidden])
    graph = helper.make_graph(nodes, "sentence_embedding", inputs, [output], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="kbc", producer_version=CONVERTER_VERSION)
    model.ir_version = min(model.ir_version, 8)  # readable by onnxruntime releases back to 1.14
    if check:
        onnx.checker.check_model(model)
    onnx.save(model, str(target))
