"""The lexical promise: a C program written from FORMAT.md §2.4 tokenises a question and scores it
with BM25 to the same top-k chunk ids, and the same score bits, as kbc's Python reader. The C side
is libkbpack's `kbpack search FILE --mode lexical` (runtimes/c)."""

from __future__ import annotations

import json
import math
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from forge import resign
from kbc.format.bundle import Bundle, write_bundle
from kbc.errors import BundleError
from kbc.format.bm25 import LexicalBuilder, LexicalFormatError, TokenizerOptions, tokenize



# --------------------------------------------------------------------------- helpers

def lexical_bundle(path: Path, texts: list[str], *, options: TokenizerOptions = TokenizerOptions(),
                   k1: float | None = None, b: float | None = None, meta_patch: dict | None = None,
                   sections_patch: dict[str, bytes] | None = None) -> Path:
    """A bundle of `texts` with the lexical sections LexicalBuilder makes (optionally tampered with,
    checksums still right) and dummy vectors."""
    kw = {k: v for k, v in (("k1", k1), ("b", b)) if v is not None}
    builder = LexicalBuilder(options=options, **kw)
    builder.add_many(texts)
    meta, sections = builder.finish()
    meta["fields"] = "context+text"
    meta.update(meta_patch or {})
    sections = [(name, enc, (sections_patch or {}).get(name, data)) for name, enc, data in sections]
    vectors = np.zeros((len(texts), 4), dtype=np.float32)
    return write_bundle(path, manifest={"lexical": meta}, vectors=vectors,
                        chunks=[{"text": t} for t in texts], extra_sections=sections)


def c_search(exe: Path, bundle: Path, question: str | bytes, k: int) -> list[tuple[int, float]]:
    arg = question if isinstance(question, bytes) else question.encode("utf-8")
    out = subprocess.run([str(exe), "search", str(bundle), "--mode", "lexical", "--unit", "chunk", "-k", str(k), "--json", "--", arg],
                         capture_output=True)
    assert out.returncode == 0, (question, out.stderr.decode())
    assert out.stderr == b""
    return [(h["id"], h["score"]) for h in json.loads(out.stdout)["hits"]]


def py_search(bundle: Path, question: str, k: int) -> list[tuple[int, float]]:
    with Bundle(bundle) as b:
        scores, ids = b.lexical().search(question, k)
    return [(int(i), float(s)) for i, s in zip(ids, scores)]


def assert_same(exe: Path, bundle: Path, questions: list, ks=(10,)) -> int:
    """C and Python agree on ids (order included) and scores; returns the number of hits compared."""
    compared, not_bit_identical = 0, []
    for q in questions:
        py_q = q.decode("utf-8", errors="replace") if isinstance(q, bytes) else q
        for k in ks:
            c, py = c_search(exe, bundle, q, k), py_search(bundle, py_q, k)
            assert [i for i, _ in c] == [i for i, _ in py], (q, k, c, py)
            for (_, cs), (_, ps) in zip(c, py):
                assert math.isclose(cs, ps, rel_tol=1e-12, abs_tol=0.0), (q, cs, ps)
                if cs != ps:
                    not_bit_identical.append((q, cs, ps))
            compared += len(c)
    assert not not_bit_identical, f"scores agree to 1e-12 but not bit for bit: {not_bit_identical[:5]}"
    return compared


def c_run(exe: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True)


def c_lexical(exe: Path, bundle: Path, question: str, *more) -> subprocess.CompletedProcess:
    return c_run(exe, "search", bundle, "--mode", "lexical", *more, "--", question)


# --------------------------------------------------------------------------- corpora

