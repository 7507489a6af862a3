"""build -> inspect -> query, through the CLI and the library, on the sample docs and a tiny model."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kbc.format.retrieval import RetrievalSettings

from conftest import SAMPLE_DOCS, run_kbc
from kbc.format.bundle import Bundle
from kbc.stages.splitter import (CONTEXT_MAX_TOKENS, CONTEXT_SEPARATOR, Chunker, document_context, resolve_spec,
                                 token_budget)
from kbc.backends.model import TokenCounter, read_spec, resolve_model
from kbc.errors import InputError
from kbc.records import Document, Page
from kbc.readers.textclean import clean_text, strip_running_lines
from kbc.stages.sources import discover


def write(p: Path, text: str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p


# ------------------------------------------------------------ stages in isolation


def test_discover_sorted_relative_filtered(tmp_path):
    write(tmp_path / "b.md", "b")
    write(tmp_path / "a" / "z.txt", "z")
    write(tmp_path / "a" / "skip.txt", "s")
    write(tmp_path / ".hidden" / "h.md", "h")
    write(tmp_path / "image.png", "x")
    found = discover([tmp_path], exclude=["skip*"])
    assert [s.rel for s in found] == ["a/z.txt", "b.md"]
    assert [s.rel for s in discover([tmp_path], include=["*.md"])] == ["b.md"]
    with pytest.raises(InputError, match="no such file"):
        discover([tmp_path / "nope"])
    with pytest.raises(InputError, match="no supported files"):
        discover([tmp_path], include=["*.pdf"])


def test_clean_text_ligatures_hyphens_whitespace():
    raw = "The ﬁrst eﬀect is sig-\nnificant.\r\n\n\n\nNext   para\u00a0here  \nsuper x² stays"
    out = clean_text(raw)
    assert "first effect is significant." in out
    assert "\n\n\n" not in out and "Next para here" in out
    assert "x²" in out  # no NFKC flattening of superscripts


def test_hyphen_breaks_keep_real_hyphens():
    out = clean_text("a non- \nnormal check, an exam-\nple, a well-\nknown and well-known term, E-\nMail")
    assert "non-normal" in out and "example" in out and "well-known and well-known" in out
    assert "E-Mail" in out  # no join before a capital: a name or a compound, not a typeset break


def test_running_headers_and_page_numbers_removed():
    pages = [f"ACME Manual v2\nBody text of page {i} is unique {i * 7}.\n{i}" for i in range(1, 7)]
    out = strip_running_lines(pages)
    assert all("ACME Manual" not in p for p in out)
    assert all(not p.rstrip().splitlines()[-1].strip().isdigit() for p in out)
    assert "Body text of page 3 is unique 21." in out[2]


@pytest.fixture(scope="module")
def minilm():
    ref = resolve_model(None)
    spec = read_spec(ref)
    return ref, spec, TokenCounter(ref.path)


def test_token_chunks_fit_the_model_and_keep_provenance(minilm):
    ref, spec, counter = minilm
    para = "Ownership rules govern how memory is managed in Rust programs without a collector. "
    texts = [para * 40, "Short second page.", para * 25]
    pos, pages, parts = 0, [], []
    for i, t in enumerate(texts):
        if parts:
            parts.append("\n\n")
            pos += 2
        pages.append(Page(i + 1, None, pos, pos + len(t)))
        parts.append(t)
        pos += len(t)
    doc = Document("x.pdf", "".join(parts), pages)
    budget = token_budget(counter, spec.max_seq_length, "")
    chunker = Chunker(resolve_spec(unit=None, size=None, overlap=None, budget=budget), counter,
                      max_seq_length=spec.max_seq_length)
    chunks = chunker.split(doc)
    assert len(chunks) > 5
    lengths = counter.count_batch([c.text for c in chunks])
    assert max(lengths) <= spec.max_seq_length
    for c in chunks:
        assert doc.text[c.char_start:c.char_end] == c.text
        assert 1 <= c.page_start <= c.page_end <= 3
    assert any(c.page_start == 2 or c.page_end == 2 for c in chunks)
    assert chunks[-1].page_end == 3


@pytest.mark.parametrize("size, overlap", [(254, 63), (60, 15), (17, 4)])
def test_the_batch_counting_splitter_splits_exactly_as_langchains(minilm, size, overlap):
    """The splitter counts pieces in batches and remembers them; its chunks must be langchain's own."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from kbc.stages.splitter import SEPARATORS, _batch_counting_splitter

    ref, spec, counter = minilm
    text = ("Ownership rules in Rust: each value has an owner.\n\nThere can only be one owner at a time. "
            "When the owner goes out of scope, the value will be dropped; see `Drop`, 3.5 and FY2018.\n" * 9
            + "Übergrößenträger kostet 1,234,567 €. " * 20 + "\n\n" + "x" * 3000 + " short. tail\n" + "语言模型" * 50)
    plain = RecursiveCharacterTextSplitter(chunk_size=size, chunk_overlap=overlap, length_function=counter.count,
                                           separators=SEPARATORS, keep_separator="end", strip_whitespace=True)
    ours = _batch_counting_splitter(counter, size, overlap)
    expected = plain.split_text(text)
    assert len(expected) > 3 and ours.split_text(text) == expected
    assert ours.split_text(text[:500]) == plain.split_text(text[:500])  # nothing remembered across documents


