"""Filters the same in Python and libkbpack (issue 39, FORMAT.md §2.10): a randomised set of more than
500 (filter, question, mode, unit, k) requests on a bundle with seven attribute keys, each answered by
KnowledgeBase (kbc query's code) and by libkbpack through ctypes in this process: the same chunk ids,
scores within 1e-5, pages alike, and never a shortfall: min(k, m) hits whenever m chunks match
(dense and hybrid; lexical: min(k, matching chunks sharing a word with the question)). The filters
include ones matching 0, 1, k - 1, k and all chunks; and conditions a bundle cannot apply are
refused by both, as is any filter on a bundle without attributes."""

from __future__ import annotations

import ctypes
import json
import random
from pathlib import Path

import numpy as np
import pytest

from conftest import built_once, kbc_cli

PRODUCTS = ["x100", "x200", "x300", "z9"]
WORDS = ("power battery reset button cable screen light fan motor pump filter water valve spring oil "
         "rotate logs weekly garden greenhouse summer winter sensor alarm signal").split()
QUESTIONS = ["How do I reset the power button?", "water the greenhouse in summer", "battery cable sensor alarm",
             "rotate the logs weekly", "zzzz-unknown-word"]
N_REQUESTS = 600


def _write_docs(root: Path) -> None:
    rng = random.Random(39)
    for i in range(36):
        product = PRODUCTS[i % 4]
        folder = root / "manuals" / product if i % 3 else root / "notes"
        folder.mkdir(parents=True, exist_ok=True)
        tags = rng.sample(["hardware", "en", "de", "safety", "howto"], rng.randint(0, 3))
        front = [f"product: {product}", f"year: {2016 + i % 9}", f"tags: [{', '.join(tags)}]",
                 f"released: 20{15 + i % 10}-{1 + i % 12:02d}-{1 + i % 28:02d}"]
        if i % 5 == 0:
            front.append(f"lang: {['en', 'de'][i % 2]}")
        body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 150)))
        (folder / f"doc{i:02d}.md").write_text("---\n" + "\n".join(front) + f"\n---\n# Doc {i}\n\n{body}.\n")
    with open(root / "faq.jsonl", "w") as f:
        for i in range(20):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 20)))
            f.write(json.dumps({"_id": f"q{i}", "title": f"Question {i}", "text": text,
                                "metadata": {"lang": ["en", "de"][i % 2], "year": 2015 + i % 10,
                                             "tags": ["faq"] + (["safety"] if i % 3 == 0 else [])}}) + "\n")


def _bundle(tmp_path_factory, tiny_model, vectors: str) -> Path:
    def build(d: Path) -> None:
        _write_docs(d / "docs")
        kbc_cli("build", str(d / "docs"), "-o", str(d / "kb.kbpack"), "--model", str(tiny_model), "--vectors",
                vectors.split("-")[0], "-q", check=True)
        from forge import set_path, with_manifest

        if vectors == "binary-narrow":  # a shortlist of R = min(m, k) rows: narrower than most filters
            data = with_manifest((d / "kb.kbpack").read_bytes(), set_path("vectors.binary.candidates", 1))
            (d / "kb.kbpack").write_bytes(with_manifest(data, set_path("vectors.binary.multiplier", 1)))
        if vectors.endswith("-standout-off"):  # the fixed weight (FORMAT.md §2.5.1); kbc writes true
            data = with_manifest((d / "kb.kbpack").read_bytes(), set_path("retrieval.standout_weighting", False))
            (d / "kb.kbpack").write_bytes(data)

    return built_once(tmp_path_factory, f"filters-parity-{vectors}", build) / "kb.kbpack"


@pytest.fixture(scope="module")
def filter_bundle(tmp_path_factory, tiny_model) -> Path:
    return _bundle(tmp_path_factory, tiny_model, "f32")


class Hit(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("score", ctypes.c_double)]


class String(ctypes.Structure):
    _fields_ = [("s", ctypes.c_char_p), ("len", ctypes.c_size_t)]


class PageHit(ctypes.Structure):
    _fields_ = [("score", ctypes.c_double), ("source", ctypes.c_int64), ("record", String), ("page", ctypes.c_int64),
                ("n_chunks", ctypes.c_size_t), ("chunk_ids", ctypes.c_uint64 * 100),
                ("chunk_scores", ctypes.c_double * 100)]


class Error(ctypes.Structure):
    _fields_ = [("status", ctypes.c_int), ("part", ctypes.c_char * 33), ("message", ctypes.c_char * 256)]


