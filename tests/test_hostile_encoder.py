"""The encoder section is untrusted input (FORMAT.md §5.1, issue 27 item 3): a bundle's ONNX graph
and tokenizer.json, crafted by an author who recomputes every SHA-256 into the manifest, are refused
before onnxruntime or tokenizers sees them, by `kbc inspect --verify`, by `kbc query` (at open) and by
runtimes/python/kbpack_encoder.py (the kbpack_runtime package's command), each with one line and exit
status 3. kbc's own graphs pass. The checks are kbpack_runtime.guard, the one copy kbc imports."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, kbc_cli, run_kbc
from forge import rebuild, sections
from kbpack_runtime import guard as G
from kbc.backends import bert_onnx
from kbc.format.bundle import Bundle

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

SCRIPT = ROOT / "runtimes" / "python" / "kbpack_encoder.py"
SECRET = b"SECRET-FILE-BYTES-THAT-MUST-NOT-LEAVE-THE-DISK" * 4  # 188 bytes


@pytest.fixture(scope="module")
def encoded(tiny_encoder_bundle):
    """sample_docs built with the tiny model --with-encoder (conftest, once per test run)."""
    return tiny_encoder_bundle


def _model(nodes, inits=(), *, opsets=(("", 17),), outputs=None) -> onnx.ModelProto:
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, [1, "n"])
              for n in ("input_ids", "attention_mask", "token_type_ids")]
    outputs = outputs or [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 32])]
    m = helper.make_model(helper.make_graph(nodes, "forged", inputs, outputs, initializer=list(inits)),
                          opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    m.ir_version = 8
    return m


def _external(name: str, location: str, dims) -> onnx.TensorProto:
    t = numpy_helper.from_array(np.zeros(dims, np.float32), name)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(4 * int(np.prod(dims))))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def external_graph() -> bytes:
    """embedding = the 32 floats of ./sub/dir/secret.txt: what the measured forged bundle did."""
    return _model([helper.make_node("Identity", ["w"], ["embedding"])],
                  [_external("w", "sub/dir/secret.txt", [1, 32])]).SerializeToString()


def custom_op_graph() -> bytes:
    return _model([helper.make_node("Exfiltrate", ["input_ids"], ["embedding"], domain="com.example.evil")],
                  opsets=(("", 17), ("com.example.evil", 1))).SerializeToString()


def disallowed_op_graph() -> bytes:
    w = numpy_helper.from_array(np.zeros((1, 32), np.float32), "w")
    scales = numpy_helper.from_array(np.ones(2, np.float32), "s")
    return _model([helper.make_node("Resize", ["w", "", "s"], ["embedding"])], [w, scales]).SerializeToString()


def oversized_graph() -> bytes:
    """A 2^40-element float initializer that holds no bytes: onnxruntime would allocate 4 TiB."""
    huge = TensorProto(name="huge", data_type=TensorProto.FLOAT, dims=[1 << 40])
    return _model([helper.make_node("Identity", ["huge"], ["embedding"])], [huge]).SerializeToString()


def subgraph_graph() -> bytes:
    inner = helper.make_graph([helper.make_node("Identity", ["w"], ["z"])], "inner", [],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 32])])
    w = numpy_helper.from_array(np.zeros((1, 32), np.float32), "w")
    node = helper.make_node("Identity", ["w"], ["embedding"])
    node.attribute.append(helper.make_attribute("body", inner))
    return _model([node], [w]).SerializeToString()


def constant_external_graph() -> bytes:
    """External data hidden in a Constant node's tensor attribute rather than an initializer."""
    value = _external("v", "sub/dir/secret.txt", [1, 32])
    return _model([helper.make_node("Constant", [], ["embedding"], value=value)]).SerializeToString()


def deep_tokenizer() -> bytes:
    return b'{"model": {"type": "WordPiece", "vocab": ' + b"[" * 200_000 + b"]" * 200_000 + b"}}"


GRAPHS = {
    "external data": (external_graph, "external_data (its bytes in a file outside the graph)"),
    "external data in a Constant": (constant_external_graph, "external_data (its bytes in a file outside the graph)"),
    "custom-op domain": (custom_op_graph, "operator domain 'com.example.evil' (custom ops)"),
    "disallowed op": (disallowed_op_graph, "operator 'Resize' is not on the BERT-family allow-list"),
    "oversized initializer": (oversized_graph, f"declares {4 << 40} bytes but holds 0"),
    "subgraph": (subgraph_graph, "g (a subgraph), which a bundle's encoder may not use"),
}


