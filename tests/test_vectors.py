"""Vector encodings (format 1.4, kbc/format/vectors.py): int8 with per-dimension scales, binary codes with
a two-stage search, and `kbc eval --vectors`, which must predict the built bundles exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import SAMPLE_DOCS, run_kbc
from forge import rebuild, sections
from kbc.format import vectors as V
from kbc.format.bundle import Bundle, BundleWriter, write_bundle
from kbc.errors import BundleError
from kbc.search.dense import Searcher


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def chunks(n: int) -> list[dict]:
    return [{"text": f"chunk {i}", "source": 0, "seq": i, "page_start": 1, "page_end": 1} for i in range(n)]


def test_int8_calibration_round_trip_and_size(tmp_path):
    x = unit_rows(500, 37)
    x[:, 5] = 0.0  # a dimension that is always zero gets scale 0, never a division by zero
    x[7, 3] = -2.0  # the largest |x| of a dimension maps to -127 exactly, nothing saturates
    path = write_bundle(tmp_path / "q.kbpack", manifest={}, vectors=x, chunks=chunks(500), dtype="int8")
    with Bundle(path) as b:
        b.verify()
        scales = b.scales()
        assert np.array_equal(scales, (np.abs(x).max(axis=0) / np.float32(127)).astype(np.float32))
        assert scales[5] == 0 and b.stored_vectors[7, 3] == -127
        assert b.stored_vectors.dtype == np.int8 and b.sections["vectors"].length == 500 * 37
        error = np.abs(b.vectors - x)
        assert (error <= scales / 2 + 1e-7).all()  # rounding to nearest: at most half a step per dimension
        assert b.manifest["vectors"] == {"count": 500, "dim": 37, "dtype": "int8", "scales": "vector_scales"}
        assert np.array_equal(b.vector_rows(10, 20), b.vectors[10:20])


def test_streaming_writer_calibrates_on_the_whole_corpus(tmp_path):
    """Windows arrive one at a time; the scales (and so every byte) equal a one-shot write's."""
    x = unit_rows(300, 24, seed=1)
    x[250:, 0] *= 9  # the range of dimension 0 is only known after the last window
    one = write_bundle(tmp_path / "one.kbpack", manifest={}, vectors=x, chunks=chunks(300), dtype="int8", binary=True)
    with BundleWriter(tmp_path / "many.kbpack", dim=24, dtype="int8", binary=True) as w:
        for start in range(0, 300, 64):
            w.add(chunks(300)[start:start + 64], x[start:start + 64])
            assert np.array_equal(w.vectors_view(), x[:start + 64])  # what an index is trained on: the floats
        many = w.finish({})
    assert one.read_bytes() == many.read_bytes()


