"""Fusion rules for issue 42, measured offline over each question's two candidate lists (the numbers
in docs/retrieval-quality.md, "Per question").

    python bench/fusion_rules.py dump BUNDLE QUERIES QRELS OUT.json    # once per set: both lists, judged
    python bench/fusion_rules.py loso NAME=OUT.json NAME=OUT.json ...   # every rule on every set, and the
                                                                        # rule chosen leaving each set out

A dump holds, per evaluated question, the dense and lexical lists (200 deep), every candidate's exact
scores in both, the context match and each candidate's relevance; the rules re-rank them as a device
would from the manifest. JSON in, JSON out: nothing here unpickles anything.
"""
import json
import math
import sys
from itertools import product

import numpy as np

SETS = {}


def save(path, data):
    def plain(x):
        if isinstance(x, np.ndarray):
            return {"__array__": x.tolist(), "dtype": str(x.dtype)}
        if isinstance(x, (set, frozenset)):
            return {"__set__": [plain(v) for v in sorted(x)]}
        if isinstance(x, tuple):
            return [plain(v) for v in x]
        if isinstance(x, (np.integer,)):
            return int(x)
        if isinstance(x, (np.floating,)):
            return float(x)
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, list):
            return [plain(v) for v in x]
        return x
    with open(path, "w", encoding="utf-8") as f:
        json.dump(plain(data), f)


def restore(path):
    def back(x):
        if isinstance(x, dict) and "__array__" in x:
            return np.array(x["__array__"], dtype=x["dtype"])
        if isinstance(x, dict) and "__set__" in x:
            return set(back(v) for v in x["__set__"])
        if isinstance(x, dict):
            return {k: back(v) for k, v in x.items()}
        if isinstance(x, list):
            return [back(v) for v in x]
        return x
    with open(path, encoding="utf-8") as f:
        data = back(json.load(f))
    for r in data["rows"]:  # the context match is a pair of arrays, or None
        if r.get("ctx") is not None:
            r["ctx"] = tuple(r["ctx"])
    return data


def dump(bundle, queries_path, qrels_path, out):
    from kbc.format.bm25 import top_k
    from kbc.query.knowledge_base import KnowledgeBase
    from kbc.tools import evaluate as E

    kb = KnowledgeBase(bundle)
    queries, qrels = E.read_queries(queries_path), E.read_qrels(qrels_path)
    owner, doc_ids = E.chunk_documents(kb.bundle)
    page_level = E.page_judgements(qrels, set(doc_ids))
    chunk_pages = E._chunk_pages(kb.bundle) if page_level else None
    evaluated = E.evaluated_queries(queries, qrels)
    texts = [queries[q] for q in evaluated]
    qv = np.concatenate([kb.embed_queries(texts[i:i + 256]) for i in range(0, len(texts), 256)])
    r = kb.retriever
    depth = r.settings.depth
    rows = []
    for i, (qid, text) in enumerate(zip(evaluated, texts)):
        ds, di = r.searcher.search(qv[i:i + 1], 200)
        ds, di = ds[0][di[0] >= 0].astype(np.float64), di[0][di[0] >= 0].astype(np.int64)
        lex = r.lexical.scores(text)
        ls, li = top_k(lex, 200)
        cand = np.union1d(di[:depth], li[:depth])
        cd = r.searcher.score(qv[i], cand).astype(np.float64)
        cl = lex[cand]
        ctx = r._context_match(text, cand)
        if page_level:
            rel = {}
            for d, g in qrels[qid].items():
                m = E.PAGE_ID.match(d)
                if g > 0 and m:
                    rel.setdefault(m["doc"], set()).add(int(m["page"]))
            judge = lambda ids: np.array([E._page_relevant(chunk_pages[c], rel) for c in ids], dtype=bool)
            docs = np.array([owner[c] for c in cand])
        else:
            relevant_docs = {d for d, g in qrels[qid].items() if g > 0}
            docs = np.array([owner[c] for c in cand])
            judge = lambda ids: np.array([doc_ids[owner[c]] in relevant_docs for c in ids], dtype=bool)
        relevant = judge(cand)
        # the documents that answer (their every chunk is "the answer" when the split removes them)
        rows.append(dict(qid=qid, dense_ids=di, dense_scores=ds, lex_ids=li, lex_scores=ls, cand=cand, cand_dense=cd,
                         cand_lex=cl, ctx=ctx, relevant=relevant, dense_rel=judge(di), lex_rel=judge(li),
                         dense_docs=np.array([owner[c] for c in di]), lex_docs=np.array([owner[c] for c in li]),
                         docs=docs, n_relevant_docs=len([1 for g in qrels[qid].values() if g > 0])))
    save(out, dict(rows=rows, page_level=page_level))
    print(out, len(rows), "page" if page_level else "doc")