MODES = {"dense": 1, "lexical": 2, "hybrid": 3}


class C:
    """libkbpack.so through ctypes: one handle, as an app holds one."""

    def __init__(self, lib: Path, bundle: Path):
        so = ctypes.CDLL(str(lib))
        so.kbp_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(Error)]
        so.kbp_last_error.restype = ctypes.POINTER(Error)
        so.kbp_last_error.argtypes = [ctypes.c_void_p]
        so.kbp_filter_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_size_t,
                                          ctypes.POINTER(ctypes.c_void_p)]
        so.kbp_filter_matched.restype = ctypes.c_uint64
        so.kbp_filter_matched.argtypes = [ctypes.c_void_p]
        so.kbp_filter_free.argtypes = [ctypes.c_void_p]
        so.kbp_search_filtered.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_char_p,
                                           ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(Hit),
                                           ctypes.POINTER(ctypes.c_size_t)]
        so.kbp_search_pages_filtered.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_char_p,
                                                 ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(PageHit),
                                                 ctypes.POINTER(ctypes.c_size_t)]
        so.kbp_close.argtypes = [ctypes.c_void_p]
        self.so = so
        self.kb = ctypes.c_void_p()
        err = Error()
        assert so.kbp_open(str(bundle).encode(), ctypes.byref(self.kb), ctypes.byref(err)) == 0, err.message

    def error(self) -> tuple[int, str]:
        e = self.so.kbp_last_error(self.kb).contents
        return e.status, e.message.decode()

    def compile(self, where: list[str]):
        arr = (ctypes.c_char_p * len(where))(*[w.encode() for w in where])
        f = ctypes.c_void_p()
        st = self.so.kbp_filter_compile(self.kb, arr, len(where), ctypes.byref(f))
        return st, f

    def search(self, q: np.ndarray, question: str, k: int, mode: str, f) -> list[tuple[int, float]]:
        hits, n = (Hit * max(k, 1))(), ctypes.c_size_t()
        qv = np.ascontiguousarray(q, dtype=np.float32)
        st = self.so.kbp_search_filtered(self.kb, qv.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), question.encode(),
                                         k, MODES[mode], f, hits, ctypes.byref(n))
        assert st == 0, self.error()
        return [(hits[i].id, hits[i].score) for i in range(n.value)]

    def pages(self, q: np.ndarray, question: str, k: int, mode: str, f) -> list[tuple]:
        pages, n = (PageHit * max(k, 1))(), ctypes.c_size_t()
        qv = np.ascontiguousarray(q, dtype=np.float32)
        st = self.so.kbp_search_pages_filtered(self.kb, qv.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                                               question.encode(), k, MODES[mode], f, pages, ctypes.byref(n))
        assert st == 0, self.error()
        return [(p.score, p.source, p.page, [p.chunk_ids[j] for j in range(p.n_chunks)]) for p in pages[:n.value]]

    def close(self):
        self.so.kbp_close(self.kb)


def _filters(kb, rng: random.Random) -> list[list[str]]:
    """Conditions of every form, single and combined, plus the ones matching 0, 1 and all chunks."""
    t = kb.bundle.attributes()
    singles = [f"product={p}" for p in PRODUCTS] + ["product=x100,z9", "tags=en", "tags=de,safety", "tags=faq",
               "lang=en", "lang=de,en", "kind=records", "kind=markdown", "kind=markdown,records",
               "path:manuals/**", "path:manuals/x200/*", "path:notes/doc0?.md", "path:*.jsonl", "path:**/doc1*.md",
               "path:**", "path:nowhere/**", "product=none", "title=Question 3", "title=Doc 7"]
    singles += [f"year{op}{y}" for op in (">=", "<=", ">", "<", "=") for y in (2016, 2019, 2024)]
    singles += [f"released{op}{d}" for op in (">=", "<", "=") for d in ("2015-01-01", "2019-06-15", "2024-10-10")]
    singles += ["  year >= 2020 ", "year=2018,2019,2020"]
    out = [[s] for s in singles]
    for _ in range(40):
        out.append(rng.sample(singles, rng.randint(2, 3)))
    assert len(t.keys) >= 5
    return out


@pytest.mark.parametrize("vectors,n_requests", [("f32", N_REQUESTS), ("binary", 150), ("binary-narrow", 250),
                                                ("f32-standout-off", 250)])
