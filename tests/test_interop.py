"""Edge interop: `kbc export` round trips and embedder probes (`kbc probe`, format 1.1)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import ROOT, kbc_cli, make_tiny_model
from kbc.format import writer as writer_mod
from kbc.format.bundle import Bundle, write_bundle


def bundle_rows(path):
    with Bundle(path) as b:
        names = [s["path"] for s in b.sources]
        return [(c["text"], names[c["source"]], c) for c in b.iter_chunks()], np.array(b.vectors, dtype=np.float32)


def test_edge_slm_json_validates_and_round_trips(sample_bundle, tmp_path):
    import jsonschema

    out = tmp_path / "embeddings.json"
    kbc_cli("export", str(sample_bundle), str(out), "--to", "edge-slm-json", check=True)
    data = json.loads(out.read_text(encoding="utf-8"))
    jsonschema.validate(data, json.loads((ROOT / "schemas" / "edge-slm.schema.json").read_text()))
    rows, vectors = bundle_rows(sample_bundle)
    assert len(data["chunks"]) == len(rows) > 10
    for i, (item, (text, source, _)) in enumerate(zip(data["chunks"], rows)):
        assert item["metadata"] == {"source": source, "chunk_id": i}
        assert item["content"] == text
    exported = np.array([c["embedding"] for c in data["chunks"]], dtype=np.float32)
    assert np.array_equal(exported, vectors)  # bit for bit


def test_jsonl_round_trips_with_provenance(sample_bundle, tmp_path):
    out = tmp_path / "chunks.jsonl"
    kbc_cli("export", str(sample_bundle), str(out), "--to", "jsonl", check=True)
    lines = [json.loads(l) for l in out.read_text(encoding="utf-8").splitlines()]
    rows, vectors = bundle_rows(sample_bundle)
    assert len(lines) == len(rows)
    for i, (line, (text, source, ch)) in enumerate(zip(lines, rows)):
        assert (line["chunk_id"], line["source"], line["text"]) == (i, source, text)
        assert (line["page_start"], line["page_end"], line["char_start"], line["char_end"]) == (
            ch["page_start"], ch["page_end"], ch["char_start"], ch["char_end"])
    assert np.array_equal(np.array([l["embedding"] for l in lines], dtype=np.float32), vectors)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_npy_keeps_the_stored_dtype_and_ids(tmp_path, dtype):
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((130, 8)).astype(dtype)
    chunks = [{"text": f"chunk {i}", "source": i % 2, "seq": i, "page_start": 1, "page_end": 1,
               "char_start": 0, "char_end": 7} for i in range(130)]
    src = tmp_path / "kb.kbpack"
    write_bundle(src, manifest={"sources": [{"path": "a.md"}, {"path": "b.md"}]}, vectors=vecs, chunks=chunks,
                 dtype=dtype)
    out = tmp_path / "vectors.npy"
    kbc_cli("export", str(src), str(out), "--to", "npy", "-q", check=True)
    arr = np.load(out, allow_pickle=False)
    assert arr.dtype == np.dtype(dtype) and np.array_equal(arr, vecs)
    ids = [json.loads(l) for l in (tmp_path / "vectors.ids.jsonl").read_text().splitlines()]
    assert [(d["chunk_id"], d["source"]) for d in ids] == [(i, "ab"[i % 2] + ".md") for i in range(130)]


def test_export_bad_target_writes_nothing(sample_bundle, tmp_path):
    proc = kbc_cli("export", str(sample_bundle), str(tmp_path / "missing" / "x.json"), "--to", "edge-slm-json")
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = kbc_cli("export", str(sample_bundle), str(tmp_path / "x.json"), "--to", "csv")
    assert proc.returncode == 2 and "edge-slm-json" in proc.stderr
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- probes


def test_probe_set_covers_the_token_limit(sample_bundle):
    with Bundle(sample_bundle) as b:
        ps = b.probes()
        limit = b.manifest["embedder"]["max_seq_length"]
        assert b.minor >= 1
    kinds = {p["kind"]: p for p in ps.meta["probes"]}
    assert 14 <= len(kinds) <= 20
    assert kinds["at_token_limit"]["tokens"] == limit  # MiniLM's word pieces let the filler land exactly
    assert kinds["past_token_limit"]["tokens"] > limit * 1.3
    assert not any("\n" in t for t in ps.texts)  # --texts prints one per line
    assert ps.vectors.shape == (len(kinds), 384)
    assert np.allclose(np.linalg.norm(ps.vectors, axis=1), 1.0, atol=1e-5)
    shown = json.loads(kbc_cli("inspect", str(sample_bundle), "--json", check=True).stdout)["probes"]
    assert shown == {"count": len(kinds), "role": "query", "prompt": "", "max_seq_length": limit, "threshold": 0.99}


def test_damaged_probe_vectors_fail_verify(sample_bundle, tmp_path):
    damaged = tmp_path / "d.kbpack"
    data = bytearray(sample_bundle.read_bytes())
    with Bundle(sample_bundle) as b:
        info = b.sections["probe_vectors"]
    data[info.offset + 10] ^= 0x01
    damaged.write_bytes(bytes(data))
    proc = kbc_cli("inspect", str(damaged), "--verify")
    assert proc.returncode == 3 and "probe_vectors" in proc.stderr


def test_older_bundles_and_older_readers(tmp_path, monkeypatch):
    """1.0 bundles (no probes) still open; `kbc probe` says what is missing. The other direction,
    a reader skipping sections it does not know, is test_libkbpack's unknown-sections test."""
    monkeypatch.setattr(writer_mod, "FORMAT_MINOR", 0)  # the writer writes the version it knows
    old = tmp_path / "old.kbpack"
    write_bundle(old, manifest={}, vectors=np.ones((2, 4), np.float32), chunks=[{"text": "a"}, {"text": "b"}])
    monkeypatch.undo()
    with Bundle(old) as b:
        assert (b.major, b.minor) == (1, 0) and b.probes() is None
    proc = kbc_cli("probe", str(old), "--texts")
    assert proc.returncode == 2 and "has no probes" in proc.stderr and "1.0" in proc.stderr


