"""SciFact as Markdown: a BEIR corpus written as one Markdown file per document, so that its
titles reach kbc as headings and its file names as paths, the parts the context match reads
(FORMAT.md §2.9). The README's context-match table uses it as a second set where the match can act.

    python bench/scifact_markdown.py ../shared/eval/scifact-train OUT
    kbc build OUT/docs -o sfmd.kbpack
    kbc eval sfmd.kbpack --queries ../shared/eval/scifact-train/queries.jsonl --qrels OUT/qrels.tsv

Each document becomes `OUT/docs/<id>.md` (`# title`, a blank line, the text) and the qrels' corpus
ids gain `.md`, the source path a Markdown bundle judges by. Write OUT outside the project: the
data keeps its own licence and is never part of kbc.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("beir_set", type=Path, help="a folder with corpus.jsonl and qrels.tsv")
    ap.add_argument("out", type=Path)
    a = ap.parse_args()
    docs = a.out / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(a.beir_set / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            doc_id = str(r["_id"])
            if not SAFE_ID.match(doc_id):  # an id is a file name here: nothing that walks out of docs/
                raise SystemExit(f"corpus id {doc_id!r} is not a safe file name")
            title = " ".join(str(r.get("title") or "").split())
            (docs / f"{doc_id}.md").write_text(f"# {title}\n\n{r.get('text', '')}\n", encoding="utf-8")
            n += 1
    with open(a.beir_set / "qrels.tsv", encoding="utf-8") as f, open(a.out / "qrels.tsv", "w", encoding="utf-8") as out:
        for i, line in enumerate(f):
            parts = line.rstrip("\n").split("\t")
            if i == 0 and not parts[-1].strip().lstrip("-").isdigit():
                out.write(line)  # the header
                continue
            out.write(f"{parts[0]}\t{parts[1]}.md\t{parts[2]}\n")
    print(f"{n} documents in {docs}; qrels in {a.out / 'qrels.tsv'}")


if __name__ == "__main__":
    main()
