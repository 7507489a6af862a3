"""The encoder sections as untrusted input: an ONNX graph and a tokenizer.json checked before
onnxruntime or tokenizers sees a byte of them (schemas/FORMAT.md §5.1).

onnxruntime follows external-data references (file paths below the working directory), resolves
custom-op domains and allocates what tensors declare; tokenizers parses whatever JSON it is given.
So the graph is walked here as protobuf, field by field, with a fixed allow-list of fields per
message: no external data, only the default ONNX domain, only the operators of a BERT-family
encoder (`ALLOWED_OPS`: what kbc's own converter and torch export write, plus their close
relatives), no subgraphs, functions or training info, and every tensor's declared size held by the
bytes it carries. The walk reads headers only (weights are skipped, not copied), never recurses
past the fixed depth of Model > Graph > Node > Attribute > Tensor, and stops at the first refusal.

This is the one copy: kbc (kbc/format/bundle.py: `kbc inspect --verify`, `kbc query`) imports it
from here, as does this package's encoder (kbpack_runtime.encoder), which runs on a device without
kbc. libkbpack's runtimes/c/onnx_check.c walks the graph the same way (tests compare the two).
Pure Python: no import beyond the standard library.
"""

from __future__ import annotations

import re

MAX_GRAPH_BYTES = (2 << 30) - 1  # protobuf's own limit for one message
MAX_TENSOR_BYTES = 2 << 30  # all tensors' declared sizes together
MAX_NODES = 100_000
MAX_TENSORS = 100_000  # initializers and tensor attributes
MAX_TENSOR_RANK = 16
MAX_TOKENIZER_BYTES = 32 << 20  # XLM-R's tokenizer.json, the largest of the family, is 17 MB
MAX_TOKENIZER_DEPTH = 32  # real ones nest 5 deep

DEFAULT_DOMAINS = frozenset({"", "ai.onnx"})
# kbc's BERT converter (fp32 and int8), torch.onnx.export of BERT-family models (opset 17) and
# onnxruntime's dynamic quantisation of it; then the ops such exports commonly add.
ALLOWED_OPS = frozenset({
    "Add", "And", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape", "CumSum", "Div",
    "DynamicQuantizeLinear", "Equal", "Erf", "Exp", "Expand", "Flatten", "Gather", "GatherElements",
    "Gemm", "Greater", "GreaterOrEqual", "Identity", "LayerNormalization", "Less", "LessOrEqual",
    "MatMul", "MatMulInteger", "Max", "Min", "Mul", "Neg", "Not", "Or", "Pow", "Range", "Reciprocal",
    "ReduceL2", "ReduceMax", "ReduceMean", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Shape",
    "Sigmoid", "Slice", "Softmax", "Split", "Sqrt", "Squeeze", "Sub", "Tanh", "Transpose", "Unsqueeze",
    "Where",
})
# TensorProto.DataType -> bytes per element; strings, complex, float8 and 4-bit types are refused
ELEMENT_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}

# field numbers each message may use (onnx.proto); any other field is refused
_MODEL = {1: "ir_version", 2: "producer_name", 3: "producer_version", 4: "domain", 5: "model_version",
          6: "doc_string", 7: "graph", 8: "opset_import", 14: "metadata_props"}
_MODEL_REFUSED = {20: "training_info", 25: "functions (local functions)", 26: "configuration"}
_GRAPH = {1: "node", 2: "name", 5: "initializer", 10: "doc_string", 11: "input", 12: "output",
          13: "value_info", 14: "quantization_annotation", 16: "metadata_props"}
_GRAPH_REFUSED = {15: "sparse_initializer"}
_NODE = {1: "input", 2: "output", 3: "name", 4: "op_type", 5: "attribute", 6: "doc_string", 7: "domain",
         9: "metadata_props"}
_ATTRIBUTE = {1: "name", 2: "f", 3: "i", 4: "s", 5: "t", 7: "floats", 8: "ints", 9: "strings", 10: "tensors",
              13: "doc_string", 20: "type"}
_ATTRIBUTE_REFUSED = {6: "g (a subgraph)", 11: "graphs (subgraphs)", 22: "sparse_tensor", 23: "sparse_tensors",
                      14: "tp (a type)", 15: "type_protos", 21: "ref_attr_name"}
