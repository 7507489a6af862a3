"""The JavaScript runtime (runtimes/js: libkbpack compiled to WebAssembly, wrapped by kbpack.mjs) reads
bundles as kbc's Python reader and native libkbpack do: the same verdict, in libkbpack's words, on
every crafted bundle of tests/test_hostile_bundles.py and tests/test_c_verify_differential.py; the
same ids and scores (1e-5) as Python on the probe questions in dense, lexical, hybrid and page unit
and on int8 and binary-coded vectors; the same chunks; and every misuse (a closed handle, a
wrong-sized vector, a 0-byte bundle, ...) answered with a KbpackError, never a crash of Node.

Each test module runs Node once per group of requests (runtimes/js/test/driver.mjs over a JSON list),
not once per question. Skipped, with the reason, without node, without clang's wasm32 target and
wasi-libc, or without zstd's sources (make -C runtimes/c zstd-src); .ci/run installs them and sets
KBC_REQUIRE_RUNTIMES, which makes a missing one a failure."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, built_once, kbc_cli, require_or_skip, SAMPLE_DOCS, sources_key
from kbc.format.bundle import Bundle
from kbc.query.knowledge_base import KnowledgeBase
from test_c_pages import assert_same_pages
from test_c_verify_differential import c_verdict, python_verdict
from test_libkbpack import QUESTIONS, assert_same_ranking, ranked

JS_DIR = ROOT / "runtimes" / "js"
DRIVER = JS_DIR / "test" / "driver.mjs"
WASM_MAX_BYTES = 1 << 20  # issue 40: the .wasm at most 1 MB
NODE_TIMEOUT_S = 300


@pytest.fixture(scope="session")
def kbpack_wasm(tmp_path_factory, zstd_source) -> Path:
    """runtimes/js built by its Makefile once per test run, into a folder named by the sources."""
    node = shutil.which("node")
    if node is None:
        require_or_skip("runtimes/js: no `node` on this machine")
    make = ["make", "-s", "-C", str(JS_DIR), f"ZSTD_SRC={zstd_source}"]
    check = subprocess.run([*make, "check"], capture_output=True, text=True)
    if check.returncode != 0:
        require_or_skip(check.stderr.strip() or "runtimes/js: no wasm32 toolchain")

    def build(folder: Path) -> None:
        proc = subprocess.run([*make, f"BUILD={folder}"], capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"make -C runtimes/js failed:\n{proc.stdout}\n{proc.stderr}"

    js_key = sources_key(*(p.read_text() for p in sorted(JS_DIR.glob("*.c"))), (JS_DIR / "Makefile").read_text())
    return built_once(tmp_path_factory, f"kbpack-wasm-{js_key}", build) / "kbpack.wasm"


def run_driver(wasm: Path, requests: list[dict], tmp_path: Path) -> list[dict]:
    """One Node process answering every request (driver.mjs); a request that crashed the binding
    (anything but a KbpackError) fails the test here."""
    req = tmp_path / "requests.json"
    req.write_text(json.dumps(requests))
    proc = subprocess.run(["node", str(DRIVER), str(wasm), str(req)], capture_output=True, text=True,
                          timeout=NODE_TIMEOUT_S)
    assert proc.returncode == 0, f"node exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    answers = json.loads(proc.stdout)
    assert len(answers) == len(requests)
    crashes = [(r, a["crash"]) for r, a in zip(requests, answers) if "crash" in a]
    assert not crashes, crashes[:5]
    return answers


def ok(answer: dict):
    assert "ok" in answer, answer
    return answer["ok"]


def js_hits(answer: dict) -> list[tuple[int, float]]:
    return [(h["id"], h["score"]) for h in ok(answer)["hits"]]


# --------------------------------------------------------------------------- the build

def test_the_wasm_is_at_most_1_mb_and_imports_only_three_stubbed_wasi_calls(kbpack_wasm):
    size = kbpack_wasm.stat().st_size
    assert 50_000 < size <= WASM_MAX_BYTES, size
    script = ("const m = new WebAssembly.Module(require('fs').readFileSync(process.argv[1]));"
              "console.log(JSON.stringify(WebAssembly.Module.imports(m).map(i => i.module + '.' + i.name)))")
    proc = subprocess.run(["node", "-e", script, str(kbpack_wasm)], capture_output=True, text=True, timeout=60)
    imports = set(json.loads(proc.stdout))
    # nothing but stdio, which kbpack.mjs answers EBADF: no file system, clock or randomness reaches the module
    assert imports <= {f"wasi_snapshot_preview1.{f}" for f in ("fd_write", "fd_seek", "fd_close", "proc_exit")}, imports


# --------------------------------------------------------------------------- verdicts

def test_every_crafted_bundle_gets_libkbpacks_verdict_in_its_words(kbpack_wasm, crafted_bundles, kbpack_tool,
                                                                   tmp_path):
    """The crafted set of test_hostile_bundles / test_c_verify_differential: intact or invalid as
    Python says, and when invalid the very line native libkbpack prints (status 2, invalid)."""
    cases = dict(crafted_bundles)
    assert len(cases) > 150
    answers = run_driver(kbpack_wasm, [{"op": "verdict", "path": str(p)} for p in cases.values()], tmp_path)
    disagreements = []
    for (name, path), answer in zip(cases.items(), answers):
        (py, py_msg), (c, c_msg) = python_verdict(path), c_verdict(kbpack_tool, path)
        js = 0 if "ok" in answer else 3 if answer["error"]["status"] == 2 else f"status {answer['error']['status']}"
        js_msg = "intact" if "ok" in answer else f"kbpack: {answer['error']['message']}"
        if js != py or js_msg != c_msg:
            disagreements.append(f"{name}: python {py} ({py_msg}) / C {c} ({c_msg}) / js {js} ({js_msg})")
    assert not disagreements, f"{len(disagreements)} of {len(cases)}:\n" + "\n".join(disagreements[:20])
    invalid = sum("error" in a for a in answers)
    assert 100 < invalid < len(cases)  # both verdicts are exercised


# --------------------------------------------------------------------------- search against Python

def write_sample(tmp_path_factory, name: str, *args: str) -> Path:
    def build(d: Path) -> None:
        kbc_cli("build", str(SAMPLE_DOCS), "-o", str(d / f"{name}.kbpack"), *args, "-q", check=True)
    return built_once(tmp_path_factory, f"js-{name}", build) / f"{name}.kbpack"


@pytest.fixture(scope="module")
def sample_bundles(tmp_path_factory, sample_bundle) -> dict[str, Path]:
    """sample_docs with the default model as kbc builds it (float32, hybrid, context match), and
    stored as int8 and as int8 with binary codes (format 1.4: the two-stage dense search)."""
    return {"f32": sample_bundle, "int8": write_sample(tmp_path_factory, "int8", "--vectors", "int8"),
            "binary": write_sample(tmp_path_factory, "binary", "--vectors", "binary")}


def test_dense_lexical_and_hybrid_match_python_on_every_probe_and_question(kbpack_wasm, sample_bundles, tmp_path):
    requests, expected = [], []
    for name, bundle in sample_bundles.items():
        with KnowledgeBase(bundle) as kb:
            probes = np.array(kb.bundle.probes().vectors)
            vectors = kb.embed_queries(QUESTIONS)
            for i, (q, hits) in enumerate(zip(probes, kb.search_vectors(probes, k=10))):
                requests.append({"op": "search", "path": str(bundle), "vector": q.tolist(), "k": 10, "mode": "dense",
                                 "unit": "chunk"})
                expected.append(((name, "probe", i, "dense"), [(h.chunk_id, h.score) for h in hits], 1e-5))
            for question, v in zip(QUESTIONS, vectors):
                for mode, k in (("dense", 10), ("lexical", 10), ("hybrid", 10), ("hybrid", 3)):
                    py = ranked(*kb.retriever.search(v[None], [question], k, mode=mode)[0])
                    requests.append({"op": "search", "path": str(bundle), "vector": v.tolist(), "question": question,
                                     "k": k, "mode": mode, "unit": "chunk"})
                    # BM25 is bit-identical (the same libm log: wasi-libc's is musl's); the rest float32
                    expected.append(((name, question, mode, k), py, 1e-5 if mode != "lexical" else 1e-12))
    answers = run_driver(kbpack_wasm, requests, tmp_path)
    compared = 0
    for (what, py, tol), answer in zip(expected, answers):
        assert_same_ranking(js_hits(answer), py, tol, what)
        compared += len(py)
    assert compared > 1000


def test_pages_match_python_in_every_mode(kbpack_wasm, sample_bundle, tmp_path):
    requests, expected = [], []
    with KnowledgeBase(sample_bundle) as kb:
        vectors = kb.embed_queries(QUESTIONS)
        for question, v in zip(QUESTIONS, vectors):
            for mode in ("dense", "lexical", "hybrid"):
                pages = kb.rank_pages([question], 5, mode=mode, vectors=v[None])[0]
                requests.append({"op": "search", "path": str(sample_bundle), "vector": v.tolist(), "question": question,
                                 "k": 5, "mode": mode, "unit": "page"})
                expected.append(((question, mode), pages))
    answers = run_driver(kbpack_wasm, requests, tmp_path)
    n_pages = 0
    for (what, py_pages), answer in zip(expected, answers):
        js_pages = ok(answer)["hits"]
        assert ok(answer)["unit"] == "page"
        assert [(p["source"], p["record"], p["page"]) for p in js_pages] == [tuple(p.key) for p in py_pages], what
        for jp, pp in zip(js_pages, py_pages):
            assert [c["id"] for c in jp["chunks"]] == list(pp.chunk_ids), what
            assert abs(jp["score"] - pp.score) <= 1e-5, what
            assert max(abs(c["score"] - s) for c, s in zip(jp["chunks"], pp.chunk_scores)) <= 1e-5, what
        n_pages += len(js_pages)
    assert n_pages > 40


# --------------------------------------------------------------------------- scoped search (FORMAT.md §2.10)

# sample_docs' attributes (format 1.7), as tests/test_runtime_java.py scopes them: a kind, a path glob,
# both, one source, none matching
WHERES = [["kind=pdf"], ["path:*.md"], ["kind=pdf", "path:ch11*"], ["path:greenhouse-care.md"], ["path:nothing/**"]]


def test_scoped_search_matches_python_in_every_mode_and_unit(kbpack_wasm, sample_bundle, tmp_path):
    """search({ where }) (compiled for one search) and search({ filter }) (Bundle.filter, compiled
    first) against KnowledgeBase's where=: the same chunks, pages and scores (1e-5; BM25 1e-12) in
    dense, lexical and hybrid, and `matched` as Python's filter counts it."""
    path = str(sample_bundle)
    requests, expected = [], []
    with KnowledgeBase(sample_bundle) as kb:
        questions = QUESTIONS[:4]
        vectors = kb.embed_queries(questions)
        for where in WHERES:
            matched = kb.filter(where).matched
            requests.append({"op": "filter", "path": path, "where": where})
            expected.append(("filter", where, matched, None))
            for question, v in zip(questions, vectors):
                for mode in ("dense", "lexical", "hybrid"):
                    tol = 1e-12 if mode == "lexical" else 1e-5
                    chunks = ranked(*kb.rank([question], 5, mode=mode, vectors=v[None], where=where)[0])
                    pages = [{"score": p.score, "key": tuple(p.key), "chunks": list(zip(p.chunk_ids, p.chunk_scores))}
                             for p in kb.rank_pages([question], 5, mode=mode, vectors=v[None], where=where)[0]]
                    for how in ("where", "filter"):
                        for unit, py in (("chunk", chunks), ("page", pages)):
                            requests.append({"op": "search", "path": path, "vector": v.tolist(), "question": question,
                                             "k": 5, "mode": mode, "unit": unit, "where": where, "how": how})
                            expected.append((unit, (where, question, mode, how), matched, (py, tol)))
    answers = run_driver(kbpack_wasm, requests, tmp_path)
    compared, matched_counts = 0, set()
    for (kind, what, matched, reference), answer in zip(expected, answers):
        got = ok(answer)
        assert got["matched"] == matched, (what, got["matched"], matched)
        matched_counts.add(matched)
        if kind == "filter":
            assert got["closed"] is True
            continue
        py, tol = reference
        if kind == "chunk":
            assert_same_ranking([(h["id"], h["score"]) for h in got["hits"]], py, tol, what)
        else:
            js_pages = [{"score": p["score"], "key": (p["source"], p["record"], p["page"]),
                         "chunks": [(c["id"], c["score"]) for c in p["chunks"]]} for p in got["hits"]]
            assert_same_pages(js_pages, py, tol, what)
        compared += len(got["hits"])
    assert compared > 200
    assert 0 in matched_counts and len(matched_counts) >= 4  # an empty scope and narrower ones all ran


