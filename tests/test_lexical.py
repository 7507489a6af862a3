"""The lexical index: tokeniser rules (FORMAT.md §2.4), BM25 by hand, the stored form, fusion."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kbc.format.bm25 import (LexicalBuilder, LexicalFormatError, LexicalIndex, TokenizerOptions, s_stem, tokenize,
                             top_k, uleb128_decode, uleb128_encode)
from kbc.format.retrieval import RetrievalSettings
from kbc.search.fusion import fuse, question_weight, standout


@pytest.mark.parametrize("text, tokens", [
    ("The FY2018 capital expenditure of 3M", ["fy", "2018", "capital", "expenditure", "3", "m"]),
    ("$1,577 million; 1,234,567 units; 12,34 and 1,5770", ["1577", "million", "1234567", "units", "12", "34", "1", "5770"]),
    ("3.5% of Form 10-K, e-mail", ["3", "5", "form", "10", "k", "e", "mail"]),
    ("Netflix's NETFLIX netflix", ["netflix", "netflix", "netflix"]),  # the possessive s is a stop word
    ("CAFÉ Straße ΩΜΕΓΑ Привет ЁЖ", ["café", "straße", "ωμεγα", "привет", "ёж"]),
    ("ΈΝΑ", ["Ένα"]),  # U+0388 is outside the fold table (FORMAT.md §2.4): unchanged
    ("日本語テキスト 한국어", ["日", "本", "語", "テ", "キ", "ス", "ト", "한", "국", "어"]),
    ("naïve «quoted» — dash · dot × times ÷", ["naïve", "quoted", "dash", "dot", "times"]),
    ("a\u00a0b\u2003c\u200bd", ["b", "c", "d"]),  # no-break and em spaces, zero-width space separate; "a" is a stop word
    ("x" * 64 + " " + "y" * 65 + " ok", ["x" * 64, "ok"]),
    ("", []),
    ("İstanbul ǅ", ["İstanbul", "ǅ"]),  # outside the fold table (FORMAT.md §2.4): unchanged
])
def test_tokeniser_rules(text, tokens):
    assert tokenize(text, TokenizerOptions(stem=None)) == tokens


def test_tokeniser_options():
    assert tokenize("the cats of the world", TokenizerOptions(stop_words=False, stem=None)) == [
        "the", "cats", "of", "the", "world"]
    assert tokenize("the cats of the world") == ["cat", "world"]  # the default: stop words out, plurals folded
    assert tokenize("companies classes status buses glass", TokenizerOptions(stem="s-stemmer")) == [
        "company", "classe", "status", "buse", "glass"]
    words = ("its", "cities", "aies", "eies", "goes", "toes", "bus", "pass", "runs", "sales", "is", "ss")
    assert [s_stem(w) for w in words] == ["it", "city", "aies", "eies", "goes", "toes", "bus", "pass", "run", "sale",
                                          "is", "ss"]


def test_uleb128_round_trip_and_damage():
    values = np.array([0, 1, 127, 128, 300, 16383, 16384, 2 ** 21, 2 ** 28 + 5, 2 ** 35 - 1], dtype=np.int64)
    data, starts = uleb128_encode(values)
    assert list(uleb128_decode(data)) == list(values)
    assert bytes(data[starts[2]:starts[4]]) == bytes([0x7F, 0x80, 0x01])
    with pytest.raises(ValueError, match="truncated"):
        uleb128_decode(data[:-1])
    with pytest.raises(ValueError, match="longer"):
        uleb128_decode(np.array([0x80] * 5 + [0x01], dtype=np.uint8))


def _index(texts, **kw) -> LexicalIndex:
    b = LexicalBuilder(**kw)
    b.add_many(texts)
    meta, sections = b.finish()
    return LexicalIndex(meta, {name: data for name, _, data in sections}, count=len(texts))


def test_bm25_matches_a_hand_computed_example():
    ix = _index(["the cat sat on the mat", "dog and cat", "cat cat cat 2018"])
    assert list(ix.lengths) == [3, 2, 4] and ix.avg == 3.0  # stop words do not count
    k1, b, n, avg = 0.9, 0.4, 3, 3.0

    def term(tf, df, length):
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        return idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avg))

    want = [term(1, 3, 3), term(1, 3, 2), term(3, 3, 4) + term(1, 1, 4)]
    assert ix.scores("Cat 2018 cat") == pytest.approx(want, rel=1e-12)  # a repeated word counts once
    scores, ids = ix.search("cat 2018", 2)
    assert list(ids) == [2, 1] and scores[0] == pytest.approx(want[2])
    assert ix.search("unicorn", 5)[1].size == 0


def test_vocabulary_is_sorted_bytes_and_postings_decode():
    texts = ["zeta alpha", "Émile alpha", "alpha 100", "beta"]
    ix = _index(texts)
    terms = [ix._term(i) for i in range(ix.terms)]
    assert terms == sorted(terms) and b"\xc3\xa9mile" in terms
    ids, tf = ix.postings_of(ix.lookup("alpha"))
    assert list(ids) == [0, 1, 2] and list(tf) == [1, 1, 1]
    assert ix.lookup("gamma") == -1
    ix.check_all()


def test_damaged_postings_are_refused():
    b = LexicalBuilder()
    b.add_many(["one two", "two three"])
    meta, sections = b.finish()
    data = {name: bytearray(d) for name, _, d in sections}
    data["lex_postings"][-1] |= 0x80  # the last varint never ends
    ix = LexicalIndex(meta, {k: bytes(v) for k, v in data.items()}, count=2)
    with pytest.raises(LexicalFormatError):
        ix.check_all()
    with pytest.raises(LexicalFormatError, match="doc_count"):
        LexicalIndex(meta, {name: d for name, _, d in sections}, count=3)
    short = {name: d for name, _, d in sections}
    short["lex_vocab_offsets"] = short["lex_vocab_offsets"][:-4]
    with pytest.raises(LexicalFormatError) as e:
        LexicalIndex(meta, short, count=2)
    assert e.value.section == "lex_vocab_offsets"
    with pytest.raises(LexicalFormatError, match="k1"):
        LexicalIndex({**meta, "k1": float("nan")}, {name: d for name, _, d in sections}, count=2)


def test_top_k_breaks_ties_by_lower_id_even_at_the_cut():
    scores = np.array([0.0, 2.0, 1.0, 2.0, 1.0, 1.0, 0.5])
    s, ids = top_k(scores, 4)
    assert list(ids) == [1, 3, 2, 4] and list(s) == [2.0, 2.0, 1.0, 1.0]
    assert list(top_k(scores, 100)[1]) == [1, 3, 2, 4, 5, 6]  # zero scores are not hits


def test_fusion_by_hand():
    dense_ids, dense_scores = np.array([3, 1, 0]), np.array([0.8, 0.6, 0.4])
    lex_ids, lex_scores = np.array([2, 1]), np.array([10.0, 5.0])
    cand = np.array([0, 1, 2, 3])
    cand_dense = np.array([0.4, 0.6, -0.1, 0.8])
    cand_lex = np.array([0.0, 5.0, 10.0, 0.0])
    kw = dict(dense_ids=dense_ids, dense_scores=dense_scores, lexical_ids=lex_ids, lexical_scores=lex_scores,
              candidate_dense=cand_dense, candidate_lexical=cand_lex, candidates=cand, k=4)
    s, ids = fuse(settings=RetrievalSettings(fusion="tmm", weight=0.5, standout_weighting=False), **kw)
    want = {0: 0.5 * 0.4 / 0.8, 1: 0.5 * 0.6 / 0.8 + 0.5 * 0.5, 2: 0.5 * 1.0, 3: 0.5 * 1.0}
    assert list(ids) == [1, 2, 3, 0]  # 2 and 3 tie at 0.5: the lower id first
    assert list(s) == pytest.approx([want[i] for i in ids])
    s, ids = fuse(settings=RetrievalSettings(fusion="rrf", weight=0.5, rrf_k=60), **kw)
    rrf = {3: 0.5 / 61, 1: 0.5 / 62 + 0.5 / 62, 0: 0.5 / 63, 2: 0.5 / 61}
    assert list(ids) == sorted(rrf, key=lambda c: (-rrf[c], c)) and list(s) == pytest.approx(sorted(rrf.values(), reverse=True))
    s, ids = fuse(settings=RetrievalSettings(fusion="minmax", weight=0.0, standout_weighting=False), **kw)
    assert list(ids) == [3, 1, 0, 2]  # weight 0: the dense order, the lexical-only candidate last


def test_standout_weighting_by_hand():
    """FORMAT.md §2.5.1: each list's share of w scaled by (best - mean) / sd of its own list."""
    dense_ids, dense_scores = np.array([3, 1, 0]), np.array([0.8, 0.6, 0.4])
    lex_ids, lex_scores = np.array([2, 1, 0]), np.array([10.0, 1.0, 1.0])
    cand = np.array([0, 1, 2, 3])
    kw = dict(dense_ids=dense_ids, dense_scores=dense_scores, lexical_ids=lex_ids, lexical_scores=lex_scores,
              candidate_dense=np.array([0.4, 0.6, -0.1, 0.8]), candidate_lexical=np.array([1.0, 1.0, 10.0, 0.0]),
              candidates=cand, k=4)
    z_dense = (0.8 - 0.6) / math.sqrt((0.04 + 0 + 0.04) / 3)  # 1.2247...
    z_lex = (10.0 - 4.0) / math.sqrt((36 + 9 + 9) / 3)  # 1.4142...
    assert standout(dense_scores) == pytest.approx(z_dense) and standout(lex_scores) == pytest.approx(z_lex)
    wq = 0.4 * z_lex / (0.6 * z_dense + 0.4 * z_lex)
    assert question_weight(0.4, dense_scores, lex_scores) == pytest.approx(wq)
    s, ids = fuse(settings=RetrievalSettings(fusion="tmm", weight=0.4, path_weight=0, heading_weight=0), **kw)
    want = {0: (1 - wq) * 0.5 + wq * 0.1, 1: (1 - wq) * 0.75 + wq * 0.1, 2: wq * 1.0, 3: (1 - wq) * 1.0}
    assert list(ids) == sorted(want, key=lambda c: (-want[c], c)) and list(s) == pytest.approx(sorted(want.values(), reverse=True))
    # the same lists with the weighting off rank by the fixed weight; a flat list stands out by 0
    s, ids = fuse(settings=RetrievalSettings(fusion="tmm", weight=0.4, path_weight=0, heading_weight=0,
                                             standout_weighting=False), **kw)
    fixed = {0: 0.6 * 0.5 + 0.4 * 0.1, 1: 0.6 * 0.75 + 0.4 * 0.1, 2: 0.4, 3: 0.6}
    assert list(s) == pytest.approx(sorted(fixed.values(), reverse=True))
    # a list that cannot say (one score, no spread) leaves the fixed weight
    assert standout(np.array([2.0, 2.0, 2.0])) is None and standout(np.array([5.0])) is None
    # a list flatter than float32 rounding says nothing either (a degenerate model's cosines)
    assert standout(np.array([0.999998, 0.999997, 0.999996])) is None
    assert standout(np.array([0.9, 0.899, 0.897])) is not None
    assert question_weight(0.4, dense_scores, np.array([3.0])) == 0.4
    assert question_weight(0.4, np.array([1.0, 1.0]), lex_scores) == 0.4
    # the list whose best stands further out takes the larger share
    assert question_weight(0.4, np.array([0.9, 0.3, 0.3, 0.3]), lex_scores) < 0.4 < question_weight(
        0.4, np.array([0.9, 0.85, 0.8, 0.75]), lex_scores)


