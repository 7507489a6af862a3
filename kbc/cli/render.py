"""The human renderings of inspect, eval and diff, next to each other; their JSON is the dict each command builds."""

from __future__ import annotations

from .typer_app import _emit_json, _human_bytes, _safe, quote_name


def _print_chunk_body(h, *, indent: str) -> None:
    snippet = " ".join(h.text.split())
    if h.context:
        print(f"{indent}[{_safe(' '.join(h.context.split()))}]")
    print(f"{indent}{_safe(snippet[:300])}{'...' if len(snippet) > 300 else ''}")


def _print_vectors_comparison(compared, *, as_json: bool, queries_file) -> None:
    first = compared[0].report
    if as_json:
        _emit_json({"bundle": first.bundle, "queries": first.queries, "level": first.level, "chunks": first.chunks,
                    "documents": first.documents, "skipped_no_relevant": first.skipped_no_relevant,
                    "skipped_no_text": first.skipped_no_text, "unknown_documents": first.unknown_documents,
                    "baseline": compared[0].vectors, "vectors": [c.to_dict() for c in compared]})
        return

    def kept(share) -> str:
        return f"({share:>6.1%})" if share is not None else "(   n/a)"

    key = ("ndcg@10", "hit@5") if first.level == "document" else ("hit@5", "mrr@10")
    modes = list(first.modes)
    level = "pages" if first.level == "page" else "documents"
    lines = [f"{quote_name(first.bundle)}: {first.queries} queries, judged by {level}; {first.chunks} chunks; each encoding "
             f"derived from the float32 vectors as `kbc build --vectors` stores it; kept = share of {compared[0].vectors}'s",
             "  " + f"{'vectors':<8}{'MiB/100k':>9}{'ms/query':>9}"
             + "".join(f"  {m + ' ' + k:>{_width(m, k)}}" for m in modes for k in key)]
    for c in compared:  # a cell: the value, then its share in 8 characters, right-aligned under its header
        cells = "".join(f"  {c.report.modes[m][k]:>{_width(m, k) - 9}.4f} {kept(c.kept[m][k])}" for m in modes for k in key)
        lines.append("  " + f"{c.vectors:<8}{c.mib_per_100k:>9.1f}{c.search_ms:>9.2f}" + cells)
    lines.append("  (MiB/100k: vector bytes per 100,000 chunks of this dimension; ms/query: one dense top-10 search in "
                 "this process, exact or two-stage as the bundle would search; n/a: the first encoding scored 0)")
    lines += _coverage_lines(first, queries_file)
    print("\n".join(lines))


def _coverage_lines(report, queries_file) -> list[str]:
    """What an evaluation could not score, and judged documents the bundle lacks."""
    lines = []
    if report.skipped_no_relevant or report.skipped_no_text:
        lines.append(f"  not scored: {report.skipped_no_relevant} queries with no relevant document, "
                     f"{report.skipped_no_text} judged queries missing from {quote_name(queries_file)}")
    if report.unknown_documents:
        lines.append(f"  warning: {report.unknown_documents} relevant documents are not in the bundle "
                     f"(built from a different corpus?)")
    return lines


def _width(mode: str, metric: str) -> int:
    return max(17, len(mode) + 1 + len(metric))


def _binary_note(vectors: dict) -> str:
    binary = vectors.get("binary")
    if not isinstance(binary, dict):
        return ""
    return (f" with binary codes searched first (then the best max({binary.get('multiplier')} x k, "
            f"{binary.get('candidates')}) rescored)")