def test_every_misuse_of_a_scope_is_one_kbpack_error(kbpack_wasm, sample_bundle, tmp_path):
    """Conditions libkbpack cannot apply get its one line (the unknown key's lists the bundle's keys);
    a bundle without attributes refuses every filter, never searches whole; a closed filter, another
    bundle's, or anything but a Filter is refused; closing the bundle closes its filters."""
    import fuzz_seeds

    old = tmp_path / "old.kbpack"
    old.write_bytes(fuzz_seeds.bases()["float32-lexical-probes"])
    (answer,) = run_driver(kbpack_wasm, [{"op": "filterMisuse", "path": str(sample_bundle), "other": str(old)}],
                           tmp_path)
    results = ok(answer)
    assert results.pop("a filter still open before close") == {"ok": False}
    assert results.pop("the bundle's close closed its filter") == {"ok": True}
    assert len(results) == 15
    not_errors = {name: r for name, r in results.items() if "error" not in r}
    assert not not_errors, not_errors
    for name, r in results.items():
        e = r["error"]
        assert e["name"] == "KbpackError" and e["status"] == 3 and e["message"] and "\n" not in e["message"], (name, e)
    message = {name: r["error"]["message"] for name, r in results.items()}
    with Bundle(sample_bundle) as b:
        keys = ", ".join(sorted(k["name"] for k in b.manifest["attributes"]["keys"]))  # libkbpack lists them sorted
    assert message["unknown key"] == f"unknown attribute 'colour' in 'colour=red'; this bundle has: {keys}"
    assert message["where with an unknown key"] == message["unknown key"]
    assert message["bad operator"].startswith("'kind>pdf': kind is a string")
    assert "no attributes in this bundle" in message["a bundle without attributes, filter"]
    assert message["a bundle without attributes, where"] == message["a bundle without attributes, filter"]
    assert "closed" in message["a closed filter"] and "closed" in message["filter after close"]
    assert "another bundle" in message["another bundle's filter"]