def test_retrieval_settings_are_validated():
    assert RetrievalSettings.from_manifest(RetrievalSettings().to_manifest()) == RetrievalSettings()
    # a 1.7 manifest (no standout_weighting) ranks as it was written: with the fixed weight
    assert RetrievalSettings.from_manifest({"fusion": "tmm", "weight": 0.4}).standout_weighting is False
    for bad in ({"fusion": "max"}, {"weight": 1.5}, {"depth": 0}, {"depth": True}, {"default_mode": "magic"},
                {"standout_weighting": 1}, {"standout_weighting": "yes"}):
        with pytest.raises(ValueError):
            RetrievalSettings.from_manifest({**RetrievalSettings().to_manifest(), **bad})


# --------------------------------------------------------------------------- in a bundle

def _bundle_with_lexical(path, texts, *, manifest_extra=None, mutate=None):
    from kbc.format.bundle import write_bundle

    b = LexicalBuilder()
    b.add_many(texts)
    meta, sections = b.finish()
    if mutate:
        sections = mutate(sections)
    vecs = np.eye(len(texts), 8, dtype=np.float32)
    manifest = {"lexical": meta, "retrieval": RetrievalSettings().to_manifest(), **(manifest_extra or {})}
    return write_bundle(path, manifest=manifest, vectors=vecs, chunks=[{"text": t, "source": 0} for t in texts],
                        extra_sections=sections)


