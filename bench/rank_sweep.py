"""Ranking levers over one bundle's own vectors and lexical index, without rebuilding: each row
re-ranks the hybrid candidates (the union of the best `depth` dense and lexical chunks, fused as
FORMAT.md §2.5 says) and scores the result as `kbc eval` does (page- or document-level).

    python bench/rank_sweep.py BUNDLE QUERIES QRELS [--dump N]

Prints one JSON line per row. Nothing is written.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict

import numpy as np

import kbc
from kbc.format.bm25 import top_k
from kbc.tools.evaluate import (PAGE_ID, _chunk_pages, _page_relevant, chunk_documents, evaluated_queries,
                                hit_metrics, mean_metrics, PAGE_METRICS, DOC_METRICS, page_judgements,
                                query_metrics, rank_documents, read_qrels, read_queries)


def tmm(scores, ref):
    hi = float(ref.max()) if len(ref) else 0.0
    return np.maximum(scores, 0.0) / hi if hi > 0 else np.zeros_like(scores)


class Sweep:
    def __init__(self, kb, queries, qrels, depth=100, weight=0.4):
        self.kb, self.depth, self.weight = kb, depth, weight
        self.qids = evaluated_queries(queries, qrels)
        self.texts = [queries[q] for q in self.qids]
        self.qrels = qrels
        self.owner, self.doc_ids = chunk_documents(kb.bundle)
        self.page_level = page_judgements(qrels, set(self.doc_ids))
        self.chunk_pages = _chunk_pages(kb.bundle) if self.page_level else None
        self.qv = kb.embed_queries(self.texts)
        self.vectors = np.asarray(kb.bundle.vectors, dtype=np.float32)
        self.lex = kb.retriever.lexical
        chunks = list(kb.bundle.iter_chunks())
        self.page_of = np.array([hash((c.get("source", 0), c.get("record"), c.get("page_start", 0))) for c in chunks])
        self.contexts = [c.get("context") or "" for c in chunks]
        # per query: candidate ids, dense and lexical exact scores, and their normalised fusion
        self.cands = []
        for i, text in enumerate(self.texts):
            dense_all = self.vectors @ self.qv[i]
            lex_all = self.lex.scores(text)
            ds, di = top_k(dense_all - dense_all.min() + 1e-9, depth)  # top by cosine
            ls, li = top_k(lex_all, depth)
            cand = np.union1d(di, li)
            d = tmm(dense_all[cand].astype(np.float64), dense_all[di].astype(np.float64))
            lx = tmm(lex_all[cand], lex_all[li]) if len(li) else np.zeros(len(cand))
            self.cands.append((cand, d, lx))

    def score(self, ranked_ids_per_query):
        out = []
        for qid, ids in zip(self.qids, ranked_ids_per_query):
            if self.page_level:
                relevant = {}
                for dname, g in self.qrels[qid].items():
                    m = PAGE_ID.match(dname)
                    if g > 0 and m:
                        relevant.setdefault(m["doc"], set()).add(int(m["page"]))
                flags = [_page_relevant(self.chunk_pages[int(c)], relevant) for c in ids[:20]]
                out.append(hit_metrics(flags))
            else:
                best = {}
                for c in ids:
                    best.setdefault(self.doc_ids[self.owner[c]], -len(best))
                order = rank_documents(best)
                out.append(query_metrics(order, self.qrels[qid]))
        names = PAGE_METRICS if self.page_level else DOC_METRICS
        m = mean_metrics(out, names)
        keep = ("hit@1", "hit@5", "hit@10", "mrr@10") if self.page_level else ("ndcg@10", "hit@1", "mrr@10")
        return {k: round(m[k], 4) for k in keep}, out

    def run(self, fn):
        ranked = []
        for i in range(len(self.texts)):
            cand, d, lx = self.cands[i]
            s = fn(i, cand, d, lx)
            ranked.append(cand[np.lexsort((cand, -s))])
        return self.score(ranked)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("queries")
    ap.add_argument("qrels")
    ap.add_argument("--dump", type=int, default=0)
    args = ap.parse_args()
    queries, qrels = read_queries(args.queries), read_qrels(args.qrels)
    with kbc.open(args.bundle) as kb:
        sw = Sweep(kb, queries, qrels)
        w = sw.weight
        base = lambda i, c, d, lx: (1 - w) * d + w * lx  # noqa: E731
        m, per = sw.run(base)
        print(json.dumps({"row": "base", **m}), flush=True)
        if args.dump:
            dump(sw, base, args.dump)
        # facets: question terms found in the candidate's document identity (the context before
        # " | ": path words and title) or in its section heading (after it), idf-weighted
        from kbc.format.bm25 import tokenize
        import math as _m
        n = sw.lex.n
        idf_cache = {}

        def idf(t):
            if t not in idf_cache:
                ti = sw.lex.lookup(t)
                df = len(sw.lex.postings_of(ti)[0]) if ti >= 0 else 0
                idf_cache[t] = _m.log(1.0 + (n - df + 0.5) / (df + 0.5)) if df else 0.0
            return idf_cache[t]

        ident_toks, head_toks = [], []
        for ctx in sw.contexts:
            a, _, b = ctx.partition(" | ")
            ident_toks.append(set(tokenize(a, sw.lex.options)))
            head_toks.append(set(tokenize(b, sw.lex.options)))
        qtoks = [set(sw.lex.query_terms(t)) for t in sw.texts]
        # document-level idf over identity token sets
        docs_ident = {}
        for c, toks in enumerate(ident_toks):
            docs_ident.setdefault(sw.owner[c], toks)
        D = len(docs_ident)
        ddf = defaultdict(int)
        for toks in docs_ident.values():
            for t in toks:
                ddf[t] += 1
        didf = {t: _m.log(1.0 + (D - v + 0.5) / (v + 0.5)) for t, v in ddf.items()}

        def feature(i, c, field, weights):
            vals = np.array([sum(weights(t) for t in qtoks[i] & field[int(x)]) for x in c])
            hi = vals.max() if len(vals) else 0
            return vals / hi if hi > 0 else vals

        for name, field, wf in (("ident chunk-idf", ident_toks, idf), ("ident doc-idf", ident_toks, lambda t: didf.get(t, 0.0)),
                                ("heading chunk-idf", head_toks, idf)):
            for lam in (0.05, 0.1, 0.2, 0.3):
                def f(i, c, d, lx, field=field, wf=wf, lam=lam):
                    return (1 - w) * d + w * lx + lam * feature(i, c, field, wf)
                print(json.dumps({"row": f"{name} lam={lam}", **sw.run(f)[0]}), flush=True)
        def share(i, c, field):  # the share of the question's idf mass found in the field: absolute, in [0, 1]
            total = sum(idf(t) for t in qtoks[i]) or 1.0
            return np.array([sum(idf(t) for t in qtoks[i] & field[int(x)]) / total for x in c])

        for l1 in (0.0, 0.1, 0.2, 0.3):
            for l2 in (0.1, 0.2, 0.3, 0.5, 0.8):
                def f(i, c, d, lx, l1=l1, l2=l2):
                    return (1 - w) * d + w * lx + l1 * share(i, c, ident_toks) + l2 * share(i, c, head_toks)
                print(json.dumps({"row": f"share ident {l1} + heading {l2}", **sw.run(f)[0]}), flush=True)
        for l1 in (0.05, 0.1):
            for l2 in (0.05, 0.1, 0.2):
                def f(i, c, d, lx, l1=l1, l2=l2):
                    return ((1 - w) * d + w * lx + l1 * feature(i, c, ident_toks, idf) + l2 * feature(i, c, head_toks, idf))
                print(json.dumps({"row": f"max-norm ident chunk-idf {l1} + heading {l2}", **sw.run(f)[0]}), flush=True)
        for l1 in (0.1, 0.2):
            for l2 in (0.05, 0.1, 0.2):
                def f(i, c, d, lx, l1=l1, l2=l2):
                    return ((1 - w) * d + w * lx + l1 * feature(i, c, ident_toks, lambda t: didf.get(t, 0.0))
                            + l2 * feature(i, c, head_toks, idf))
                print(json.dumps({"row": f"ident doc-idf {l1} + heading {l2}", **sw.run(f)[0]}), flush=True)
        # document mass: a document's score is the sum of its m best fused candidates
        for top_m in (3, 5):
            for lam in (0.1, 0.2, 0.3):
                def f(i, c, d, lx, top_m=top_m, lam=lam):
                    s = (1 - w) * d + w * lx
                    docs = sw.owner[c]
                    mass = defaultdict(list)
                    for j, dd in enumerate(docs):
                        mass[dd].append(s[j])
                    dm = {dd: sum(sorted(v, reverse=True)[:top_m]) for dd, v in mass.items()}
                    hi = max(dm.values())
                    return s + lam * np.array([dm[dd] / hi for dd in docs])
                print(json.dumps({"row": f"docmass m={top_m} lam={lam}", **sw.run(f)[0]}), flush=True)


def dump(sw, fn, n):
    for i in range(len(sw.texts)):
        cand, d, lx = sw.cands[i]
        s = fn(i, cand, d, lx)
        order = np.lexsort((cand, -s))
        qid = sw.qids[i]
        rel = sorted(k for k, g in sw.qrels[qid].items() if g > 0)
        print(f"\n## {qid} {sw.texts[i][:200]}\n   relevant: {rel}")
        first = None
        for r, j in enumerate(order[:40]):
            c = int(cand[j])
            names, a, b = sw.chunk_pages[c]
            stem = min(names, key=len)
            hit = any(f"{stem}:p{p}" in rel for p in range(a, b + 1))
            if hit and first is None:
                first = r
            if r < n or hit:
                print(f"   {r + 1:>3} {'*' if hit else ' '} {s[j]:.3f} d={d[j]:.2f} l={lx[j]:.2f} {stem}:p{a}-{b} "
                      f"[{sw.contexts[c][:90]}] {sw.kb.bundle.chunk(c)['text'][:80]!r}")
            if hit and r >= n:
                break


if __name__ == "__main__":
    main()