@pytest.mark.parametrize("dtype, value", [("float16", 7e4), ("int8", 3.39e38), ("float32", 1e300)])
def test_writer_refuses_values_its_dtype_would_store_as_infinity(tmp_path, dtype, value):
    x = np.full((2, 4), value)
    with pytest.raises(ValueError, match=f"beyond what {dtype} vectors hold"):
        write_bundle(tmp_path / "x.kbpack", manifest={}, vectors=x, chunks=chunks(2), dtype=dtype)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_binary_codes_bits_and_padding(tmp_path):
    x = unit_rows(40, 13, seed=2)  # 13 dimensions: 2 bytes per code, 3 bits unused
    path = write_bundle(tmp_path / "b.kbpack", manifest={}, vectors=x, chunks=chunks(40), dtype="int8", binary=True)
    with Bundle(path) as b:
        b.verify()
        codes = b.binary_index().codes
        assert codes.shape == (40, 2)
        for i in range(40):
            bits = [(codes[i, d // 8] >> (7 - d % 8)) & 1 for d in range(13)]  # most significant bit first
            assert bits == [int(v > 0) for v in x[i]]
        assert not (codes[:, 1] & 0b111).any()
    padded = bytearray(sections(path.read_bytes())["vectors_binary"][1])
    padded[1] |= 1  # a bit past dimension 13, checksums recomputed
    forged = tmp_path / "padded.kbpack"
    forged.write_bytes(rebuild(path.read_bytes(), {"vectors_binary": bytes(padded)}))
    with Bundle(forged) as b, pytest.raises(BundleError, match="vectors_binary.*past dimension 13"):
        b.verify()


def test_two_stage_search_shortlists_by_hamming_then_rescores():
    x = unit_rows(2000, 64, seed=3)
    stored, scales = V.encode(x, "int8")
    values = V.dequantise(stored, scales)
    q = x[:20] + 0.05 * unit_rows(20, 64, seed=4)
    # candidates covering the corpus: the result is exact search over the int8 values
    everything = Searcher(stored, None, {}, scales=scales, binary=V.BinaryIndex(V.binary_codes(x), candidates=2000))
    exact = Searcher(stored, None, {}, scales=scales)
    s1, i1 = everything.search(q, 10)
    s2, i2 = exact.search(q, 10)
    assert np.array_equal(i1, i2) and np.allclose(s1, s2, atol=1e-6)
    # a small shortlist: the hits are the best rescored rows among the R nearest codes
    index = V.BinaryIndex(V.binary_codes(x), candidates=30, multiplier=2)
    scores, ids = Searcher(stored, None, {}, scales=scales, binary=index).search(q, 5)
    for row in range(20):
        shortlist = index.shortlist(q[row], 5)
        assert len(shortlist) == 30
        distance = np.bitwise_count(np.bitwise_xor(index.codes, np.packbits(q[row] > 0))).sum(axis=1)
        assert distance[shortlist].max() <= np.delete(distance, shortlist).min()
        rescored = stored[shortlist].astype(np.float32) @ (q[row] * scales)  # the query times the scales
        best = shortlist[np.lexsort((shortlist, -rescored))][:5]
        assert np.allclose(rescored, values[shortlist] @ q[row], atol=1e-5)
        assert list(ids[row]) == list(best)


def test_shortlist_is_the_same_without_numpy_2s_bitwise_count(monkeypatch):
    x = unit_rows(500, 40, seed=7)
    index = V.BinaryIndex(V.binary_codes(x), candidates=25, multiplier=1)
    q = unit_rows(5, 40, seed=8)
    with_builtin = [index.shortlist(row, 10) for row in q]
    monkeypatch.delattr(np, "bitwise_count", raising=False)  # numpy 1.x
    assert all(np.array_equal(a, index.shortlist(row, 10)) for a, row in zip(with_builtin, q))


def test_shortlist_breaks_distance_ties_by_lower_chunk_id():
    codes = np.zeros((50, 1), np.uint8)  # every code at the same distance from any query
    index = V.BinaryIndex(codes, candidates=7, multiplier=1)
    assert list(index.shortlist(np.ones(8, np.float32), 3)) == list(range(7))
    assert list(V.BinaryIndex(codes, candidates=7, multiplier=10).shortlist(np.ones(8), 3)) == list(range(30))


@pytest.mark.parametrize("case, replace, error", [
    ("scales NaN", {"vector_scales": np.full(16, np.nan, "<f4").tobytes()}, "vector_scales.*NaN"),
    ("scale negative", {"vector_scales": np.full(16, -1, "<f4").tobytes()}, "vector_scales.*negative"),
    ("scale too large", {"vector_scales": np.full(16, 3e36, "<f4").tobytes()}, "vector_scales.*too large"),
    ("scales short", {"vector_scales": b"\0" * 60}, "vector_scales.*expected 16 f32le"),
    ("codes short", {"vectors_binary": b"\0" * 10}, "vectors_binary.*expected 40 bytes"),
])
def test_forged_compact_sections_are_refused(tmp_path, case, replace, error):
    path = write_bundle(tmp_path / "ok.kbpack", manifest={}, vectors=unit_rows(20, 16), chunks=chunks(20),
                        dtype="int8", binary=True)
    forged = tmp_path / "forged.kbpack"
    forged.write_bytes(rebuild(path.read_bytes(), replace))
    with pytest.raises(BundleError, match=error):
        with Bundle(forged) as b:
            b.vectors  # scales are checked before first use


@pytest.mark.parametrize("edit, error", [
    (lambda v: v.pop("scales"), "vectors.scales must name"),
    (lambda v: v["binary"].update(candidates=0), "candidates must be an integer from 1 to 65536"),
    (lambda v: v["binary"].update(multiplier=True), "multiplier must be an integer"),
    (lambda v: v["binary"].update(section="chunks"), "binary must be an object naming"),
    (lambda v: v.update(dtype="int4"), "unknown vector dtype"),
])
def test_forged_vectors_manifest_is_refused(tmp_path, edit, error):
    path = write_bundle(tmp_path / "ok.kbpack", manifest={}, vectors=unit_rows(20, 16), chunks=chunks(20),
                        dtype="int8", binary=True)
    data = path.read_bytes()
    manifest = json.loads(sections(data)["manifest"][1])
    edit(manifest["vectors"])
    forged = tmp_path / "forged.kbpack"
    forged.write_bytes(rebuild(data, {"manifest": json.dumps(manifest).encode()}))
    with pytest.raises(BundleError, match=error):
        Bundle(forged)
    proc = run_kbc("inspect", str(forged), "--verify")
    assert proc.returncode == 3 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def encoded_sample(tmp_path_factory):
    """The sample docs built with each --vectors choice (the build cache makes the embedding once)."""
    d = tmp_path_factory.mktemp("vectors")
    out = {}
    for name in V.PRESETS:
        out[name] = d / f"{name}.kbpack"
        run_kbc("build", str(SAMPLE_DOCS), "-o", str(out[name]), "--vectors", name, "-q", check=True)
    return out


def test_built_bundles_are_what_eval_simulates(encoded_sample):
    with Bundle(encoded_sample["f32"]) as f32:
        floats = np.asarray(f32.vectors, dtype=np.float32)
        sizes = {"f32": f32.size}
    for name in ("f16", "int8", "binary"):
        with Bundle(encoded_sample[name]) as b:
            b.verify()
            encoded = V.simulate(floats, name)
            assert np.array_equal(b.stored_vectors, encoded.rows), name
            assert (b.scales() is None) == (encoded.scales is None)
            if encoded.scales is not None:
                assert np.array_equal(b.scales(), encoded.scales)
            got = b.binary_index()
            assert (got is None) == (encoded.binary is None)
            if got is not None:
                assert np.array_equal(got.codes, encoded.binary.codes)
            sizes[name] = b.size
    assert sizes["f32"] > sizes["f16"] > sizes["binary"] > sizes["int8"]


def test_query_and_export_an_int8_bundle(encoded_sample, tmp_path):
    proc = run_kbc("query", str(encoded_sample["binary"]), "how do I water seedlings in a greenhouse", "-k", "3",
                   "--unit", "chunk", "--json", check=True)
    hits = json.loads(proc.stdout)["hits"]
    assert len(hits) == 3
    out = tmp_path / "v.npy"
    run_kbc("export", str(encoded_sample["int8"]), str(out), "--to", "npy", check=True)
    with Bundle(encoded_sample["int8"]) as b:
        exported = np.load(out)
        assert exported.dtype == np.float32 and np.array_equal(exported, b.vectors)


def test_eval_compares_encodings(encoded_sample, tmp_path):
    queries = tmp_path / "queries.jsonl"
    queries.write_text("\n".join(json.dumps({"_id": f"q{i}", "text": t}) for i, t in enumerate(
        ["how do I ventilate a greenhouse", "how do hash maps store keys", "what does the sample say about logs"])))
    with Bundle(encoded_sample["f32"]) as b:
        paths = sorted({b.source_path(c) for c in b.iter_chunks()})
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("".join(f"q{i}\t{p}\t1\n" for i, p in enumerate(paths[:3])))
    proc = run_kbc("eval", str(encoded_sample["f32"]), "--queries", str(queries), "--qrels", str(qrels),
                   "--vectors", "f32", "--vectors", "int8", "--vectors", "binary", "--json", check=True)
    rep = json.loads(proc.stdout)
    assert [v["vectors"] for v in rep["vectors"]] == ["f32", "int8", "binary"]
    by = {v["vectors"]: v for v in rep["vectors"]}
    assert by["int8"]["bytes_per_chunk"] == 384 and by["binary"]["bytes_per_chunk"] == 384 + 48
    assert by["f32"]["kept"]["dense"]["ndcg@10"] == 1.0
    base, got = by["f32"]["modes"]["dense"]["ndcg@10"], by["int8"]["modes"]["dense"]["ndcg@10"]
    assert by["int8"]["kept"]["dense"]["ndcg@10"] == pytest.approx(got / base if base else 1.0)
    # the simulation is the built bundle: evaluating the int8 bundle itself gives the same figures
    own = json.loads(run_kbc("eval", str(encoded_sample["int8"]), "--queries", str(queries), "--qrels", str(qrels),
                             "--mode", "dense", "--mode", "hybrid", "--json", check=True).stdout)
    assert own["modes"] == by["int8"]["modes"]
    # what plain eval warns about, it still says; --per-query lists one evaluation
    wrong = tmp_path / "wrong.tsv"
    wrong.write_text("q0\tno-such-document.md\t1\nq9\tno-such-document.md\t1\n")
    human = run_kbc("eval", str(encoded_sample["f32"]), "--queries", str(queries), "--qrels", str(wrong),
                    "--vectors", "f32", "--vectors", "int8", check=True).stdout
    assert "1 relevant documents are not in the bundle" in human and "1 judged queries missing" in human
    assert "(   n/a)" in human  # nothing found by f32: no share to show
    per_query = run_kbc("eval", str(encoded_sample["f32"]), "--queries", str(queries), "--qrels", str(qrels),
                        "--vectors", "int8", "--per-query")
    assert per_query.returncode == 2 and "--per-query" in per_query.stderr
    # encodings cannot be derived from an int8 bundle: one line, exit 2
    refused = run_kbc("eval", str(encoded_sample["int8"]), "--queries", str(queries), "--qrels", str(qrels),
                      "--vectors", "f32")
    assert refused.returncode == 2 and "stores int8 vectors" in refused.stderr and "Traceback" not in refused.stderr


def test_build_refuses_contradictory_vector_options(tmp_path):
    proc = run_kbc("build", str(SAMPLE_DOCS), "-o", str(tmp_path / "x.kbpack"), "--vectors", "binary", "--index", "HNSW32")
    assert proc.returncode == 2 and "--vectors binary" in proc.stderr and "--index Flat" in proc.stderr
    proc = run_kbc("build", str(SAMPLE_DOCS), "-o", str(tmp_path / "x.kbpack"), "--vectors", "int8", "--index", "HNSW32")
    assert proc.returncode == 2 and "float copies" in proc.stderr and "--index Flat" in proc.stderr
    proc = run_kbc("build", str(SAMPLE_DOCS), "-o", str(tmp_path / "x.kbpack"), "--vectors", "int8", "--float16")
    assert proc.returncode == 2 and "disagree" in proc.stderr
    assert not (tmp_path / "x.kbpack").exists()


def test_compact_manifests_match_the_json_schema(encoded_sample):
    import jsonschema
    from conftest import ROOT

    schema = json.loads((ROOT / "schemas" / "manifest.schema.json").read_text())
    for name in ("int8", "binary"):
        with Bundle(encoded_sample[name]) as b:
            jsonschema.validate(b.manifest, schema)
            without_scales = {**b.manifest, "vectors": {k: v for k, v in b.manifest["vectors"].items() if k != "scales"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(without_scales, schema)


def test_float16_is_vectors_f16_in_every_layer(tmp_path):
    """--float16 (and `float16 = true` in a config or an older bundle's build_options) is
    --vectors f16, with the usual precedence: the command line over the config file."""
    config = tmp_path / "int8.toml"
    config.write_text('vectors = "int8"\n')
    out = tmp_path / "x.kbpack"
    run_kbc("build", str(SAMPLE_DOCS), "-o", str(out), "--config", str(config), "--float16", "-q", check=True)
    with Bundle(out) as b:
        assert b.manifest["vectors"]["dtype"] == "float16"
        assert b.manifest["build_options"]["vectors"] == "f16" and b.manifest["build_options"]["float16"] is True
    summary = run_kbc("build", str(SAMPLE_DOCS), "-o", str(out), "--config", str(config), "--json", check=True)
    assert json.loads(summary.stdout)["vectors"] == "int8"
    with Bundle(out) as b:
        assert b.manifest["vectors"]["dtype"] == "int8" and b.manifest["build_options"]["float16"] is False
    both = tmp_path / "both.toml"
    both.write_text('vectors = "binary"\nfloat16 = true\n')
    proc = run_kbc("build", str(SAMPLE_DOCS), "-o", str(out), "--config", str(both), "-q")
    assert proc.returncode == 2 and "float16 and vectors 'binary' disagree" in proc.stderr


def test_diff_sees_a_change_of_encoding(encoded_sample):
    """A CI job that publishes on `kbc diff` must see int8 -> binary: dense search changed."""
    proc = run_kbc("diff", str(encoded_sample["int8"]), str(encoded_sample["binary"]), "--json")
    assert proc.returncode == 7
    report = json.loads(proc.stdout)
    assert report["settings"]["vectors"]["binary"][0] is None and report["chunks"]["added"] == 0
    proc = run_kbc("diff", str(encoded_sample["f32"]), str(encoded_sample["int8"]))
    assert proc.returncode == 7 and 'vectors.dtype: "float32" -> "int8"' in proc.stdout
    assert "another engine or machine" not in proc.stdout


def test_lexical_search_does_not_read_damaged_vectors(encoded_sample, tmp_path):
    """As libkbpack: a lexical query never reads the vectors, so forged scales stop dense search
    (one line, exit 3) but not BM25."""
    data = encoded_sample["int8"].read_bytes()
    forged = tmp_path / "nan-scales.kbpack"
    forged.write_bytes(rebuild(data, {"vector_scales": np.full(384, np.nan, "<f4").tobytes()}))
    lexical = run_kbc("query", str(forged), "greenhouse ventilation", "--mode", "lexical", "-k", "2", "--unit", "chunk", "--json")
    assert lexical.returncode == 0 and len(json.loads(lexical.stdout)["hits"]) == 2
    dense = run_kbc("query", str(forged), "greenhouse ventilation", "--mode", "dense")
    assert dense.returncode == 3 and "vector_scales" in dense.stderr and len(dense.stderr.strip().splitlines()) == 1


def test_large_int8_matrices_are_scored_a_block_at_a_time(monkeypatch):
    """Past CONVERTED_LIMIT no float32 copy of the rows is kept: the same hits, a block at a time."""
    from kbc.search import dense as index_module

    x = unit_rows(70_000, 8, seed=11)  # more rows than one block
    stored, scales = V.encode(x, "int8")
    q = unit_rows(3, 8, seed=12)
    kept = Searcher(stored, None, {}, scales=scales).search(q, 10)
    monkeypatch.setattr(index_module, "CONVERTED_LIMIT", 0)
    blocked = Searcher(stored, None, {}, scales=scales)
    got = blocked.search(q, 10)
    assert getattr(blocked, "_converted", None) is None
    assert np.array_equal(got[1], kept[1]) and np.allclose(got[0], kept[0], atol=1e-6)
