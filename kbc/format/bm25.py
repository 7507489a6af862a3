"""Lexical retrieval: the kbc-lex-1 tokeniser, BM25, and the bundle's lexical sections.

Small embedders miss exact words (a line item, a product code, a year) that BM25 finds, so a
bundle can carry an inverted index over its chunks. Everything here is specified in
schemas/FORMAT.md §2.4 precisely enough for a C, Kotlin or Swift runtime to tokenise a question
and score it to the same top-k; runtimes/c does it, and the tests compare the two.

Stored form (all little-endian; T terms, N chunks):
  lex_vocab            utf8     the terms' UTF-8 bytes, concatenated in ascending byte order
  lex_vocab_offsets    u32le    T + 1 offsets into lex_vocab
  lex_postings         uleb128  per term, its postings as (chunk-id gap, term frequency) pairs
  lex_postings_offsets u32le    T + 1 offsets into lex_postings
  lex_doc_lengths      u32le    N chunk lengths in tokens
The manifest's `lexical` object records the tokeniser, k1, b, N, T, the average length and the
field weights. The builder holds at most SPILL_BYTES of postings (12 bytes each) in memory and
writes the rest to sorted runs on disk, merged by `finish` into the same bytes.
"""

from __future__ import annotations

import functools
import math
import os
import re
import tempfile
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

TOKENIZER = "kbc-lex-1"
LEXICAL_VERSION = 1
DEFAULT_K1 = 0.9  # Anserini's BEIR defaults; bench/retrieval_sweep.py found 1.2 / 0.75 no better on two sets
DEFAULT_B = 0.4
MAX_TOKEN_CHARS = 64  # longer runs are extraction garbage (base64, hashes): dropped
MAX_QUERY_TERMS = 1024  # a question longer than this is cut: bounded work per query
# A chunk's context (its document's identity and section heading) is indexed twice: a field weight,
# as BM25F gives a title field, so that "Netflix 2017" outweighs boilerplate words in the text.
CONTEXT_WEIGHT = 2

SECTIONS = ("lex_vocab", "lex_vocab_offsets", "lex_postings", "lex_postings_offsets", "lex_doc_lengths")
ENCODINGS = {"lex_vocab": "utf8", "lex_vocab_offsets": "u32le", "lex_postings": "uleb128",
             "lex_postings_offsets": "u32le", "lex_doc_lengths": "u32le"}
# 1.8 (FORMAT.md §2.4): the two offset arrays may hold each entry's length instead (a 0, then one per term),
# which the by-source layout writes: absolute offsets all move after the first changed term, lengths do not,
# so an update's delta carries only the changed terms'
LENGTHS_ENCODING = "u32le-lengths"
OFFSET_SECTIONS = ("lex_vocab_offsets", "lex_postings_offsets")

# English function words (NLTK's list without contractions, plus the "s" and "t" that "'s" and
# "n't" leave): bench/retrieval_sweep.py found Lucene's 33 words leave question boilerplate
# ("what", "your", "how") to outscore the words that matter.
STOP_WORDS = frozenset((
    "a about above after again against all am an and any are as at be because been before being below "
    "between both but by can could did do does doing down during each few for from further had has "
    "have having he her here hers herself him himself his how i if in into is it its itself just me "
    "more most my myself no nor not now of off on once only or other our ours ourselves out over own "
    "s same she should so some such t than that the their theirs them themselves then there these "
    "they this those through to too under until up very was we were what when where which while who "
    "whom why will with would you your yours yourself yourselves").split())


# --------------------------------------------------------------------------- tokeniser

def _fold_table() -> dict[int, int]:
    """Case folding, deliberately small so every runtime implements it identically: ASCII, Latin-1,
    Greek and Cyrillic capitals to their small letters. Nothing else changes."""
    table = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
    table.update({c: c + 32 for c in range(0xC0, 0xDF) if c != 0xD7})
    table.update({c: c + 32 for c in range(0x391, 0x3AA) if c != 0x3A2})
    table.update({c: c + 32 for c in range(0x410, 0x430)})
    table.update({c: c + 80 for c in range(0x400, 0x410)})
    return table


