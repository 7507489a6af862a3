"""The answer strength (FORMAT.md §2.11) in libkbpack (runtimes/c/answer.c), its `kbpack search` tool and
its ctypes binding (runtimes/python/kbpack_runtime/libkbpack.py) against kbc's Python reader
(KnowledgeBase.answer, `kbc query --json`): the same strength to 1e-6 (float32 inner products summed in
another order) and the same verdict, confident or not, under the bundle's retrieval.min_strength absent,
null, a number given to `kbc build --min-score`, and 1 (nothing reaches it); in dense, hybrid and
lexical mode (no question vector: no strength, no verdict), by chunk and by page, with and without
--where filters (one that matches nothing: no hit, not confident). `kbpack search` says "no confident
answer" on standard error exactly when its answer is not confident.

The tests' tiny model has random weights: its vectors are nearly parallel, so every real question's
first hit has a cosine of about 0.99999 (spread over ~1e-5). A threshold between those would be decided
by float32 rounding, so the strengths are spread on purpose: beside each question's own vector, one
turned away from it by an angle from 0 to 180 degrees (the search still gets the question's text), whose
strengths run from about 1 down to about -1, and the built threshold, 0.3, has some on either side."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import test_hostile_bundles as hostile
from conftest import SAMPLE_DOCS, built_once, kbc_cli, with_address_space
from forge import manifest_of
from kbc.query.knowledge_base import KnowledgeBase
from test_c_pages import QUESTIONS, with_retrieval_settings
from test_libkbpack import MEMORY_LIMIT, TIME_LIMIT_S, c_verdict, python_verdict, write_f32

STRENGTH_TOLERANCE = 1e-6  # FORMAT.md §2.11: the readers agree to float32 rounding
BUILT_THRESHOLD = 0.3  # kbc build --min-score: the spread vectors fall on both sides of it
MODES = ("dense", "hybrid", "lexical")
UNITS = ("chunk", "page")
WHERES = {"everything": None, "markdown": ["kind=markdown"], "pdfs": ["path:*.pdf"], "nothing": ["kind=nope"]}
# the bundle's threshold, and what Python's settings say of it
VARIANTS = {"absent": None, "null": None, "built": BUILT_THRESHOLD, "strict": 1.0}
NOT_CONFIDENT = "kbpack: no confident answer: "


def kbpack_run(tool: Path, *args) -> subprocess.CompletedProcess:
    """The tool under test_libkbpack's limits (none on the address space under sanitizers, as there)."""
    argv = [str(tool), *map(str, args)]
    sanitized = "-fsanitize" in os.environ.get("LIBKBPACK_CFLAGS", "")  # ASan reserves terabytes of address space
    return subprocess.run(argv if sanitized else with_address_space(MEMORY_LIMIT, argv), capture_output=True, text=True,
                          timeout=TIME_LIMIT_S)


def kbpack_search(tool: Path, bundle: Path, question: str, vector: Path, mode: str, unit: str, where, json_out=True):
    args = ["search", bundle, *(["--json"] if json_out else []), "--mode", mode, "--unit", unit, "-k", 3,
            "--vector", vector]
    for condition in where or ():
        args += ["--where", condition]
    return kbpack_run(tool, *args, "--", question)


def first_id_of(listed: dict) -> int | None:
    """The first hit's chunk id in a `kbpack search --json` or `kbc query --json` object (a page's first chunk)."""
    if "pages" in listed:
        pages = listed["pages"]
        return None if not pages else pages[0]["chunks"][0].get("id", pages[0]["chunks"][0].get("chunk_id"))
    hits = listed["hits"]
    return None if not hits else hits[0].get("id", hits[0].get("chunk_id"))


def python_answer(kb: KnowledgeBase, question: str, vector, mode: str, unit: str, where):
    """(first chunk id, Answer) as kbc query computes them."""
    v = None if mode == "lexical" else vector
    if unit == "page":
        pages = kb.search_pages(question, k=3, mode=mode, where=where, vector=v)
        first = pages[0].chunks[0].chunk_id if pages else None
    else:
        hits = kb.search(question, k=3, mode=mode, where=where, vector=v)
        first = hits[0].chunk_id if hits else None
    return first, kb.answer(v, first)