TRICKY = [
    "The quarterly revenue was $1,577 million in FY2018, up 3.5% from FY2017.",
    "Total assets: 1,234,567 (thousands); 12,34 is not a grouped number; 1,2345 neither; 99,999,999.",
    "Form 10-K filings: the 10K and the 10-Q. E-mail the auditor; state-of-the-art e-mail filters.",
    "Café crème brûlée: ÉCOLE, Übergröße, straße, STRASSE, façade, naïve, Ærø, Øresund, ÞÓR, ÀÖØÞ.",
    "Ελληνικά: ΑΘΗΝΑ είναι η πρωτεύουσα. Σωκράτης ΣΟΦΙΑ ς σ.",
    "Кириллица: МОСКВА и Москва; ЁЛКА, ЃЕ, ЀЍЏ, Ўзбекистон, Ђорђе.",
    "中文分词测试：北京大学。日本語のテキスト、カタカナ。한국어 텍스트입니다.",
    "Emoji 😀 are letters 😀😀 here; ✓ and → separate; — em dash — “quotes” and ‘single’…",
    "العربية: مرحبا بالعالم. עברית: שלום. हिन्दी पाठ. ไทย.",
    "Stemmer plurals: ponies ponys bodies dies eies aies cases horses toes oes aes bees trees cats "
    "status glass bus us gas yes is his this companies policies analyses cities sales goes does ies xes "
    "éies ées ßes ΣΕΣ αies ΌΣΟΣ 2s s1s sss uss iess",
    "The dogs and the cats were running in the gardens; a dog is not a cat, such is their nature.",
    "Numbers 007 and 7 differ, 3.14159 splits, 1,000 and 1,000,000 and 2,50 and ,123 and 1,234a.",
    "x" * 64 + " " + "y" * 65 + " short words remain",
    "Tabs\tand\nnewlines\r\nand\u00a0no-break\u2009thin\u3000ideographic\ufeffBOM spaces.",
    "Full-width ＡＢＣ １２３ ｔｅｘｔ and half-width ｶﾀｶﾅ; ligature ﬁ and º ª ¹ ² µ.",
    "Private use \ue000\uf8ff glyphs, replacement \ufffd char, specials \ufff0.",
    "Revenue revenue REVENUE Revenues revenues; the revenue of the quarter.",
    "Supplemental cash flow: interest paid 1,577; income taxes paid 2,034; FY2019 guidance 3.5-4.0%.",
    "",
    "the and of",
    "Revenue revenue REVENUE Revenues revenues; the revenue of the quarter.",  # a duplicate: ties
    "Greenhouse care: water tomatoes at dawn, ventilate at noon, check humidity (65%) daily.",
    "Cargo builds the project; cargo run executes it; cargo check is faster than cargo build.",
    "Hash maps store keys and values; HashMap<K, V> uses SipHash by default.",
    "ǅ ǈ ǋ Ǳ — titlecase digraphs, ΐ ΰ, İstanbul, ıi, ﬀ, Å (U+212B) and Å.",
]

QUESTIONS = [
    "What was the revenue in FY2018?",
    "1,577",
    "1577 million",
    "1,234,567 thousands",
    "12,34",
    "3.5 percent",
    "10-K form",
    "e-mail",
    "café ÉCOLE straße",
    "CAFÉ École STRASSE",
    "ΑΘΗΝΑ πρωτεύουσα",
    "москва ЁЛКА ёлка",
    "北京",
    "日本語",
    "한국어",
    "😀",
    "مرحبا",
    "ponies bodies cases horses",
    "pony body case horse",
    "status glass bus",
    "dogs cats gardens",
    "the and of",
    "",
    "   ",
    "revenue revenue revenue",
    "Revenues?",
    "x" * 64,
    "y" * 65,
    "ＡＢＣ １２３",
    "ﬁ",
    "cargo build check",
    "HashMap keys values",
    "interest paid 2,034",
    "tomatoes humidity",
    "nothing matches zzzz",
    "İstanbul Å Å",
    "ǅ ǈ",
]


def test_tokenizer_corner_cases_are_what_the_spec_says():
    """Pins the Python tokeniser to FORMAT.md's examples, so the C comparison is against the spec."""
    assert tokenize("1,577 and 1,234,567 yet 12,34") == ["1577", "1234567", "yet", "12", "34"]
    assert tokenize("FY2018 10-K 3.5 e-mail") == ["fy", "2018", "10", "k", "3", "5", "e", "mail"]
    assert tokenize("ÉCOLE ΑΘΗΝΑ МОСКВА ЁЛКА") == ["école", "αθηνα", "москва", "ёлка"]
    assert tokenize("北京 😀") == ["北", "京", "😀"]
    stem = TokenizerOptions(stem="s-stemmer")
    assert tokenize("cities sales goes status ponies toes glass gas yes aies eies ies", stem) == \
        ["city", "sale", "goes", "status", "pony", "toes", "glass", "ga", "ye", "aies", "eies", "ies"]


