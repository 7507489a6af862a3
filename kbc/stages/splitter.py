"""Chunk stage: split a document into overlapping pieces that fit the embedder, keeping provenance.

Splitting uses langchain-text-splitters' recursive splitter (paragraphs, then sentences, lines,
words). In token mode its length function is the embedder's own tokenizer and the size is capped
so that prompt + chunk + special tokens never exceed max_seq_length; any piece that still does is
cut again at token boundaries. So the default build truncates nothing, and says so.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Sequence

from ..backends.model import TokenCounter
from ..errors import InputError, option
from ..format.retrieval import HEADING_SEPARATOR, path_stem
from ..records import Document

SEPARATORS = ["\n\n", ". ", ".\n", "? ", "! ", "\n", "; ", ", ", " ", ""]
DEFAULT_UNIT = "tokens"
# 192 tokens overlapping by 64 (a third), capped at what the model accepts: the one size that
# scored above the model's full budget (256/64) on both evaluation sets (README "Chunk size":
# FinanceBench-dev hybrid hit@5 0.577 vs 0.519, SciFact-train nDCG@10 0.7413 vs 0.7379); 128
# scores higher on FinanceBench and costs SciFact 0.65 points, 192/48 costs it 0.13.
DEFAULT_TOKEN_SIZE = 192
DEFAULT_TOKEN_OVERLAP = 64  # at most a third of the chunk (OVERLAP_SHARE)
OVERLAP_SHARE = 3
DEFAULT_CHAR_SIZE = 1000
DEFAULT_CHAR_OVERLAP = 200
# A chunk's context (its document's title or path) is embedded as `context + CONTEXT_SEPARATOR + text`.
CONTEXT_SEPARATOR = "\n"
CONTEXT_MAX_TOKENS = 48  # longer contexts are cut: the chunk's own text keeps most of the budget
# between the document's identity and the section heading: the context match splits there (FORMAT.md §2.9)
CONTEXT_HEADING_SEPARATOR = HEADING_SEPARATOR
CONTEXT_MARGIN = 2  # tokens kept spare for merges where context and text meet


@dataclass(frozen=True)
class ChunkSpec:
    unit: str  # "tokens" or "chars"
    size: int
    overlap: int

    def to_manifest(self) -> dict:
        return {"unit": self.unit, "size": self.size, "overlap": self.overlap, "separators": SEPARATORS,
                "splitter": "langchain_text_splitters.RecursiveCharacterTextSplitter"}


@dataclass
class Chunk:
    text: str
    char_start: int  # span in the extracted document text
    char_end: int
    page_start: int  # 1-based, inclusive
    page_end: int
    n_tokens: int = 0  # embedder tokens including prompt and special tokens


def token_budget(counter: TokenCounter, max_seq_length: int, document_prompt: str) -> int:
    """Tokens of chunk text that fit: max_seq_length less special tokens and the prompt."""
    prompt_tokens = counter.count(document_prompt) if document_prompt else 0
    return max_seq_length - counter.special - prompt_tokens


def resolve_spec(*, unit: str | None, size: int | None, overlap: int | None, budget: int) -> ChunkSpec:
    unit = unit or DEFAULT_UNIT
    if unit not in ("tokens", "chars"):
        raise InputError(f"{option('chunk_unit')} must be 'tokens' or 'chars', not {unit!r}")
    if unit == "tokens":
        if size is None:
            size = min(DEFAULT_TOKEN_SIZE, budget)
        elif size > budget:
            raise InputError(f"{option('chunk_size')} {size} tokens exceeds what the model embeds ({budget} tokens after "
                             "special tokens and prompt); chunks would be truncated")
        overlap = min(DEFAULT_TOKEN_OVERLAP, size // OVERLAP_SHARE) if overlap is None else overlap
    else:
        size = DEFAULT_CHAR_SIZE if size is None else size
        overlap = min(DEFAULT_CHAR_OVERLAP, size // 4) if overlap is None else overlap
    if size <= 0:
        raise InputError(f"{option('chunk_size')} must be positive, not {size}")
    if overlap < 0 or overlap >= size:
        raise InputError(f"{option('chunk_overlap')} must be >= 0 and smaller than {option('chunk_size')} ({size}), not {overlap}")
    return ChunkSpec(unit, size, overlap)


class Chunker:
    def __init__(self, spec: ChunkSpec, counter: TokenCounter, *, max_seq_length: int, document_prompt: str = ""):
        self.spec = spec
        self.counter = counter
        self.max_seq_length = max_seq_length
        self.prompt = document_prompt
        self.budget = token_budget(counter, max_seq_length, document_prompt)
        self._splitter = None

    @property
    def splitter(self):
        return self._splitter_for(self.spec.size)

    def _splitter_for(self, size: int):
        if self._splitter is None:
            self._splitter = {}
        if size not in self._splitter:  # langchain costs ~0.16 s to import; a fully cached build never needs it
            overlap = min(self.spec.overlap, size // 4 if size < self.spec.size else size - 1)
            if self.spec.unit == "tokens":
                self._splitter[size] = _batch_counting_splitter(self.counter, size, overlap)
            else:
                from langchain_text_splitters import RecursiveCharacterTextSplitter

                self._splitter[size] = RecursiveCharacterTextSplitter(
                    chunk_size=size, chunk_overlap=overlap, length_function=len, separators=SEPARATORS,
                    keep_separator="end", strip_whitespace=True)
        return self._splitter[size]

    def split(self, doc: Document, *, context: str = "") -> list[Chunk]:
        """Chunks of doc; with a context (embedded before each chunk) the chunks shrink by its tokens."""
        prefix = self.prompt + (context + CONTEXT_SEPARATOR if context else "")
        size = self.spec.size
        if context and self.spec.unit == "tokens":
            size = max(16, min(size, self.budget - self.counter.count_batch([context], add_special_tokens=False)[0]
                               - CONTEXT_MARGIN))
        length = self.counter.count if self.spec.unit == "tokens" else len
        whole = length(doc.text)
        counts = None
        if whole <= size:  # fits whole (a JSONL record, a short note): no splitter needed
            pieces = [doc.text.strip()] if doc.text.strip() else []
            if self.spec.unit == "tokens" and pieces == [doc.text]:
                # what the embedder sees is the prefix, then the text just counted, then the special
                # tokens: counting it whole again would double the tokenizer's share of chunking a
                # corpus of short records, where the counter can add the counts up exactly
                joined = self.counter.count_joined(prefix, whole)
                counts = None if joined is None else [joined]
        else:
            pieces = [p for p in self._splitter_for(size).split_text(doc.text) if p.strip()]
        if self.spec.unit == "tokens" and (counts is None or counts[0] > self.max_seq_length):
            pieces, counts = self._enforce_budget(pieces, prefix)
        starts = [p.start for p in doc.pages]
        chunks: list[Chunk] = []
        cursor = 0
        for piece in pieces:
            at = doc.text.find(piece, cursor)
            if at < 0:  # splitter output is always a substring; fall back to the first occurrence
                at = max(0, doc.text.find(piece))
            end = at + len(piece)
            first = max(0, bisect.bisect_right(starts, at) - 1)
            last = max(first, bisect.bisect_right(starts, max(at, end - 1)) - 1)
            chunks.append(Chunk(piece, at, end, doc.pages[first].number, doc.pages[last].number))
            cursor = at + 1
        if chunks:
            if counts is None:
                counts = self.counter.count_batch([prefix + c.text for c in chunks])
            for c, n in zip(chunks, counts):
                c.n_tokens = n
        return chunks

    def _enforce_budget(self, pieces: Sequence[str], prefix: str) -> tuple[list[str], list[int]]:
        """The pieces, any that overflows the model cut at token boundaries, and each one's
        token count with the prefix and special tokens (what the embedder will see)."""
        counts = self.counter.count_batch([prefix + p for p in pieces])
        if all(n <= self.max_seq_length for n in counts):
            return list(pieces), counts
        out: list[str] = []
        room = self.max_seq_length - self.counter.special - (self.counter.count(prefix) if prefix else 0)
        for piece, n in zip(pieces, counts):
            if n <= self.max_seq_length:
                out.append(piece)
                continue
            offsets = self.counter.offsets(piece)
            step = max(1, room - 2)  # a margin for tokens merging differently at cut points
            for i in range(0, len(offsets), step):
                window = offsets[i:i + step]
                sub = piece[window[0][0]:window[-1][1]].strip()
                if sub:
                    out.append(sub)
        return out, self.counter.count_batch([prefix + p for p in out])


def _batch_counting_splitter(counter: TokenCounter, size: int, overlap: int):
    """langchain's recursive splitter, measuring in the model's tokens, with the same output; but
    where it counts each piece on its own, two or three times over (once to test it, again to
    merge it, again to drop it from the overlap), this one counts each level's pieces in one
    batched call into the tokenizer and remembers them: a third of the chunking time of a build."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    try:
        from langchain_text_splitters.character import _split_text_with_regex
    except ImportError:  # a langchain that moved its helper: count piece by piece, as it does itself
        _split_text_with_regex = None

    known: dict[str, int] = {}

    def length(text: str) -> int:
        n = known.get(text)
        return counter.count(text) if n is None else n

    class BatchCountingSplitter(RecursiveCharacterTextSplitter):
        def split_text(self, text: str) -> list[str]:
            try:
                return super().split_text(text)
            finally:
                known.clear()  # pieces of one document are not worth keeping for the next

        def _split_text(self, text: str, separators: list[str]) -> list[str]:
            # the separator langchain will choose at this level, and the pieces it will measure
            separator = next((s for s in separators if not s or re.search(re.escape(s), text)), separators[-1])
            if separator and _split_text_with_regex is not None:
                pieces = [p for p in _split_text_with_regex(text, re.escape(separator), keep_separator="end")
                          if p not in known]
                if pieces:
                    known.update(zip(pieces, counter.count_batch(pieces, add_special_tokens=False)))
            return super()._split_text(text, separators)

    return BatchCountingSplitter(chunk_size=size, chunk_overlap=overlap, length_function=length,
                                 separators=SEPARATORS, keep_separator="end", strip_whitespace=True)


