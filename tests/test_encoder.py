"""`kbc build --with-encoder`: the bundle carries the ONNX graph that made its vectors and the
tokenizer, and a script with no kbc import (runtimes/python/kbpack_encoder.py: numpy, onnxruntime,
tokenizers) embeds the probe texts from the bundle alone and passes `kbc probe`. The rest of the Python
runtime package (runtimes/python/kbpack_runtime: libkbpack through ctypes) searches as kbc's reader does,
and its example (runtimes/python/examples/search.py) runs where kbc cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, run_kbc
from forge import rebuild, sections
from kbc.format.bundle import Bundle

SCRIPT = ROOT / "runtimes" / "python" / "kbpack_encoder.py"


@pytest.fixture(scope="module", params=["onnx", "onnx-int8"])
def with_encoder(request, tmp_path_factory, tiny_model):
    out = tmp_path_factory.mktemp("enc") / f"kb-{request.param}.kbpack"
    run_kbc("build", str(ROOT / "sample_docs"), "-o", str(out), "--model", str(tiny_model), "--backend",
            request.param, "--with-encoder", "-q", check=True)
    return out, request.param


def test_a_script_without_kbc_embeds_the_probes_from_the_bundle_and_passes(with_encoder, tmp_path):
    bundle, backend = with_encoder
    probes = tmp_path / "probes.npy"
    subprocess.run([sys.executable, str(SCRIPT), str(bundle), "--probes", str(probes)], check=True, timeout=120)
    proc = run_kbc("probe", str(bundle), "--vectors", str(probes), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["min"] > 0.9999  # the same graph: the same vectors, bar summation order
    question = tmp_path / "q.f32"
    subprocess.run([sys.executable, str(SCRIPT), str(bundle), "how do I water seedlings", "--out", str(question)],
                   check=True, timeout=120)
    with Bundle(bundle) as b:
        meta = b.manifest["encoder"]
        assert (meta["precision"], meta["format"]) == ("int8" if backend == "onnx-int8" else "float32", "onnx")
        assert meta["graph_sha256"] == b.manifest["embedder"]["runtime"]["graph_sha256"]
        assert np.fromfile(question, dtype="<f4").shape == (b.dim,)
        b.verify()


def test_an_encoder_that_is_not_the_one_recorded_is_refused(with_encoder, tmp_path):
    bundle, _ = with_encoder
    data = bundle.read_bytes()
    graph = bytearray(sections(data)["encoder_graph"][1])
    graph[-100] ^= 0xFF  # a different graph, every checksum recomputed
    forged = tmp_path / "forged.kbpack"
    forged.write_bytes(rebuild(data, {"encoder_graph": bytes(graph)}))
    proc = run_kbc("inspect", str(forged), "--verify")
    assert proc.returncode == 3 and "encoder_graph: differs from the manifest's encoder.graph_sha256" in proc.stderr


@pytest.mark.parametrize("key, value", [("query_prompt", "not the prompt: "), ("max_seq_length", 99),
                                        ("do_lower_case", True), ("graph_sha256", "0" * 64)])
def test_an_encoder_record_that_disagrees_with_the_embedder_is_refused(with_encoder, tmp_path, key, value):
    forged = _disagreeing(with_encoder, tmp_path, key, value)
    proc = run_kbc("inspect", str(forged), "--verify")
    assert proc.returncode == 3 and f"encoder.{key} disagrees with embedder" in proc.stderr


def _disagreeing(with_encoder, tmp_path, key, value):
    bundle, _ = with_encoder
    data = bundle.read_bytes()
    manifest = json.loads(sections(data)["manifest"][1])
    if key == "graph_sha256":  # the graph matches its own record, but not the vectors' embedder
        manifest["embedder"]["runtime"]["graph_sha256"] = value
    else:
        assert manifest["encoder"][key] != value
        manifest["encoder"][key] = value
    forged = tmp_path / "forged.kbpack"
    forged.write_bytes(rebuild(data, {"manifest": json.dumps(manifest).encode()}))
    return forged


@pytest.mark.parametrize("key", ["query_prompt", "do_lower_case", "graph_sha256"])
def test_libkbpack_refuses_the_same_disagreeing_encoders(with_encoder, tmp_path, key, kbpack_tool):
    value = {"query_prompt": "not the prompt: ", "do_lower_case": True, "graph_sha256": "0" * 64}[key]
    forged = _disagreeing(with_encoder, tmp_path, key, value)
    proc = subprocess.run([str(kbpack_tool), "verify", str(forged)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and f"encoder.{key} disagrees with embedder" in proc.stderr


def test_with_encoder_needs_an_onnx_backend(tmp_path, tiny_model):
    proc = run_kbc("build", str(ROOT / "sample_docs"), "-o", str(tmp_path / "kb.kbpack"), "--model", str(tiny_model),
                   "--backend", "torch", "--with-encoder")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "--with-encoder needs --backend onnx or onnx-int8" in proc.stderr and not (tmp_path / "kb.kbpack").exists()


# --------------------------------------------------------------------------- the Python runtime package

EXAMPLE = ROOT / "runtimes" / "python" / "examples" / "search.py"
QUESTIONS = ["How do I run only the tests whose names match a filter?", "cargo new hello_cargo",
             "How often should I water the greenhouse?", "the and of what", "zzzqx unknownword"]


def test_the_runtimes_libkbpack_binding_searches_as_kbcs_reader(tiny_encoder_bundle, libkbpack):
    """kbpack_runtime.libkbpack (ctypes over libkbpack.so) against kbc's reader: the same ranking in
    every mode (ties as the C tests allow them for the tiny model), the same chunks."""
    from kbc.query.knowledge_base import KnowledgeBase
    from kbpack_runtime import Encoder
    from kbpack_runtime.libkbpack import Bundle as CBundle
    from test_libkbpack import NEAR_TIE, assert_same_ranking, ranked

    encoder = Encoder.from_bundle(str(tiny_encoder_bundle))
    compared = 0
    with CBundle(tiny_encoder_bundle, library=str(libkbpack.build / "libkbpack.so")) as cb, \
            KnowledgeBase(tiny_encoder_bundle) as kb:
        for question in QUESTIONS:
            v = encoder.embed(question)
            for mode in ("dense", "lexical", "hybrid"):
                got = cb.search(v, question, k=10, mode=mode)
                py = ranked(*kb.retriever.search(v[None], [question], 10, mode=mode)[0])
                assert_same_ranking(got, py, 0.0 if mode == "lexical" else 1e-5, (question, mode), NEAR_TIE["tiny"])
                compared += len(got)
        for i in (0, 63, 64, kb.bundle.count - 1):
            chunk, py = cb.chunk(i), kb.bundle.chunk(i)
            assert (chunk["text"], chunk["source_path"], chunk.get("page_start")) == \
                   (py["text"], kb.bundle.source_path(py), py.get("page_start"))
    assert compared > 80


def test_the_runtimes_libkbpack_binding_ranks_pages_and_scopes_as_kbcs_reader(sample_bundle, libkbpack):
    """search_pages and where= through ctypes against KnowledgeBase.rank_pages and rank(where=) on
    sample_docs with the real model (no near-ties): the same pages, members and scores."""
    from kbc.query.knowledge_base import KnowledgeBase
    from kbpack_runtime.libkbpack import Bundle as CBundle
    from test_c_pages import assert_same_pages
    from test_libkbpack import assert_same_ranking, ranked

    compared = 0
    with CBundle(sample_bundle, library=str(libkbpack.build / "libkbpack.so")) as cb, KnowledgeBase(sample_bundle) as kb:
        vectors = kb.embed_queries(QUESTIONS)
        for question, v in zip(QUESTIONS, vectors):
            for mode in ("dense", "lexical", "hybrid"):
                tol = 0.0 if mode == "lexical" else 1e-5
                for where in (None, ["kind=pdf"], ["path:*.md"]):
                    got = cb.search_pages(v, question, k=5, mode=mode, where=where)
                    py = [{"score": p.score, "key": p.key, "chunks": list(zip(p.chunk_ids, p.chunk_scores))}
                          for p in kb.rank_pages([question], 5, mode=mode, vectors=v[None], where=where)[0]]
                    mine = [{"score": p["score"], "key": (p["source"], p["record"], p["page"]), "chunks": p["chunks"]}
                            for p in got]
                    assert_same_pages(mine, py, tol, (question, mode, where))
                    hits = cb.search(v, question, k=5, mode=mode, where=where)
                    assert_same_ranking(hits, ranked(*kb.rank([question], 5, mode=mode, vectors=v[None], where=where)[0]),
                                        tol, (question, mode, where))
                    compared += len(got) + len(hits)
    assert compared > 150


def test_the_runtimes_libkbpack_binding_refuses_misuse_in_one_exception(tiny_encoder_bundle, libkbpack, tmp_path):
    from kbpack_runtime.libkbpack import Bundle as CBundle
    from kbpack_runtime.libkbpack import KbpackError

    library = str(libkbpack.build / "libkbpack.so")
    empty = tmp_path / "empty.kbpack"
    empty.write_bytes(b"")
    cb = CBundle(tiny_encoder_bundle, library=library)
    cases = {
        "short vector": (lambda: cb.search(np.zeros(cb.dim - 1), None, mode="dense"), "argument"),
        "k 0": (lambda: cb.search(np.zeros(cb.dim), None, k=0, mode="dense"), "argument"),
        "no vector, dense": (lambda: cb.search(None, "pump", mode="dense"), "argument"),
        "chunk out of range": (lambda: cb.chunk(cb.count), "argument"),
        "0-byte bundle": (lambda: CBundle(empty, library=library), "invalid"),
        "missing bundle": (lambda: CBundle(tmp_path / "none.kbpack", library=library), "io"),
        "missing library": (lambda: CBundle(tiny_encoder_bundle, library=str(tmp_path / "none.so")), "library"),
        "unknown attribute": (lambda: cb.search(np.zeros(cb.dim), None, mode="dense", where="nope=1"), "argument"),
        "bad condition": (lambda: cb.search_pages(None, "pump", mode="lexical", where=["kind~pdf"]), "argument"),
        "empty where": (lambda: cb.search(np.zeros(cb.dim), None, mode="dense", where=[]), "argument"),
        "pages, k 0": (lambda: cb.search_pages(np.zeros(cb.dim), None, k=0, mode="dense"), "argument"),
    }
    for name, (call, status) in cases.items():
        with pytest.raises(KbpackError) as e:
            call()
        assert e.value.status == status and str(e.value) and "\n" not in str(e.value), name
    cb.close()
    with pytest.raises(KbpackError, match="closed"):
        cb.search(np.zeros(cb.dim), None, mode="dense")


def test_the_python_example_prints_the_best_chunk_with_its_source_and_page(tiny_encoder_bundle, libkbpack, tmp_path):
    """runtimes/python/examples/search.py as the docs run it, in a process where kbc cannot be imported."""
    from kbc.query.knowledge_base import KnowledgeBase
    from kbpack_runtime import Encoder

    question = QUESTIONS[0]
    library = str(libkbpack.build / "libkbpack.so")
    blocked = ("import sys, runpy; sys.modules['kbc'] = None; sys.argv = sys.argv[1:]; "
               "runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", blocked, str(EXAMPLE), str(tiny_encoder_bundle), question,
                           "--library", library], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    first, *text = proc.stdout.splitlines()
    v = Encoder.from_bundle(str(tiny_encoder_bundle)).embed(question)
    with KnowledgeBase(tiny_encoder_bundle) as kb:
        scores, ids = kb.retriever.search(v[None], [question], 3, mode=None)[0]
        best = kb.bundle.chunk(int(ids[0]))
        path = kb.bundle.source_path(best)
    score, shown_path, *page = first.split(" ")
    assert abs(float(score) - float(scores[0])) < 1e-4 and shown_path == path
    assert page == (["p.", str(best["page_start"])] if "page_start" in best else [])
    assert "\n".join(text) == best["text"]

    broken = tmp_path / "broken.kbpack"
    broken.write_bytes(tiny_encoder_bundle.read_bytes()[:1000])
    refused = subprocess.run([sys.executable, str(EXAMPLE), str(broken), question, "--lexical", "--library", library],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 3 and refused.stderr.count("\n") == 1 and str(broken) in refused.stderr
