"""The Java binding (runtimes/java: dev.kbc.kbpack.KbPack over libkbpack through JNI) against kbc's
Python reader on the same bundles (issue 40): the same verdict on every crafted bundle (and
libkbpack's own words, as the `kbpack` tool gives them), the same ids and scores (1e-5; BM25 to the
bit) in dense, lexical and hybrid search and with pages as the unit, the same chunks and probe
check; every misuse (a closed handle, a null or wrong-sized vector, a 0-byte bundle, ...) one
KbPackException, never a JVM crash; scoped search (FORMAT.md §2.10: Query.where, KbPack.filter) keeps
what kbc's reader keeps; and the example in runtimes/java/examples runs.

The jar and libkbpack_jni.so are built once per test run (conftest.built_once, over the
libkbpack build the C tests use). All requests of this module go to one JVM running the test driver
(runtimes/java/src/test/java/dev/kbc/kbpack/Driver.java: a request a line in, JSON a line out): a
JVM takes about half a second to start, the crafted set is hundreds of bundles. Skipped, with the
reason, where no JDK is installed (`.ci/run` installs default-jdk-headless)."""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, built_once, sources_key
from kbc.query.knowledge_base import KnowledgeBase
from test_c_pages import QUESTIONS as PAGE_QUESTIONS
from test_c_pages import assert_same_pages
from test_c_verify_differential import c_verdict, python_verdict
from test_libkbpack import QUESTIONS, assert_same_ranking, ranked, write_f32

JAVA_SRC = ROOT / "runtimes" / "java"
ANSWER_TIMEOUT_S = 120  # the slowest request verifies a bundle; a JVM stuck longer is a failure


def java_tools() -> tuple[str, str]:
    javac, java = shutil.which("javac"), shutil.which("java")
    if not javac or not java:
        if os.environ.get("KBC_REQUIRE_JAVA"):  # CI installs a JDK: its absence there is a failure
            pytest.fail("the Java binding: no javac/java on PATH")
        pytest.skip("the Java binding: no JDK (javac, java) on this machine: apt-get install default-jdk-headless")
    return javac, java


@pytest.fixture(scope="session")
def java_build(tmp_path_factory, libkbpack) -> Path:
    """`make -C runtimes/java all test-classes` once per test run, linked with the C tests' libkbpack.a."""
    java_tools()
    h = hashlib.sha256()
    for path in sorted(p for p in JAVA_SRC.rglob("*") if p.is_file() and "android" not in p.parts):
        h.update(str(path.relative_to(JAVA_SRC)).encode() + b"\0" + path.read_bytes() + b"\0")

    def build(folder: Path) -> None:
        proc = subprocess.run(["make", "-s", "-C", str(JAVA_SRC), f"BUILD={folder}", f"CC={libkbpack.cc}",
                               f"LIBKBPACK={libkbpack.build / 'libkbpack.a'}", "all", "test-classes"],
                              capture_output=True, text=True)
        assert proc.returncode == 0, f"make -C runtimes/java failed:\n{proc.stdout}\n{proc.stderr}"

    return built_once(tmp_path_factory, f"java-{h.hexdigest()[:12]}-{sources_key(libkbpack.cc)}", build)


def java_argv(build: Path, main: str, *args) -> list[str]:
    _, java = java_tools()
    return [java, f"-Dkbpack.library={build / 'libkbpack_jni.so'}",
            "-cp", f"{build / 'kbpack.jar'}{os.pathsep}{build / 'test-classes'}", main, *map(str, args)]


class Jvm:
    """The test driver in one JVM: ask(request fields) -> its JSON answer."""

    def __init__(self, build: Path):
        self.proc = subprocess.Popen(java_argv(build, "dev.kbc.kbpack.Driver"), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8")

    def ask(self, *fields) -> dict:
        line = "\t".join(map(str, fields))
        assert "\n" not in line
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], ANSWER_TIMEOUT_S)
        answer = self.proc.stdout.readline() if ready else ""
        if not answer:  # the JVM died (a crash in native code) or hung
            self.proc.kill()
            raise AssertionError(f"the JVM gave no answer to {fields!r}: exit {self.proc.wait()}, "
                                 f"stderr {self.proc.stderr.read()[-2000:]}")
        out = json.loads(answer)
        assert "crash" not in out, (fields, out)  # something other than KbPackException escaped the binding
        return out

    def close(self) -> int:
        self.proc.stdin.close()
        code = self.proc.wait(timeout=60)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return code