FOLD = _fold_table()

# Code points that separate tokens, besides ASCII other than [0-9A-Za-z]: Latin-1 punctuation and
# symbols, general punctuation, arrows, maths, box drawing, CJK punctuation, private use (PDF glyph
# garbage) and full-width punctuation. Everything else from U+00C0 up is a letter.
SEPARATOR_RANGES = ((0x80, 0xBF), (0xD7, 0xD7), (0xF7, 0xF7), (0x2000, 0x2BFF), (0x3000, 0x303F),
                    (0xE000, 0xF8FF), (0xFE30, 0xFE4F), (0xFF00, 0xFF0F), (0xFF1A, 0xFF20),
                    (0xFF3B, 0xFF40), (0xFF5B, 0xFF65), (0xFFF0, 0xFFFF))
# Scripts written without spaces: every character is a token of its own.
CJK_RANGES = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7AF), (0xF900, 0xFAFF))


def _class(ranges) -> str:
    return "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)


def _letters_class() -> str:
    """[a-z] and U+00C0..U+10FFFF minus the separator and CJK ranges, as a regex class body."""
    holes = sorted(SEPARATOR_RANGES + CJK_RANGES + ((0xD800, 0xDFFF),))
    spans, start = [], 0xC0
    for a, b in holes:
        if a > start:
            spans.append((start, a - 1))
        start = max(start, b + 1)
    spans.append((start, 0x10FFFF))
    return "a-z" + _class([(a, b) for a, b in spans if a >= 0xC0])


# A comma between digits that is followed by exactly three digits groups thousands: 1,577 -> 1577.
_THOUSANDS = re.compile(r"(?<=[0-9]),(?=[0-9]{3}(?![0-9]))")
# Digits and letters form separate tokens (FY2018 -> fy 2018, 10-K -> 10 k): questions write
# "FY2018" where filings write "2018", and "10-K" where they write "10-K" or "Form 10K".
_TOKEN = re.compile(f"[0-9]+|[{_letters_class()}]+|[{_class(CJK_RANGES)}]")


# None; "s-stemmer": plurals to singular (s_stem); "snowball-english": Porter2, as libstemmer_c and
# PyStemmer implement it (a device links libstemmer; Snowball also generates Java, Go, Rust, JS).
STEMMERS = (None, "s-stemmer", "snowball-english")


@dataclass(frozen=True)
class TokenizerOptions:
    # defaults chosen by bench/retrieval_sweep.py on scifact-train and financebench-dev (README)
    stop_words: bool = True
    stem: str | None = "s-stemmer"

    def __post_init__(self):
        if self.stem not in STEMMERS:
            raise ValueError(f"unknown stemmer {self.stem!r}")

    def to_manifest(self) -> dict:
        return {"name": TOKENIZER, "stop_words": self.stop_words, "stem": self.stem}

    @classmethod
    def from_manifest(cls, d: Mapping) -> "TokenizerOptions":
        if not isinstance(d, Mapping) or d.get("name") != TOKENIZER:
            raise ValueError(f"unknown tokenizer {d.get('name') if isinstance(d, Mapping) else d!r}")
        if d.get("stem") not in STEMMERS or not isinstance(d.get("stop_words"), bool):
            raise ValueError("malformed tokenizer options")
        return cls(stop_words=d["stop_words"], stem=d.get("stem"))


def s_stem(token: str) -> str:
    """Plural to singular, as Lucene's EnglishMinimalStemmer (after Harman 1991's S-stemmer) does it:
    words shorter than 3 or not ending in s are kept; -us, -ss kept; -ies -> -y unless -aies/-eies;
    -ies/-aes/-oes/-ees otherwise kept; any other -s dropped."""
    n = len(token)
    if n < 3 or token[-1] != "s":
        return token
    before = token[-2]
    if before in "us":
        return token
    if before == "e":
        if n > 3 and token[-3] == "i" and token[-4] not in "ae":
            return token[:-3] + "y"
        if token[-3] in "iaoe":
            return token
    return token[:-1]


