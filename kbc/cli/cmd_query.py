"""`kbc query`: options -> KnowledgeBase search -> hits, pages or the device prompt."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..modes import Mode as SearchMode
from ..modes import Unit as SearchUnit
from .typer_app import _emit_json, _fail, _load_reranker, _safe, app, handle_errors, quote_name
from .render import _print_chunk_body


@app.command()
@handle_errors
def query(
    bundle: Path = typer.Argument(..., help="A .kbpack file."),
    question: str = typer.Argument(..., help="The question to retrieve context for."),
    k: int = typer.Option(5, "-k", help="Number of hits."),
    model: Optional[str] = typer.Option(None, help="Model directory to embed the question with (default: the one the bundle records)."),
    allow_model_mismatch: bool = typer.Option(False, help="Query even if the local model's files differ from the recorded ones (warns)."),
    backend: str = typer.Option("auto", help="auto (onnxruntime at the bundle's precision), onnx, onnx-int8, torch."),
    mode: Optional[SearchMode] = typer.Option(None, "--mode", help="dense (vectors), lexical (BM25) or hybrid (both, fused as the bundle records); default: the bundle's."),
    unit: Optional[SearchUnit] = typer.Option(None, "--unit", help="chunk: the best chunks; page: the best pages, "
                                              "each once with its best chunks (FORMAT.md 2.8); default: the bundle's."),
    rerank: Optional[Path] = typer.Option(None, "--rerank", help="Re-rank the first stage's best chunks with a "
                                          "sentence-transformers CrossEncoder from this local directory (desktop only; "
                                          "a device ranks as the bundle says)."),
    where: Optional[List[str]] = typer.Option(None, "--where", help="Search only chunks whose document meets this "
                                              "condition (repeat: all must hold): path:GLOB, key=value, key=v1,v2, "
                                              "key>=N, key<=N, key>N, key<N (FORMAT.md 2.10; kbc inspect lists the keys)."),
    min_score: Optional[float] = typer.Option(None, "--min-score", min=-1.0, max=1.0, help="The answer strength (the "
                                              "first hit's cosine with the question) under which to report 'no "
                                              "confident answer' (default: the bundle's; the hits are shown either way)."),
    prompt: bool = typer.Option(False, "--prompt", help="Print a ready-to-paste prompt (context_N lines, then the question)."),
    as_json: bool = typer.Option(False, "--json", help="Hits as JSON."),
):
    """Retrieve the chunks (or pages) a device would retrieve for QUESTION, embedded exactly as the bundle records.

    Example: kbc query kb.kbpack "How do I rotate the logs?" -k 5 --mode hybrid --unit page"""
    from ..query.knowledge_base import KnowledgeBase, check_min_score, check_questions, device_prompt

    if k <= 0:
        _fail(f"-k must be positive, not {k}", 2)
    check_min_score(min_score)  # before the bundle and the model are opened
    check_questions([question])  # before the bundle and the model are opened
    reranker = _load_reranker(rerank)
    with KnowledgeBase(bundle, model=model, allow_model_mismatch=allow_model_mismatch, backend=backend,
                       reranker=reranker) as kb:
        used = kb.retriever.resolve(mode.value if mode else None)
        ranked_unit = kb.resolve_unit(unit.value if unit else None)
        pages = ranked_unit == SearchUnit.page.value
        allowed = kb.filter(where) if where else None  # refused before the model loads
        # embedded once, for the search and for the answer strength (lexical search embeds nothing)
        vector = kb.embed_queries([question])[0] if used != SearchMode.lexical.value else None
        hits = (kb.search_pages(question, k=k, mode=used, where=allowed, vector=vector) if pages
                else kb.search(question, k=k, mode=used, where=allowed, vector=vector))
        firsts = [h.chunks[0].chunk_id for h in hits] if pages else [h.chunk_id for h in hits]  # a page's best chunk
        answer = kb.answer(vector, firsts[0] if firsts else None, min_score=min_score)
        for w in kb.warnings:
            print(f"kbc: warning: {_safe(w)}", file=sys.stderr)
        if allowed is not None and not as_json:
            print(f"kbc: filter {' and '.join(_safe(c) for c in where)}: {allowed.matched} of {kb.bundle.count} "
                  "chunks match", file=sys.stderr)
        if not hits and not as_json:
            print(f"kbc: no hits in {used} mode (no chunk shares a word with the question)", file=sys.stderr)
        elif answer.confident is False and answer.strength is not None and not as_json:
            print(f"kbc: no confident answer: the first hit's strength {answer.strength:.3f} is under "
                  f"{answer.min_score:.3f}" + (" (--min-score)" if min_score is not None else " (the bundle's min_strength)")
                  + "; the bundle may have nothing on this", file=sys.stderr)
        if as_json:
            extra = {"where": list(where), "matched": allowed.matched} if allowed is not None else {}
            listed = [h.to_dict() for h in hits]
            if vector is not None:  # each hit's own strength: its (best chunk's) cosine with the question
                for d, strength in zip(listed, kb.strengths(vector, firsts)):
                    d["strength"] = strength
            _emit_json({"question": question, "mode": used, "unit": ranked_unit, **extra,
                        "answer": answer.to_dict(), ("pages" if pages else "hits"): listed})
        elif prompt:
            print(device_prompt(question, hits))
        elif pages:
            for p in hits:
                where = (quote_name(p.source) + (f"#{p.record}" if p.record else "") + f" p.{p.page}"
                         + (f" (labelled {p.label})" if p.label else ""))
                print(f"{p.rank}. {p.score:.3f}  {_safe(where)}  [{len(p.chunks)} chunk{'s' if len(p.chunks) != 1 else ''}: "
                      + ", ".join(str(c.chunk_id) for c in p.chunks) + "]")
                _print_chunk_body(p.chunks[0], indent="   ")
        else:
            for h in hits:
                where = (quote_name(h.source) + (f"#{h.record}" if h.record else "") + f" p.{h.pages}"
                         + (f" (labelled {h.labels})" if h.labels else ""))
                print(f"{h.rank}. {h.score:.3f}  {_safe(where)}  [chunk {h.chunk_id}]")
                _print_chunk_body(h, indent="   ")