# --------------------------------------------------------------------------- chunks, info, probes

def test_chunks_info_probes_and_encoder_read_as_python_reads_them(kbpack_wasm, tiny_encoder_bundle, tmp_path):
    """The tiny bundle: 330 chunks in 6 blocks (the last partial), a query encoder, probes."""
    path = str(tiny_encoder_bundle)
    with Bundle(tiny_encoder_bundle) as b:
        count, dim = b.count, b.dim
        ids = sorted({0, 1, 63, 64, 65, 200, count - 1})
        chunks = {i: b.chunk(i) for i in ids}
        paths = {i: b.source_path(chunks[i]) for i in ids}
        probes = b.probes()
        reference = np.array(probes.vectors, dtype=np.float32)
        manifest = b.manifest
    perturbed = reference.copy()
    perturbed[2] = -perturbed[2]
    requests = [{"op": "info", "path": path}, {"op": "probes", "path": path},
                {"op": "probeCheck", "path": path, "vectors": reference.tolist()},
                {"op": "probeCheck", "path": path, "vectors": perturbed.ravel().tolist()},
                {"op": "encoder", "path": path}, {"op": "chunk", "path": path, "id": count}]
    requests += [{"op": "chunk", "path": path, "id": i} for i in ids]
    info, js_probes, passed, failed, encoder, past_end, *js_chunks = run_driver(kbpack_wasm, requests, tmp_path)

    info = ok(info)
    assert (info["count"], info["dim"], info["dtype"]) == (count, dim, "float32")
    assert json.loads(info["manifestJson"]) == manifest
    assert {s["name"] for s in info["sections"]} >= {"manifest", "vectors", "chunks", "encoder_graph"}
    assert [p["input"] for p in ok(js_probes)] == probes.inputs() and len(probes.inputs()) == len(reference) >= 15
    assert ok(passed)["passed"] and ok(passed)["minCosine"] > 0.9999
    assert not ok(failed)["passed"] and ok(failed)["worst"] == 2 and ok(failed)["cosines"][2] < -0.99
    assert ok(encoder)["graphBytes"] > 1000 and ok(encoder)["settings"] == manifest["encoder"]
    assert past_end["error"]["status"] == 3 and "chunk" in past_end["error"]["message"]
    for i, answer in zip(ids, js_chunks):
        c, py = ok(answer), chunks[i]
        assert c["text"] == py["text"] and c["context"] == py.get("context"), i
        assert c["sourcePath"] == paths[i], i
        for js_name, py_name in (("source", "source"), ("seq", "seq"), ("pageStart", "page_start"),
                                 ("pageEnd", "page_end"), ("charStart", "char_start"), ("charEnd", "char_end"),
                                 ("tokens", "tokens")):
            assert c[js_name] == py.get(py_name), (i, js_name)


