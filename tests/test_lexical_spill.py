"""The lexical builder's spilled runs: the same bytes as an in-memory build, and no file left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from kbc.format.bm25 import LexicalBuilder


def _corpus(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(text, context) pairs with a Zipf vocabulary, digits, accents and repeated words, so terms
    recur across runs, some appear once, and a few are in nearly every chunk."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(3000)] + ["café", "naïve", "Ωmega", "2018", "10-K", "fy2019"]
    p = 1.0 / np.arange(1, len(words) + 1)
    p /= p.sum()
    out = []
    for i in range(n):
        text = " ".join(words[j] for j in rng.choice(len(words), size=int(rng.integers(1, 40)), p=p))
        context = f"doc{i % 7} section {i % 3}" if i % 2 else ""
        out.append((text, context))
    return out


def _build(corpus, **kw):
    b = LexicalBuilder(**kw)
    for text, context in corpus:
        b.add(text, context=context)
    runs = b.runs
    return b.finish(), runs


@pytest.mark.parametrize("spill_bytes", [12, 12 * 7, 12 * 500, 12 * 4000])
def test_spilled_runs_give_the_same_sections_as_memory(tmp_path, spill_bytes, monkeypatch):
    corpus = _corpus(1500)
    (meta, sections), runs = _build(corpus)
    assert runs == 0
    import kbc.format.bm25 as lex

    monkeypatch.setattr(lex, "_FINISH_SLICE", 97)  # merge steps that cut terms and runs anywhere
    (meta2, sections2), runs2 = _build(corpus, spill_bytes=spill_bytes, spill_dir=str(tmp_path))
    assert runs2 > 1
    assert meta2 == meta
    assert [(n, e) for n, e, _ in sections2] == [(n, e) for n, e, _ in sections]
    for (name, _, a), (_, _, b) in zip(sections, sections2):
        assert a == b, name
    assert list(tmp_path.iterdir()) == []  # finish removed the runs


def test_a_bundle_built_with_a_tiny_spill_budget_has_the_same_lexical_sections(tmp_path, monkeypatch, tiny_model):
    import kbc
    from kbc.format.bm25 import SECTIONS
    from conftest import SAMPLE_DOCS

    a = tmp_path / "a.kbpack"
    kbc.build([SAMPLE_DOCS], a, model=str(tiny_model), use_cache=False)
    made = []
    orig = LexicalBuilder.__post_init__

    def small_budget(self):  # every builder the pipeline makes spills every 50 postings
        self.spill_bytes = 12 * 50
        orig(self)
        made.append(self)

    monkeypatch.setattr(LexicalBuilder, "__post_init__", small_budget)
    b = tmp_path / "b.kbpack"
    kbc.build([SAMPLE_DOCS], b, model=str(tiny_model), use_cache=False)
    assert made and made[0].postings > 0  # it did spill
    from kbc.format.bundle import Bundle

    x, y = Bundle(a), Bundle(b)
    assert x.manifest["lexical"] == y.manifest["lexical"]
    for name in SECTIONS:
        assert bytes(x._section(name)) == bytes(y._section(name)), name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".kbc-lexical-")]  # next to the bundle: gone


def test_close_and_an_interrupt_remove_the_runs(tmp_path):
    b = LexicalBuilder(spill_bytes=120, spill_dir=str(tmp_path))
    for text, context in _corpus(200):
        b.add(text, context=context)
    assert b.runs > 1 and any(tmp_path.iterdir())
    b.close()
    assert list(tmp_path.iterdir()) == []

    # SIGTERM unwinds as KeyboardInterrupt in the CLI (kbc.cli installs that handler): the runs go
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
        from kbc.cli import _term
        from kbc.format.bm25 import LexicalBuilder
        from test_lexical_spill import _corpus
        signal.signal(signal.SIGTERM, _term)
        b = LexicalBuilder(spill_bytes=120, spill_dir={str(tmp_path)!r})
        for i, (text, context) in enumerate(_corpus(400)):
            b.add(text, context=context)
            if b.runs == 3:
                print("spilled", flush=True)
                os.kill(os.getpid(), signal.SIGTERM)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "spilled" in r.stdout
    assert r.returncode != 0  # interrupted, not finished
    assert list(tmp_path.iterdir()) == []