def assert_same_answer(c_strength, c_confident, py, what, threshold) -> float:
    """The C answer equals Python's Answer `py`: strength within the tolerance (both None for lexical
    search or no hit), the same verdict. Returns |C - Python|."""
    if py.strength is None:
        assert c_strength is None, (what, c_strength)
        assert c_confident is py.confident, (what, c_confident, py)
        return 0.0
    assert c_strength is not None, what
    diff = abs(c_strength - py.strength)
    assert diff <= STRENGTH_TOLERANCE, (what, c_strength, py.strength)
    if threshold is not None:  # no strength within rounding of the threshold: the verdict is not a coin toss
        assert abs(py.strength - threshold) > STRENGTH_TOLERANCE, (what, py.strength, threshold)
    assert c_confident is py.confident, (what, c_confident, py)
    return diff


# --------------------------------------------------------------------------- bundles and vectors

def answer_variants(tmp_path_factory, tiny_model, tiny_encoder_bundle) -> dict[str, Path]:
    """The same chunks and vectors under each threshold, written once per test run (the Java and
    JavaScript runtimes' tests use them too): kbc writes null for an embedder other than its default
    (tiny_encoder_bundle); `kbc build --min-score 0.3`; a bundle written before 1.8 has no key; 1 is out
    of every reach."""
    def build(d: Path) -> None:
        kbc_cli("build", str(SAMPLE_DOCS), "-o", str(d / "built.kbpack"), "--model", str(tiny_model), "--min-score",
                str(BUILT_THRESHOLD), "-q", check=True)
        with_retrieval_settings(tiny_encoder_bundle, d / "absent.kbpack", {}, drop=("min_strength",))
        with_retrieval_settings(tiny_encoder_bundle, d / "strict.kbpack", {"min_strength": 1})

    d = built_once(tmp_path_factory, "answer-variants", build)
    return {"absent": d / "absent.kbpack", "null": tiny_encoder_bundle, "built": d / "built.kbpack",
            "strict": d / "strict.kbpack"}


def answer_vectors(bundle: Path, model: Path) -> list[tuple[str, np.ndarray]]:
    """(question, vector): each question with its own vector, and with one turned away from it by an
    angle from 0 to pi (seeded), toward a random direction orthogonal to it."""
    with KnowledgeBase(bundle, model=str(model)) as kb:
        own = kb.embed_queries(QUESTIONS)
    rng = np.random.default_rng(42)
    out = [(q, np.asarray(v, np.float32)) for q, v in zip(QUESTIONS, own)]
    for q, v, angle in zip(QUESTIONS, own, rng.permutation(np.linspace(0.1, np.pi, len(QUESTIONS)))):
        r = rng.standard_normal(v.shape)
        r -= (r @ v) * v
        r /= np.linalg.norm(r)
        out.append((q, (np.cos(angle) * v + np.sin(angle) * r).astype(np.float32)))
    return out


@pytest.fixture(scope="module")
def variants(tmp_path_factory, tiny_model, tiny_encoder_bundle) -> dict[str, Path]:
    return answer_variants(tmp_path_factory, tiny_model, tiny_encoder_bundle)


@pytest.fixture(scope="module")
def vectors(tiny_encoder_bundle, tiny_model) -> list[tuple[str, np.ndarray]]:
    return answer_vectors(tiny_encoder_bundle, tiny_model)


def test_every_reader_reads_the_threshold_as_the_bundle_records_it(variants, tiny_model, libkbpack):
    from kbpack_runtime.libkbpack import Bundle as CBundle

    for name, path in variants.items():
        retrieval = manifest_of(path.read_bytes())["retrieval"]
        assert ("min_strength" in retrieval) is (name != "absent"), name
        assert retrieval.get("min_strength") == VARIANTS[name], name
        with KnowledgeBase(path, model=str(tiny_model)) as kb:
            assert kb.retriever.settings.min_strength == VARIANTS[name], name
        with CBundle(path, library=str(libkbpack.build / "libkbpack.so")) as cb:
            assert cb.min_strength() == VARIANTS[name], name