# --------------------------------------------------------------------------- misuse

def test_every_misuse_is_one_kbpack_error_never_a_crash(kbpack_wasm, tiny_encoder_bundle, tmp_path):
    (answer,) = run_driver(kbpack_wasm, [{"op": "misuse", "path": str(tiny_encoder_bundle)}], tmp_path)
    results = ok(answer)
    assert results.pop("closed flag") == {"ok": True}
    assert len(results) == 21
    not_errors = {name: r for name, r in results.items() if "error" not in r}
    assert not not_errors, not_errors
    for name, r in results.items():
        e = r["error"]
        assert e["name"] == "KbpackError" and e["message"] and "\n" not in e["message"], (name, e)
    status = {name: r["error"]["status"] for name, r in results.items()}
    assert status["0-byte bundle"] == 2 and "0 bytes" in results["0-byte bundle"]["error"]["message"]
    assert results["0-byte bundle"]["error"]["part"] == "header"
    assert status["bytes that are not a bundle"] == 2
    assert status["openFile of a missing file"] == 1 and status["openFile of a directory"] == 1
    assert "closed" in results["search after close"]["error"]["message"]
    assert all(status[k] == 3 for k in ("vector of dim + 1", "vector of 0 values", "no vector for dense",
                                        "NaN in the vector", "negative k", "search after close", "chunk after close",
                                        "chunk id past the end", "probe vectors of the wrong size"))