@pytest.fixture(scope="module")
def jvm(java_build):
    j = Jvm(java_build)
    yield j
    assert j.close() == 0


def question_field(question: str | None) -> str:
    return "-" if question is None else question.encode("utf-8").hex()


# --------------------------------------------------------------------------- verdicts

def test_every_crafted_bundle_gets_libkbpacks_verdict_and_pythons(jvm, crafted_bundles, kbpack_tool):
    assert len(crafted_bundles) > 150
    disagree, invalid = [], 0
    for name, path in crafted_bundles.items():
        answer = jvm.ask("verify", path)
        c_code, c_message = c_verdict(kbpack_tool, path)
        py_code, py_message = python_verdict(path)
        if "verdict" in answer:
            jvm_code, jvm_message = 0, "intact"
        else:
            jvm_code = 3 if answer["error"]["status"] == "INVALID" else answer["error"]["status"]
            jvm_message = "kbpack: " + answer["error"]["message"]
            invalid += 1
        # the same library: the same words as the `kbpack` tool; the same verdict as kbc's reader
        if (jvm_code, jvm_message) != (c_code, c_message) or jvm_code != py_code:
            disagree.append(f"{name}: JVM {jvm_code} ({jvm_message}) / C {c_code} ({c_message}) / "
                            f"python {py_code} ({py_message})")
    assert not disagree, f"{len(disagree)} of {len(crafted_bundles)} differ:\n" + "\n".join(disagree)
    assert invalid > 100  # most of the set is damaged: the comparison is not of intact files only


@pytest.mark.parametrize("how", ["direct", "heap", "readonly"])
def test_a_bundle_opened_from_a_byte_buffer_is_the_file(jvm, sample_bundle, how):
    answer = jvm.ask("buffer", sample_bundle, how)
    with KnowledgeBase(sample_bundle) as kb:
        assert answer == {"count": kb.bundle.count, "verdict": "intact"}


def test_a_damaged_buffer_is_refused_like_the_file(jvm, crafted_bundles, tmp_path):
    damaged = [p for n, p in crafted_bundles.items() if python_verdict(p)[0] == 3][:20]
    assert len(damaged) == 20
    for path in damaged:
        from_file = jvm.ask("verify", path)
        from_buffer = jvm.ask("buffer", path, "direct")
        assert from_file["error"]["message"] == from_buffer["error"]["message"], path


# --------------------------------------------------------------------------- what the binding reads

@pytest.fixture(scope="module")
def sample_queries(sample_bundle) -> dict[str, np.ndarray]:
    """Every question of the C tests (chunks and pages) embedded by kbc's reader with the real model."""
    questions = list(dict.fromkeys(QUESTIONS + PAGE_QUESTIONS))
    with KnowledgeBase(sample_bundle) as kb:
        return dict(zip(questions, kb.embed_queries(questions)))


def test_info_is_what_python_reads(jvm, sample_bundle):
    info = jvm.ask("info", sample_bundle)
    with KnowledgeBase(sample_bundle) as kb:
        b = kb.bundle
        assert (info["count"], info["dim"], info["dtype"]) == (b.count, b.dim, b.manifest["vectors"]["dtype"])
        assert info["format"] == [b.major, b.minor]
        assert info["embedder"] == b.manifest["embedder"]["name"]
        assert json.loads(info["manifest"]) == b.manifest
        assert info["lexical"] is True and info["binary"] is False
        assert (info["default_mode"], info["default_unit"]) == (kb.default_mode, kb.retriever.settings.unit)


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_chunk_search_matches_python(jvm, sample_bundle, sample_queries, mode, tmp_path):
    compared = 0
    with KnowledgeBase(sample_bundle) as kb:
        for i, (question, v) in enumerate(sample_queries.items()):
            for k in (1, 10):
                vector = write_f32(tmp_path / f"q{i}.f32", v)
                got = jvm.ask("search", sample_bundle, "chunk", mode, k, vector, question_field(question))["hits"]
                py = ranked(*kb.retriever.search(v[None], [question], k, mode=mode)[0])
                # BM25 is bit-identical (the same double crosses JNI); dense and fused carry float32 products
                assert_same_ranking([tuple(h) for h in got], py, 0.0 if mode == "lexical" else 1e-5,
                                    (question, mode, k))
                compared += len(got)
    assert compared > 40