def whole_document_chunks(doc: Document, counter: TokenCounter, prompt: str, *, context: str = "") -> list[Chunk]:
    """One chunk per document (the embedder truncates at max_seq_length), as MTEB embeds corpora."""
    n = counter.count_batch([prompt + (context + CONTEXT_SEPARATOR if context else "") + doc.text])[0]
    return [Chunk(doc.text, 0, len(doc.text), doc.pages[0].number, doc.pages[-1].number, n)]


_PATH_SEPARATORS = re.compile(r"[\\/_.\-\s]+")


def document_context(path: str, title: str | None, counter: TokenCounter) -> str:
    """What a chunk cannot say about itself: which document it is from. The file's path words
    (directories, then the name without its extension: `3M_2018_10K.pdf` -> `3M 2018 10K`) and
    the document's own title when it has one, cut to CONTEXT_MAX_TOKENS tokens."""
    words = " ".join(_PATH_SEPARATORS.split(path_stem(path))).strip()
    context = f"{title} ({words})" if title and words and words.lower() not in title.lower() else (title or words)
    # "Install | MyProject" (a web page's title) must not read as an identity and a heading
    context = " ".join(context.split())
    while HEADING_SEPARATOR in context:  # "a | | b" overlaps: one replace leaves "a / | b"
        context = context.replace(HEADING_SEPARATOR, " / ")
    return _cap(context, counter)


def section_context(document: str, heading: str, counter: TokenCounter) -> str:
    """The document's context, then the section heading that covers the chunk, within the cap."""
    return _cap(f"{document}{CONTEXT_HEADING_SEPARATOR}{heading}" if heading else document, counter)


def _cap(context: str, counter: TokenCounter) -> str:
    offsets = counter.offsets(context)
    if len(offsets) > CONTEXT_MAX_TOKENS:
        context = context[:offsets[CONTEXT_MAX_TOKENS - 1][1]].rstrip()
    return context
