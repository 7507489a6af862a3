"""kbc.query.rerank: the optional cross-encoder stage, against a tiny random cross-encoder built on disk."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kbc.errors import InputError, ModelError
from kbc.query.knowledge_base import Hit
from kbc.query.rerank import (MAX_RERANK_CANDIDATES, RERANKERS, Reranked, candidates_for, load_reranker, passage_text,
                              register_reranker, rerank)

ROOT = Path(__file__).resolve().parent.parent

WORDS = ("the a of and to is in it what how where why cat dog fish bird red blue green water fire earth "
         "logging config file set level debug error warn info server port").split()


def make_tiny_cross_encoder(d: Path, *, seed: int = 0, num_labels: int = 1) -> Path:
    """A 2-layer, 32-d BERT with a 1-logit classification head and a WordPiece vocab of a few dozen
    entries: what `CrossEncoder(d)` loads, with no download. A wide initialiser spreads the scores."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    d.mkdir(parents=True, exist_ok=True)
    vocab = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + list("abcdefghijklmnopqrstuvwxyz0123456789.,?!:")
             + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"])
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=num_labels,
                     initializer_range=0.2)
    torch.manual_seed(seed)
    BertForSequenceClassification(cfg).save_pretrained(d)
    BertTokenizerFast.from_pretrained(d).save_pretrained(d)  # reads vocab.txt (transformers 4 and 5 alike)
    return d


@pytest.fixture(scope="module")
def ce_dir(tmp_path_factory) -> Path:
    return make_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-ce") / "ce")


@pytest.fixture(scope="module")
def reranker(ce_dir):
    return load_reranker(ce_dir)


@pytest.fixture(scope="module")
def reference(ce_dir):
    """The same directory loaded by sentence-transformers directly: the scores kbc must reproduce."""
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(ce_dir), local_files_only=True)


def ce_logits(model, question, passages) -> np.ndarray:
    from torch import nn

    return np.asarray(model.predict([(question, p) for p in passages], activation_fn=nn.Identity(),
                                    show_progress_bar=False), dtype=np.float64)


def hit(i: int, text: str, *, context: str | None = None, score: float | None = None) -> Hit:
    return Hit(rank=i + 1, score=1.0 - i / 1000 if score is None else score, chunk_id=100 + i, source=f"doc{i}.md",
               page_start=1, page_end=1, char_start=0, char_end=len(text), text=text, context=context)


PASSAGES = ["the cat is red", "blue fish in water", "set the logging level to debug", "a dog and a bird",
            "server port config file", "fire and earth", "what is it", "green green green"]
QUESTION = "how to set logging level"


class FixedScores:
    """A stand-in re-ranker with chosen scores: records what it was asked to score."""

    def __init__(self, scores):
        self.name, self.scores, self.seen = "fixed", scores, []

    def score(self, question, passages):
        self.seen.append(list(passages))
        return np.asarray(self.scores(len(passages)) if callable(self.scores) else self.scores[:len(passages)],
                          dtype=np.float64)


# --- scores and order -----------------------------------------------------------------------

def test_scores_are_the_cross_encoders_own(reranker, reference):
    got = reranker.score(QUESTION, PASSAGES)
    assert got.dtype == np.float64 and got.shape == (len(PASSAGES),)
    np.testing.assert_array_equal(got, ce_logits(reference, QUESTION, PASSAGES))
    assert len(set(got.tolist())) == len(PASSAGES)  # a spread, so the order checks below mean something
    # raw logits: same order as predict's default sigmoid scores
    sig = np.asarray(reference.predict([(QUESTION, p) for p in PASSAGES], show_progress_bar=False))
    assert list(np.argsort(-got, kind="stable")) == list(np.argsort(-sig, kind="stable"))
    np.testing.assert_array_equal(reranker.score(QUESTION, PASSAGES), got)  # deterministic
    assert reranker.score(QUESTION, []).shape == (0,)