def test_bundle_round_trip_and_verify(tmp_path):
    from kbc.format.bundle import Bundle

    texts = ["Capital expenditure was 1,577 million in FY2018", "Revenue grew", "Capital leases"]
    p = _bundle_with_lexical(tmp_path / "x.kbpack", texts)
    with Bundle(p) as b:
        b.verify()
        assert b.minor >= 2 and b.retrieval_settings() == RetrievalSettings()
        assert list(b.lexical().search("capital expenditure 2018", 3)[1]) == [0, 2]


def test_rechecksummed_bad_lexical_sections_are_invalid_bundles(tmp_path):
    """An author who recomputes the checksums still cannot smuggle in ids past the chunk count."""
    from kbc.format.bundle import Bundle
    from kbc.errors import BundleError

    def out_of_range(sections):
        data, starts = uleb128_encode(np.array([7, 1]))  # chunk 7 of 2
        return [(n, e, bytes(data) if n == "lex_postings" else
                 (np.array([0, len(data)], "<u4").tobytes() if n == "lex_postings_offsets" else d))
                for n, e, d in sections]

    p = _bundle_with_lexical(tmp_path / "bad.kbpack", ["alpha", "beta"],
                             mutate=lambda s: out_of_range([(n, e, d) for n, e, d in s]),
                             manifest_extra={})
    with Bundle(p) as b:
        with pytest.raises(BundleError) as e:
            b.verify()
    assert e.value.section in ("lex_postings", "lex_postings_offsets", "lex_vocab_offsets")
    wrong = _bundle_with_lexical(tmp_path / "mode.kbpack", ["alpha"],
                                 manifest_extra={"retrieval": {"default_mode": "psychic"}})
    with Bundle(wrong) as b:
        with pytest.raises(BundleError, match="retrieval"):
            b.retrieval_settings()