# --------------------------------------------------------------------------- kbpack search against Python

@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_kbpack_search_answers_as_python(kbpack_tool, variants, vectors, tiny_model, variant, unit, tmp_path):
    """`kbpack search --json`'s answer object against KnowledgeBase.answer on the first hit, every mode and
    filter; the text output's stderr line exactly when the answer is not confident."""
    bundle, threshold = variants[variant], VARIANTS[variant]
    verdicts, largest, warned = [], 0.0, 0
    with KnowledgeBase(bundle, model=str(tiny_model)) as kb:
        for i, (question, v) in enumerate(vectors):
            qf = write_f32(tmp_path / "q.f32", v)
            for mode in MODES:
                for where_name, where in WHERES.items():
                    what = (variant, unit, i, question, mode, where_name)
                    out = kbpack_search(kbpack_tool, bundle, question, qf, mode, unit, where)
                    assert out.returncode == 0 and NOT_CONFIDENT not in out.stderr, (what, out.stderr)
                    got = json.loads(out.stdout)
                    assert set(got["answer"]) == {"strength", "confident"}, got["answer"]
                    py_first, py = python_answer(kb, question, v, mode, unit, where)
                    c_first = first_id_of(got)
                    assert (c_first is None) is (py_first is None), what
                    if c_first != py_first:  # a tie at the top (two chunks of one text: Python's dense search
                        # does not break ties by id): the C first hit's own answer, which must be the same strength
                        tied = kb.answer(None if mode == "lexical" else v, c_first)
                        assert py.strength is None or abs(tied.strength - py.strength) <= STRENGTH_TOLERANCE, what
                        py = tied
                    largest = max(largest, assert_same_answer(got["answer"]["strength"], got["answer"]["confident"],
                                                              py, what, threshold))
                    verdicts.append(py.confident)
                    if where_name in ("everything", "nothing"):  # the text output: the line exactly when not confident
                        text = kbpack_search(kbpack_tool, bundle, question, qf, mode, unit, where, json_out=False)
                        assert text.returncode == 0, (what, text.stderr)
                        lines = [line for line in text.stderr.splitlines() if line.startswith(NOT_CONFIDENT)]
                        expected = py.confident is False and py.strength is not None
                        assert len(lines) == int(expected), (what, text.stderr)
                        if expected:
                            assert lines[0] == (f"{NOT_CONFIDENT}the first hit's strength {py.strength:.3f} is under "
                                                f"{threshold:.3f} (the bundle's min_strength); the bundle may have "
                                                "nothing on this"), lines
                            warned += 1
    print(f"{variant} {unit}: {len(verdicts)} answers, max |C - Python| strength {largest:.3g}")
    if threshold is None:
        assert set(verdicts) == {None}
    else:
        # lexical search and filters that match nothing give None and False; the spread vectors both sides
        assert set(verdicts) == ({None, False} if threshold == 1 else {None, True, False}), set(verdicts)
        assert warned >= 10
    assert len(verdicts) == len(vectors) * len(MODES) * len(WHERES)