def load(name, path):
    SETS[name] = restore(path)


def norm_tmm(x, ref):
    hi = float(ref.max()) if len(ref) else 0.0
    return np.maximum(x, 0) / hi if hi > 0 else np.zeros_like(x)


def features(r, depth=100):
    d, l = r["dense_scores"][:depth], r["lex_scores"][:depth]
    f = {}
    f["d1"] = d[0] if len(d) else 0.0
    f["dgap"] = (d[0] - d[1]) / d[0] if len(d) > 1 and d[0] > 0 else 0.0
    f["dgap5"] = (d[0] - d[min(4, len(d) - 1)]) / d[0] if len(d) > 1 and d[0] > 0 else 0.0
    f["lgap"] = (l[0] - l[1]) / l[0] if len(l) > 1 and l[0] > 0 else (1.0 if len(l) == 1 else 0.0)
    f["lgap5"] = (l[0] - l[min(4, len(l) - 1)]) / l[0] if len(l) > 1 and l[0] > 0 else (1.0 if len(l) == 1 else 0.0)
    f["agree"] = float(len(l) and len(r["dense_ids"]) and r["dense_ids"][0] == r["lex_ids"][0])
    f["overlap10"] = len(set(r["dense_ids"][:10]) & set(r["lex_ids"][:10])) / 10.0
    return f


def fused(r, w, pw=0.1, hw=0.05, depth=100):
    if len(r["lex_ids"]) == 0:
        return r["cand_dense"].copy()
    d = norm_tmm(r["cand_dense"], r["dense_scores"][:depth])
    lx = norm_tmm(r["cand_lex"], r["lex_scores"][:depth])
    s = (1 - w) * d + w * lx
    if r["ctx"] is not None:
        s = s + pw * r["ctx"][0] + hw * r["ctx"][1]
    return s


def ranking(r, scores):
    order = np.lexsort((r["cand"], -scores))
    return order


def metrics(r, order, page_level):
    rel = r["relevant"][order]
    if page_level:
        first = next((i + 1 for i, x in enumerate(rel[:20]) if x), None)
        return {"hit@1": float(bool(rel[:1].any())), "hit@5": float(bool(rel[:5].any())),
                "mrr@10": 1.0 / first if first and first <= 10 else 0.0, "ndcg@10": float("nan")}
    docs = r["docs"][order]
    seen, ranked_rel = set(), []
    for dd, x in zip(docs, rel):
        if dd in seen:
            continue
        seen.add(dd)
        ranked_rel.append(bool(x))
        if len(ranked_rel) >= 10:
            break
    first = next((i + 1 for i, x in enumerate(ranked_rel) if x), None)
    dcg = sum(1 / math.log2(i + 2) for i, x in enumerate(ranked_rel) if x)
    idcg = sum(1 / math.log2(i + 2) for i in range(min(10, r["n_relevant_docs"])))
    return {"hit@1": float(bool(ranked_rel[:1] and ranked_rel[0])), "hit@5": float(any(ranked_rel[:5])),
            "mrr@10": 1.0 / first if first else 0.0, "ndcg@10": dcg / idcg if idcg else 0.0}


def evaluate(name, rule):
    s = SETS[name]
    ms = [metrics(r, ranking(r, rule(r)), s["page_level"]) for r in s["rows"]]
    return {k: float(np.mean([m[k] for m in ms])) for k in ms[0]}


def dense_rule(r):
    return r["cand_dense"]


def fixed(w=0.4, pw=0.1, hw=0.05):
    return lambda r: fused(r, w, pw, hw)


# ---- rule families: each a function of parameters returning a rule
def fam_fixed():
    for w in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
        yield f"fixed w={w}", fixed(w)


def fam_dense_gap():
    """lexical weight w unless the dense list is decisive (relative gap of its first over its second >= t): then wd."""
    for w, wd, t in product((0.3, 0.4, 0.5), (0.0, 0.1, 0.2), (0.01, 0.02, 0.03, 0.05, 0.08)):
        def rule(r, w=w, wd=wd, t=t):
            return fused(r, wd if features(r)["dgap"] >= t else w)
        yield f"densegap w={w} wd={wd} t={t}", rule


def fam_both_gaps():
    """weight from how decisive each list is: w_q = w * (c + lgap) / (c + lgap + a * dgap)."""
    for w, a, c in product((0.4, 0.5, 0.6), (2, 5, 10, 20), (0.02, 0.05, 0.1)):
        def rule(r, w=w, a=a, c=c):
            f = features(r)
            wq = w * (c + f["lgap"]) / (c + f["lgap"] + a * f["dgap"])
            return fused(r, wq)
        yield f"bothgaps w={w} a={a} c={c}", rule