def tokenize(text: str, options: TokenizerOptions = TokenizerOptions()) -> list[str]:
    """kbc-lex-1 tokens of `text`, in order (FORMAT.md §2.4)."""
    # str.lower() maps ASCII exactly as FOLD does and is ten times faster than translate()
    folded = _THOUSANDS.sub("", text.lower() if text.isascii() else text.translate(FOLD))
    tokens = [t for t in _TOKEN.findall(folded) if len(t) <= MAX_TOKEN_CHARS]
    if options.stop_words:
        tokens = [t for t in tokens if t not in STOP_WORDS]
    if options.stem == "s-stemmer":
        tokens = [s_stem(t) for t in tokens]
    elif options.stem == "snowball-english":
        tokens = _snowball().stemWords(tokens)
    return tokens


@functools.lru_cache(maxsize=1)
def _snowball():
    try:
        import Stemmer
    except ImportError:
        raise ValueError("the snowball-english stemmer needs PyStemmer (pip install PyStemmer)") from None
    return Stemmer.Stemmer("english")


# --------------------------------------------------------------------------- building

def uleb128_encode(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LEB128 bytes of non-negative integers < 2**35, and where each value starts."""
    v = np.asarray(values, dtype=np.uint64)
    nbytes = np.ones(len(v), dtype=np.int64)
    for k in range(1, 5):
        nbytes += v >= (1 << (7 * k))
    starts = np.zeros(len(v) + 1, dtype=np.int64)
    np.cumsum(nbytes, out=starts[1:])
    out = np.zeros(int(starts[-1]), dtype=np.uint8)
    for k in range(5):
        has = nbytes > k
        byte = ((v[has] >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        byte |= np.where(nbytes[has] > k + 1, 0x80, 0).astype(np.uint8)
        out[starts[:-1][has] + k] = byte
    return out, starts


def uleb128_decode(data: np.ndarray) -> np.ndarray:
    """Values of a complete LEB128 byte string; ValueError on a truncated or over-long value."""
    return _uleb128_values(data)[0]


def _uleb128_values(data) -> tuple[np.ndarray, np.ndarray]:
    """(values, the byte where each starts)."""
    b = np.asarray(data, dtype=np.uint8)
    if len(b) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    ends = (b & 0x80) == 0
    if not ends[-1]:
        raise ValueError("truncated varint")
    last = np.flatnonzero(ends)
    first = np.empty_like(last)
    first[0] = 0
    first[1:] = last[:-1] + 1
    if np.any(last - first >= 5):
        raise ValueError("varint longer than 5 bytes")
    pos = np.arange(len(b)) - np.repeat(first, last - first + 1)
    contrib = (b & 0x7F).astype(np.int64) << (7 * pos)
    return np.add.reduceat(contrib, first), first


_FINISH_SLICE = 1 << 16  # postings encoded per step in LexicalBuilder.finish (~10 MB of temporaries)
# Postings (12 bytes each: term, chunk, frequency) the builder holds before it writes them to a
# sorted run on disk: the driver's memory for the lexical index stays near this, whatever the corpus.
# Sorting a run costs about twice its size again (the argsort's int64 order, the gathered arrays),
# so 8 MB (700k postings, ~60k 12-word chunks a run) keeps that peak small (a 1M-chunk build's
# driver peaks at the same height as a 100k one's); more runs cost little (the merge reads each
# run's part of a step in one sequential read).
SPILL_BYTES = 8 << 20
_POSTING_BYTES = 12


@dataclass
class LexicalBuilder:
    """Collects chunk texts in chunk order and produces the lexical sections.

    Past `spill_bytes` of postings it writes them, sorted by term, to a run file in a temporary
    folder (under `spill_dir`, else the system's) and starts afresh, as Lucene and tantivy write
    segments; `finish` merges the runs term by term. A run's chunk ids all precede the next run's,
    so concatenating one term's postings run by run keeps them ascending, and the sections are the
    same bytes whether or not anything spilled. The folder goes on every exit path: `finish`,
    `close`, and the interpreter's exit after an exception (SIGTERM unwinds as one in the CLI).
    """

    options: TokenizerOptions = field(default_factory=TokenizerOptions)
    k1: float = DEFAULT_K1
    b: float = DEFAULT_B
    spill_bytes: int = SPILL_BYTES
    spill_dir: str | None = None

    def __post_init__(self):
        if self.spill_bytes < _POSTING_BYTES:
            raise ValueError(f"spill_bytes must be at least {_POSTING_BYTES}, not {self.spill_bytes}")
        self._vocab: dict[str, int] = {}
        self._new_arrays()
        self._lengths = array("I")
        self._runs: list[tuple[Path, int]] = []  # (run file stem, postings in it)
        self._spill_folder: tempfile.TemporaryDirectory | None = None
        self.postings = 0
        self.seconds = 0.0  # time spent tokenising, reported by the build

    def _new_arrays(self) -> None:
        self._term = array("I")
        self._chunk = array("I")
        self._tf = array("I")

    @property
    def count(self) -> int:
        return len(self._lengths)

    @property
    def runs(self) -> int:
        """Sorted runs written to disk so far."""
        return len(self._runs)

    def add(self, text: str, *, context: str = "") -> None:
        """Index the next chunk: its text and its context (counted CONTEXT_WEIGHT times)."""
        t0 = time.perf_counter()
        tokens = tokenize(text, self.options)
        if context:
            tokens = tokenize(context, self.options) * CONTEXT_WEIGHT + tokens
        chunk_id = len(self._lengths)
        self._lengths.append(len(tokens))
        vocab = self._vocab
        for term, tf in Counter(tokens).items():
            self._term.append(vocab.setdefault(term, len(vocab)))
            self._chunk.append(chunk_id)
            self._tf.append(tf)
        if len(self._term) * _POSTING_BYTES >= self.spill_bytes:
            self._spill()
        self.seconds += time.perf_counter() - t0

    def add_many(self, texts: Iterable[str]) -> None:
        for t in texts:
            self.add(t)

    def add_chunks(self, chunks: Iterable[Mapping]) -> None:
        """Index chunk records (`text`, optional `context`) in order."""
        for c in chunks:
            self.add(c["text"], context=c.get("context") or "")

    def _spill(self) -> None:
        """The postings in memory, sorted by term id (chunk ids stay ascending), to a run on disk."""
        if not self._term:
            return
        if self._spill_folder is None:
            self._spill_folder = tempfile.TemporaryDirectory(prefix=".kbc-lexical-", dir=self.spill_dir)
        term = np.frombuffer(self._term, dtype=np.uint32)
        order = np.argsort(term, kind="stable")
        stem = Path(self._spill_folder.name) / f"run{len(self._runs):05d}"
        for name, values in (("term", term), ("chunk", self._chunk), ("tf", self._tf)):
            np.frombuffer(values, dtype=np.uint32)[order].tofile(f"{stem}.{name}")
        self._runs.append((stem, len(term)))
        self.postings += len(term)
        del term, order
        self._new_arrays()

    def close(self) -> None:
        """Remove the spilled runs (finish does; call it when the build is abandoned)."""
        if self._spill_folder is not None:
            self._spill_folder.cleanup()
            self._spill_folder = None
        self._runs = []

    def finish(self, *, stream: bool = False) -> tuple[dict, list[tuple[str, str, bytes]]]:
        """(manifest `lexical` object, [(section name, encoding, bytes)]). With `stream`, the
        postings section comes as an open, unlinked file positioned anywhere (BundleWriter copies
        it in 1 MiB steps), so the largest section never sits in memory."""
        try:
            meta, sections = self._finish()
        finally:
            self.close()
        if not stream:
            out = []
            for name, encoding, data in sections:
                if hasattr(data, "read"):
                    data.seek(0)
                    data = data.read()
                out.append((name, encoding, data))
            sections = out
        return meta, sections

    def _finish(self) -> tuple[dict, list[tuple[str, str, bytes]]]:
        terms = sorted(self._vocab, key=lambda t: t.encode("utf-8"))
        rank = np.empty(len(terms), dtype=np.int64)
        for r, t in enumerate(terms):
            rank[self._vocab[t]] = r
        rank = rank.astype(np.uint32)
        total = self.postings + len(self._term)
        if self._runs:
            self._spill()  # the tail too, so every posting is merged the same way
            slices = self._merged_slices(rank, len(terms))
        else:
            slices = self._memory_slices(rank)
        # Encoded a slice of postings at a time and written to an unlinked spool file that the bundle
        # writer copies from: the peak stays near what the builder already holds plus one slice, and
        # the encoded section (tens of MB at 1M chunks) is never held in memory, let alone twice.
        spool = tempfile.TemporaryFile(prefix=".kbc-lex-postings-", dir=self.spill_dir)
        postings_offsets, base = np.zeros(len(terms) + 1, dtype=np.int64), 0
        prev_term, prev_chunk = -1, 0
        for t, c, f in slices:
            if len(t) == 0:
                continue
            first = np.empty(len(t), dtype=bool)
            first[0] = t[0] != prev_term
            first[1:] = t[1:] != t[:-1]
            before = np.empty(len(c), dtype=np.int64)
            before[0], before[1:] = prev_chunk, c[:-1]
            pairs = np.empty(2 * len(t), dtype=np.int64)
            pairs[0::2], pairs[1::2] = np.where(first, c, c - before), f
            encoded_part, starts = uleb128_encode(pairs)
            postings_offsets[t[first]] = base + starts[0:-1:2][first]
            spool.write(encoded_part.tobytes())
            base += len(encoded_part)
            prev_term, prev_chunk = int(t[-1]), int(c[-1])
        postings_offsets[len(terms)] = base
        encoded = [t.encode("utf-8") for t in terms]
        vocab_offsets = np.zeros(len(terms) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=vocab_offsets[1:])
        if vocab_offsets[-1] >= 2 ** 32 or base >= 2 ** 32:
            raise ValueError("lexical index over 4 GiB (u32 offsets): build with --no-lexical")
        lengths = np.frombuffer(self._lengths, dtype=np.uint32)
        n = len(lengths)
        meta = {"version": LEXICAL_VERSION, "tokenizer": self.options.to_manifest(), "scoring": "bm25",
                "k1": self.k1, "b": self.b, "fields": {"context": CONTEXT_WEIGHT, "text": 1},
                "doc_count": n, "terms": len(terms), "postings": int(total),
                "avg_doc_length": float(lengths.sum() / n) if n else 0.0}
        sections = [
            ("lex_vocab", "utf8", b"".join(encoded)),
            ("lex_vocab_offsets", "u32le", vocab_offsets.astype("<u4").tobytes()),
            ("lex_postings", "uleb128", spool),  # an open file: BundleWriter streams it
            ("lex_postings_offsets", "u32le", postings_offsets.astype("<u4").tobytes()),
            ("lex_doc_lengths", "u32le", lengths.astype("<u4").tobytes()),
        ]
        return meta, sections

    def _memory_slices(self, rank: np.ndarray):
        """(term rank, chunk, tf) slices in final order, from the postings held in memory."""
        term = rank[np.frombuffer(self._term, dtype=np.uint32)]
        chunk = np.frombuffer(self._chunk, dtype=np.uint32)
        tf = np.frombuffer(self._tf, dtype=np.uint32)
        order = np.argsort(term, kind="stable")  # chunk ids stay ascending within a term
        for a in range(0, len(order), _FINISH_SLICE):
            idx = order[a:a + _FINISH_SLICE]
            yield term[idx].astype(np.int64), chunk[idx].astype(np.int64), tf[idx].astype(np.int64)

    def _merged_slices(self, rank: np.ndarray, n_terms: int):
        """The same slices from the runs on disk: each run re-sorted by term rank (one run in memory
        at a time), then ranges of ranks taken from every run in run order and merged.

        The runs are read with plain sequential reads, a range at a time, never mapped: what a step
        read leaves memory with it (a mapping's binary searches and read-around would keep pages of
        every run resident). A term whose postings alone exceed a step is copied run by run in
        slices, so no step holds more than about _FINISH_SLICE postings, however common a term."""
        df = np.zeros(n_terms, dtype=np.int64)
        for stem, _ in self._runs:
            r = rank[np.fromfile(f"{stem}.term", dtype=np.uint32)]
            order = np.argsort(r, kind="stable")
            r[order].tofile(f"{stem}.rank")
            for name in ("chunk", "tf"):
                np.fromfile(f"{stem}.{name}", dtype=np.uint32)[order].tofile(f"{stem}.{name}")
            df += np.bincount(r, minlength=n_terms)
            os.remove(f"{stem}.term")
            del r, order
        # rank boundaries so that a step merges about _FINISH_SLICE postings; a term with more has a
        # step of its own
        cum = np.cumsum(df)
        bounds = np.searchsorted(cum, np.arange(_FINISH_SLICE, int(cum[-1]) if len(cum) else 0, _FINISH_SLICE),
                                 side="right")
        big = np.flatnonzero(df > _FINISH_SLICE)
        edges = np.unique(np.concatenate([[0, n_terms], bounds, big, big + 1]).astype(np.int64))
        edges = edges[(edges >= 0) & (edges <= n_terms)]
        # where each step starts in each run (one run's ranks in memory at a time)
        starts = []
        for stem, _ in self._runs:
            ranks = np.fromfile(f"{stem}.rank", dtype=np.uint32)
            starts.append(np.searchsorted(ranks, edges))
            del ranks

        def read(stem, name, a, b):
            return np.fromfile(f"{stem}.{name}", dtype=np.uint32, count=b - a, offset=a * 4).astype(np.int64)

        for k in range(len(edges) - 1):
            spans = [(stem, int(pos[k]), int(pos[k + 1])) for (stem, _), pos in zip(self._runs, starts)
                     if pos[k + 1] > pos[k]]
            if not spans:
                continue
            if edges[k + 1] - edges[k] == 1:  # one term: its postings are in run order already
                for stem, a, b in spans:
                    for lo in range(a, b, _FINISH_SLICE):
                        hi = min(b, lo + _FINISH_SLICE)
                        yield (np.full(hi - lo, edges[k], dtype=np.int64), read(stem, "chunk", lo, hi),
                               read(stem, "tf", lo, hi))
                continue
            t = np.concatenate([read(stem, "rank", a, b) for stem, a, b in spans])
            c = np.concatenate([read(stem, "chunk", a, b) for stem, a, b in spans])
            f = np.concatenate([read(stem, "tf", a, b) for stem, a, b in spans])
            if len(spans) > 1:
                order = np.argsort(t, kind="stable")  # run order, so chunk order, within a term
                t, c, f = t[order], c[order], f[order]
            yield t, c, f


# --------------------------------------------------------------------------- reading and scoring

class LexicalFormatError(ValueError):
    """The lexical sections disagree with each other or with the manifest (names the section)."""

    def __init__(self, section: str, message: str):
        super().__init__(message)
        self.section = section


class LexicalIndex:
    """BM25 over the lexical sections, read in place (the arrays may be views of a mapped file)."""

    def __init__(self, meta: Mapping, sections: Mapping[str, memoryview | bytes], *, count: int,
                 lengths: frozenset[str] = frozenset()):
        """`lengths`: the OFFSET_SECTIONS stored as lengths (LENGTHS_ENCODING), summed into offsets here."""
        self.meta = meta
        self._as_lengths = lengths
        try:
            self.options = TokenizerOptions.from_manifest(meta.get("tokenizer"))
            k1, b, n, t = meta["k1"], meta["b"], meta["doc_count"], meta["terms"]
            avg = meta["avg_doc_length"]
            if meta.get("version") != LEXICAL_VERSION or meta.get("scoring") != "bm25":
                raise ValueError(f"version {meta.get('version')!r} / scoring {meta.get('scoring')!r} not supported")
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise LexicalFormatError("manifest", f"lexical: missing or malformed field ({e})") from None
        try:  # a JSON integer of 400 digits does not fit a float: a bad bundle, not a crash
            numbers_ok = all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                             for x in (k1, b, avg))
        except OverflowError:
            numbers_ok = False
        if not numbers_ok or not (0 <= k1 <= 100 and 0 <= b <= 1 and avg >= 0):
            raise LexicalFormatError("manifest", "lexical: k1, b or avg_doc_length out of range")
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in (n, t)) or n != count:
            raise LexicalFormatError("manifest", f"lexical: doc_count {n!r} disagrees with {count} chunks")
        self.k1, self.b, self.n, self.terms, self.avg = float(k1), float(b), n, t, float(avg)
        self.vocab = sections["lex_vocab"]
        self.vocab_offsets = self._array(sections, "lex_vocab_offsets", "<u4", t + 1, len(self.vocab))
        self.postings = np.frombuffer(sections["lex_postings"], dtype=np.uint8)
        self.postings_offsets = self._array(sections, "lex_postings_offsets", "<u4", t + 1, len(self.postings))
        self.lengths = self._array(sections, "lex_doc_lengths", "<u4", n, None)
        self._norm = None
        self._df: dict[int, int] = {}  # term id -> document frequency, as postings are decoded

    def _array(self, sections, name, dtype, n, end):
        raw = sections[name]
        if len(raw) != n * np.dtype(dtype).itemsize:
            raise LexicalFormatError(name, f"expected {n} {dtype[1:]} entries, found {len(raw)} bytes")
        a = np.frombuffer(raw, dtype=dtype)
        if name in self._as_lengths:  # sums of u32 lengths, in u64 (no wrap-around); as offsets they are u32
            a = np.cumsum(a, dtype=np.uint64) if a[0] == 0 and end < 1 << 32 else np.array([1], dtype=np.uint64)
            if a[-1] == end:
                a = a.astype("<u4")
        if end is not None and (a[0] != 0 or a[-1] != end or np.any(a[1:] < a[:-1])):
            raise LexicalFormatError(name, f"offsets do not rise from 0 to {end}")
        return a

    def _term(self, i: int) -> bytes:
        return bytes(self.vocab[int(self.vocab_offsets[i]):int(self.vocab_offsets[i + 1])])

    def lookup(self, term: str) -> int:
        """The term's number, or -1: binary search over the sorted vocabulary, nothing loaded."""
        key = term.encode("utf-8")
        lo, hi = 0, self.terms
        while lo < hi:
            mid = (lo + hi) // 2
            if self._term(mid) < key:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < self.terms and self._term(lo) == key else -1

    def postings_of(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, term frequencies) of term t, validated."""
        a, b = int(self.postings_offsets[t]), int(self.postings_offsets[t + 1])
        try:
            values = uleb128_decode(self.postings[a:b])
        except ValueError as e:
            raise LexicalFormatError("lex_postings", f"term {t}: {e}") from None
        if len(values) == 0 or len(values) % 2:
            raise LexicalFormatError("lex_postings", f"term {t}: postings are not (gap, tf) pairs")
        ids, tf = np.cumsum(values[0::2]), values[1::2]
        if ids[-1] >= self.n or np.any(tf <= 0) or np.any(values[2::2] <= 0):
            raise LexicalFormatError("lex_postings", f"term {t}: chunk ids out of range or not increasing")
        return ids, tf

    def query_terms(self, text: str) -> list[str]:
        """Distinct query terms in first-seen order: a repeated word counts once."""
        return list(dict.fromkeys(tokenize(text, self.options)))[:MAX_QUERY_TERMS]

    def scores(self, text: str) -> np.ndarray:
        """BM25 score of every chunk (float64; 0 where no query term occurs)."""
        out = np.zeros(self.n, dtype=np.float64)
        if self.n == 0:
            return out
        if self._norm is None:
            avg = self.avg if self.avg > 0 else 1.0
            self._norm = self.k1 * (1.0 - self.b + self.b * self.lengths.astype(np.float64) / avg)
        for term in self.query_terms(text):
            t = self.lookup(term)
            if t < 0:
                continue
            ids, tf = self.postings_of(t)
            self._df[t] = len(ids)
            idf = self._idf(t)
            tf = tf.astype(np.float64)
            out[ids] += idf * tf * (self.k1 + 1.0) / (tf + self._norm[ids])
        return out

    def term_weights(self, text: str) -> list[tuple[str, float]]:
        """The question's distinct terms found in the vocabulary, in first-seen order, with their
        BM25 idf (what `scores` weighs them by): the context match's weights (FORMAT.md §2.9)."""
        out = []
        for term in self.query_terms(text):
            t = self.lookup(term)
            if t < 0:
                continue
            out.append((term, self._idf(t)))
        return out

    def _idf(self, t: int) -> float:
        """BM25's idf of term id t; its document frequency decoded once, then kept."""
        df = self._df.get(t)
        if df is None:
            df = self._df[t] = len(self.postings_of(t)[0])
        return math.log(1.0 + (self.n - df + 0.5) / (df + 0.5))

    def search(self, text: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, chunk ids) by BM25, best first, lower id first on ties; only chunks that
        share a term with the question."""
        return top_k(self.scores(text), k)

    def check_all(self) -> None:
        """Every rule of FORMAT.md §2.4 over the whole index at once (inspect --verify)."""
        for t in range(1, self.terms):
            if self._term(t) <= self._term(t - 1):
                raise LexicalFormatError("lex_vocab", f"term {t} is not in ascending byte order")
        if np.any(self.vocab_offsets[1:] == self.vocab_offsets[:-1]):
            raise LexicalFormatError("lex_vocab_offsets", "an empty term")
        try:
            values, starts = _uleb128_values(self.postings)
        except ValueError as e:
            raise LexicalFormatError("lex_postings", str(e)) from None
        bounds = np.append(starts, len(self.postings))
        at = np.searchsorted(bounds, self.postings_offsets)
        if np.any(bounds[np.minimum(at, len(bounds) - 1)] != self.postings_offsets):
            raise LexicalFormatError("lex_postings_offsets", "an offset falls inside a varint")
        per_term = np.diff(at)
        if np.any(per_term <= 0) or np.any(per_term % 2):
            raise LexicalFormatError("lex_postings", "a term without postings, or not (gap, tf) pairs")
        gaps, tf = values[0::2], values[1::2]
        pairs = per_term // 2
        first = np.zeros(len(pairs), dtype=np.int64)
        np.cumsum(pairs[:-1], out=first[1:])
        later = np.ones(len(gaps), dtype=bool)
        later[first] = False
        if np.any(tf <= 0) or np.any(gaps[later] <= 0):
            raise LexicalFormatError("lex_postings", "a term frequency of 0 or chunk ids not increasing")
        running = np.cumsum(gaps)
        ids = running - np.repeat(running[first] - gaps[first], pairs)
        if len(ids) and ids.max() >= self.n:
            raise LexicalFormatError("lex_postings", f"a chunk id beyond the {self.n} chunks")


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    hits = np.flatnonzero(scores > 0)
    k = min(k, len(hits))
    if k <= 0:
        return np.zeros(0, np.float64), np.zeros(0, np.int64)
    s = scores[hits]
    if k < len(hits):  # ties at the cut go to the lower chunk ids, as a device's reader does it
        kth = -np.partition(-s, k - 1)[k - 1]
        above = s > kth
        tied = np.flatnonzero(s == kth)[:k - int(above.sum())]
        keep = np.concatenate([np.flatnonzero(above), tied])
        hits, s = hits[keep], s[keep]
    order = np.lexsort((hits, -s))
    return s[order], hits[order]