@pytest.mark.parametrize("prompt", ["", "passage: "])
def test_a_text_that_fits_whole_is_counted_as_the_embedder_sees_it(minilm, prompt):
    """Short records skip the second count of their text; every chunk's count must still be the
    tokenizer's for prompt + text with its special tokens, whatever the whitespace or case."""
    ref, spec, counter = minilm
    lower = TokenCounter(ref.path, do_lower_case=True)
    texts = ["Net income rose 12% in FY2018.", "  padded both sides \n", "\ttab-led line", "UPPER Case Ü",
             "x", "语言模型 and ümlauts", " ", "", "trailing newline\n", "w123 ##4 [CLS] [SEP] [PAD]"]
    budget = token_budget(counter, spec.max_seq_length, prompt)
    for c in (counter, lower):
        chunker = Chunker(resolve_spec(unit=None, size=None, overlap=None, budget=budget), c,
                          max_seq_length=spec.max_seq_length, document_prompt=prompt)
        for text in texts:
            chunks = chunker.split(Document("r.jsonl", text, [Page(1, None, 0, len(text))]))
            assert [ch.text for ch in chunks] == ([text.strip()] if text.strip() else [])
            assert [ch.n_tokens for ch in chunks] == c.count_batch([prompt + ch.text for ch in chunks])


def _tricky_texts(n: int) -> list[str]:
    """Strings where a tokenizer could join across the prefix: combining marks, CJK, final sigma,
    control and odd whitespace characters, punctuation, digits and subwords."""
    import random

    rng = random.Random(7)
    alphabet = (list("abcXYZ09 ,.-:!?'\"()[]#") + ["\u0301", "\u0308", "\u00e9", "\u03a3", "\u03c3", "ΟΔΟΣ", "語言",
                "\u200b", "\u00a0", "\u3000", "\t", "\n", "\r", "\x1c", "\x00", "\x85", "İ", "ß", "##", "[SEP]",
                "unbelievable", "w123", "FY2018", "😀", "\ufeff"])
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(n)]