def fam_keep_dense_first():
    """today's fusion, but the dense first hit stays first when its gap >= t and the lexical list is not decisive (lgap < u)."""
    for w, t, u in product((0.3, 0.4), (0.01, 0.02, 0.03, 0.05), (0.1, 0.2, 0.3, 1.01)):
        def rule(r, w=w, t=t, u=u):
            s = fused(r, w)
            f = features(r)
            if len(r["dense_ids"]) and f["dgap"] >= t and f["lgap"] < u:
                top = np.searchsorted(r["cand"], r["dense_ids"][0])
                s = s.copy()
                s[top] = s.max() + 1.0
            return s
        yield f"keepdense w={w} t={t} u={u}", rule


FAMILIES = {"fixed": fam_fixed, "densegap": fam_dense_gap, "bothgaps": fam_both_gaps, "keepdense": fam_keep_dense_first}


def objective(m):
    vals = [m["hit@1"], m["mrr@10"]] + ([] if math.isnan(m["ndcg@10"]) else [m["ndcg@10"]])
    return float(np.mean(vals))


def stats(x):
    x = np.asarray(x, dtype=np.float64)
    if len(x) == 0:
        return 0.0, 1.0
    mu = float(x.mean())
    sd = float(x.std())
    return mu, sd


def dbsf(r, w, pw=0.1, hw=0.05, depth=100, width=3.0):
    """distribution-based: each list scaled by (s - (mu - width sd)) / (2 width sd) over its own top depth."""
    if len(r["lex_ids"]) == 0:
        return r["cand_dense"].copy()
    out = []
    for cand, ref in ((r["cand_dense"], r["dense_scores"][:depth]), (r["cand_lex"], r["lex_scores"][:depth])):
        mu, sd = stats(ref)
        if sd <= 0:
            out.append(np.zeros_like(cand))
        else:
            out.append(np.clip((cand - (mu - width * sd)) / (2 * width * sd), 0, 1))
    s = (1 - w) * out[0] + w * out[1]
    if r["ctx"] is not None:
        s = s + pw * r["ctx"][0] + hw * r["ctx"][1]
    return s


def zmix(r, w, pw=0.1, hw=0.05, depth=100):
    """tmm with each list's share of w scaled by its standout: kbc's own rule (question_weight,
    FORMAT.md 2.5.1), so the rule measured here is the one bundles record."""
    from kbc.search.fusion import question_weight

    if len(r["lex_ids"]) == 0:
        return r["cand_dense"].copy()
    return fused(r, question_weight(w, r["dense_scores"][:depth], r["lex_scores"][:depth]), pw, hw)


def fam_dbsf():
    for w, pw, hw, width in product((0.3, 0.4, 0.5), (0.05, 0.1), (0.05, 0.1), (2.0, 3.0)):
        yield f"dbsf w={w} pw={pw} hw={hw} width={width}", (lambda r, w=w, pw=pw, hw=hw, width=width: dbsf(r, w, pw, hw, width=width))


def fam_zmix():
    for w in (0.3, 0.4, 0.5, 0.6):
        yield f"zmix w={w}", (lambda r, w=w: zmix(r, w))


def fam_rrf():
    for w, k in product((0.3, 0.4, 0.5), (10, 30, 60)):
        def rule(r, w=w, k=k):
            if len(r["lex_ids"]) == 0:
                return r["cand_dense"].copy()
            s = np.zeros(len(r["cand"]))
            for ids, share in ((r["dense_ids"][:100], 1 - w), (r["lex_ids"][:100], w)):
                pos = np.searchsorted(r["cand"], ids)
                s[pos] += share / (k + np.arange(1, len(ids) + 1))
            return s
        yield f"rrf w={w} k={k}", rule


def dense_only():
    yield "dense", dense_rule


FAMS = dict(FAMILIES, dbsf=fam_dbsf, zmix=fam_zmix, rrf=fam_rrf, dense=dense_only)

def fam_keep_agreed():
    """today's fusion, but the dense first hit goes first when the lexical list also ranks it in its top L
    and its dense margin over the second is >= t (relative)."""
    for w, L, t in product((0.4,), (1, 2, 3, 5, 10), (0.0, 0.01, 0.02, 0.03)):
        def rule(r, w=w, L=L, t=t):
            s = fused(r, w)
            if len(r["dense_ids"]) and len(r["lex_ids"]) and features(r)["dgap"] >= t and r["dense_ids"][0] in r["lex_ids"][:L]:
                top = np.searchsorted(r["cand"], r["dense_ids"][0])
                s = s.copy(); s[top] = s.max() + 1.0
            return s
        yield f"keepagreed w={w} L={L} t={t}", rule