def test_a_1_1_bundle_opens_and_searches_dense(tmp_path, monkeypatch):
    """Bundles written before 1.2 carry no lexical sections: dense is their only mode."""
    import kbc.format.bundle as B
    import kbc.format.writer as W
    from kbc.search.dense import Searcher
    from kbc.search.fusion import Retriever

    monkeypatch.setattr(W, "FORMAT_MINOR", 1)  # the writer writes the version it knows
    vecs = np.eye(3, 4, dtype=np.float32)
    p = B.write_bundle(tmp_path / "old.kbpack", manifest={}, vectors=vecs, chunks=[{"text": "a"}, {"text": "b"}, {"text": "c"}])
    monkeypatch.undo()
    with B.Bundle(p) as b:
        assert b.minor == 1 and b.lexical() is None
        settings = b.retrieval_settings()
        assert settings.default_mode == "dense"
        r = Retriever(searcher=Searcher(b.vectors, None, {}), lexical=None, settings=settings)
        assert r.resolve(None) == "dense"
        scores, ids = r.search(vecs[1:2], ["b"], 2)[0]
        assert ids[0] == 1
        from kbc.errors import InputError
        with pytest.raises(InputError, match="no lexical index"):
            r.search(vecs[1:2], ["b"], 2, mode="hybrid")


def test_context_counts_twice_in_tf_and_length():
    b = LexicalBuilder()
    b.add("Revenue grew in the quarter", context="ACME 2018 10K | Income Statement")
    b.add("Revenue fell", context="")
    meta, sections = b.finish()
    ix = LexicalIndex(meta, {name: data for name, _, data in sections}, count=2)
    assert meta["fields"] == {"context": 2, "text": 1}
    assert list(ix.lengths) == [2 * 6 + 3, 2]  # acme 2018 10 k income statement, twice; revenue grew quarter
    ids, tf = ix.postings_of(ix.lookup("acme"))
    assert list(ids) == [0] and list(tf) == [2]


def test_minmax_with_one_lexical_hit_keeps_its_signal():
    cand = np.array([0, 1, 2])
    s, ids = fuse(dense_ids=np.array([0, 1, 2]), dense_scores=np.array([0.9, 0.8, 0.7]),
                  lexical_ids=np.array([2]), lexical_scores=np.array([3.0]),
                  candidate_dense=np.array([0.9, 0.8, 0.7]), candidate_lexical=np.array([0.0, 0.0, 3.0]),
                  candidates=cand, settings=RetrievalSettings(fusion="minmax", weight=0.6), k=3)
    assert list(ids) == [2, 0, 1]  # before: every candidate scored 1 lexically, pure dense order [0, 1, 2]


def test_overflowing_numbers_in_the_lexical_manifest_are_format_errors():
    b = LexicalBuilder()
    b.add_many(["one two"])
    meta, sections = b.finish()
    for key in ("k1", "avg_doc_length"):
        with pytest.raises(LexicalFormatError):
            LexicalIndex({**meta, key: 10 ** 400}, {n: d for n, _, d in sections}, count=1)