def test_counts_add_up_only_where_the_tokenizer_splits_at_whitespace(minilm, tiny_model, tmp_path):
    """count_joined(P, count(T)) must be the tokenizer's own count of P + T, or None."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    ref, spec, counter = minilm
    counters = [counter, TokenCounter(ref.path, do_lower_case=True), TokenCounter(tiny_model)]
    assert all(c.splits_at_whitespace for c in counters)
    prefixes = ["passage: ", "query:\n", "Annual report (3M 2018 10K) | Notes\n", "ΟΔΟΣ\t", "語言 ", "x\u0301\r"]
    texts = _tricky_texts(300)
    for c in counters:
        for prefix in prefixes:
            joined = [c.count_joined(prefix, c.count(t)) for t in texts]
            assert joined == c.count_batch([prefix + t for t in texts]), prefix
        # a prefix that does not end in whitespace may join the text's first word: no shortcut
        assert c.count_joined("passage:", 3) is None and c.count_joined("a\x1c", 3) is None
        assert c.count_joined("", 3) == 3 + c.special

    # an added token with a space in it is matched across the boundary: never added up
    save = tmp_path / "added"
    save.mkdir()
    tok = Tokenizer.from_file(str(ref.path / "tokenizer.json"))
    tok.add_tokens(["new york"])
    tok.save(str(save / "tokenizer.json"))
    added = TokenCounter(save)
    assert added.count_batch(["new york"]) != [added.count("new ") + added.count("york") + added.special]
    assert not added.splits_at_whitespace and added.count_joined("new ", added.count("york")) is None

    # byte-level BPE (GPT-2 style) carries the space into the next word: never added up
    bpe = Tokenizer(models.BPE(vocab={chr(i): i for i in range(33, 127)} | {"Ġ": 127}, merges=[]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.save(str(tmp_path / "tokenizer.json"))
    byte_level = TokenCounter(tmp_path)
    assert not byte_level.splits_at_whitespace and byte_level.count_joined("passage: ", 4) is None


def test_context_is_counted_in_the_budget_and_never_truncates(minilm):
    """A long title shrinks the chunks so that context + separator + text still fits the model."""
    ref, spec, counter = minilm
    para = "Segment revenue and operating income are reported for each fiscal year in the filing. "
    doc = Document("filings/ACME_2018_10K.pdf", para * 60, [Page(1, None, 0, len(para * 60))],
                   title="Annual report of the ACME Corporation " * 8)
    ctx = document_context(doc.source, doc.title, counter)
    assert len(counter.offsets(ctx)) <= CONTEXT_MAX_TOKENS
    budget = token_budget(counter, spec.max_seq_length, "")
    # chunks of the model's whole budget: a context can only fit by shrinking them
    chunker = Chunker(resolve_spec(unit=None, size=budget, overlap=None, budget=budget), counter,
                      max_seq_length=spec.max_seq_length)
    plain, with_ctx = chunker.split(doc), chunker.split(doc, context=ctx)
    assert len(with_ctx) > len(plain)
    full = counter.count_batch([ctx + CONTEXT_SEPARATOR + c.text for c in with_ctx])
    assert max(full) <= spec.max_seq_length and all(c.n_tokens == n for c, n in zip(with_ctx, full))
    assert document_context("a/b/report-final_v2.md", None, counter) == "a b report final v2"
    assert document_context("3M_2018_10K.pdf", "Annual Report", counter) == "Annual Report (3M 2018 10K)"


def test_furniture_only_chunks_are_not_emitted():
    from kbc.readers.textclean import has_words

    assert not has_words("70 4.1.") and not has_words("— 12 —\n\n(3) 1,577")
    assert has_words("Net income 1,577") and has_words("Übersicht 2018")


def test_prompt_reduces_the_token_budget(minilm):
    _, spec, counter = minilm
    assert token_budget(counter, 256, "Represent this sentence for searching: ") < token_budget(counter, 256, "")
    with pytest.raises(InputError, match="exceeds what the model embeds"):
        resolve_spec(unit="tokens", size=400, overlap=10, budget=254)


def test_default_token_chunks_are_192_overlapping_by_64_and_capped_by_the_model():
    """The defaults the README's chunk-size table chose; a small model caps the size, the overlap a third of it."""
    from kbc.stages.splitter import ChunkSpec

    assert resolve_spec(unit=None, size=None, overlap=None, budget=254) == ChunkSpec("tokens", 192, 64)
    assert resolve_spec(unit=None, size=None, overlap=None, budget=126) == ChunkSpec("tokens", 126, 42)
    assert resolve_spec(unit="tokens", size=90, overlap=None, budget=254) == ChunkSpec("tokens", 90, 30)
    assert resolve_spec(unit="chars", size=None, overlap=None, budget=254) == ChunkSpec("chars", 1000, 200)