def test_filters_same_in_python_and_libkbpack(tmp_path_factory, tiny_model, libkbpack, vectors, n_requests):
    """float32 rows scored exactly; int8 rows behind binary codes, whose shortlist a filter draws
    from the kept rows only (min(m, max(M x k, C)) of them, FORMAT.md §2.10.2). Hybrid fuses with
    each list weighted by its standout within the filter's chunks (FORMAT.md §2.5.1, as kbc writes
    it), and with the fixed weight (-standout-off)."""
    from kbc.query.knowledge_base import KnowledgeBase

    filter_bundle = _bundle(tmp_path_factory, tiny_model, vectors)
    lib = C(libkbpack.build / "libkbpack.so", filter_bundle)
    rng = random.Random(1939)
    npr = np.random.default_rng(39)
    checked, shapes = 0, set()
    with KnowledgeBase(filter_bundle) as kb:
        assert kb.retriever.settings.standout_weighting is not vectors.endswith("-standout-off")
        count, dim = kb.bundle.count, kb.bundle.dim
        lexical = kb.bundle.lexical()
        filters = _filters(kb, rng)
        compiled = []
        for where in filters:
            f_py = kb.filter(where)
            st, f_c = lib.compile(where)
            assert st == 0, (where, lib.error())
            assert lib.so.kbp_filter_matched(f_c) == f_py.matched, where
            compiled.append((where, f_py, f_c))
        matched = {f.matched for _, f, _ in compiled}
        assert {0, 1, count} <= matched, sorted(matched)
        vectors = npr.standard_normal((len(QUESTIONS), dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        while checked < n_requests:
            where, f_py, f_c = rng.choice(compiled)
            m = f_py.matched
            # k around m: the filters that match k - 1, k and k + 1 chunks for this k
            k = rng.choice([1, 3, 5, 10, max(1, m - 1), max(1, m), m + 1])
            qi = rng.randrange(len(QUESTIONS))
            q, question = vectors[qi], QUESTIONS[qi]
            mode = rng.choice(["dense", "lexical", "hybrid"])
            unit = rng.choice(["chunk", "chunk", "page"])
            if unit == "chunk":
                scores, ids = kb.rank([question], k, mode=mode, vectors=q[None, :], where=f_py)[0]
                py = list(zip(ids.tolist(), scores.tolist()))
                c = lib.search(q, question, k, mode, f_c)
                _same_ranking(py, c, (where, k, mode, question))
                assert all(f_py.mask[i] for i, _ in c), where
                if mode == "lexical":
                    sharing = int(np.count_nonzero(lexical.scores(question)[f_py.mask] > 0))
                    assert len(c) == min(k, sharing), (where, k, question)
                else:
                    assert len(c) == min(k, m), (where, k, mode, m, len(c))  # no shortfall
                shapes.add(("m=k-1" if m == k - 1 else "m=k" if m == k else "m=0" if m == 0 else "m=1" if m == 1
                            else "m=all" if m == count else "other"))
            else:
                py_pages = kb.rank_pages([question], k, mode=mode, vectors=q[None, :], where=f_py)[0]
                c_pages = lib.pages(q, question, k, mode, f_c)
                assert len(py_pages) == len(c_pages), (where, k, mode)
                for p, cp in zip(py_pages, c_pages):  # scores in order; the same pages with the same chunks
                    assert abs(p.score - cp[0]) <= 1e-5, (where, p, cp)
                    assert all(f_py.mask[i] for i in cp[3]), where
                assert ({(p.key[0], p.key[2], tuple(sorted(p.chunk_ids))) for p in py_pages}
                        == {(cp[1], cp[2], tuple(sorted(cp[3]))) for cp in c_pages}), (where, k, mode)
            checked += 1
        for _, _, f_c in compiled:
            lib.so.kbp_filter_free(f_c)
    lib.close()
    assert {"m=k-1", "m=k", "m=0", "m=1", "m=all"} <= shapes, shapes


def _same_ranking(py: list, c: list, what) -> None:
    """The same ids in the same order and scores within 1e-5; two chunks may swap only where their
    scores agree to 1e-5 (float32 sums in another order)."""
    assert len(py) == len(c), (what, py, c)
    for (pi, ps), (ci, cs) in zip(py, c):
        assert abs(ps - cs) <= 1e-5, (what, py, c)
        if pi != ci:
            near = [s for i, s in py if i == ci]
            assert near and abs(near[0] - cs) <= 1e-5, (what, py, c)


REFUSED = ["produkt=x200", "product>x200", "product", "=x200", "year>=twenty", "year>=2020,2021", "released<2024-02-30",
           "year=", "tags=en,", "path:", "year>=12345678901234567", "year=9007199254740992"]


def test_conditions_a_bundle_cannot_apply_are_refused_by_both(filter_bundle, libkbpack):
    from kbc.errors import InputError
    from kbc.query.knowledge_base import KnowledgeBase

    lib = C(libkbpack.build / "libkbpack.so", filter_bundle)
    with KnowledgeBase(filter_bundle) as kb:
        for cond in REFUSED:
            with pytest.raises(InputError) as e:
                kb.filter([cond])
            st, _ = lib.compile([cond])
            assert st == 3, (cond, lib.error())  # KBP_ERR_ARGUMENT
            if cond.startswith("produkt"):
                assert "this bundle has: kind, lang, product, released, tags, title, year" in str(e.value)
                assert "this bundle has: kind, lang, product, released, tags, title, year" in lib.error()[1]
    lib.close()


def test_cli_where_refusal_is_one_line_exit_2_and_json_says_matched(filter_bundle, kbpack_tool):
    import subprocess

    out = kbc_cli("query", str(filter_bundle), "power", "--mode", "lexical", "--where", "produkt=x")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "unknown attribute 'produkt'" in out.stderr
    out = kbc_cli("query", str(filter_bundle), "power battery", "--mode", "lexical", "--where", "product=x200",
                  "--where", "year>=2020", "--json", "-k", "50")
    doc = json.loads(out.stdout)
    assert doc["where"] == ["product=x200", "year>=2020"] and doc["matched"] >= len(doc["hits"]) > 0
    c = subprocess.run([str(kbpack_tool), "search", str(filter_bundle), "--mode", "lexical", "-k", "50", "--where",
                        "product=x200", "--where", "year>=2020", "--json", "power battery"], capture_output=True, text=True)
    assert c.returncode == 0 and c.stderr.startswith(f"kbpack: filter: {doc['matched']} of ")
    assert [h["id"] for h in json.loads(c.stdout)["hits"]] == [h["chunk_id"] for h in doc["hits"]]
    c = subprocess.run([str(kbpack_tool), "search", str(filter_bundle), "--mode", "lexical", "--where", "product>x",
                        "power"], capture_output=True, text=True)
    assert c.returncode == 2 and c.stderr.startswith("kbpack: 'product>x': product is a string")


def test_a_bundle_without_attributes_refuses_every_filter(tmp_path, libkbpack):
    """A filter is never silently ignored: both readers refuse it on a bundle without attributes."""
    import fuzz_seeds

    from kbc.errors import InputError
    from kbc.query.knowledge_base import KnowledgeBase

    path = tmp_path / "old.kbpack"
    path.write_bytes(fuzz_seeds.bases()["float32-lexical-probes"])
    with KnowledgeBase(path) as kb:
        with pytest.raises(InputError, match="no attributes in this bundle"):
            kb.filter(["path:**"])
    lib = C(libkbpack.build / "libkbpack.so", path)
    st, _ = lib.compile(["path:**"])
    assert st == 3 and "no attributes in this bundle" in lib.error()[1]
    lib.close()


def test_eval_where_scopes_every_mode(filter_bundle, tmp_path):
    """kbc eval --where ranks inside the filter in every mode (dense's document ranking too): a
    judged record outside the filter is never found; the JSON says what was searched."""
    (tmp_path / "q.jsonl").write_text(json.dumps({"_id": "a", "text": "answer question three"}) + "\n")
    (tmp_path / "qrels.tsv").write_text("a\tq3\t1\n")
    args = ["eval", str(filter_bundle), "--queries", str(tmp_path / "q.jsonl"), "--qrels", str(tmp_path / "qrels.tsv"),
            "--mode", "dense", "--mode", "lexical", "--json"]
    whole = json.loads(kbc_cli(*args, check=True).stdout)
    scoped = json.loads(kbc_cli(*args, "--where", "kind=markdown", check=True).stdout)
    for mode in ("dense", "lexical"):
        assert whole["modes"][mode]["recall@100"] == 1.0  # every document is within the first 100
        assert scoped["modes"][mode]["recall@100"] == 0.0, mode
    assert scoped["where"] == ["kind=markdown"] and 0 < scoped["matched"] < whole["chunks"]
    refused = kbc_cli(*args, "--where", "kind>x")
    assert refused.returncode == 2 and "kind is a string" in refused.stderr