@pytest.mark.parametrize("options", [TokenizerOptions(), TokenizerOptions(stop_words=False),
                                     TokenizerOptions(stem="s-stemmer"), TokenizerOptions(stop_words=False, stem="s-stemmer")],
                         ids=["default", "no-stop-words", "stem", "no-stop-words+stem"])
def test_c_lexical_matches_python_on_tricky_texts(kbpack_tool, tmp_path, options):
    p = lexical_bundle(tmp_path / "t.kbpack", TRICKY, options=options)
    questions = QUESTIONS + TRICKY  # every chunk text as a question too: many terms, long lists
    assert assert_same(kbpack_tool, p, questions, ks=(1, 3, 10, 100)) > 100


@pytest.mark.parametrize("k1,b", [(1.2, 0.75), (0.0, 0.0), (2.5, 1.0), (0.9, 0.0), (100.0, 0.4)])
def test_c_lexical_matches_python_with_other_parameters(kbpack_tool, tmp_path, k1, b):
    p = lexical_bundle(tmp_path / "p.kbpack", TRICKY, k1=k1, b=b)
    assert_same(kbpack_tool, p, QUESTIONS, ks=(5, 50))


def test_c_lexical_matches_python_on_a_larger_random_corpus(kbpack_tool, tmp_path):
    """Many chunks, long posting lists (multi-byte varints), many equal scores to break ties on."""
    rng = np.random.default_rng(11)
    words = [w for w in " ".join(TRICKY).split() if w] + [f"term{i}" for i in range(300)]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(0, 60)))) for _ in range(700)]
    texts += texts[:50]  # exact duplicates: tied scores at different ids
    p = lexical_bundle(tmp_path / "r.kbpack", texts, options=TokenizerOptions(stem="s-stemmer"))
    questions = [" ".join(rng.choice(words, size=int(rng.integers(1, 12)))) for _ in range(60)]
    assert assert_same(kbpack_tool, p, questions, ks=(10, 1000)) > 1000


def test_c_lexical_query_term_limit_and_repeats(kbpack_tool, tmp_path):
    """At most 1024 distinct query terms, in order of first occurrence; repeats count once."""
    fillers = [f"q{chr(97 + i // 26 % 26)}{chr(97 + i % 26)}{chr(97 + i // 676)}" for i in range(1100)]
    texts = ["alpha beta", "gamma", "alpha alpha delta", " ".join(fillers[1000:1030])]
    p = lexical_bundle(tmp_path / "l.kbpack", texts)
    q_cut = " ".join(fillers[:1024] + ["alpha"])               # alpha is the 1025th distinct term
    q_in = " ".join(fillers[:1023] + ["alpha", "gamma"])       # alpha is the 1024th, gamma the 1025th
    q_rep = " ".join(["alpha"] * 3000 + ["gamma"])             # repeats do not use up the limit
    assert [i for i, _ in py_search(p, q_cut, 10)] == [3]
    assert {i for i, _ in py_search(p, q_in, 10)} == {0, 2, 3}
    assert_same(kbpack_tool, p, [q_cut, q_in, q_rep], ks=(10,))


def test_c_lexical_invalid_utf8_bytes_separate(kbpack_tool, tmp_path):
    """Bytes that are not UTF-8 act as separators (Python sees them as U+FFFD, also a separator)."""
    p = lexical_bundle(tmp_path / "u.kbpack", TRICKY)
    questions = [b"revenue\xffcargo", b"caf\xc3", b"caf\xc3\xa9\xed\xa0\x80cargo", b"\xc0\xae1,577",
                 b"1\xff,577", b"\xf0\x9f\x98", b"\xf4\x90\x80\x80revenue", b"\xe0\x80\xafhash", b"1,57\x807"]
    assert_same(kbpack_tool, p, questions, ks=(10,))