def test_the_ctypes_binding_answers_as_python(variants, vectors, tiny_model, libkbpack):
    """kbpack_runtime.libkbpack's answer_strength (kbp_answer_strength) on the C search's first hit,
    against KnowledgeBase.answer on the same chunk, and Python's own first hit's."""
    from kbpack_runtime.libkbpack import Bundle as CBundle

    largest, compared = 0.0, 0
    for variant, path in variants.items():
        with CBundle(path, library=str(libkbpack.build / "libkbpack.so")) as cb, \
                KnowledgeBase(path, model=str(tiny_model)) as kb:
            for question, v in vectors:
                for mode in ("dense", "hybrid"):
                    for where in WHERES.values():
                        for unit in UNITS:
                            what = (variant, question, mode, where, unit)
                            if unit == "page":
                                pages = cb.search_pages(v, question, k=3, mode=mode, where=where)
                                c_first = pages[0]["chunks"][0][0] if pages else None
                            else:
                                hits = cb.search(v, question, k=3, mode=mode, where=where)
                                c_first = hits[0][0] if hits else None
                            py_first, py = python_answer(kb, question, v, mode, unit, where)
                            if c_first is None:
                                assert py_first is None, what
                                continue
                            strength, confident = cb.answer_strength(v, c_first)
                            same_chunk = kb.answer(v, c_first)
                            largest = max(largest, assert_same_answer(strength, confident, same_chunk, what,
                                                                      VARIANTS[variant]))
                            assert abs(strength - py.strength) <= STRENGTH_TOLERANCE, (what, strength, py)
                            assert confident is py.confident, what
                            compared += 1
    print(f"ctypes: {compared} answers, max |C - Python| strength {largest:.3g}")
    assert compared > 500


def test_the_ctypes_binding_refuses_misuse_in_one_exception(variants, libkbpack, tmp_path):
    from kbpack_runtime.libkbpack import Bundle as CBundle
    from kbpack_runtime.libkbpack import KbpackError

    cb = CBundle(variants["built"], library=str(libkbpack.build / "libkbpack.so"))
    cases = {
        "short vector": (lambda: cb.answer_strength(np.zeros(cb.dim - 1), 0), "argument"),
        "no vector": (lambda: cb.answer_strength(None, 0), "argument"),
        "id out of range": (lambda: cb.answer_strength(np.ones(cb.dim), cb.count), "argument"),
        "negative id": (lambda: cb.answer_strength(np.ones(cb.dim), -1), "argument"),
        "NaN vector": (lambda: cb.answer_strength(np.full(cb.dim, np.nan), 0), "argument"),
    }
    for name, (call, status) in cases.items():
        with pytest.raises(KbpackError) as e:
            call()
        assert e.value.status == status, (name, e.value.status, str(e.value))
        assert str(e.value) and "\n" not in str(e.value), name
    cb.close()
    for call in (lambda: cb.answer_strength(np.ones(cb.dim), 0), cb.min_strength):
        with pytest.raises(KbpackError) as e:
            call()
        assert e.value.status == "closed"


# --------------------------------------------------------------------------- kbc query against kbpack search