def test_rerank_orders_by_cross_encoder_score(reranker, reference):
    hits = [hit(i, t) for i, t in enumerate(PASSAGES)]
    expect = ce_logits(reference, QUESTION, PASSAGES)
    out = rerank(reranker, QUESTION, hits)
    assert all(isinstance(r, Reranked) for r in out)
    assert [r.hit.chunk_id for r in out] == [hits[i].chunk_id for i in np.argsort(-expect, kind="stable")]
    assert [r.hit.score for r in out] == sorted(expect.tolist(), reverse=True)
    assert [r.hit.rank for r in out] == list(range(1, len(hits) + 1))
    for r in out:  # first stage kept beside it; everything else about the hit untouched
        orig = next(h for h in hits if h.chunk_id == r.hit.chunk_id)
        assert (r.first_stage_score, r.first_stage_rank) == (orig.score, orig.rank)
        assert (r.hit.text, r.hit.source, r.hit.context) == (orig.text, orig.source, orig.context)
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))  # the caller's hits are not mutated
    assert out[0].hit.score != hits[0].score


def test_passages_include_the_context_line(reranker, reference):
    hits = [hit(0, "set the logging level", context="server config"), hit(1, "set the logging level")]
    assert passage_text(hits[0]) == "server config\nset the logging level"
    assert passage_text(hits[1]) == "set the logging level"
    out = rerank(reranker, QUESTION, hits)
    by_id = {r.hit.chunk_id: r.hit.score for r in out}
    want = ce_logits(reference, QUESTION, ["server config\nset the logging level", "set the logging level"])
    assert [by_id[100], by_id[101]] == want.tolist()
    assert by_id[100] != by_id[101]
    fake = FixedScores([0.0, 0.0])
    rerank(fake, QUESTION, hits)
    assert fake.seen == [["server config\nset the logging level", "set the logging level"]]
    rerank(fake, QUESTION, hits, text=lambda h: h.text.upper())  # the caller may choose the text
    assert fake.seen[-1] == ["SET THE LOGGING LEVEL"] * 2


def test_ties_keep_first_stage_order(reranker):
    same = [hit(i, "blue fish in water") for i in range(5)]
    out = rerank(reranker, QUESTION, same)
    assert len({r.hit.score for r in out}) == 1
    assert [r.hit.chunk_id for r in out] == [h.chunk_id for h in same]
    hits = [hit(i, f"p{i}") for i in range(6)]
    out = rerank(FixedScores([1.0, 3.0, 1.0, 3.0, 2.0, 1.0]), "q", hits)
    assert [r.hit.chunk_id - 100 for r in out] == [1, 3, 4, 0, 2, 5]


def test_k_cuts(reranker, reference):
    hits = [hit(i, t) for i, t in enumerate(PASSAGES)]
    full = rerank(reranker, QUESTION, hits)
    assert rerank(reranker, QUESTION, hits, k=3) == full[:3]
    assert rerank(reranker, QUESTION, hits, k=1)[0].hit.rank == 1
    assert rerank(reranker, QUESTION, hits, k=100) == full
    assert rerank(reranker, QUESTION, hits, k=0) == []
    assert rerank(reranker, QUESTION, []) == []
    for bad in (-1, 2.5, True, "3"):
        with pytest.raises(InputError, match="k must be"):
            rerank(reranker, QUESTION, hits, k=bad)


def test_candidate_bound():
    hits = [hit(i, f"p{i}", score=float(-i)) for i in range(MAX_RERANK_CANDIDATES + 50)]
    # scores rise with position: unbounded, the last hits would win
    fake = FixedScores(lambda n: np.arange(n, dtype=np.float64))
    out = rerank(fake, "q", hits)
    assert len(fake.seen) == 1 and len(fake.seen[0]) == MAX_RERANK_CANDIDATES
    assert len(out) == MAX_RERANK_CANDIDATES
    assert out[0].hit.chunk_id == hits[MAX_RERANK_CANDIDATES - 1].chunk_id
    assert max(r.first_stage_rank for r in out) == MAX_RERANK_CANDIDATES
    assert candidates_for(5) <= MAX_RERANK_CANDIDATES and candidates_for(5) >= 5
    assert candidates_for(10_000) == MAX_RERANK_CANDIDATES and candidates_for(1) >= 1


def test_bad_scores_from_a_reranker_are_model_errors():
    hits = [hit(i, f"p{i}") for i in range(3)]
    with pytest.raises(ModelError, match="2.*3 passages"):
        rerank(FixedScores([1.0, 2.0]), "q", hits)
    with pytest.raises(ModelError, match="non-finite"):
        rerank(FixedScores([1.0, float("nan"), 2.0]), "q", hits)