# ------------------------------------------------------------ end to end on sample_docs


def test_sample_build_verify_json_keys(sample_bundle):
    proc = run_kbc("inspect", str(sample_bundle), "--verify", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    for key in ("path", "size", "format", "kbc_version", "created", "embedder", "vectors", "chunking", "index",
                "counts", "sections", "sources", "skipped", "verified", "intact"):
        assert key in info, key
    assert info["intact"] is True
    assert info["created"] == "2023-11-14T22:13:20Z"  # SOURCE_DATE_EPOCH=1700000000
    assert info["counts"]["truncated_chunks"] == 0
    assert info["embedder"]["name"] == "all-MiniLM-L6-v2" and info["vectors"]["dim"] == 384
    paths = [s["path"] for s in info["sources"]]
    assert "greenhouse-care.md" in paths and "ch08-03-hash-maps.pdf" in paths
    assert paths == sorted(paths)
    for s in info["sources"]:
        assert len(s["sha256"]) == 64 and s["pages"] >= 1


def test_query_finds_the_one_document_with_the_answer(sample_bundle):
    proc = run_kbc("query", str(sample_bundle), "At what temperature should I open the greenhouse roof vents?",
                   "-k", "3", "--unit", "chunk", "--json")
    assert proc.returncode == 0, proc.stderr
    hits = json.loads(proc.stdout)["hits"]
    assert hits[0]["source"] == "greenhouse-care.md"
    assert hits[0]["score"] >= hits[-1]["score"]
    assert "24" in hits[0]["text"]
    proc = run_kbc("query", str(sample_bundle), "How do I insert a value into a HashMap?", "-k", "2")
    assert proc.returncode == 0 and "ch08-03-hash-maps.pdf" in proc.stdout.splitlines()[0]
    assert " p." in proc.stdout.splitlines()[0]


def test_query_prompt_format(sample_bundle):
    proc = run_kbc("query", str(sample_bundle), "What is cargo build?", "-k", "2", "--prompt")
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0
    assert lines[0].startswith("context_0: ") and lines[1].startswith("context_1: ")
    assert lines[-1] == "question: What is cargo build?"


def test_library_api_matches_cli(sample_bundle):
    import kbc

    with kbc.open(sample_bundle) as kb:
        hits = kb.search("How do I run tests in parallel or consecutively?", k=3)
    assert hits[0].source == "ch11-02-running-tests.pdf"
    assert hits[0].page_start >= 1 and hits[0].text


def test_flipped_byte_makes_verify_fail_naming_section(sample_bundle, tmp_path):
    data = bytearray(sample_bundle.read_bytes())
    with Bundle(sample_bundle) as b:
        s = b.sections["chunks"]
    data[s.offset + 10] ^= 0x04
    bad = tmp_path / "bad.kbpack"
    bad.write_bytes(bytes(data))
    proc = run_kbc("inspect", str(bad), "--verify")
    assert proc.returncode == 3
    assert "chunks" in proc.stderr and "sha256 mismatch" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_same_input_same_epoch_same_bytes(tmp_path):
    write(tmp_path / "in" / "a.md", "# Alpha\n\nAlpha text about rivers and lakes.\n")
    write(tmp_path / "in" / "b.txt", "Beta text about mountains.\n")
    a, b = tmp_path / "a.kbpack", tmp_path / "b.kbpack"
    run_kbc("build", str(tmp_path / "in"), "-o", str(a), "-q", check=True)
    run_kbc("build", str(tmp_path / "in"), "-o", str(b), "-q", "--workers", "0", check=True)
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()


# ------------------------------------------------------------ bad input


@pytest.mark.parametrize("case", ["missing", "empty-dir", "unsupported", "no-outdir", "out-is-dir", "bad-model",
                                  "bad-option"])
def test_bad_input_one_line_error_nothing_written(tmp_path, case):
    src = tmp_path / "docs"
    write(src / "a.md", "hello world")
    out = tmp_path / "out.kbpack"
    args = {"missing": [str(tmp_path / "nope"), "-o", str(out)],
            "empty-dir": [str(tmp_path / "empty"), "-o", str(out)],
            "unsupported": [str(tmp_path / "x.docx"), "-o", str(out)],
            "no-outdir": [str(src), "-o", str(tmp_path / "no" / "such" / "out.kbpack")],
            "out-is-dir": [str(src), "-o", str(tmp_path)],
            "bad-model": [str(src), "-o", str(out), "--model", str(tmp_path / "no-model")],
            "bad-option": [str(src), "-o", str(out), "--chunk-overlap", "999"]}[case]
    (tmp_path / "empty").mkdir()
    (tmp_path / "x.docx").write_bytes(b"PK")
    proc = run_kbc("build", *args)
    expected = 4 if case == "bad-model" else 2
    assert proc.returncode == expected, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kbc: error: "), proc.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_undecodable_and_empty_files_skipped_and_listed_strict_fails(tmp_path):
    src = tmp_path / "docs"
    write(src / "good.md", "Good document about tidal energy and the moon.")
    (src / "latin1.txt").write_bytes(bytes(range(256)) * 4)  # binary: no encoding fits (real Latin-1 is detected)
    (src / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj garbage")
    out = tmp_path / "out.kbpack"
    proc = run_kbc("build", str(src), "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    skipped = {p["source"]: p["reason"] for p in report["skipped"]}
    assert set(skipped) == {"latin1.txt", "broken.pdf"}
    assert "not text" in skipped["latin1.txt"]
    with Bundle(out) as b:
        assert {s["path"] for s in b.manifest["skipped"]} == {"latin1.txt", "broken.pdf"}
        assert [s["path"] for s in b.sources] == ["good.md"]

    out.write_bytes(b"previous")
    proc = run_kbc("build", str(src), "-o", str(out), "--strict")
    assert proc.returncode == 5
    assert "latin1.txt" in proc.stderr and "broken.pdf" in proc.stderr
    assert out.read_bytes() == b"previous"


# ------------------------------------------------------------ any sentence-transformers model


def test_tiny_model_path_records_its_own_spec(tiny_model, tmp_path):
    src = tmp_path / "docs"
    write(src / "a.md", "Photosynthesis turns light into chemical energy. " * 30)
    write(src / "b.md", "The stock exchange closed lower on Friday after a volatile week.")
    out = tmp_path / "tiny.kbpack"
    proc = run_kbc("build", str(src), "-o", str(out), "--model", str(tiny_model), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["truncated_chunks"] == 0 and report["max_chunk_tokens"] <= 64
    with Bundle(out) as b:
        e = b.manifest["embedder"]
        assert (e["dim"], e["max_seq_length"], e["pooling"]) == (32, 64, "cls")
        assert (e["query_prompt"], e["document_prompt"]) == ("query: ", "passage: ")
        assert "model.safetensors" in e["files"] and len(e["weights_sha256"]) == 64
        assert b.vectors.shape[1] == 32
        np.testing.assert_allclose(np.linalg.norm(b.vectors, axis=1), 1.0, atol=1e-5)
        assert b.manifest["chunking"]["token_budget"] < 64 - 2  # the "passage: " prompt took its share
    proc = run_kbc("query", str(out), "light energy", "-k", "1", "--json")
    assert proc.returncode == 0, proc.stderr


def test_torch_and_onnx_backends_agree(tiny_model):
    from kbc.backends import load_embedder

    ref = resolve_model(str(tiny_model))
    spec = read_spec(ref)
    texts = ["a short one", "a much longer text " * 20, "punctuation!?; and digits 12345"]
    a = load_embedder(spec, ref, backend="torch", device=None).embed_documents(texts)
    b = load_embedder(spec, ref, backend="onnx", device=None).embed_documents(texts)
    assert np.min(np.sum(a * b, axis=1)) > 0.9999


def test_query_refuses_a_different_model(tiny_model, tmp_path):
    src = tmp_path / "docs"
    write(src / "a.md", "Some text about volcanoes and lava.")
    out = tmp_path / "kb.kbpack"
    run_kbc("build", str(src), "-o", str(out), "--model", str(tiny_model), "-q", check=True)
    changed = tmp_path / "changed-model"
    shutil.copytree(tiny_model, changed)
    cfg = json.loads((changed / "config.json").read_text())
    cfg["layer_norm_eps"] = 1e-5  # any change to an identity file changes the model's identity
    (changed / "config.json").write_text(json.dumps(cfg))
    proc = run_kbc("query", str(out), "lava", "--model", str(changed))
    assert proc.returncode == 4 and "differ" in proc.stderr and "config.json" in proc.stderr
    proc = run_kbc("query", str(out), "lava", "--model", str(changed), "--allow-model-mismatch")
    assert proc.returncode == 0 and "warning" in proc.stderr


# ------------------------------------------------------------ index types


def test_hnsw_index_stored_and_searched(tmp_path, tiny_model):
    src = tmp_path / "docs"
    for i in range(12):
        write(src / f"d{i:02}.md", f"Document {i} talks about topic number {i} in some detail. " * 3)
    out = tmp_path / "hnsw.kbpack"
    run_kbc("build", str(src), "-o", str(out), "--model", str(tiny_model), "--index", "HNSW16", "-q", check=True)
    with Bundle(out) as b:
        assert "index" in b.sections and b.manifest["index"]["factory"] == "HNSW16"
    import kbc

    with kbc.open(out) as kb:
        v = np.array(kb.bundle.vectors[:3])
        hits = kb.search_vectors(v, k=1)
        assert [h[0].chunk_id for h in hits] == [0, 1, 2]


def test_ivf_on_too_small_corpus_is_a_clear_error(tmp_path, tiny_model):
    src = tmp_path / "docs"
    write(src / "a.md", "tiny corpus")
    out = tmp_path / "ivf.kbpack"
    proc = run_kbc("build", str(src), "-o", str(out), "--model", str(tiny_model), "--index", "IVF256,PQ8")
    assert proc.returncode == 2 and "needs at least 256 chunks" in proc.stderr
    assert not out.exists()


def test_char_chunks_report_truncation(tmp_path, tiny_model):
    src = tmp_path / "docs"
    write(src / "a.md", "Word " * 3000)
    proc = run_kbc("build", str(src), "-o", str(tmp_path / "c.kbpack"), "--model", str(tiny_model),
                   "--chunk-unit", "chars", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["truncated_chunks"] == report["chunks"] > 0  # 1000 chars >> 64 tokens


def test_sample_bundle_searches_in_every_mode(sample_bundle):
    """Default build: lexical sections, a recorded default mode, chunk contexts; the three modes agree on
    an easy question and each returns its own kind of score."""
    with Bundle(sample_bundle) as b:
        assert b.manifest["retrieval"]["default_mode"] in ("dense", "lexical", "hybrid")
        assert b.lexical() is not None and b.manifest["lexical"]["doc_count"] == b.count
        pdf_chunk = next(c for c in b.iter_chunks() if b.source_path(c).endswith("ch08-03-hash-maps.pdf"))
        assert pdf_chunk["context"].startswith("ch08 03 hash maps") and "ch08" not in pdf_chunk["text"][:20]
    question = "How do I run only the tests whose names match a filter?"
    firsts = {}
    for mode in ("dense", "lexical", "hybrid"):
        proc = run_kbc("query", str(sample_bundle), question, "-k", "3", "--mode", mode, "--unit", "chunk", "--json",
                       check=True)
        hits = json.loads(proc.stdout)["hits"]
        assert len(hits) == 3 and all("context" in h for h in hits)
        firsts[mode] = hits[0]["source"]
        if mode == "lexical":
            assert hits[0]["score"] > 1.0  # BM25, not a cosine
        if mode == "hybrid":  # tmm: at most 1, plus the context match's shares (FORMAT.md §2.9)
            s = RetrievalSettings()
            assert 0 < hits[0]["score"] <= 1.0 + s.path_weight + s.heading_weight + 1e-9
    assert set(firsts.values()) == {"ch11-02-running-tests.pdf"}
    prompt = run_kbc("query", str(sample_bundle), question, "-k", "1", "--prompt", check=True).stdout
    assert prompt.startswith("context_0: [") and "running tests]" in prompt


def test_no_lexical_build_is_dense_only(tmp_path, tiny_model):
    src = tmp_path / "docs"
    write(src / "a.md", "# Pumps\n\nThe pump moves water uphill.")
    out = tmp_path / "d.kbpack"
    run_kbc("build", str(src), "-o", str(out), "--model", str(tiny_model), "--no-lexical", "--context", "none",
            "-q", check=True)
    with Bundle(out) as b:
        assert b.lexical() is None and not any(n.startswith("lex_") for n in b.sections)
        assert b.manifest["retrieval"]["default_mode"] == "dense" and "context" not in b.chunk(0)
    proc = run_kbc("query", str(out), "pump", "--mode", "hybrid", "--model", str(tiny_model))
    assert proc.returncode == 2 and "no lexical index" in proc.stderr and proc.stderr.count("\n") == 1
    assert run_kbc("query", str(out), "pump", "--model", str(tiny_model), check=True).stdout.startswith("1. ")
    bad = run_kbc("build", str(src), "-o", str(tmp_path / "x.kbpack"), "--model", str(tiny_model), "--no-lexical",
                  "--default-mode", "hybrid")
    assert bad.returncode == 2 and "needs the lexical index" in bad.stderr and not (tmp_path / "x.kbpack").exists()
    dense_default = tmp_path / "dd.kbpack"
    run_kbc("build", str(src), "-o", str(dense_default), "--model", str(tiny_model), "--default-mode", "dense", "-q",
            check=True)
    with Bundle(dense_default) as b:
        assert b.lexical() is not None and b.retrieval_settings().default_mode == "dense"


def test_manifest_matches_json_schema(sample_bundle):
    import jsonschema

    schema = json.loads((Path(__file__).resolve().parent.parent / "schemas" / "manifest.schema.json").read_text())
    with Bundle(sample_bundle) as b:
        jsonschema.validate(b.manifest, schema)
        broken = dict(b.manifest, embedder={**b.manifest["embedder"], "pooling": "median"})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_forged_index_search_params_and_shape_are_refused(tmp_path, tiny_model):
    """A bundle from anywhere may declare an absurd efSearch or an index that does not match its
    vectors: invalid bundle (exit 3), never a hang or a crash."""
    from kbc.search.dense import Searcher
    from kbc.errors import BundleError

    src = tmp_path / "docs"
    for i in range(40):
        write(src / f"d{i}.md", f"Document {i} about pumps, valves and pipes number {i}.")
    out = tmp_path / "hnsw.kbpack"
    run_kbc("build", str(src), "-o", str(out), "--model", str(tiny_model), "--index", "HNSW16", "-q", check=True)
    with Bundle(out) as b:
        vectors, raw, manifest = np.array(b.vectors), bytes(b.index_bytes()), b.manifest["index"]
    Searcher(vectors, raw, manifest)  # as built: fine
    for params in ({"efSearch": 10 ** 9}, {"efSearch": "64"}, {"bogus": 1}):
        with pytest.raises(BundleError, match="search_params"):
            Searcher(vectors, raw, {**manifest, "search_params": params})
    with pytest.raises(BundleError, match="holds 40 x"):
        Searcher(vectors[:30], raw, manifest)


def test_a_model_that_fails_to_load_in_the_background_is_one_line(tiny_model, tmp_path):
    """The model loads in a thread while extraction runs; its failure is the build's one-line error
    (exit 4), with no traceback from the thread that warms the first session up."""
    model = tmp_path / "lasttoken-model"
    shutil.copytree(tiny_model, model)
    (model / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                                  "pooling_mode_lasttoken": True}))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Pumps\n\nThe pump moves water uphill.\n")
    out = tmp_path / "kb.kbpack"
    proc = run_kbc("build", str(docs), "-o", str(out), "--model", str(model), env={"KBC_CACHE_DIR": str(tmp_path / "c")})
    assert proc.returncode == 4 and "has no ONNX export yet" in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr and not out.exists()