CLI_QUESTIONS = QUESTIONS[:3] + ["zzzqx unknownword"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_kbpack_search_and_kbc_query_print_the_same_answer(kbpack_tool, variants, tiny_model, variant, tmp_path):
    """`kbc query --json` and `kbpack search --json` (given the vector kbc embeds) on the questions
    themselves: the same answer object (kbc adds min_score), every mode and unit; kbc's text output
    says "no confident answer" on the same questions as kbpack's."""
    bundle, threshold = variants[variant], VARIANTS[variant]
    with KnowledgeBase(bundle, model=str(tiny_model)) as kb:
        embedded = kb.embed_queries(CLI_QUESTIONS)
    compared = 0
    for question, v in zip(CLI_QUESTIONS, embedded):
        qf = write_f32(tmp_path / "q.f32", v)
        for mode in MODES:
            for unit in UNITS:
                for where_name in ("everything", "markdown", "nothing"):
                    where, what = WHERES[where_name], (variant, question, mode, unit, where_name)
                    conditions = [a for c in where or () for a in ("--where", c)]
                    py = kbc_cli("query", str(bundle), question, "--model", str(tiny_model), "--mode", mode, "--unit",
                                 unit, "-k", "3", "--json", *conditions, check=True)
                    py_out = json.loads(py.stdout)
                    c = kbpack_search(kbpack_tool, bundle, question, qf, mode, unit, where)
                    assert c.returncode == 0, (what, c.stderr)
                    c_out = json.loads(c.stdout)
                    assert py_out["answer"]["min_score"] == threshold, what
                    pa, ca = py_out["answer"], c_out["answer"]
                    assert ca["confident"] is pa["confident"], (what, ca, pa)
                    if pa["strength"] is None:
                        assert ca["strength"] is None, what
                    else:
                        c_first, listed = first_id_of(c_out), py_out["pages" if unit == "page" else "hits"]
                        # kbc gives each hit's strength: compare the C first hit's with its own (a near-tie may swap them)
                        firsts = [h["chunks"][0]["chunk_id"] if unit == "page" else h["chunk_id"] for h in listed]
                        expected = listed[firsts.index(c_first)]["strength"] if c_first in firsts else pa["strength"]
                        assert abs(ca["strength"] - expected) <= STRENGTH_TOLERANCE, (what, ca, pa)
                        assert abs(ca["strength"] - pa["strength"]) <= STRENGTH_TOLERANCE, (what, ca, pa)
                    if mode != "lexical" and where_name == "everything":
                        text = kbc_cli("query", str(bundle), question, "--model", str(tiny_model), "--mode", mode,
                                       "--unit", unit, "-k", "3", check=True)
                        said = "kbc: no confident answer: " in text.stderr
                        c_text = kbpack_search(kbpack_tool, bundle, question, qf, mode, unit, where, json_out=False)
                        assert said is (pa["confident"] is False) is (NOT_CONFIDENT in c_text.stderr), (what, text.stderr)
                    compared += 1
    assert compared == len(CLI_QUESTIONS) * len(MODES) * len(UNITS) * 3


# --------------------------------------------------------------------------- forged thresholds

MIN_STRENGTH_CASES = [name for name in hostile.CASES if name.startswith("min_strength ")]
GOOD_THRESHOLDS = {"-1": -1, "1": 1, "0": 0, "-0.0": -0.0, "1e-300": 1e-300, "null": None}


def test_the_hostile_cases_cover_min_strength():
    assert len(MIN_STRENGTH_CASES) >= 5 and all(hostile.CASES[name][1] == 3 for name in MIN_STRENGTH_CASES)


@pytest.mark.parametrize("case", MIN_STRENGTH_CASES)
def test_a_forged_min_strength_is_refused_by_both_readers_naming_the_manifest(kbpack_tool, genuine, tmp_path, case):
    path = tmp_path / "forged.kbpack"
    path.write_bytes(hostile.CASES[case][0](genuine))
    assert c_verdict(kbpack_tool, path) == python_verdict(path) == (3, "manifest"), case
    dim = manifest_of(genuine)["vectors"]["dim"]
    out = kbpack_search(kbpack_tool, path, "pump", write_f32(tmp_path / "q.f32", np.full(dim, 0.1)), "dense", "chunk",
                        None)
    assert out.returncode == 3 and out.stdout == "", (case, out.stderr)
    assert out.stderr == "kbpack: manifest: retrieval: min_strength must be null or within [-1, 1]\n", out.stderr


@pytest.mark.parametrize("case", sorted(GOOD_THRESHOLDS))
def test_a_threshold_at_the_bounds_is_read_alike(kbpack_tool, genuine, tmp_path, case, libkbpack, tiny_model):
    from kbpack_runtime.libkbpack import Bundle as CBundle

    source = tmp_path / "genuine.kbpack"
    source.write_bytes(genuine)
    path = with_retrieval_settings(source, tmp_path / "t.kbpack", {"min_strength": GOOD_THRESHOLDS[case]})
    assert c_verdict(kbpack_tool, path) == python_verdict(path) == (0, None), case
    with CBundle(path, library=str(libkbpack.build / "libkbpack.so")) as cb, \
            KnowledgeBase(path, model=str(tiny_model)) as kb:
        assert cb.min_strength() == kb.retriever.settings.min_strength == GOOD_THRESHOLDS[case], case
        v = kb.embed_queries(["how often is the pump oiled"])[0]
        first = cb.search(v, None, k=1, mode="dense")[0][0]
        strength, confident = cb.answer_strength(v, first)
        assert confident is kb.answer(v, first).confident, case
        assert abs(strength - kb.answer(v, first).strength) <= STRENGTH_TOLERANCE