# --------------------------------------------------------------------------- the example

def test_the_example_prints_the_best_chunk_with_its_source_and_page(kbpack_wasm, tiny_encoder_bundle, tmp_path):
    """runtimes/js/examples/search.mjs, laid out as `make package` lays it out (examples/ beside
    kbpack.mjs and kbpack.wasm): the question embedded by the bundle's own encoder
    (runtimes/python/kbpack_encoder.py), the default mode, the best chunk as kbc's reader ranks it;
    lexical without a vector; a damaged bundle one line on stderr, exit 3."""
    package = tmp_path / "package"
    (package / "examples").mkdir(parents=True)
    shutil.copy(JS_DIR / "kbpack.mjs", package)
    shutil.copy(kbpack_wasm, package / "kbpack.wasm")
    shutil.copy(JS_DIR / "examples" / "search.mjs", package / "examples")
    example = ["node", str(package / "examples" / "search.mjs")]
    question = "How do I run only the tests whose names match a filter?"
    vector = tmp_path / "q.f32"
    encoder = ROOT / "runtimes" / "python" / "kbpack_encoder.py"
    subprocess.run([sys.executable, str(encoder), str(tiny_encoder_bundle), question, "--out", str(vector)],
                   check=True, timeout=120)

    def best(mode: str | None, v: np.ndarray | None) -> tuple[float, str, list[str], str]:
        with KnowledgeBase(tiny_encoder_bundle) as kb:
            scores, ids = kb.retriever.search(v[None] if v is not None else None, [question], 3, mode=mode)[0]
            chunk = kb.bundle.chunk(int(ids[0]))
            page = ["p.", str(chunk["page_start"])] if "page_start" in chunk else []
            return float(scores[0]), kb.bundle.source_path(chunk), page, chunk["text"]

    for args, mode, v in (([vector], None, np.fromfile(vector, "<f4")), ([], "lexical", None)):
        proc = subprocess.run([*example, str(tiny_encoder_bundle), question, *map(str, args)], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        first, *text = proc.stdout.splitlines()
        score, path, page, chunk_text = best(mode, v)
        shown_score, shown_path, *shown_page = first.split(" ")
        assert abs(float(shown_score) - score) < 1e-4 and shown_path == path and shown_page == page, (mode, first)
        assert "\n".join(text) == chunk_text, mode

    broken = tmp_path / "broken.kbpack"
    broken.write_bytes(tiny_encoder_bundle.read_bytes()[:1000])
    refused = subprocess.run([*example, str(broken), question], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 3 and refused.stderr.count("\n") == 1 and str(broken) in refused.stderr
    wrong = tmp_path / "short.f32"
    wrong.write_bytes(vector.read_bytes()[:-4])
    refused = subprocess.run([*example, str(tiny_encoder_bundle), question, str(wrong)], capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "values" in refused.stderr


# --------------------------------------------------------------------------- a browser

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]

PAGE = """<!doctype html><html><body><pre id="out">pending</pre>
<script type="module">
import { open, KbpackError } from "./kbpack.mjs";
const out = document.getElementById("out");
try {
  const kb = await open(await (await fetch("bundle.kbpack")).arrayBuffer(), { wasm: new URL("kbpack.wasm", location.href) });
  kb.verify();
  const { hits } = kb.search({ vector: VECTOR, k: 5, mode: "dense", unit: "chunk" });
  let zero = null;
  try { await open(new Uint8Array(0)); } catch (e) { zero = e instanceof KbpackError ? [e.status, e.part] : String(e); }
  out.textContent = "RESULT " + JSON.stringify({ count: kb.count, hits, zero });
  kb.close();
} catch (e) { out.textContent = "RESULT " + JSON.stringify({ error: String(e) }); }
</script></body></html>
"""


def test_a_headless_chromium_loads_the_module_and_searches_as_python(kbpack_wasm, tiny_encoder_bundle, tmp_path):
    """Debian's chromium, headless, fetches the bundle over HTTP (ES modules do not load from file://),
    opens, verifies and searches it in the page: Python's ids and scores."""
    import functools
    import http.server
    import threading

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium (apt-get install chromium): the browser test needs it")
    with Bundle(tiny_encoder_bundle) as b:
        q = np.array(b.probes().vectors[3], dtype=np.float32)
    with KnowledgeBase(tiny_encoder_bundle) as kb:
        py = [(h.chunk_id, h.score) for h in kb.search_vectors(q[None], k=5)[0]]
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(JS_DIR / "kbpack.mjs", site)
    shutil.copy(kbpack_wasm, site / "kbpack.wasm")
    shutil.copy(tiny_encoder_bundle, site / "bundle.kbpack")
    (site / "index.html").write_text(PAGE.replace("VECTOR", json.dumps(q.tolist())))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # --dump-dom writes the page when its virtual-time budget ends, which can come before the fetch
    # and the wasm compile finish (the page still says "pending"): that page is loaded again, at most
    # three times; what the page says is read from its <pre>, never from the script's own source
    shown = "pending"
    try:
        for attempt in range(3):
            proc = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / f'profile{attempt}'}",
                                   "--virtual-time-budget=20000", "--dump-dom",
                                   f"http://127.0.0.1:{server.server_address[1]}/index.html"],
                                  capture_output=True, text=True, timeout=120)
            found = re.search(r'<pre id="out">(.*?)</pre>', proc.stdout, re.S)
            shown = html.unescape(found.group(1)) if found else None
            if shown != "pending":
                break
    finally:
        server.shutdown()
    assert shown and shown.startswith("RESULT "), (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    result = json.loads(shown[len("RESULT "):])
    assert "error" not in result, result
    assert result["zero"] == [2, "header"]  # a 0-byte bundle: KbpackError, invalid, in the page too
    with Bundle(tiny_encoder_bundle) as b:
        assert result["count"] == b.count
    assert_same_ranking([(h["id"], h["score"]) for h in result["hits"]], py, 1e-5, "chromium", 1e-6)


# --------------------------------------------------------------------------- the answer strength (FORMAT.md §2.11)

def test_the_answer_strength_is_libkbpacks_and_pythons(kbpack_wasm, tmp_path_factory, tiny_model, tiny_encoder_bundle,
                                                       libkbpack, tmp_path):
    """Bundle.answerStrength and minStrength on tests/test_c_answer.py's bundles (min_strength absent, null,
    0.3 from kbc build --min-score, and 1) and vectors: the strength native libkbpack gives (through
    kbpack_runtime.libkbpack) to the bit, within 1e-6 of KnowledgeBase.answer, the same verdict (null: no
    threshold)."""
    from kbpack_runtime.libkbpack import Bundle as CBundle
    from test_c_answer import STRENGTH_TOLERANCE, VARIANTS, answer_variants, answer_vectors

    variants = answer_variants(tmp_path_factory, tiny_model, tiny_encoder_bundle)
    vectors = answer_vectors(tiny_encoder_bundle, tiny_model)
    requests, expected = [], []
    for name, path in variants.items():
        with KnowledgeBase(path, model=str(tiny_model)) as kb, \
                CBundle(path, library=str(libkbpack.build / "libkbpack.so")) as cb:
            for i, (question, v) in enumerate(vectors):
                for mode in ("dense", "hybrid"):
                    first = kb.search(question, k=1, mode=mode, vector=v)[0].chunk_id
                    requests.append({"op": "answer", "path": str(path), "vector": v.tolist(), "id": first})
                    expected.append(((name, i, mode), VARIANTS[name], cb.answer_strength(v, first), kb.answer(v, first)))
    answers = run_driver(kbpack_wasm, requests, tmp_path)
    verdicts = set()
    for (what, threshold, native, py), answer in zip(expected, answers):
        got = ok(answer)
        assert got["minStrength"] == threshold, (what, got)
        # the same float32 products (wasm SIMD keeps the C loop's order of additions): the same double
        assert (got["strength"], got["confident"]) == native, (what, got, native)
        assert abs(got["strength"] - py.strength) <= STRENGTH_TOLERANCE and got["confident"] is py.confident, (what, got)
        verdicts.add(got["confident"])
    assert verdicts == {None, True, False} and len(answers) == len(variants) * len(vectors) * 2


def test_every_misuse_of_the_answer_strength_is_one_kbpack_error(kbpack_wasm, tiny_encoder_bundle, tmp_path):
    (answer,) = run_driver(kbpack_wasm, [{"op": "answerMisuse", "path": str(tiny_encoder_bundle)}], tmp_path)
    results = ok(answer)
    assert len(results) == 10
    for name, r in results.items():
        assert "error" in r, (name, r)
        e = r["error"]
        assert e["name"] == "KbpackError" and e["status"] == 3 and e["message"] and "\n" not in e["message"], (name, e)
    assert "NaN" in results["NaN in the vector"]["error"]["message"]  # libkbpack's words
    assert "closed" in results["answer strength after close"]["error"]["message"]