_TENSOR = {1: "dims", 2: "data_type", 4: "float_data", 5: "int32_data", 7: "int64_data", 8: "name",
           9: "raw_data", 10: "double_data", 11: "uint64_data", 12: "doc_string", 14: "data_location",
           16: "metadata_props"}
_TENSOR_REFUSED = {3: "segment", 6: "string_data", 13: "external_data (its bytes in a file outside the graph)"}
_VARINT_DATA = {5, 7, 11}  # each element at least one byte on the wire, up to 8 in memory
_VALUE_INFO = {1: "name", 2: "type", 3: "doc_string", 4: "metadata_props"}
_TYPE = {1: "tensor_type", 6: "denotation"}
_TENSOR_TYPE = {1: "elem_type", 2: "shape"}
_SHAPE = {1: "dim"}
_DIM = {1: "dim_value", 2: "dim_param", 3: "denotation"}
_OPSET = {1: "domain", 2: "version"}
_ENTRY = {1: "key", 2: "value"}  # StringStringEntryProto (metadata_props)


class EncoderRefusal(ValueError):
    """Why an encoder graph or tokenizer is refused, in one line."""


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise EncoderRefusal("malformed protobuf (a varint runs past its message)")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, pos
        shift += 7


def _fields(buf, pos: int, end: int, allowed: dict, refused: dict, what: str):
    """(field, wire type, value or start, end) of each field of one message in buf[pos:end]."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise EncoderRefusal(f"malformed protobuf (field number 0 in {what})")
        if field in refused:
            raise EncoderRefusal(f"{what} has {refused[field]}, which a bundle's encoder may not use")
        if field not in allowed:
            raise EncoderRefusal(f"{what} has unknown field {field}")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield field, 0, value, pos
        elif wire == 2:
            size, pos = _varint(buf, pos, end)
            if size > end - pos:
                raise EncoderRefusal(f"malformed protobuf ({what}.{allowed[field]} runs past its message)")
            yield field, 2, pos, pos + size
            pos += size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if width > end - pos:
                raise EncoderRefusal(f"malformed protobuf ({what}.{allowed[field]} runs past its message)")
            yield field, wire, pos, pos + width
            pos += width
        else:
            raise EncoderRefusal(f"malformed protobuf (wire type {wire} in {what})")


def _text(buf, start: int, end: int) -> str:
    try:
        return bytes(buf[start:end]).decode("utf-8")
    except UnicodeDecodeError:
        raise EncoderRefusal("malformed protobuf (a name is not UTF-8)") from None


def _want(wire: int, expected: int, what: str) -> None:
    if wire != expected:
        raise EncoderRefusal(f"malformed protobuf ({what} has the wrong wire type)")


def _flat(buf, start: int, end: int, allowed: dict, what: str) -> None:
    for _ in _fields(buf, start, end, allowed, {}, what):
        pass


class _Walk:
    def __init__(self, buf):
        self.buf = buf
        self.nodes = self.tensors = self.declared = 0
        self.ops: set[str] = set()

    def tensor(self, start: int, end: int, where: str) -> None:
        self.tensors += 1
        if self.tensors > MAX_TENSORS:
            raise EncoderRefusal(f"more than {MAX_TENSORS} tensors")
        dims, dtype, payload, name = [], 1, 0, "?"
        for field, wire, a, b in _fields(self.buf, start, end, _TENSOR, _TENSOR_REFUSED, f"tensor in {where}"):
            if field == 1:  # dims: packed or one varint each
                if wire == 0:
                    dims.append(a)
                else:
                    pos = a
                    while pos < b:
                        d, pos = _varint(self.buf, pos, b)
                        dims.append(d)
                if len(dims) > MAX_TENSOR_RANK:
                    raise EncoderRefusal(f"tensor in {where} has more than {MAX_TENSOR_RANK} dimensions")
            elif field == 2:
                _want(wire, 0, "tensor data_type")
                dtype = a
            elif field == 8:
                name = _text(self.buf, a, b)[:80]
            elif field == 14:
                _want(wire, 0, "tensor data_location")
                if a != 0:
                    raise EncoderRefusal(f"tensor {name!r} in {where} has data_location EXTERNAL (its bytes in a "
                                         "file outside the graph), which a bundle's encoder may not use")
            elif field in (4, 5, 7, 9, 10, 11):
                if wire == 2:
                    payload += (b - a) * (8 if field in _VARINT_DATA else 1)
                else:
                    payload += 8 if wire == 0 else b - a
        if dtype not in ELEMENT_BYTES:
            raise EncoderRefusal(f"tensor {name!r} in {where} has data type {dtype}, which a bundle's encoder may not use")
        size = ELEMENT_BYTES[dtype]
        for d in dims:
            if d >= 1 << 63:
                raise EncoderRefusal(f"tensor {name!r} in {where} has a negative dimension")
            size *= d
            if size > MAX_TENSOR_BYTES:
                break
        if size > payload:
            raise EncoderRefusal(f"tensor {name!r} in {where} declares {size} bytes but holds {payload}")
        self.declared += size
        if self.declared > MAX_TENSOR_BYTES:
            raise EncoderRefusal(f"tensors declare more than {MAX_TENSOR_BYTES} bytes in all")

    def value_info(self, start: int, end: int, what: str) -> None:
        buf = self.buf
        for field, wire, a, b in _fields(buf, start, end, _VALUE_INFO, {}, what):
            if field == 2:
                for f2, w2, a2, b2 in _fields(buf, a, b, _TYPE, {}, f"{what} type (only tensors)"):
                    if f2 == 1:
                        for f3, w3, a3, b3 in _fields(buf, a2, b2, _TENSOR_TYPE, {}, f"{what} tensor type"):
                            if f3 == 2:
                                for f4, w4, a4, b4 in _fields(buf, a3, b3, _SHAPE, {}, f"{what} shape"):
                                    _flat(buf, a4, b4, _DIM, f"{what} dimension")
            elif field == 4:
                _flat(buf, a, b, _ENTRY, f"{what} metadata")

    def node(self, start: int, end: int) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise EncoderRefusal(f"more than {MAX_NODES} nodes")
        op, domain, attributes = None, "", []
        for field, wire, a, b in _fields(self.buf, start, end, _NODE, {}, "node"):
            if wire != 2:
                raise EncoderRefusal("malformed protobuf (a node field has the wrong wire type)")
            if field == 4:
                op = _text(self.buf, a, b)
            elif field == 7:
                domain = _text(self.buf, a, b)
            elif field == 5:
                attributes.append((a, b))
            elif field == 9:
                _flat(self.buf, a, b, _ENTRY, "node metadata")
        if domain not in DEFAULT_DOMAINS:
            raise EncoderRefusal(f"node {op!r} is in operator domain {domain[:80]!r} (custom ops): only the "
                                 "default ONNX domain is allowed")
        if op not in ALLOWED_OPS:
            raise EncoderRefusal(f"operator {str(op)[:80]!r} is not on the BERT-family allow-list (FORMAT.md §5.1)")
        self.ops.add(op)
        for a, b in attributes:
            for field, wire, a2, b2 in _fields(self.buf, a, b, _ATTRIBUTE, _ATTRIBUTE_REFUSED, f"{op} attribute"):
                if field in (5, 10):
                    _want(wire, 2, "a tensor attribute")
                    self.tensor(a2, b2, f"{op} attribute")

    def graph(self, start: int, end: int) -> None:
        for field, wire, a, b in _fields(self.buf, start, end, _GRAPH, _GRAPH_REFUSED, "graph"):
            if field in (1, 5, 11, 12, 13, 14, 16):
                _want(wire, 2, f"graph.{_GRAPH[field]}")
            if field == 1:
                self.node(a, b)
            elif field == 5:
                self.tensor(a, b, "the initializers")
            elif field in (11, 12, 13):
                self.value_info(a, b, f"graph {_GRAPH[field]}")
            elif field == 14:  # TensorAnnotation: a tensor name and string pairs
                for f2, w2, a2, b2 in _fields(self.buf, a, b, {1: "tensor_name", 2: "quant_parameter_tensor_names"},
                                              {}, "quantization annotation"):
                    if f2 == 2:
                        _flat(self.buf, a2, b2, _ENTRY, "quantization annotation")
            elif field == 16:
                _flat(self.buf, a, b, _ENTRY, "graph metadata")


def check_graph(buf) -> dict:
    """Refuse (EncoderRefusal) an ONNX ModelProto in `buf` (bytes or a memoryview) that a bundle's
    encoder may not be; else {"ops": sorted operator names, "nodes": n, "tensor_bytes": declared}."""
    end = len(buf)
    if end > MAX_GRAPH_BYTES:
        raise EncoderRefusal(f"{end} bytes exceeds the {MAX_GRAPH_BYTES}-byte graph limit")
    walk = _Walk(buf)
    graphs = 0
    for field, wire, a, b in _fields(buf, 0, end, _MODEL, _MODEL_REFUSED, "model"):
        if field in (7, 8, 14):
            _want(wire, 2, f"model.{_MODEL[field]}")
        if field == 7:
            graphs += 1
            if graphs > 1:
                raise EncoderRefusal("model has more than one graph")
            walk.graph(a, b)
        elif field == 8:
            domain = ""
            for f2, w2, a2, b2 in _fields(buf, a, b, _OPSET, {}, "opset_import"):
                if f2 == 1:
                    domain = _text(buf, a2, b2)
            if domain not in DEFAULT_DOMAINS:
                raise EncoderRefusal(f"model imports operator domain {domain[:80]!r} (custom ops): only the "
                                     "default ONNX domain is allowed")
        elif field == 14:
            _flat(buf, a, b, _ENTRY, "model metadata")
    if not graphs:
        raise EncoderRefusal("not an ONNX model (no graph)")
    if not walk.nodes:
        raise EncoderRefusal("the graph has no nodes")
    return {"ops": sorted(walk.ops), "nodes": walk.nodes, "tensor_bytes": walk.declared}


try:  # possessive quantifiers (3.11): one pass, no backtracking state, on any bytes
    _STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"?', re.S)
except re.error:  # pragma: no cover - older Pythons: the same strings, slower on escape-heavy input
    _STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.S)
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def json_depth(raw: bytes) -> int:
    """The deepest [ / { nesting of JSON text, counted outside strings, without parsing it."""
    import numpy as np

    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    a = np.frombuffer(brackets, dtype=np.uint8)
    return int(np.cumsum(np.where((a == 0x5B) | (a == 0x7B), 1, -1), dtype=np.int64).max())


def check_tokenizer(raw: bytes):
    """Refuse (EncoderRefusal) a tokenizer.json that is too big, too deep or not shaped like one;
    else its parsed object."""
    import json

    if len(raw) > MAX_TOKENIZER_BYTES:
        raise EncoderRefusal(f"{len(raw)} bytes exceeds the {MAX_TOKENIZER_BYTES}-byte tokenizer limit")
    depth = json_depth(raw)
    if depth > MAX_TOKENIZER_DEPTH:
        raise EncoderRefusal(f"JSON nested {depth} deep, more than the tokenizer limit of {MAX_TOKENIZER_DEPTH}")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise EncoderRefusal(f"invalid JSON: {str(e)[:200]}") from None
    if not isinstance(obj, dict):
        raise EncoderRefusal("not a tokenizer.json object")
    if not isinstance(obj.get("model"), dict) or not isinstance(obj["model"].get("type", "WordPiece"), str):
        raise EncoderRefusal("not a tokenizer.json (its model is not an object)")
    for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder", "truncation", "padding"):
        if obj.get(key) is not None and not isinstance(obj[key], dict):
            raise EncoderRefusal(f"not a tokenizer.json ({key} is neither null nor an object)")
    added = obj.get("added_tokens", [])
    if not isinstance(added, list) or not all(isinstance(t, dict) and isinstance(t.get("content"), str) for t in added):
        raise EncoderRefusal("not a tokenizer.json (added_tokens is not a list of token objects)")
    return obj


def session_options(ort):
    """onnxruntime SessionOptions for a graph from a bundle, loaded from bytes: ONNX format only,
    external initializers looked up in a folder that does not exist, nothing written (no
    optimised-model file, no profile)."""
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.load_model_format", "ONNX")
    opts.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                  "/nonexistent/kbpack-encoder-has-no-external-data")
    opts.optimized_model_filepath = ""
    opts.enable_profiling = False
    return opts