FAMS["keepagreed"] = fam_keep_agreed



def zmix_keep(r, w, L, t):
    s = zmix(r, w)
    if len(r["dense_ids"]) and len(r["lex_ids"]) and features(r)["dgap"] >= t and r["dense_ids"][0] in r["lex_ids"][:L]:
        top = np.searchsorted(r["cand"], r["dense_ids"][0])
        s = s.copy(); s[top] = s.max() + 1.0
    return s


def fam_zmix_keep():
    for w, L, t in product((0.4, 0.5), (2, 3, 5), (0.02, 0.03, 0.05)):
        yield f"zmixkeep w={w} L={L} t={t}", (lambda r, w=w, L=L, t=t: zmix_keep(r, w, L, t))


FAMS["zmixkeep"] = fam_zmix_keep


def agreed(r, L, t):
    return len(r["dense_ids"]) and len(r["lex_ids"]) and features(r)["dgap"] >= t and r["dense_ids"][0] in r["lex_ids"][:L]


def fam_zmix_switch():
    for w, L, t in product((0.4,), (2, 3, 5), (0.0, 0.02, 0.03)):
        yield f"zmixswitch w={w} L={L} t={t}", (lambda r, w=w, L=L, t=t: fused(r, 0.0, 0.0, 0.0) if agreed(r, L, t) else zmix(r, w))
    for w, L, t in product((0.4,), (2, 3, 5), (0.0, 0.02, 0.03)):
        yield f"fixedswitch w={w} L={L} t={t}", (lambda r, w=w, L=L, t=t: fused(r, 0.0, 0.0, 0.0) if agreed(r, L, t) else fused(r, w))


FAMS["zmixswitch"] = fam_zmix_switch



def report():
    names = list(SETS)
    cands = [c for fam in FAMS.values() for c in fam()]
    table = {lab: {n: evaluate(n, rule) for n in names} for lab, rule in cands}
    today, dense = table["fixed w=0.4"], table["dense"]
    def passes(lab, n):
        m, q = table[lab][n], len(SETS[n]["rows"])
        keys = ["hit@1", "mrr@10"] + ([] if np.isnan(m["ndcg@10"]) else ["ndcg@10"])
        return all(m[k] >= max(today[n][k], dense[n][k]) - 1.0 / q - 1e-9 for k in keys)
    def fmt(lab, n):
        m = table[lab][n]
        return f"h1 {m['hit@1']:.3f} mrr {m['mrr@10']:.3f}" + ("" if np.isnan(m['ndcg@10']) else f" nd {m['ndcg@10']:.4f}") + f" h5 {m['hit@5']:.3f}" + (" ✓" if passes(lab, n) else " ✗")
    print("sets:", {n: len(SETS[n]["rows"]) for n in names})
    for lab in ("fixed w=0.4", "dense"):
        print(f"{lab:36s}", " | ".join(f"{n} {fmt(lab, n)}" for n in names))
    def choose(train):
        return max(table, key=lambda lab: (sum(passes(lab, n) for n in train), np.mean([objective(table[lab][n]) for n in train])))
    print("--- chosen on all sets:", choose(names), " | ".join(f"{n} {fmt(choose(names), n)}" for n in names))
    for held in names:
        lab = choose([n for n in names if n != held])
        print(f"--- without {held}: {lab:36s} -> {held} {fmt(lab, held)}")
    print("--- passing every set:")
    for lab in table:
        if all(passes(lab, n) for n in names):
            print(f"{lab:36s}", " | ".join(f"{n} {fmt(lab, n)}" for n in names))
    print("=== objective: every question counts once (micro-average of hit@1, MRR@10, and nDCG@10 where judged by document)")
    def micro(lab, train):
        tot = cnt = 0.0
        for n in train:
            q = len(SETS[n]["rows"])
            tot += objective(table[lab][n]) * q; cnt += q
        return tot / cnt
    def choose2(train):
        return max(table, key=lambda lab: micro(lab, train))
    print("--- chosen on all sets:", choose2(names), " | ".join(f"{n} {fmt(choose2(names), n)}" for n in names))
    for held in names:
        lab = choose2([n for n in names if n != held])
        print(f"--- without {held}: {lab:36s} -> {held} {fmt(lab, held)}")


if __name__ == "__main__":
    if len(sys.argv) >= 6 and sys.argv[1] == "dump":
        dump(*sys.argv[2:6])
    elif len(sys.argv) >= 3 and sys.argv[1] == "loso":
        for arg in sys.argv[2:]:
            name, path = arg.split("=", 1)
            load(name, path)
        report()
    else:
        raise SystemExit(__doc__)
