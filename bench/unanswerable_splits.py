"""Unanswerable splits: an evaluation set with the documents that answer half of its questions
removed, so those questions have no answer in the bundle built from what is left (issue 42's
measure of the answer-strength signal, docs/retrieval-quality.md).

    python bench/unanswerable_splits.py SET OUT [--corpus PATH]
    kbc build OUT/corpus --follow-symlinks -o split.kbpack     (OUT/corpus.jsonl for a JSONL set)
    kbc eval split.kbpack --queries OUT/queries.jsonl --qrels OUT/qrels.tsv --unanswerable OUT/unanswerable.jsonl

SET is a folder with queries.jsonl and qrels.tsv, and its corpus: a corpus.jsonl (BEIR), a pdfs/
or docs/ folder, or the one --corpus names. Judgements are document-level (a corpus id: a JSONL
record id or a file's path inside the corpus folder) or page-level (`<file stem>:p<N>`: the file
is the document).

Questions are taken in id order and alternately "removed" (every document judged relevant to it
leaves the corpus) and kept, a question that shares a document with a kept one being kept too. A question left with no relevant document (removed, or whose documents another
one took) goes to unanswerable.jsonl; the rest keep their remaining judgements in qrels.tsv. Files
are symbolic links to the originals; a JSONL corpus is filtered line by line. Write OUT outside
the project: the data keeps its own licence and is never part of kbc.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kbc.tools.evaluate import PAGE_ID, evaluated_queries, read_qrels, read_queries  # noqa: E402


def find_corpus(root: Path, given: Path | None) -> Path:
    if given is not None:
        return given
    for name in ("corpus.jsonl", "pdfs", "docs"):
        if (root / name).exists():
            return root / name
    raise SystemExit(f"{root}: no corpus.jsonl, pdfs/ or docs/; name it with --corpus")


def document_of(judged_id: str) -> str:
    """The document a judged id names: the file stem of a page id, else the id itself."""
    m = PAGE_ID.match(judged_id)
    return m["doc"] if m else judged_id


def file_document_ids(path: Path, folder: Path) -> set[str]:
    """The ids a judgement may use for a file: its path inside the corpus folder, and that path's stem."""
    rel = path.relative_to(folder).as_posix()
    return {rel, rel.rsplit(".", 1)[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("set", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--corpus", type=Path, help="the corpus, when it is not SET/corpus.jsonl, SET/pdfs or SET/docs")
    a = ap.parse_args()
    queries, qrels = read_queries(a.set / "queries.jsonl"), read_qrels(a.set / "qrels.tsv")
    corpus = find_corpus(a.set, a.corpus)
    evaluated = sorted(evaluated_queries(queries, qrels))
    gone, kept = set(), set()
    n_removed = n_kept = 0
    for q in evaluated:  # half the questions lose their documents; none of another half's
        docs = {document_of(d) for d, g in qrels[q].items() if g > 0}
        if docs & kept or n_removed >= n_kept and not docs <= gone:
            kept |= docs
            n_kept += 1
        else:
            gone |= docs
            n_removed += 1

    a.out.mkdir(parents=True, exist_ok=True)
    kept_docs = removed_docs = 0
    if corpus.is_file():
        with open(corpus, encoding="utf-8") as src, open(a.out / "corpus.jsonl", "w", encoding="utf-8") as dst:
            for line in src:
                if not line.strip():
                    continue
                if str(json.loads(line).get("_id")) in gone:
                    removed_docs += 1
                else:
                    dst.write(line)
                    kept_docs += 1
    else:
        target = a.out / "corpus"
        target.mkdir(exist_ok=True)
        for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
            if file_document_ids(path, corpus) & gone:
                removed_docs += 1
                continue
            link = target / path.relative_to(corpus)
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                os.symlink(path.resolve(), link)
            kept_docs += 1

    unanswerable, answerable = [], {}
    for q in evaluated:
        left = {d: g for d, g in qrels[q].items() if g > 0 and document_of(d) not in gone}
        if left:
            answerable[q] = left
        else:
            unanswerable.append(q)
    with open(a.out / "qrels.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q, judged in answerable.items():
            for d, g in sorted(judged.items()):
                f.write(f"{q}\t{d}\t{g}\n")
    for name, ids in (("queries.jsonl", evaluated), ("unanswerable.jsonl", unanswerable)):
        with open(a.out / name, "w", encoding="utf-8") as f:
            for q in ids:
                f.write(json.dumps({"_id": q, "text": queries[q]}, ensure_ascii=False) + "\n")
    print(json.dumps({"corpus": str(corpus), "documents_kept": kept_docs, "documents_removed": removed_docs,
                      "answerable": len(answerable), "unanswerable": len(unanswerable)}))


if __name__ == "__main__":
    main()