# --- truncation -----------------------------------------------------------------------------

def test_long_passages_and_questions_are_truncated(reranker, ce_dir):
    assert reranker.max_length == 128  # the tokenizer saved no limit: capped at max_position_embeddings
    long = " ".join(["blue fish in water"] * 20_000)  # 80k words: far past 128 positions
    s = reranker.score(long, [long, "the cat"])
    assert s.shape == (2,) and np.all(np.isfinite(s))
    # what lies past max_length tokens does not count
    base = " ".join(["red cat"] * 200)
    a, b = reranker.score("cat", [base + " dog", base + " fish water fire"])
    # the same tokens: equal but for float32 rounding, which can differ by the row's place in the batch
    # (AVX-512 kernels on AMD EPYC: 1.2e-7); a word past the cut that counted would move it far more
    assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    short = load_reranker(ce_dir, max_length=16)  # [CLS] cat [SEP] + 12 passage tokens + [SEP]
    assert short.max_length == 16
    pair = ["the cat is red and blue and green and the dog is red dog", "the cat is red and blue and green and "
            "the dog is red fish water"]
    x, y = short.score("cat", pair)
    assert x == y
    x, y = reranker.score("cat", pair)
    assert x != y


# --- errors ---------------------------------------------------------------------------------

def _model_error(path, **kw) -> str:
    with pytest.raises(ModelError) as info:
        load_reranker(path, **kw)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg and "Traceback" not in msg, msg
    e = info.value  # nothing chained that a traceback printer would show
    assert e.__cause__ is None and (e.__context__ is None or e.__suppress_context__)
    assert info.value.exit_code == 4
    return msg


def test_missing_and_non_model_directories(tmp_path, ce_dir):
    assert "no such directory" in _model_error(tmp_path / "absent")
    (tmp_path / "file.bin").write_bytes(b"x")
    assert "not a directory" in _model_error(tmp_path / "file.bin")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    assert "no config.json" in _model_error(empty)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    assert "config.json is unreadable" in _model_error(broken)


def test_an_embedding_model_is_not_a_cross_encoder(tmp_path, ce_dir):
    emb = tmp_path / "embedder"
    shutil.copytree(ce_dir, emb)
    cfg = json.loads((emb / "config.json").read_text())
    cfg["architectures"] = ["BertModel"]
    (emb / "config.json").write_text(json.dumps(cfg))
    msg = _model_error(emb)
    assert "not a cross-encoder" in msg and "BertModel" in msg


def test_a_classifier_with_several_labels_is_not_a_reranker(tmp_path):
    msg = _model_error(make_tiny_cross_encoder(tmp_path / "nli", num_labels=3))
    assert "3 output labels" in msg


def test_load_failure_is_one_line(tmp_path, ce_dir):
    noweights = tmp_path / "noweights"
    shutil.copytree(ce_dir, noweights)
    (noweights / "model.safetensors").unlink()
    assert "could not load the cross-encoder" in _model_error(noweights)


def test_registry_and_options(tmp_path, ce_dir):
    assert "cross-encoder" in RERANKERS and RERANKERS["cross-encoder"].description
    with pytest.raises(InputError, match="must be one of cross-encoder"):
        load_reranker(ce_dir, kind="nope")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="batch_size"):
            load_reranker(ce_dir, batch_size=bad)
    with pytest.raises(InputError, match="max_length"):
        load_reranker(ce_dir, max_length=2)
    seen = {}

    @register_reranker("test-fixed", description="fixed scores, for tests")
    def load_fixed(path, *, device=None, batch_size=32, max_length=None):
        seen.update(path=path, device=device, batch_size=batch_size)
        return FixedScores([2.0, 1.0])

    try:
        r = load_reranker(tmp_path, kind="test-fixed", batch_size=4)
        assert seen == {"path": tmp_path, "device": None, "batch_size": 4}
        out = rerank(r, "q", [hit(0, "a"), hit(1, "b")])
        assert [x.hit.score for x in out] == [2.0, 1.0]
    finally:
        del RERANKERS["test-fixed"]


def test_import_is_light():
    code = ("import sys, kbc, kbc.query.rerank; heavy = [m for m in ('torch', 'sentence_transformers', 'transformers') "
            "if m in sys.modules]; print(heavy)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