@pytest.fixture(scope="module")
def torch_built(tiny_model, tmp_path_factory):
    """A bundle whose vectors come from sentence-transformers (torch): the CI-side reference."""
    d = tmp_path_factory.mktemp("probe")
    (d / "doc.md").write_text("# Notes\n\nSome text to embed for the probe tests.\n")
    out = d / "kb.kbpack"
    kbc_cli("build", str(d / "doc.md"), "-o", str(out), "--model", str(tiny_model), "--backend", "torch", "-q",
            check=True)
    return out


def probe_inputs(bundle) -> list[str]:
    proc = kbc_cli("probe", str(bundle), "--texts", check=True)
    assert "prompt 'query: ' already prepended" in proc.stderr
    return proc.stdout.split("\n")[:-1]


def onnx_vectors(model_dir, inputs, *, truncate: bool = True) -> np.ndarray:
    from kbc.backends.model import read_spec, resolve_model
    from kbc.backends.onnx import OnnxEmbedder

    ref = resolve_model(str(model_dir))
    # an engine that embeds exactly the given strings: the inputs already carry the query prompt
    e = OnnxEmbedder.for_model(ref, read_spec(ref, query_prompt="", document_prompt=""), quantized=False)
    if not truncate:  # what llama.cpp did with MiniLM: embed past max_seq_length
        e.tokenizer.no_truncation()
    return e.embed_documents(inputs)


def test_probe_passes_for_a_second_engine_running_the_same_model(torch_built, tiny_model, tmp_path):
    inputs = probe_inputs(torch_built)
    assert all(line.startswith("query: ") for line in inputs)
    vecs = onnx_vectors(tiny_model, inputs)
    npy = tmp_path / "onnx.npy"
    np.save(npy, vecs)
    proc = kbc_cli("probe", str(torch_built), "--vectors", str(npy), "--json")
    rep = json.loads(proc.stdout)
    assert proc.returncode == 0 and rep["passed"] and rep["min"] > 0.9999 and rep["prompt"] == "query: "
    as_json = tmp_path / "v.json"
    as_json.write_text(json.dumps([{"embedding": v} for v in vecs.tolist()]))
    assert kbc_cli("probe", str(torch_built), "--vectors", str(as_json)).returncode == 0


def test_probe_fails_for_another_model(torch_built, tmp_path):
    inputs = probe_inputs(torch_built)
    other = make_tiny_model(tmp_path / "other", seed=1)
    np.save(tmp_path / "other.npy", onnx_vectors(other, inputs))
    proc = kbc_cli("probe", str(torch_built), "--vectors", str(tmp_path / "other.npy"))
    assert proc.returncode == 6 and "FAIL" in proc.stdout


def test_probe_exposes_an_engine_that_does_not_truncate(sample_bundle, tmp_path):
    """The disagreement llama.cpp showed with MiniLM: the same model, but no cut at 256 tokens."""
    from kbc.backends.model import resolve_model

    inputs = kbc_cli("probe", str(sample_bundle), "--texts", check=True).stdout.split("\n")[:-1]
    np.save(tmp_path / "untruncated.npy", onnx_vectors(resolve_model(None).path, inputs, truncate=False))
    proc = kbc_cli("probe", str(sample_bundle), "--vectors", str(tmp_path / "untruncated.npy"), "--json")
    rep = json.loads(proc.stdout)
    assert proc.returncode == 6
    by_kind = {p["kind"]: p["cosine"] for p in rep["probes"]}
    assert not rep["passed"] and by_kind["past_token_limit"] < 0.99
    assert by_kind["at_token_limit"] > 0.9999 and by_kind["short"] > 0.9999  # only the over-long input differs


def test_probe_input_errors(torch_built, tmp_path):
    bad = tmp_path / "short.npy"
    np.save(bad, np.ones((3, 32)))
    proc = kbc_cli("probe", str(torch_built), "--vectors", str(bad))
    assert proc.returncode == 2 and "3 vectors, but the bundle has" in proc.stderr
    wrong_dim = tmp_path / "dim.json"
    wrong_dim.write_text(json.dumps({"vectors": np.ones((17, 8)).tolist()}))
    proc = kbc_cli("probe", str(torch_built), "--vectors", str(wrong_dim))
    assert proc.returncode == 2 and ("8-d vectors" in proc.stderr or "vectors, but" in proc.stderr)
    assert kbc_cli("probe", str(torch_built)).returncode == 2