def forge(encoded, tmp_path, *, graph: bytes | None = None, tokenizer: bytes | None = None):
    """kbc's bundle with its encoder graph or tokenizer replaced, every SHA-256 recomputed (the
    graph's into both manifest records), written in a folder holding sub/dir/secret.txt."""
    data = encoded.read_bytes()
    replace = {}
    manifest = json.loads(sections(data)["manifest"][1])
    if graph is not None:
        digest = hashlib.sha256(graph).hexdigest()
        manifest["encoder"]["graph_sha256"] = manifest["embedder"]["runtime"]["graph_sha256"] = digest
        replace["encoder_graph"] = graph
    if tokenizer is not None:
        replace["encoder_tokenizer"] = tokenizer
    replace["manifest"] = json.dumps(manifest).encode()
    (tmp_path / "sub" / "dir").mkdir(parents=True, exist_ok=True)
    (tmp_path / "sub" / "dir" / "secret.txt").write_bytes(SECRET)
    out = tmp_path / "forged.kbpack"
    out.write_bytes(rebuild(data, replace))
    return out


def _one_line(proc, section: str, reason: str) -> None:
    assert proc.returncode == 3, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{section}: " in proc.stderr and reason in proc.stderr, proc.stderr


def _script(bundle, cwd, *args):
    return subprocess.run([sys.executable, str(SCRIPT), str(bundle), *args], capture_output=True, cwd=cwd,
                          timeout=120)


def _refused_everywhere(forged, tmp_path, section: str, reason: str) -> None:
    _one_line(kbc_cli("inspect", str(forged), "--verify"), section, reason)
    _one_line(run_kbc("query", str(forged), "how do I water seedlings"), section, reason)
    out = tmp_path / "q.f32"
    proc = _script(forged, tmp_path, "how do I water seedlings", "--out", str(out))
    text = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(errors="replace"),
                                       proc.stderr.decode(errors="replace"))
    _one_line(text, section, reason)
    assert not out.exists() and SECRET[:16] not in proc.stdout + proc.stderr
    assert b"SECRET" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("case", list(GRAPHS))
def test_a_crafted_graph_is_refused_by_verify_query_and_the_encoder_script(encoded, tmp_path, case):
    make, reason = GRAPHS[case]
    forged = forge(encoded, tmp_path, graph=make())
    _refused_everywhere(forged, tmp_path, "encoder_graph", reason)


def test_a_200000_deep_tokenizer_is_refused_before_it_is_parsed(encoded, tmp_path):
    forged = forge(encoded, tmp_path, tokenizer=deep_tokenizer())
    _refused_everywhere(forged, tmp_path, "encoder_tokenizer", "nested 200002 deep, more than the tokenizer limit of 32")


@pytest.mark.parametrize("tokenizer, reason", [
    (b'[1, 2, 3]', "not a tokenizer.json object"),
    (b'{"model": [1]}', "its model is not an object"),
    (b'{"model": {"type": "WordPiece"}, "added_tokens": [7]}', "added_tokens is not a list of token objects"),
])
def test_a_tokenizer_of_the_wrong_shape_is_refused(encoded, tmp_path, tokenizer, reason):
    forged = forge(encoded, tmp_path, tokenizer=tokenizer)
    _one_line(kbc_cli("inspect", str(forged), "--verify"), "encoder_tokenizer", reason)
    proc = _script(forged, tmp_path, "q", "--out", str(tmp_path / "q.f32"))
    assert proc.returncode == 3 and reason.encode() in proc.stderr and proc.stderr.count(b"\n") == 1


def test_a_damaged_graph_is_named_by_its_checksum_first(encoded, tmp_path):
    """The open-time screen refuses garbage, but in `--verify`'s order: the checksum speaks first."""
    data = encoded.read_bytes()
    forged = tmp_path / "forged.kbpack"
    forged.write_bytes(rebuild(data, {"encoder_graph": b"\xff" * 64}))
    _one_line(kbc_cli("inspect", str(forged), "--verify"), "encoder_graph",
              "differs from the manifest's encoder.graph_sha256")