def test_c_lexical_crafted_postings_agree(kbpack_tool, tmp_path):
    """Valid but unusual encodings: non-minimal varints, a 5-byte term frequency."""
    texts = ["apple", "apple banana", "banana banana cherry"]
    # apple: (0,1) (1,1); banana: (1,1) (1,2); cherry: (2,1) -- rewritten with odd varints
    postings = bytes([0x80, 0x00, 0x81, 0x80, 0x00, 0x01, 0x01]) + bytes([0x01, 0x01, 0x01, 0x02]) + \
        bytes([0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F])
    offsets = struct.pack("<4I", 0, 7, 11, len(postings))
    p = lexical_bundle(tmp_path / "c.kbpack", texts,
                       sections_patch={"lex_postings": postings, "lex_postings_offsets": offsets})
    with Bundle(p) as b:
        b.verify()
    assert_same(kbpack_tool, p, ["apple", "banana cherry", "cherry", "apple banana cherry"], ks=(3,))
    assert c_search(kbpack_tool, p, "cherry", 3)[0][0] == 2


def test_c_lexical_empty_corpora(kbpack_tool, tmp_path):
    p = lexical_bundle(tmp_path / "e.kbpack", ["", "the of", "...!"])  # T = 0, avg_doc_length = 0
    assert c_search(kbpack_tool, p, "anything at all", 10) == [] == py_search(p, "anything at all", 10)
    p0 = lexical_bundle(tmp_path / "z.kbpack", [])  # N = 0
    assert c_search(kbpack_tool, p0, "anything", 10) == [] == py_search(p0, "anything", 10)


def test_c_info_on_a_lexical_bundle(kbpack_tool, tmp_path):
    p = lexical_bundle(tmp_path / "d.kbpack", TRICKY)
    out = c_run(kbpack_tool, "info", p)
    assert out.returncode == 0, out.stderr
    assert f"count: {len(TRICKY)}\ndim: 4\ndtype: float32\n" in out.stdout and "lexical: yes" in out.stdout


# --------------------------------------------------------------------------- the real sample bundle

SAMPLE_QUESTIONS = [
    "How do I run only the tests whose names match a filter?",
    "cargo new hello_cargo",
    "What does cargo build do?",
    "How do I insert a value into a HashMap?",
    "entry or_insert",
    "How often should I water the greenhouse?",
    "humidity ventilation temperature",
    "Who argued before the Supreme Court?",
    "CHIEF JUSTICE",
    "cargo test -- --test-threads=1",
    "ignored tests",
    "Cargo.toml [dependencies]",
    "println!",
    "Überraschung 1,577 北京",
]


def test_c_lexical_matches_python_on_sample_bundle(kbpack_tool, sample_bundle):
    with Bundle(sample_bundle) as b:
        assert b.lexical() is not None, "the default build should include the lexical index"
    assert assert_same(kbpack_tool, sample_bundle, SAMPLE_QUESTIONS, ks=(1, 10, 50)) > 50


# --------------------------------------------------------------------------- refusals