def test_dense_search_with_every_probe_vector_matches_python(jvm, sample_bundle, tmp_path):
    with KnowledgeBase(sample_bundle) as kb:
        vectors = np.array(kb.bundle.probes().vectors)
        expected = kb.search_vectors(vectors, k=10)
    assert len(vectors) >= 15
    for i, (v, py_hits) in enumerate(zip(vectors, expected)):
        got = jvm.ask("search", sample_bundle, "chunk", "dense", 10, write_f32(tmp_path / "p.f32", v), "-")["hits"]
        assert_same_ranking([tuple(h) for h in got], [(h.chunk_id, h.score) for h in py_hits], 1e-5, ("probe", i))


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid", "default"])
def test_page_search_matches_python(jvm, sample_bundle, sample_queries, mode, tmp_path):
    compared = 0
    with KnowledgeBase(sample_bundle) as kb:
        for i, (question, v) in enumerate(sample_queries.items()):
            vector = write_f32(tmp_path / f"q{i}.f32", v)
            got = jvm.ask("search", sample_bundle, "page", mode, 5, vector, question_field(question))["pages"]
            jvm_pages = [{"score": p["score"], "key": (p["source"], p["record"], p["page"]),
                          "chunks": [tuple(c) for c in p["chunks"]]} for p in got]
            ranked_pages = kb.rank_pages([question], 5, mode=None if mode == "default" else mode, vectors=v[None])[0]
            py = [{"score": p.score, "key": p.key, "chunks": list(zip(p.chunk_ids, p.chunk_scores))} for p in ranked_pages]
            assert_same_pages(jvm_pages, py, 0.0 if mode == "lexical" else 1e-5, (question, mode))
            compared += len(got)
    assert compared > 20


# scopes over sample_docs' attributes (format 1.7): a kind, a path glob, both, one source, none matching
WHERES = [["kind=pdf"], ["path:*.md"], ["kind=pdf", "path:ch11*"], ["path:greenhouse-care.md"], ["path:nothing/**"]]


@pytest.mark.parametrize("how", ["where", "filter"])
@pytest.mark.parametrize("unit", ["chunk", "page"])
def test_scoped_search_matches_python(jvm, sample_bundle, sample_queries, unit, how, tmp_path):
    """Query.where (compiled per search) and KbPack.filter (compiled once) against KnowledgeBase's
    where=: the same hits, pages and scores in every mode, the same kept chunks."""
    compared = 0
    with KnowledgeBase(sample_bundle) as kb:
        for where in WHERES:
            field = "\n".join(where).encode().hex()
            kept = jvm.ask("filter", sample_bundle, field)
            py_filter = kb.filter(where)
            assert kept["matched"] == py_filter.matched and kept["kept"] == sorted(map(int, py_filter.ids)), where
            for i, (question, v) in enumerate(list(sample_queries.items())[:4]):
                vector = write_f32(tmp_path / f"q{i}.f32", v)
                for mode in ("dense", "lexical", "hybrid"):
                    got = jvm.ask("search", sample_bundle, unit, mode, 5, vector, question_field(question), field, how)
                    tol = 0.0 if mode == "lexical" else 1e-5
                    if unit == "chunk":
                        py = ranked(*kb.rank([question], 5, mode=mode, vectors=v[None], where=where)[0])
                        assert_same_ranking([tuple(h) for h in got["hits"]], py, tol, (where, question, mode))
                        assert {i for i, _ in got["hits"]} <= set(kept["kept"])
                        compared += len(got["hits"])
                    else:
                        pages = kb.rank_pages([question], 5, mode=mode, vectors=v[None], where=where)[0]
                        py = [{"score": p.score, "key": p.key, "chunks": list(zip(p.chunk_ids, p.chunk_scores))}
                              for p in pages]
                        jvm_pages = [{"score": p["score"], "key": (p["source"], p["record"], p["page"]),
                                      "chunks": [tuple(c) for c in p["chunks"]]} for p in got["pages"]]
                        assert_same_pages(jvm_pages, py, tol, (where, question, mode))
                        compared += len(got["pages"])
    assert compared > 100


