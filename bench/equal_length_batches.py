"""Would batching texts of equal token length (no padding) keep vectors bit-identical, and pay?

    python bench/equal_length_batches.py [--model DIR] [--texts FILE.jsonl] [--n 3000] [--chars 600] [--batch 32]

kbc embeds one unpadded text per onnxruntime run, so that a vector depends only on its own text:
that is what makes a cached or Ray build byte-identical to a clean local one. Texts of the same
token length need no padding, so a batch of them computes the same rows; whether the floats come
out bit-identical depends on the runtime's kernels for the model's shapes. This prints, for the
model's fp32 graph on one session with one thread: CPU microseconds a text for single runs and
for equal-length batches, and whether every vector matched bit for bit (and the largest
difference where not). Texts: the first N records of a JSONL file ("text" field, cut to --chars
characters), default the tests' SciFact-like synthetic sentences when no file is given.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kbc.backends import load_embedder  # noqa: E402
from kbc.backends.model import read_spec, resolve_model  # noqa: E402


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def synthetic_texts(n: int) -> list[str]:
    rng = np.random.default_rng(0)
    words = ("revenue income cash flow segment margin protein cell gene expression patients trial "
             "ownership borrow lifetime trait module crate memory the of and in to a is for").split()
    return [" ".join(rng.choice(words, size=int(rng.integers(5, 60)))) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="a sentence-transformers model directory (default: kbc's)")
    ap.add_argument("--texts", default=None, help="JSONL with a 'text' field")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--chars", type=int, default=600)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    if a.texts:
        with open(a.texts, encoding="utf-8") as f:
            texts = [json.loads(line)["text"][:a.chars] for line, _ in zip(f, range(a.n))]
    else:
        texts = synthetic_texts(a.n)
    ref = resolve_model(a.model)
    spec = read_spec(ref)
    embedder = load_embedder(spec, ref, backend="onnx", device=None, sessions=1)
    embedder.embed_documents(texts[:10])  # the session exists before timing
    session, names = embedder.sessions[0], embedder.inputs
    prep = [spec.document_prompt + t for t in texts]
    encs = embedder.tokenizer.encode_batch([t.lower() for t in prep] if spec.do_lower_case else prep)

    by_length: dict[int, list[int]] = defaultdict(list)
    for i, e in enumerate(encs):
        by_length[len(e.ids)].append(i)

    def run_single() -> np.ndarray:
        return np.stack([embedder._run(session, e) for e in encs])

    def run_batched() -> np.ndarray:
        out = np.zeros((len(encs), spec.dim), dtype=np.float32)
        for idx in by_length.values():
            for j in range(0, len(idx), a.batch):
                rows = idx[j:j + a.batch]
                ids = np.asarray([encs[i].ids for i in rows], dtype=np.int64)
                feed = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                        "token_type_ids": np.asarray([encs[i].type_ids for i in rows], dtype=np.int64)}
                out[rows] = session.run(None, {k: feed[k] for k in names})[0]
        return out

    timings = {}
    for name, run in (("single", run_single), ("batched", run_batched)) * 2:  # the second round is timed
        c = cpu_seconds()
        result = run()
        timings[name] = ((cpu_seconds() - c) / len(texts) * 1e6, result)
    (single_us, single), (batched_us, batched) = timings["single"], timings["batched"]

    same = np.array_equal(single, batched)
    print(f"CPU: {cpu_name()}; model {spec.name} ({spec.dim}-d), {len(texts)} texts, "
          f"{len(by_length)} distinct token lengths, batches of up to {a.batch}")
    print(f"single runs:          {single_us:10.1f} CPU us a text")
    print(f"equal-length batches: {batched_us:10.1f} CPU us a text ({single_us / batched_us:.2f}x)")
    print(f"bit-identical: {same}" + ("" if same else f" (largest difference {np.abs(single - batched).max():.3g})"))


if __name__ == "__main__":
    main()