def test_c_lexical_detects_damaged_postings(kbpack_tool, sample_bundle, tmp_path):
    data = bytearray(sample_bundle.read_bytes())
    with Bundle(sample_bundle) as b:
        info = b.sections["lex_postings"]
    data[info.offset + info.length // 2] ^= 0x01
    bad = tmp_path / "bad.kbpack"
    bad.write_bytes(bytes(data))
    out = c_lexical(kbpack_tool, bad, "cargo build")
    assert out.returncode == 3 and out.stdout == ""
    assert out.stderr.startswith("kbpack: lex_postings: sha256 mismatch") and out.stderr.count("\n") == 1


def test_c_lexical_without_lexical_index_exits_2(kbpack_tool, tmp_path):
    p = write_bundle(tmp_path / "n.kbpack", manifest={}, vectors=np.zeros((2, 4), np.float32),
                     chunks=[{"text": "a"}, {"text": "b"}])
    out = c_lexical(kbpack_tool, p, "anything")
    assert out.returncode == 2 and out.stdout == ""
    assert "no lexical index" in out.stderr and out.stderr.count("\n") == 1
    assert c_run(kbpack_tool, "info", p).returncode == 0  # the rest of the bundle still reads


def test_c_lexical_usage_errors(kbpack_tool, tmp_path):
    p = lexical_bundle(tmp_path / "u.kbpack", ["apple"])
    search = ["search", p]
    for args in ([*search, "--mode"], [*search, "--mode", "bm25", "x"], [*search, "--mode", "lexical", "x", "-k", "-1"],
                 [*search, "--mode", "lexical", "x", "-k", "a"], [*search, "--bogus"], [*search, "x", "y"],
                 ["chunk", p], ["chunk", p, "-1"], ["info"], ["lookup", p], []):
        out = c_run(kbpack_tool, *args)
        assert out.returncode == 2 and out.stderr.startswith("usage:"), args
    out = c_run(kbpack_tool, *search, "--mode", "lexical")  # a lexical search without a question
    assert out.returncode == 2 and "needs a QUESTION" in out.stderr and out.stderr.count("\n") == 1
    out = c_run(kbpack_tool, *search, "-k", "3")  # dense (no retrieval settings) without a query vector
    assert out.returncode == 2 and "--vector" in out.stderr and out.stderr.count("\n") == 1
    assert c_run(kbpack_tool, *search, "-k", "0", "--mode", "lexical", "apple").stdout == ""


def _vocab(terms: list[str]) -> tuple[bytes, bytes]:
    enc = [t.encode() for t in terms]
    offs = np.zeros(len(enc) + 1, np.int64)
    np.cumsum([len(e) for e in enc], out=offs[1:])
    return b"".join(enc), offs.astype("<u4").tobytes()


# texts "apple" / "apple banana" / "banana banana cherry": terms apple banana cherry; postings
# apple 00 01 01 01 | banana 01 01 01 02 | cherry 02 01; doc lengths 1 2 3
BAD = {
    "tokenizer-name": ({"tokenizer": {"name": "kbc-lex-2", "stop_words": True, "stem": None}}, {},
                       "manifest: lexical: unknown tokenizer"),
    "tokenizer-stem": ({"tokenizer": {"name": "kbc-lex-1", "stop_words": True, "stem": "porter"}}, {},
                       "manifest: lexical: malformed tokenizer"),
    "tokenizer-stop-words": ({"tokenizer": {"name": "kbc-lex-1", "stop_words": 1, "stem": None}}, {},
                             "manifest: lexical: malformed tokenizer"),
    "terms-too-many": ({"terms": 4}, {}, "lex_vocab_offsets:"),
    "terms-float": ({"terms": 3.0}, {}, "manifest:"),
    "doc-count": ({"doc_count": 4}, {}, "manifest:"),
    "k1-range": ({"k1": 101}, {}, "manifest:"),
    "b-range": ({"b": 1.5}, {}, "manifest:"),
    "avg-negative": ({"avg_doc_length": -1.0}, {}, "manifest:"),
    "doc-lengths-short": ({}, {"lex_doc_lengths": struct.pack("<2I", 1, 2)}, "lex_doc_lengths:"),
    "vocab-offsets-start": ({}, {"lex_vocab_offsets": struct.pack("<4I", 1, 5, 11, 17)}, "lex_vocab_offsets:"),
    "vocab-offsets-end": ({}, {"lex_vocab_offsets": struct.pack("<4I", 0, 5, 11, 16)}, "lex_vocab_offsets:"),
    "vocab-offsets-down": ({}, {"lex_vocab_offsets": struct.pack("<4I", 0, 12, 11, 17)}, "lex_vocab_offsets:"),
    "postings-offsets-end": ({}, {"lex_postings_offsets": struct.pack("<4I", 0, 4, 8, 11)}, "lex_postings_offsets:"),
    "postings-offsets-down": ({}, {"lex_postings_offsets": struct.pack("<4I", 0, 9, 8, 10)}, "lex_postings_offsets:"),
    "varint-truncated": ({}, {"lex_postings": bytes.fromhex("00010101" "01010102" "0281"),
                              "lex_postings_offsets": struct.pack("<4I", 0, 4, 8, 10)}, "lex_postings: truncated"),
    "varint-6-bytes": ({}, {"lex_postings": bytes.fromhex("00010101" "01010102" "02808080808001"),
                            "lex_postings_offsets": struct.pack("<4I", 0, 4, 8, 15)}, "lex_postings: varint longer"),
    "term-truncated-mid-pair": ({}, {"lex_postings": bytes.fromhex("000101" "0101010102" "0201"),
                                     "lex_postings_offsets": struct.pack("<4I", 0, 3, 8, 10)}, "lex_postings:"),
    "id-out-of-range": ({}, {"lex_postings": bytes.fromhex("00010101" "01010102" "0301")}, "lex_postings:"),
    "id-out-of-range-sum": ({}, {"lex_postings": bytes.fromhex("00010101" "01010202" "0201")}, "lex_postings:"),
    "gap-zero": ({}, {"lex_postings": bytes.fromhex("00010001" "01010102" "0201")}, "lex_postings:"),
    "tf-zero": ({}, {"lex_postings": bytes.fromhex("00010100" "01010102" "0201")}, "lex_postings:"),
    "vocab-unsorted": ({}, dict(zip(("lex_vocab", "lex_vocab_offsets"), _vocab(["banana", "apple", "cherry"]))),
                       "lex_vocab:"),
    "empty-postings": ({}, {"lex_postings_offsets": struct.pack("<4I", 0, 0, 8, 10)}, "lex_postings:"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_c_lexical_refuses_malformed_index(kbpack_tool, tmp_path, case):
    meta_patch, sections_patch, where = BAD[case]
    texts = ["apple", "apple banana", "banana banana cherry"]
    good = lexical_bundle(tmp_path / "good.kbpack", texts)
    assert c_search(kbpack_tool, good, "apple banana cherry", 3) == py_search(good, "apple banana cherry", 3)
    p = lexical_bundle(tmp_path / f"{case}.kbpack", texts, meta_patch=meta_patch, sections_patch=sections_patch)
    out = c_lexical(kbpack_tool, p, "apple banana cherry")
    assert out.returncode == 3 and out.stdout == "", (out.stdout, out.stderr)
    assert out.stderr.startswith(f"kbpack: {where}") and out.stderr.count("\n") == 1, out.stderr
    with pytest.raises((BundleError, LexicalFormatError)):  # kbc refuses it too
        with Bundle(p) as b:
            b.verify()


def test_c_lexical_refuses_snowball_stemmer(kbpack_tool, tmp_path):
    """A stemmer this reader does not implement: refused by name, not silently tokenised differently."""
    p = lexical_bundle(tmp_path / "s.kbpack", ["apples"], meta_patch={
        "tokenizer": {"name": "kbc-lex-1", "stop_words": True, "stem": "snowball-english"}})
    out = c_lexical(kbpack_tool, p, "apples")
    assert out.returncode == 3 and out.stdout == ""
    assert out.stderr == "kbpack: manifest: lexical: stemmer snowball-english is not supported by this reader\n"


def test_c_lexical_refuses_incomplete_index(kbpack_tool, tmp_path):
    builder = LexicalBuilder()
    builder.add_many(["apple", "banana"])
    meta, sections = builder.finish()
    p = write_bundle(tmp_path / "i.kbpack", manifest={"lexical": meta}, vectors=np.zeros((2, 4), np.float32),
                     chunks=[{"text": "apple"}, {"text": "banana"}], extra_sections=sections[:-1])
    out = c_lexical(kbpack_tool, p, "apple")
    assert out.returncode == 3 and "lex_doc_lengths" in out.stderr
    p2 = write_bundle(tmp_path / "j.kbpack", manifest={}, vectors=np.zeros((2, 4), np.float32),
                      chunks=[{"text": "apple"}, {"text": "banana"}], extra_sections=sections)
    out = c_lexical(kbpack_tool, p2, "apple")
    assert out.returncode == 3 and "manifest" in out.stderr


# --------------------------------------------------------------------------- the manifest's JSON

def with_manifest(src: Path, dst: Path, text: bytes) -> Path:
    """A copy of bundle `src` whose manifest (the last section kbc writes) is `text`, laid out again
    and with every checksum made right (forge.resign)."""
    data = bytearray(src.read_bytes())
    count, toff = struct.unpack_from("<IQ", data, 12)
    table = bytearray(data[toff:toff + 128 * count])
    entries = [table[128 * i:128 * (i + 1)] for i in range(count)]
    mi = next(i for i, e in enumerate(entries) if e[:32].rstrip(b"\0") == b"manifest")
    moff = struct.unpack_from("<Q", entries[mi], 48)[0]
    assert all(struct.unpack_from("<Q", e, 48)[0] <= moff for e in entries), "manifest is not the last section"
    struct.pack_into("<Q", entries[mi], 56, len(text))
    body = bytes(data[128:moff]) + text
    body += b"\0" * (-(128 + len(body)) % 64)
    new_toff = 128 + len(body)
    body += b"".join(entries)
    head = bytearray(data[:128])
    struct.pack_into("<QQ", head, 16, new_toff, 128 + len(body))
    dst.write_bytes(resign(bytes(head) + body))
    return dst


def _manifest(p: Path) -> dict:
    with Bundle(p) as b:
        return dict(b.manifest)


def test_c_lexical_reads_any_equivalent_manifest_json(kbpack_tool, tmp_path):
    """Whitespace, key order, escapes, duplicate keys (the last wins) and number spellings: the C
    parser reads what Python's json reads."""
    base = lexical_bundle(tmp_path / "base.kbpack", TRICKY, k1=1.2, b=0.75)
    m = _manifest(base)
    canonical = json.dumps(m, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert '"k1":1.2' in canonical and '"b":0.75' in canonical
    variants = {
        "pretty": json.dumps(m, indent=2, ensure_ascii=True).encode(),
        "spaced": (" \r\n\t" + json.dumps(m, indent="\t", separators=(" , ", " : ")) + "\n ").encode(),
        "reversed": json.dumps(dict(reversed(list(m.items()))), ensure_ascii=False).encode(),
        "escapes": canonical.replace('"k1":', '"\\u006b1":').replace('"kbc-lex-1"', '"kbc\\u002Dlex\\u002d1"')
                            .replace('"tokenizer":', '"tok\\u0065nizer":').encode(),
        "exponents": canonical.replace('"k1":1.2', '"k1":12e-1').replace('"b":0.75', '"b":7.5E-1').encode(),
        "dup-first-loses": canonical.replace('"lexical":{', '"lexical":{"k1":50,"b":0,"tokenizer":null,').encode(),
        "dup-last-wins": canonical.replace('"k1":1.2', '"k1":1.2,"k1":2.5').replace('"b":0.75', '"b":0.75,"b":0').encode(),
    }
    for name, text in variants.items():
        p = with_manifest(base, tmp_path / f"{name}.kbpack", text)
        assert_same(kbpack_tool, p, QUESTIONS[:12], ks=(10,))
        if name == "dup-last-wins":
            with Bundle(p) as b:
                assert b.lexical().k1 == 2.5 and b.lexical().b == 0.0


@pytest.mark.parametrize("case", ["trailing-comma", "nan", "lexical-array", "unterminated", "bad-escape",
                                  "control-char", "deep", "bad-utf8", "two-values"])
def test_c_lexical_refuses_malformed_manifest_json(kbpack_tool, tmp_path, case):
    base = lexical_bundle(tmp_path / "base.kbpack", ["apple", "banana"])
    canonical = json.dumps(_manifest(base), sort_keys=True, separators=(",", ":"))
    text = {
        "trailing-comma": canonical[:-1] + ",}",
        "nan": canonical.replace('"k1":0.9', '"k1":NaN'),
        "lexical-array": json.dumps({**_manifest(base), "lexical": [_manifest(base)["lexical"]]}),
        "unterminated": canonical[:-1],
        "bad-escape": canonical.replace('"kbc-lex-1"', '"kbc\\x2dlex-1"'),
        "control-char": canonical.replace('"kbc-lex-1"', '"kbc\tlex-1"'),
        "deep": canonical[:-1] + ',"x":' + "[" * 100000 + "]" * 100000 + "}",
        "bad-utf8": canonical.replace('"kbc-lex-1"', '"kbc-lex-1\udcff"'),
        "two-values": canonical + "{}",
    }[case].encode("utf-8", errors="surrogateescape")
    p = with_manifest(base, tmp_path / "bad.kbpack", text)
    out = c_lexical(kbpack_tool, p, "apple")
    assert out.returncode == 3 and out.stdout == "" and out.stderr.startswith("kbpack: manifest: "), out.stderr
    try:  # opening checks the manifest as kbc's Bundle does: the same verdict
        Bundle(p).close()
        python_opens = True
    except BundleError:
        python_opens = False
    assert c_run(kbpack_tool, "info", p).returncode == (0 if python_opens else 3), case