def test_kbc_own_bundle_with_an_encoder_still_verifies_queries_and_embeds(encoded, tmp_path):
    proc = kbc_cli("inspect", str(encoded), "--verify")
    assert proc.returncode == 0, proc.stderr
    proc = kbc_cli("query", str(encoded), "how do I water seedlings", "--mode", "lexical")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "q.f32"
    proc = _script(encoded, tmp_path, "how do I water seedlings", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    with Bundle(encoded) as b:
        assert np.fromfile(out, dtype="<f4").shape == (b.dim,)
        info = G.check_graph(b.encoder()["graph"])
    assert set(info["ops"]) <= G.ALLOWED_OPS and info["nodes"] > 0


@pytest.mark.parametrize("pooling, normalize, quantize", [("mean", True, False), ("cls", True, True),
                                                          ("max", False, False), ("mean", False, True)])
def test_every_graph_the_bert_converter_writes_passes_the_guard(tiny_model, tmp_path, pooling, normalize, quantize):
    target = tmp_path / "g.onnx"
    bert_onnx.convert(tiny_model, target, pooling=pooling, normalize=normalize, quantize=quantize)
    info = G.check_graph(target.read_bytes())
    assert info["tensor_bytes"] <= target.stat().st_size


def test_the_torch_export_and_its_quantisation_pass_the_guard(tiny_model, tmp_path):
    """The path for models the converter does not cover (torch.onnx.export, then quantize_dynamic)."""
    pytest.importorskip("torch")
    from kbc.backends import onnx as kbc_onnx
    from kbc.backends.model import read_spec, resolve_model

    ref = resolve_model(str(tiny_model))
    spec = read_spec(ref)
    fp32, int8 = tmp_path / "model.onnx", tmp_path / "model.int8.onnx"
    kbc_onnx._export_fp32(ref, spec, fp32)
    kbc_onnx._quantize(fp32, int8)
    for graph in (fp32, int8):
        G.check_graph(graph.read_bytes())


def test_session_options_keep_onnxruntime_off_the_file_system(tmp_path, monkeypatch):
    """Defence in depth: were the guard bypassed, the session options alone refuse external data
    (plain options with optimisations off read ./sub/dir/secret.txt)."""
    ort = pytest.importorskip("onnxruntime")
    (tmp_path / "sub" / "dir").mkdir(parents=True)
    (tmp_path / "sub" / "dir" / "secret.txt").write_bytes(SECRET)
    monkeypatch.chdir(tmp_path)
    graph = external_graph()
    opts = G.session_options(ort)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 4
    with pytest.raises(Exception, match="xternal data"):
        ort.InferenceSession(graph, sess_options=opts, providers=["CPUExecutionProvider"])


def test_kbc_checks_encoders_with_the_runtime_guard_the_one_copy():
    """kbc's reader and the device runtime refuse with the same code, not two copies kept equal."""
    from kbc.format import bundle

    assert bundle.encoder_guard is G
    assert Path(G.__file__).resolve() == ROOT / "runtimes" / "python" / "kbpack_runtime" / "guard.py"
    assert not (ROOT / "kbc" / "format" / "encoder_guard.py").exists()


def test_the_runtime_package_never_imports_kbc():
    package = ROOT / "runtimes" / "python"
    files = sorted(package.rglob("*.py"))
    assert len(files) >= 5  # the package's modules, the script, the example
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(import|from)\s+kbc\b", text, re.M), path


def test_the_encoder_script_runs_where_kbc_cannot_be_imported(encoded, tmp_path):
    """A device has numpy, onnxruntime and tokenizers, not kbc: with `import kbc` made to fail, the
    script still embeds a question, the same vector as with kbc importable."""
    # sys.modules['kbc'] = None makes every `import kbc...` raise ImportError; the script's own
    # folder goes first on sys.path, as `python SCRIPT` puts it
    blocked = ("import os, sys, runpy; sys.modules['kbc'] = None; sys.argv = sys.argv[1:]; "
               "sys.path.insert(0, os.path.dirname(sys.argv[0])); runpy.run_path(sys.argv[0], run_name='__main__')")
    out = tmp_path / "q.f32"
    proc = subprocess.run([sys.executable, "-c", blocked, str(SCRIPT), str(encoded), "pumps", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    plain = _script(encoded, tmp_path, "pumps", "--out", str(tmp_path / "plain.f32"))
    assert plain.returncode == 0, plain.stderr
    vector = np.fromfile(out, "<f4")
    assert vector.shape == (32,) and np.array_equal(vector, np.fromfile(tmp_path / "plain.f32", "<f4"))


@pytest.mark.parametrize("text, depth", [
    (b'{"a": "[[[[{{{{", "b": [1, [2]]}', 3),
    (b'{"a": "\\\\", "b": "\\"[[[", "c": {}}', 2),
    (b'"unterminated [[[[', 0),
    (b'[' * 100, 100),
    (b'', 0),
])
def test_json_depth_counts_brackets_outside_strings_only(text, depth):
    assert G.json_depth(text) == depth


def test_json_depth_is_linear_on_escape_heavy_input():
    import time

    t = time.monotonic()
    assert G.json_depth(b'"' + b'\\"' * (2 << 20)) == 0
    assert G.json_depth(b'""' * (2 << 20) + b"[[]]") == 2
    assert time.monotonic() - t < 10


@pytest.mark.parametrize("raw, reason", [
    (b"", "no graph"),
    (b"\x3a\x05abcde", "malformed protobuf"),  # graph field, 5 bytes claimed, all garbage
    (b"\x08" + b"\xff" * 12, "varint"),
    (b"\xa2\x01\x00", "training_info"),
    (b"\x42\x0c\x0a\x0acom.evil.x", "operator domain 'com.evil.x'"),
    (b"\x0b", "wire type 3"),
])
def test_malformed_protobuf_is_a_refusal_never_a_crash(raw, reason):
    with pytest.raises(G.EncoderRefusal, match=reason):
        G.check_graph(raw)


def test_format_md_lists_the_allow_list_and_the_budgets():
    text = " ".join((ROOT / "schemas" / "FORMAT.md").read_text(encoding="utf-8").split())
    listed = text.split("ALLOWED_OPS`:", 1)[1].split(": what kbc's", 1)[0]
    assert {op.strip() for op in listed.split(",")} == G.ALLOWED_OPS
    assert "at most 32 MiB, nested at most 32 deep" in text
    assert (G.MAX_TOKENIZER_BYTES, G.MAX_TOKENIZER_DEPTH, G.MAX_NODES, G.MAX_TENSOR_RANK) == (32 << 20, 32, 100_000, 16)


def _runtime_graph(kind: str) -> bytes:
    """Graphs the walk passes that onnxruntime cannot load, that allocate 8 GiB as they run, or
    that return the wrong shape: the encoder script's own checks and memory cap refuse them."""
    if kind == "unloadable":
        return _model([helper.make_node("Identity", ["nowhere"], ["embedding"])]).SerializeToString()
    if kind == "allocates 8 GiB":
        shape = numpy_helper.from_array(np.array([1, 1 << 31], np.int64), "shape")
        one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
        return _model([helper.make_node("ConstantOfShape", ["shape"], ["embedding"], value=one)],
                      [shape]).SerializeToString()
    w = numpy_helper.from_array(np.zeros((1, 5), np.float32), "w")
    return _model([helper.make_node("Identity", ["w"], ["embedding"])], [w],
                  outputs=[helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 5])]).SerializeToString()


@pytest.mark.parametrize("kind, reason", [("unloadable", "onnxruntime cannot load it"),
                                          ("allocates 8 GiB", "onnxruntime cannot run it"),
                                          ("wrong shape", "output float32 [1, 5] is not one 32-d float32 vector")])
def test_the_encoder_script_refuses_what_only_running_the_graph_shows(encoded, tmp_path, kind, reason):
    forged = forge(encoded, tmp_path, graph=_runtime_graph(kind))
    out = tmp_path / "q.f32"
    proc = _script(forged, tmp_path, "how do I water seedlings", "--out", str(out))
    assert proc.returncode == 3 and proc.stderr.count(b"\n") == 1, proc.stderr
    assert b"encoder_graph: " + reason.encode() in proc.stderr and not out.exists()
