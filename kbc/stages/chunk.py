"""Chunk stage: an extracted file's documents as chunk records (the dicts the bundle stores), each
with the context it is embedded and indexed with; cached by the file's content hash."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .splitter import (CONTEXT_HEADING_SEPARATOR, CONTEXT_MAX_TOKENS, CONTEXT_SEPARATOR, Chunk, Chunker,
                       document_context, resolve_spec, section_context, token_budget, whole_document_chunks)
from ..backends.model import EmbedderSpec, TokenCounter
from ..errors import InputError, option
from ..format.attributes import clean_values
from ..readers import READERS
from ..records import Extracted
from ..readers.textclean import has_words

# Bump when the chunk records made from the same extracted text change (it keys the chunk cache).
CHUNK_RECORDS_VERSION = "6"  # 2: contexts, furniture-only chunks dropped; 3: from PDFs only; 4: whole fits;
# 5: no " | " inside a document identity; 6: a document's first record carries its attributes


# a record's private key for its document's attributes: popped before the record is stored
ATTRIBUTES_KEY = "_attributes"


def embedded_text(record: dict) -> str:
    """What the embedder sees of a chunk: its context, then its text (the lexical index weighs the
    two fields itself: LexicalBuilder.add_chunks)."""
    ctx = record.get("context")
    return f"{ctx}{CONTEXT_SEPARATOR}{record['text']}" if ctx else record["text"]


class ChunkStage:
    def __init__(self, *, spec: EmbedderSpec, counter: TokenCounter, unit: str | None, size: int | None,
                 overlap: int | None, context: str, extract_settings: str, cache=None):
        if context not in ("auto", "none"):
            raise InputError(f"{option('context')} must be auto or none, not {context!r}")
        self.counter, self.context, self.cache = counter, context, cache
        self._embedder_spec, self._options = spec, (unit, size, overlap, extract_settings)
        self.prompt = spec.document_prompt
        self.budget = token_budget(counter, spec.max_seq_length, spec.document_prompt)
        self.whole_docs = unit == "document"
        self.spec = resolve_spec(unit="tokens" if self.whole_docs else unit, size=size, overlap=overlap,
                                 budget=self.budget)
        self.chunker = Chunker(self.spec, counter, max_seq_length=spec.max_seq_length,
                               document_prompt=spec.document_prompt)
        self.settings = hashlib.sha256(json.dumps(
            [self.spec.to_manifest(), self.whole_docs, spec.weights_sha256, spec.document_prompt,
             spec.max_seq_length, spec.do_lower_case, extract_settings, context, CONTEXT_SEPARATOR,
             CONTEXT_HEADING_SEPARATOR, CONTEXT_MAX_TOKENS, CHUNK_RECORDS_VERSION]).encode()).hexdigest()[:24]

    def warm(self) -> None:
        self.chunker.splitter  # noqa: B018 - imports langchain ahead of need

    def plan(self, model_dir: str | Path) -> "ChunkPlan":
        """What an extraction worker needs to make this stage's records (model_dir: the embedder's
        files, where its tokenizer.json is)."""
        return ChunkPlan(spec=self._embedder_spec, model_dir=str(model_dir), unit=self._options[0],
                         size=self._options[1], overlap=self._options[2], context=self.context,
                         extract_settings=self._options[3], settings=self.settings)

    def records(self, ex: Extracted) -> list[dict]:
        """Chunk records of one file, in bundle form (the caller sets "source"): the worker's
        when it chunked the file, else made here."""
        made, ex.chunk_records = ex.chunk_records, None
        # the records depend on the reader and on the path (its words are the context), not only on the bytes
        key = (f"chunks:{ex.sha256}:{ex.source.kind}:{ex.source.rel}:{self.settings}"
               if self.cache is not None and ex.sha256 else None)
        if key and made is None:
            got = self.cache.get_extracted(key)
            if isinstance(got, list):
                return got
        records = self._make(ex) if made is None else made
        if key:
            self.cache.put_extracted(key, records)
        return records

    def _make(self, ex: Extracted) -> list[dict]:
        counter, prompt = self.counter, self.prompt
        reader = READERS.get(ex.source.kind)
        drop_furniture = reader is not None and reader.furniture and not self.whole_docs
        records: list[dict] = []
        for doc in ex.documents:
            first = len(records)
            # Files get their identity (path words, title) and, per chunk, the section heading that
            # covers its start; JSONL records already carry their title in the text.
            base = (document_context(doc.source, doc.title, counter)
                    if self.context == "auto" and doc.record_id is None else "")
            by_heading = {h: section_context(base, _without_title(h, doc.title), counter)
                          for _, _, h in doc.headings} if base else {}
            # chunks are sized for the longest context of the document, so none overflows the model
            longest = max([base, *by_heading.values()], key=lambda c: counter.count(c)) if base else ""
            chunks: list[Chunk] = (whole_document_chunks(doc, counter, prompt, context=longest) if self.whole_docs
                                   else self.chunker.split(doc, context=longest))
            contexts = [by_heading.get(doc.heading_at(c.char_start), base) if base else "" for c in chunks]
            # chunks were counted with the longest context: recount those embedded with another
            other = [i for i, ctx in enumerate(contexts) if ctx != longest]
            if other:
                counts = counter.count_batch([prompt + (contexts[i] + CONTEXT_SEPARATOR if contexts[i] else "")
                                              + chunks[i].text for i in other])
                for i, n in zip(other, counts):
                    chunks[i].n_tokens = n
            labels = {p.number: p.label for p in doc.pages if p.label}
            for c, ctx in zip(chunks, contexts):
                if drop_furniture and not has_words(c.text):
                    continue
                record = {"text": c.text, "seq": len(records), "page_start": c.page_start, "page_end": c.page_end,
                          "char_start": c.char_start, "char_end": c.char_end, "tokens": c.n_tokens}
                if ctx:
                    record["context"] = ctx
                if doc.record_id is not None:
                    record["record"] = doc.record_id
                if c.page_start in labels or c.page_end in labels:
                    record["label_start"] = labels.get(c.page_start, str(c.page_start))
                    record["label_end"] = labels.get(c.page_end, str(c.page_end))
                records.append(record)
            if len(records) > first:
                # the document's attributes ride on its first record to the writer, which stores them
                # once per run of chunks and never in the chunk itself (BundleSink pops them)
                records[first][ATTRIBUTES_KEY] = clean_values(
                    {**({"title": doc.title} if doc.title else {}), **(getattr(doc, "attributes", None) or {})})
        return records

    def manifest(self) -> dict:
        return {"chunking": {**self.spec.to_manifest(), "unit": "document" if self.whole_docs else self.spec.unit,
                             "token_budget": self.budget,
                             "context": {"mode": self.context, "separator": CONTEXT_SEPARATOR,
                                         "heading_separator": CONTEXT_HEADING_SEPARATOR,
                                         "max_tokens": CONTEXT_MAX_TOKENS}}}


@dataclass(frozen=True)
class ChunkPlan:
    """A ChunkStage's recipe, picklable: sent with the extraction options, it lets a worker chunk
    the files it extracts with the same tokenizer and settings (so the records are the ones the
    driver would make: the bundle's bytes do not depend on where chunking ran)."""
    spec: EmbedderSpec
    model_dir: str
    unit: str | None
    size: int | None
    overlap: int | None
    context: str
    extract_settings: str
    settings: str  # the driver stage's settings hash: the worker's must come out the same

    def records(self, ex: Extracted) -> list[dict]:
        return self.stage()._make(ex)

    def stage(self) -> ChunkStage:
        """This process's stage for the plan, made once (loading the tokenizer costs ~50 ms)."""
        global _worker_stage
        if _worker_stage is None or _worker_stage[0] != (self.model_dir, self.settings):
            stage = ChunkStage(spec=self.spec, counter=TokenCounter(Path(self.model_dir),
                                                                    do_lower_case=self.spec.do_lower_case),
                               unit=self.unit, size=self.size, overlap=self.overlap, context=self.context,
                               extract_settings=self.extract_settings)
            if stage.settings != self.settings:
                raise ValueError("chunk settings differ from the driver's")
            _worker_stage = ((self.model_dir, self.settings), stage)
        return _worker_stage[1]


_worker_stage: tuple[tuple[str, str], ChunkStage] | None = None


def _without_title(heading: str, title: str | None) -> str:
    """A heading path without the document title the context already starts with."""
    if title and (heading == title or heading.startswith(title + " > ")):
        return heading[len(title) + 3:]
    return heading