def test_chunks_match_python(jvm, sample_bundle):
    with KnowledgeBase(sample_bundle) as kb:
        b = kb.bundle
        ids = sorted({0, 1, b.count // 2, b.count - 1, *range(60, 70)})
        for i in ids:
            got = jvm.ask("chunk", sample_bundle, i)
            chunk = b.chunk(i)
            assert got["id"] == i and got["text"] == chunk["text"], i
            assert got["source_path"] == b.source_path(chunk), i
            assert got["context"] == chunk.get("context"), i
            for field in ("source", "seq", "page_start", "page_end", "char_start", "char_end", "tokens"):
                assert got[field] == chunk.get(field, 0), (i, field)


def test_the_probe_check_passes_with_the_reference_vectors_and_fails_perturbed(jvm, sample_bundle, tmp_path):
    with KnowledgeBase(sample_bundle) as kb:
        probes = kb.bundle.probes()
        vectors = np.array(probes.vectors, dtype=np.float32)
        inputs = probes.inputs()
    passed = jvm.ask("probe", sample_bundle, write_f32(tmp_path / "ok.f32", vectors))
    assert passed["count"] == len(vectors) and passed["passed"] is True and passed["min"] > 0.9999
    assert passed["inputs"] == inputs and len(inputs) == len(vectors)
    bad = vectors.copy()
    bad[3] = -bad[3]
    failed = jvm.ask("probe", sample_bundle, write_f32(tmp_path / "bad.f32", bad))
    assert failed["passed"] is False and failed["worst"] == 3 and failed["min"] < -0.999


# --------------------------------------------------------------------------- misuse

def test_every_misuse_is_one_kbpackexception_with_a_message(jvm, sample_bundle, tmp_path):
    bundle = tmp_path / "kb.kbpack"
    shutil.copy(sample_bundle, bundle)
    (tmp_path / "kb.kbpack.empty").write_bytes(b"")  # the driver's 0-byte case opens PATH.empty
    cases = {c["case"]: c for c in jvm.ask("misuse", bundle)["cases"]}
    assert len(cases) >= 25
    for name, c in cases.items():
        assert c["thrown"] == "KbPackException" and c["message"] and "\n" not in c["message"], c
    for name in ("info after close", "search after close", "pages after close", "chunk after close",
                 "verify after close", "probe after close"):
        assert cases[name]["status"] == "CLOSED", cases[name]
    for name in ("null vector, dense", "null vector, hybrid", "null question, lexical", "short vector",
                 "long vector", "empty vector", "k 0", "k negative", "chunk -1", "chunk count", "null path",
                 "null buffer"):
        assert cases[name]["status"] == "ARGUMENT", cases[name]
    for name in ("0-byte file", "0-byte heap buffer", "0-byte direct buffer", "0-byte array"):
        assert cases[name]["status"] == "INVALID" and cases[name]["message"].startswith("header: "), cases[name]
    assert cases["missing file"]["status"] == "IO" and cases["a directory"]["status"] == "IO"
    natives = [name for name in cases if name.startswith("natives: ")]
    assert len(natives) >= 8
    for name in natives:  # the C side's own checks, reached past KbPack's
        expected = "CLOSED" if "handle 0" in name else "ARGUMENT"
        assert cases[name]["status"] == expected, cases[name]
    for name in ("search with a closed filter", "a closed filter's count", "a filter whose KbPack is closed",
                 "filter after close"):
        assert cases[name]["status"] == "CLOSED", cases[name]
    for name in ("search with another KbPack's filter", "a filter of an unknown key", "a filter with a bad operator",
                 "a filter of no condition", "a null condition", "where with an unknown key"):
        assert cases[name]["status"] == "ARGUMENT", cases[name]
    assert "this bundle has: " in cases["a filter of an unknown key"]["message"]  # libkbpack's words, keys listed
    # the JVM is still answering after all of it
    assert jvm.ask("verify", sample_bundle) == {"verdict": "intact"}


# --------------------------------------------------------------------------- the example

def test_the_example_prints_the_best_chunk_with_its_source_and_page(java_build, tiny_encoder_bundle, tmp_path):
    """runtimes/java/examples/Search.java as the docs run it: the question embedded by the bundle's own
    encoder (runtimes/python/kbpack_encoder.py), hybrid search, the best chunk printed."""
    question = "How do I run only the tests whose names match a filter?"
    vector = tmp_path / "q.f32"
    encoder = ROOT / "runtimes" / "python" / "kbpack_encoder.py"
    subprocess.run([sys.executable, str(encoder), str(tiny_encoder_bundle), question, "--out", str(vector)],
                   check=True, timeout=120)
    proc = subprocess.run(java_argv(java_build, "Search", tiny_encoder_bundle, question, vector), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    first, *text = proc.stdout.splitlines()
    with KnowledgeBase(tiny_encoder_bundle) as kb:
        v = np.fromfile(vector, "<f4")
        scores, ids = kb.retriever.search(v[None], [question], 3, mode=None)[0]
        best = kb.bundle.chunk(int(ids[0]))
        path = kb.bundle.source_path(best)
    score, shown_path, *page = first.split(" ")
    assert abs(float(score) - float(scores[0])) < 1e-4 and shown_path == path
    assert page == (["p.", str(best["page_start"])] if "page_start" in best else [])
    assert "\n".join(text) == best["text"]

    lexical = subprocess.run(java_argv(java_build, "Search", tiny_encoder_bundle, "pytest -k filter"),
                             capture_output=True, text=True, timeout=120)
    assert lexical.returncode == 0 and lexical.stdout.strip(), lexical.stderr
    broken = tmp_path / "broken.kbpack"
    broken.write_bytes(tiny_encoder_bundle.read_bytes()[:1000])
    refused = subprocess.run(java_argv(java_build, "Search", broken, question), capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 3 and refused.stderr.count("\n") == 1 and str(broken) in refused.stderr


# --------------------------------------------------------------------------- Android packaging

def cmake_build(source: Path, build: Path, *defines: str, env: dict | None = None) -> Path:
    # no build type: no optimisation, a third of Release's compile time (zstd.c is 2 MB); what is
    # checked is that the file builds, links and runs, not its speed
    configure = subprocess.run(["cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=", *defines],
                               capture_output=True, text=True, env=env, timeout=300)
    assert configure.returncode == 0, configure.stdout + configure.stderr
    make = subprocess.run(["cmake", "--build", str(build)], capture_output=True, text=True, env=env, timeout=900)
    assert make.returncode == 0, make.stdout + make.stderr
    return build / "libkbpack_jni.so"


def exported(library: Path, nm: str = "nm") -> set[str]:
    out = subprocess.run([nm, "-D", "--defined-only", str(library)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def test_the_android_cmake_file_builds_a_self_contained_jni_library(java_build, zstd_source, tiny_encoder_bundle,
                                                                     tmp_path):
    """runtimes/java/android/CMakeLists.txt (Gradle's externalNativeBuild) with zstd from source, as
    the NDK would build it, here with the host compiler: it needs no libzstd, exports only the JNI
    entry points, and the JVM searches with it as with the Makefile's build. Then with Debian's
    aarch64 cross compiler where installed: it compiles and links for arm64 (not run: no arm64 JVM).
    The NDK itself is not installed here: bionic and the NDK's clang stay untested."""
    if shutil.which("cmake") is None:
        pytest.skip("the Android build file: no cmake on this machine")
    javac, _ = java_tools()
    java_home = Path(os.path.realpath(javac)).parent.parent
    env = {**os.environ, "JAVA_HOME": str(java_home)}
    android = JAVA_SRC / "android"
    library = cmake_build(android, tmp_path / "host", f"-DZSTD_SRC={zstd_source}", env=env)
    needed = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True, check=True).stdout
    assert "zstd" not in needed and "libc.so" in needed
    symbols = exported(library)
    reference = exported(java_build / "libkbpack_jni.so")
    jni = {s for s in reference if s.startswith("Java_dev_kbc_kbpack_")}
    assert len(jni) >= 20 and symbols == jni  # nothing of libkbpack or zstd leaks into an app's namespace

    question = "How do I run only the tests whose names match a filter?".encode().hex()
    answers = []
    for so in (library, java_build / "libkbpack_jni.so"):
        argv = java_argv(java_build, "dev.kbc.kbpack.Driver")
        argv[1] = f"-Dkbpack.library={so}"
        requests = (f"search\t{tiny_encoder_bundle}\tchunk\tlexical\t5\t-\t{question}\n"
                    f"search\t{tiny_encoder_bundle}\tpage\tlexical\t5\t-\t{question}\nverify\t{tiny_encoder_bundle}\n")
        proc = subprocess.run(argv, input=requests, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        answers.append(proc.stdout)
    assert answers[0] == answers[1] and '"hits": [[' in answers[0] and '"verdict": "intact"' in answers[0]

    cross = shutil.which("aarch64-linux-gnu-gcc")
    if cross is None:
        return
    arm = cmake_build(android, tmp_path / "arm64", f"-DZSTD_SRC={zstd_source}", "-DCMAKE_SYSTEM_NAME=Linux",
                      "-DCMAKE_SYSTEM_PROCESSOR=aarch64", f"-DCMAKE_C_COMPILER={cross}",
                      f"-DJNI_INCLUDE_DIRS={java_home / 'include'};{java_home / 'include' / 'linux'}", env=env)
    header = subprocess.run(["readelf", "-h", str(arm)], capture_output=True, text=True, check=True).stdout
    assert "AArch64" in header
    assert exported(arm, shutil.which("aarch64-linux-gnu-nm") or "nm") == jni


# --------------------------------------------------------------------------- the answer strength (FORMAT.md §2.11)

def test_the_answer_strength_is_libkbpacks_and_pythons(jvm, tmp_path_factory, tiny_model, tiny_encoder_bundle, libkbpack,
                                                       tmp_path):
    """KbPack.answerStrength and minStrength on tests/test_c_answer.py's bundles (min_strength absent, null,
    0.3 from kbc build --min-score, and 1) and vectors: the strength the C library gives bit for bit (through
    kbpack_runtime.libkbpack), within 1e-6 of KnowledgeBase.answer, the same verdict as a Boolean (null: no
    threshold)."""
    from kbpack_runtime.libkbpack import Bundle as CBundle
    from test_c_answer import STRENGTH_TOLERANCE, VARIANTS, answer_variants, answer_vectors

    variants = answer_variants(tmp_path_factory, tiny_model, tiny_encoder_bundle)
    vectors = answer_vectors(tiny_encoder_bundle, tiny_model)
    verdicts, compared = set(), 0
    for name, path in variants.items():
        with KnowledgeBase(path, model=str(tiny_model)) as kb, \
                CBundle(path, library=str(libkbpack.build / "libkbpack.so")) as cb:
            for i, (question, v) in enumerate(vectors):
                vector = write_f32(tmp_path / f"a{i}.f32", v)
                for mode in ("dense", "hybrid"):
                    first = kb.search(question, k=1, mode=mode, vector=v)[0].chunk_id
                    got, py = jvm.ask("answer", path, vector, first), kb.answer(v, first)
                    assert got["min_strength"] == VARIANTS[name], (name, got)
                    assert (got["strength"], got["confident"]) == cb.answer_strength(v, first), (name, i, mode)
                    assert abs(got["strength"] - py.strength) <= STRENGTH_TOLERANCE, (name, i, mode, got, py)
                    assert got["confident"] is py.confident, (name, i, mode, got, py)
                    verdicts.add(got["confident"])
                    compared += 1
    assert verdicts == {None, True, False} and compared == len(variants) * len(vectors) * 2


def test_the_answer_strength_refuses_misuse_in_one_kbpackexception(jvm, sample_bundle, tmp_path):
    bundle = tmp_path / "kb.kbpack"
    shutil.copy(sample_bundle, bundle)
    (tmp_path / "kb.kbpack.empty").write_bytes(b"")
    cases = {c["case"]: c for c in jvm.ask("misuse", bundle)["cases"] if "strength" in c["case"]}
    expected = {"answer strength after close": "CLOSED", "min strength after close": "CLOSED",
                "answer strength of a null vector": "ARGUMENT", "answer strength of a short vector": "ARGUMENT",
                "answer strength of chunk -1": "ARGUMENT", "answer strength of chunk count": "ARGUMENT",
                "answer strength of a NaN vector": "ARGUMENT",
                "natives: answer strength on handle 0": "CLOSED", "natives: answer strength of a short vector": "ARGUMENT",
                "natives: answer strength of chunk -1": "ARGUMENT",
                "natives: answer strength past the last chunk": "ARGUMENT",
                "natives: answer strength with no room": "ARGUMENT", "natives: min strength on handle 0": "CLOSED",
                "natives: min strength with no room": "ARGUMENT"}
    assert {name: c["status"] for name, c in cases.items()} == expected, cases
    for c in cases.values():
        assert c["thrown"] == "KbPackException" and c["message"] and "\n" not in c["message"], c
    assert "NaN" in cases["answer strength of a NaN vector"]["message"]  # libkbpack's words
    assert jvm.ask("verify", sample_bundle) == {"verdict": "intact"}
