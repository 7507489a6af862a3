"""`kbc eval`: options -> kbc.tools.evaluate -> the quality table."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import InputError
from ..modes import Fusion as FusionMethod
from ..modes import Mode as SearchMode
from ..modes import Unit as SearchUnit
from .choices import VectorsChoice
from .typer_app import _emit_json, _load_reranker, _Progress, _safe, app, handle_errors, quote_name
from .render import _coverage_lines, _print_vectors_comparison


@app.command("eval")
@handle_errors
def evaluate(
    bundle: Path = typer.Argument(..., help="A .kbpack file built from the corpus the qrels judge."),
    queries: Path = typer.Option(..., "--queries", help="BEIR queries.jsonl ({\"_id\", \"text\"} per line) or 'id<TAB>text' lines."),
    qrels: Path = typer.Option(..., "--qrels", help="BEIR qrels TSV (query-id, corpus-id, score; header optional) or TREC qrels."),
    model: Optional[str] = typer.Option(None, help="Model directory to embed the queries with (default: the one the bundle records)."),
    allow_model_mismatch: bool = typer.Option(False, help="Evaluate even if the local model's files differ from the recorded ones."),
    backend: str = typer.Option("auto", help="auto (onnxruntime at the bundle's precision), onnx, onnx-int8, torch."),
    mode: Optional[List[SearchMode]] = typer.Option(None, "--mode", help="Search mode(s) to score (repeatable; default: every mode the bundle supports, its default first)."),
    fusion: Optional[FusionMethod] = typer.Option(None, help="Override the bundle's fusion method for hybrid mode (to compare)."),
    weight: Optional[float] = typer.Option(None, help="Override the lexical weight of hybrid fusion (0..1)."),
    depth: Optional[int] = typer.Option(None, help="Override the candidates taken from each list in hybrid mode."),
    unit: Optional[SearchUnit] = typer.Option(None, "--unit", help="Rank chunks or pages (FORMAT.md 2.8); default: the bundle's."),
    page_share: Optional[float] = typer.Option(None, help="Override the weight of a page's other chunks in its score (0..1; --unit page)."),
    path_weight: Optional[float] = typer.Option(None, help="Override the context match's weight of the question's "
                                                "words in a chunk's file path (0..1; FORMAT.md 2.9)."),
    heading_weight: Optional[float] = typer.Option(None, help="Override the context match's weight of the question's "
                                                   "words in a chunk's section heading (0..1; FORMAT.md 2.9)."),
    standout_weighting: Optional[bool] = typer.Option(None, "--standout-weighting/--fixed-weight", help="Override "
                                                      "whether each question's lexical weight follows how far each list's "
                                                      "best stands out (FORMAT.md 2.5.1)."),
    rerank: Optional[Path] = typer.Option(None, "--rerank", help="Re-rank the first stage's best chunks with a "
                                          "sentence-transformers CrossEncoder from this local directory (desktop only; "
                                          "a device ranks as the bundle says)."),
    where: Optional[List[str]] = typer.Option(None, "--where", help="Search only chunks whose document meets this "
                                              "condition (repeat: all must hold), as kbc query --where does."),
    unanswerable: Optional[Path] = typer.Option(None, "--unanswerable", help="Questions the bundle has no answer to "
                                                "(a queries file, as --queries): report how often the answer strength "
                                                "says 'no confident answer' for them and, wrongly, for the answerable "
                                                "ones (qrels queries with no relevant document count as unanswerable too)."),
    min_score: Optional[float] = typer.Option(None, "--min-score", min=-1.0, max=1.0, help="The answer-strength "
                                              "threshold to report against (default: the bundle's min_strength)."),
    per_query: bool = typer.Option(False, "--per-query", help="Also list every query's metrics, worst first."),
    vectors: Optional[List[VectorsChoice]] = typer.Option(None, "--vectors", help="Compare vector encodings "
                                                          "(repeatable: --vectors f32 --vectors int8 ...): each derived "
                                                          "from the bundle's float32 vectors as `kbc build --vectors` "
                                                          "would store it, with the share of the first one's scores it "
                                                          "keeps, its size and its search time."),
    fail_under: Optional[List[str]] = typer.Option(None, "--fail-under", metavar="METRIC=VALUE",
                                                   help="Exit 8 when the starred mode's METRIC is under VALUE "
                                                   "(repeatable: --fail-under hit@5=0.8 --fail-under mrr@10=0.6): "
                                                   "a quality gate for CI."),
    as_json: bool = typer.Option(False, "--json", help="Metrics (and --per-query results) as JSON."),
):
    """Score retrieval in dense, lexical and hybrid mode, side by side.

    Document-level judgements (JSONL record ids or source paths): nDCG@10, recall@1/5/10/100, MRR@10
    and hit@1/5/10/20, a document scoring as its best chunk, as trec_eval / BEIR / MTEB compute them.
    Page-level judgements (`<file stem>:p<N>`, 1-based physical page): hit@1/5/10/20 and MRR@10 over
    chunks, a chunk counting when its page span holds a judged page. Queries go through the same path
    as `kbc query`; queries without a relevant document are counted, not scored.

    Example: kbc eval kb.kbpack --queries queries.jsonl --qrels qrels.tsv --per-query --fail-under hit@5=0.8"""
    from ..query.knowledge_base import KnowledgeBase, check_min_score
    from ..tools.evaluate import evaluate as run_eval
    from ..tools.evaluate import read_qrels, read_queries

    # checked before the queries are embedded, so a typo in a CI job fails in a second, not after the run
    thresholds = _parse_fail_under(fail_under or [])
    check_min_score(min_score)  # before the queries are embedded
    if where and vectors:
        raise InputError("--where and --vectors: the encodings are compared over the whole bundle; run them apart")
    if thresholds and vectors:
        raise InputError("--fail-under checks one evaluation's metrics: run it without --vectors")

    q = read_queries(queries)
    empty = [qid for qid, text in q.items() if not text.strip()]
    if empty:  # refused up front, as `kbc query ""` is, not scored on arbitrary hits
        raise InputError(f"{queries}: query {empty[0]!r} is empty" + (f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""))
    r = read_qrels(qrels)
    no_answer = read_queries(unanswerable) if unanswerable else None
    if no_answer and vectors:
        raise InputError("--unanswerable and --vectors: run them apart")
    overrides = {"fusion": fusion.value if fusion else None, "weight": weight, "depth": depth, "page_share": page_share,
                 "path_weight": path_weight, "heading_weight": heading_weight,
                 "standout_weighting": standout_weighting}
    modes = [m.value for m in mode] if mode else None
    unit_name = unit.value if unit else None
    reranker = _load_reranker(rerank)
    with KnowledgeBase(bundle, model=model, allow_model_mismatch=allow_model_mismatch, backend=backend,
                       sessions=os.cpu_count() or 1, fusion=overrides, reranker=reranker, where=where or None) as kb:
        scope = kb.filter(where) if where else None  # refused before a query is embedded
        with _Progress(enabled=not as_json and sys.stderr.isatty()) as progress:
            if vectors:
                from ..tools.evaluate import compare_vectors

                if per_query:
                    raise InputError("--per-query lists one evaluation's queries: run it without --vectors")
                compared = compare_vectors(kb, q, r, list(dict.fromkeys(v.value for v in vectors)), modes=modes,
                                           progress=progress, unit=unit_name)
            else:
                report = run_eval(kb, q, r, modes=modes, progress=progress, unit=unit_name,
                                  unanswerable=no_answer, min_score=min_score)
        for w in kb.warnings:
            print(f"kbc: warning: {w}", file=sys.stderr)
    if vectors:
        _print_vectors_comparison(compared, as_json=as_json, queries_file=queries)
        return
    missed = _thresholds_missed(report, thresholds, queries, qrels)
    if scope is not None and not as_json:
        print(f"kbc: filter {' and '.join(where)}: {scope.matched} of {scope.mask.size} chunks searched", file=sys.stderr)
    if as_json:
        out = report.to_dict(per_query=per_query)
        if scope is not None:
            out["where"], out["matched"] = list(where), scope.matched
        if thresholds:
            out["fail_under"] = {name: {"threshold": limit, "value": report.metrics[name],
                                        "passed": report.metrics[name] >= limit}
                                 for name, limit in thresholds.items()}
        _emit_json(out)
    else:
        _print_report(report, overrides, queries, per_query)
    for line in missed:
        print(f"kbc: quality gate failed: {line}", file=sys.stderr)
    if missed:
        raise typer.Exit(FAIL_UNDER_EXIT)


# `kbc eval --fail-under`: a metric under its threshold. Not 2 (bad input) nor 3 (damaged bundle),
# so a CI job can tell "the knowledge base got worse" from "the job is broken".
FAIL_UNDER_EXIT = 8


def _parse_fail_under(specs: List[str]) -> dict[str, float]:
    """--fail-under METRIC=VALUE options as {metric: threshold}: every metric a name kbc eval reports
    at some judgement level, every value a number from 0 to 1 (all metrics are shares)."""
    import math

    from ..tools.evaluate import DOC_METRICS, PAGE_METRICS

    known = list(dict.fromkeys((*DOC_METRICS, *PAGE_METRICS)))
    thresholds: dict[str, float] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        name = name.strip().lower()
        if not sep or not name or not value.strip():
            raise InputError(f"--fail-under {spec!r}: expected METRIC=VALUE, for example hit@5=0.8")
        if name not in known:
            raise InputError(f"--fail-under {spec!r}: unknown metric {name!r}; kbc eval reports {', '.join(known)}")
        try:
            limit = float(value)
        except ValueError:
            limit = math.nan
        if not 0.0 <= limit <= 1.0:  # NaN fails this too
            raise InputError(f"--fail-under {spec!r}: the threshold must be a number from 0 to 1, not {value.strip()!r}")
        thresholds[name] = limit
    return thresholds


def _thresholds_missed(report, thresholds: dict[str, float], queries: Path, qrels: Path) -> list[str]:
    """One line per metric under its threshold. A metric the judgements' level does not report
    (recall@10 with page-level qrels) is an input error, not a silent pass."""
    for name in thresholds:
        if name not in report.metrics:
            raise InputError(f"--fail-under {name}: {qrels} judges {report.level}s, for which kbc eval reports "
                             f"{', '.join(report.metrics)}")
    if not report.queries:  # nothing was scored: every mean is 0, and a gate must not pass on nothing
        return [f"--fail-under: no query of {queries} could be scored"] if thresholds else []
    return [f"{name} {report.metrics[name]:.4f} is under --fail-under {name}={limit:g} "
            f"({report.mode} mode, {report.queries} queries of {queries})"
            for name, limit in thresholds.items() if report.metrics[name] < limit]


def _print_report(report, overrides: dict, queries: Path, per_query: bool) -> None:
    names = list(report.metrics)
    if report.level == "page":
        level = "pages (ranked pages)" if report.unit == "page" else "pages (hits by chunk page span)"
    else:
        level = "documents" + (" (a document as its best page)" if report.unit == "page" else "")
    lines = [f"{quote_name(report.bundle)}: {report.queries} queries, judged by {level}; {report.documents} documents, "
             f"{report.chunks} chunks",
             "  " + f"{'mode':<10}" + "".join(f"{n:>11}" for n in names)]
    for mode_name, m in report.modes.items():
        tag = mode_name + ("*" if mode_name == report.mode else "")
        lines.append("  " + f"{tag:<10}" + "".join(f"{m[n]:>11.4f}" for n in names))
    lines.append(f"  (* the mode --per-query, --fail-under and JSON `metrics` report: {report.mode})")
    if "hybrid" in report.modes:
        f = report.fusion
        context = (f", context match {f['path_weight']} path + {f['heading_weight']} heading"
                   if f["fusion"] != "rrf" and (f["path_weight"] or f["heading_weight"]) else "")
        per_question = ", each list weighted by its standout" if f.get("standout_weighting") and f["fusion"] != "rrf" else ""
        lines.append(f"  hybrid: {f['fusion']} fusion, lexical weight {f['weight']}, {f['depth']} candidates per list"
                     + context + per_question
                     + (" (overridden on the command line)" if any(v is not None for v in overrides.values()) else
                        " (as the bundle records)"))
    elif any(overrides[o] is not None for o in overrides if o != "page_share"):
        lines.append("  note: the fusion overrides (--fusion, --weight, --depth, --path-weight, --heading-weight, "
                     "--standout-weighting) apply to hybrid mode, which this "
                     "evaluation did not run")
    if report.reranker:
        lines.append(f"  re-ranked by {_safe(report.reranker)} (the first stage's best chunks, then this order)")
    if report.unit == "page":
        f = report.fusion
        lines.append(f"  pages: from the best {f['page_depth']} chunks, score = best chunk + {f['page_share']} x the rest")
    lines += _coverage_lines(report, queries)
    a = report.answer_strength
    if a:
        def median(d: dict) -> str:
            return f"{d['p50']:.3f}" if "p50" in d else "none"

        strengths = (f"first-hit strength p50 {median(a['answerable_strength'])} answerable, "
                     f"{median(a['unanswerable_strength'])} unanswerable")
        if not a["measured"]:
            lines.append(f"  answer strength: not measured in {a['mode']} mode (it embeds no question); "
                         "evaluate dense or hybrid for it")
        elif a["min_score"] is None:
            lines.append(f"  answer strength ({a['mode']}, {a['unit']}): {strengths}; the bundle records no "
                         "min_strength (another embedder than the default): pass --min-score to score one")
        else:
            lines.append(f"  answer strength ({a['mode']}, {a['unit']}, min_score {a['min_score']:.3f}): 'no confident "
                         f"answer' for {a['unanswerable_flagged']:.0%} of {a['unanswerable']} unanswerable questions "
                         f"and, wrongly, {a['answerable_flagged']:.0%} of {a['answerable']} answerable ones; {strengths}")
    s = report.seconds
    lines.append("  seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in s.items()))
    if per_query:
        key, second = ("ndcg@10", "recall@10") if report.level == "document" else ("mrr@10", "hit@5")
        depth_shown = ">100" if report.level == "document" else ">20"
        lines.append(f"per query, {report.mode} (worst {key} first): id  {key}  {second}  first relevant rank  text")
        for pq in sorted(report.per_query, key=lambda x: (x.metrics[key], x.id)):
            rank = pq.first_relevant_rank if pq.first_relevant_rank is not None else depth_shown
            lines.append(f"  {pq.id}  {pq.metrics[key]:.3f}  {pq.metrics[second]:.3f}  {rank}  "
                         f"{_safe(' '.join(pq.text.split())[:100])}")
    print("\n".join(lines))