def _print_inspect(info: dict, shown: list, source_path) -> None:
    def obj(x) -> dict:  # a manifest from anywhere may lack an object or hold another type there
        return x if isinstance(x, dict) else {}

    e, c, v = obj(info["embedder"]), obj(info["counts"]), obj(info["vectors"])
    chunking, index = obj(info["chunking"]), obj(info["index"])
    lines = [f"{quote_name(info['path'])}: kbpack {info['format']['major']}.{info['format']['minor']}, {_human_bytes(info['size'])}, "
             f"built by kbc {info['kbc_version']} at {info['created']}",
             f"embedder: {e.get('name')} ({v.get('dim')}-d {v.get('dtype')}, {e.get('backend')} {e.get('precision')}), "
             f"pooling {e.get('pooling')}, normalize {e.get('normalize')}, similarity {e.get('similarity')}, "
             f"max {e.get('max_seq_length')} tokens",
             f"  prompts: query {e.get('query_prompt')!r}, document {e.get('document_prompt')!r}; "
             f"weights sha256 {str(e.get('weights_sha256'))[:16]}...",
             f"counts: {c.get('files')} files, {c.get('pages')} pages, {c.get('chunks')} chunks, "
             f"{c.get('truncated_chunks')} truncated, {c.get('skipped_files')} skipped",
             f"chunking: {chunking.get('unit')} size {chunking.get('size')} overlap {chunking.get('overlap')}; "
             f"index: {index.get('factory')}" + _binary_note(v),
             "sections:"]
    lx, r = info.get("lexical"), info.get("retrieval")
    if isinstance(lx, dict):
        tok = lx.get("tokenizer") or {}
        lines.insert(-1, f"lexical: bm25 k1 {lx.get('k1')} b {lx.get('b')}, {lx.get('terms')} terms, "
                         f"{lx.get('postings')} postings, tokenizer {tok.get('name')} (stop words "
                         f"{'on' if tok.get('stop_words') else 'off'}, stem {tok.get('stem') or 'off'})")
    if isinstance(r, dict) and isinstance(lx, dict):
        context = (f"; context match: path {r.get('path_weight')}, heading {r.get('heading_weight')}"
                   if r.get("path_weight") or r.get("heading_weight") else "")  # FORMAT.md 2.9 (1.6)
        if r.get("standout_weighting") is True and r.get("fusion") != "rrf":  # FORMAT.md 2.5.1 (1.8)
            context += "; each list weighted by its standout"
        if isinstance(r.get("min_strength"), (int, float)) and not isinstance(r.get("min_strength"), bool):
            context += f"; 'no confident answer' under a first-hit cosine of {r['min_strength']}"  # FORMAT.md 2.11
        lines.insert(-1, f"search: default mode {r.get('default_mode')}; hybrid fuses by {r.get('fusion')}, "
                         f"lexical weight {r.get('weight')}, {r.get('depth')} candidates per list{context}")
    else:
        lines.insert(-1, "search: dense only (no lexical index)")
    p = info.get("probes")
    if p:
        lines.insert(-1, f"probes: {p['count']} ({p['role']} inputs, prompt {p['prompt']!r} prepended, pass at cosine "
                         f">= {p['threshold']}; `kbc probe`)" if "error" not in p else f"probes: unreadable ({p['error']})")
    enc = info.get("encoder")
    if isinstance(enc, dict):
        lines.insert(-1, f"encoder: {_safe(str(enc.get('format')))} {_safe(str(enc.get('precision')))} graph in section "
                         f"{_safe(str(enc.get('graph')))}, tokenizer in {_safe(str(enc.get('tokenizer')))} (see "
                         "runtimes/python/kbpack_encoder.py)")
    lines += [f"  {s['name']:<20} {s['encoding']:<13} {_human_bytes(s['length']):>10}  sha256 {s['sha256'][:16]}..."
              for s in info["sections"]]
    sources = [x for x in info["sources"] if isinstance(x, dict)] if isinstance(info["sources"], list) else []
    lines.append(f"sources ({len(sources)}):")
    lines += [f"  {quote_name(s.get('path'))}  {s.get('pages')} pages, {s.get('chunks')} chunks"
              + (f" [{s.get('status')}]" if s.get("status") != "ok" else "") for s in sources]
    for label in ("skipped", "degraded", "ignored"):
        items = [x for x in info[label] if isinstance(x, dict)] if isinstance(info[label], list) else []
        if not items:
            continue
        shown_items = items if label != "ignored" else items[:20]  # a docs tree may leave out thousands
        total = c.get("ignored_files") if label == "ignored" else None
        total = total if isinstance(total, int) and total >= len(items) else len(items)
        lines.append(f"{label} ({total}" + ("; not built by choice or type" if label == "ignored" else "") + "):")
        lines += [f"  {quote_name(p.get('path'))}: {_safe(str(p.get('reason')))}" for p in shown_items]
        if total > len(shown_items):
            lines.append(f"  ... and {total - len(shown_items)} more" + (" (the manifest lists the first 1,000)"
                                                                         if total > len(items) else ""))
    if info["verified"] is True:
        lines.append("verify: intact (header, table, every section and whole-file sha256 match)")
    for ch in shown:
        name = source_path(ch)
        text = " ".join(ch["text"].split())
        ctx = f" [{_safe(' '.join(str(ch['context']).split()))}]" if ch.get("context") else ""
        lines.append(f"[{ch['id']}] {quote_name(name)} p.{ch.get('page_start')}-{ch.get('page_end')} "
                     f"chars {ch.get('char_start')}-{ch.get('char_end')}:{ctx} {_safe(text[:160])}{'...' if len(text) > 160 else ''}")
    print("\n".join(lines))
