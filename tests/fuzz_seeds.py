"""Seed bundles for libkbpack's fuzzer and the crafted set the verify tests share.

    .venv/bin/python tests/fuzz_seeds.py OUTDIR [--max-bytes N] [--extra BUNDLE ...]

writes every seed into OUTDIR (one `NNN-name.kbpack` file each) and prints how many. Nothing here is
committed as a binary: the seeds are made at run time, deterministically, from

- small real bundles written by kbc's own writer (`bases()`): float32 with a lexical index, probes
  and retrieval settings as kbc builds them, float16, int8 with binary codes, pages as the unit,
  a stored index of each FAISS type kbc's readers accept (HNSW, IVF,Flat, IVF,PQ, PQ), a query
  encoder, one with no optional part at all, one with its chunks by source (1.8);
- the crafted cases of tests/test_hostile_bundles.py applied to the first of them (`hostile()`), and
  tests/test_hostile_encoder.py's crafted graphs in the encoder bundle (`hostile_encoder()`);
- the schema cases of issue 27 (`schema_cases()`): each bundle breaks manifest.schema.json or the
  stored index in exactly one place, every checksum recomputed, as an attacker would;
- byte mutations of every section with checksums recomputed, as tests/test_fuzz_bundle.py makes
  them, from a fixed random seed (`mutations()`);
- any bundle named with --extra (a real `kbc build` output, say).

Seeds above --max-bytes (default 262144, the fuzzer's -max_len) are left out of OUTDIR: libFuzzer
would cut them anyway. `crafted_set()` gives them all, whatever their size, for the tests."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from forge import manifest_of, rebuild, resign, sections, set_path, with_json_section, with_manifest  # noqa: E402

TEXTS = ["The pump is oiled every spring.", "Pump 2 moves 1,577 litres an hour uphill.", "Gamma delta ÉPÉE 漢字",
         "How often is the pump oiled? Every spring, FY2018.", "Rotate the logs weekly; keep 10-K filings.",
         "Water the greenhouse twice a day in summer.", "epsilon", "The Supreme Court heard the case in 1954."]
DIM = 16


def _manifest(dim: int, n: int, *, factory: str = "Flat", stored: bool = False, params: dict | None = None) -> dict:
    """Every object manifest.schema.json requires, filled in as kbc fills it."""
    files = {"model.safetensors": "0" * 64, "tokenizer.json": "1" * 64}
    weights = hashlib.sha256("".join(f"{p}\0{h}\n" for p, h in sorted(files.items())).encode()).hexdigest()
    index = {"factory": factory, "metric": "inner_product", "stored": stored}
    if params:
        index["search_params"] = params
    return {
        "kbc_version": "0.1.0", "created": "2023-11-14T22:13:20Z",
        "embedder": {"name": "seed-model", "dim": dim, "max_seq_length": 64, "pooling": "cls", "normalize": True,
                     "similarity": "cosine", "query_prompt": "query: ", "document_prompt": "passage: ",
                     "do_lower_case": False, "weights_sha256": weights, "files": files,
                     "backend": "sentence-transformers", "precision": "float32", "runtime": {}},
        "chunking": {"unit": "tokens", "size": 64, "overlap": 8, "token_budget": 64},
        "index": index,
        "sources": [{"path": "docs/pumps.md", "kind": "markdown", "size": 120, "sha256": "2" * 64, "pages": 1,
                     "chunks": n - n // 2},
                    {"path": "docs/court.pdf", "kind": "pdf", "size": 900, "sha256": "3" * 64, "pages": 3,
                     "chunks": n // 2}],
        "skipped": [], "degraded": [],
        "counts": {"files": 2, "pages": 4, "chunks": n, "truncated_chunks": 0, "skipped_files": 0},
    }


def _probes(dim: int, rng) -> list[tuple[str, str, bytes]]:
    probes = [{"kind": k, "text": t, "tokens": 3 + i} for i, (k, t) in
              enumerate([("short", "pump"), ("at_token_limit", "oil " * 60), ("past_token_limit", "oil " * 70)])]
    meta = {"version": 1, "role": "query", "prompt": "query: ", "max_seq_length": 64, "threshold": 0.99,
            "probes": probes}
    vecs = rng.standard_normal((len(probes), dim)).astype("<f4")
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return [("probes", "json", json.dumps(meta).encode()), ("probe_vectors", "f32le", vecs.tobytes())]


def encoder_graph() -> bytes:
    """A minimal real ONNX encoder (opset 17) that both readers' graph walks pass: embedding = the mean
    over the sequence of a 32 x DIM table's rows for input_ids, times a Constant node's tensor (so a
    mutation can reach an initializer, a node attribute's tensor, value infos and the opset import)."""
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.random.default_rng(7).standard_normal((32, DIM)).astype(np.float32), "table")
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["rows"]),
             helper.make_node("ReduceMean", ["rows"], ["pooled"], axes=[1], keepdims=0),
             helper.make_node("Constant", [], ["scale"], value=helper.make_tensor("scale", TensorProto.FLOAT, [1], [0.5])),
             helper.make_node("Mul", ["pooled", "scale"], ["embedding"])]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
              for n in ("input_ids", "attention_mask")]
    output = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", DIM])
    model = helper.make_model(helper.make_graph(nodes, "sentence_embedding", inputs, [output], initializer=[table]),
                              opset_imports=[helper.make_opsetid("", 17)], producer_name="kbc-seed")
    model.ir_version = 8
    return model.SerializeToString()


def _write(tmp: Path, name: str, *, dtype="float32", binary=False, index: str | None = None, unit="chunk",
           encoder=False, lexical=True, probes=True, n=len(TEXTS), block=3, add_with_ids=None,
           attributes=False, layout="fixed") -> bytes:
    from kbc.format.bundle import write_bundle
    from kbc.format.bm25 import LexicalBuilder
    from kbc.format.retrieval import RetrievalSettings

    rng = np.random.default_rng(len(name))
    texts = [TEXTS[i % len(TEXTS)] + ("" if i < len(TEXTS) else f" ({i})") for i in range(n)]
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    # by source (1.8): each source's chunks in one run, as kbc writes them, so blocks end where a source does
    by_source = layout == "by-source"
    chunks = [{"text": t, "source": int(i >= n - n // 2) if by_source else i % 2, "seq": i // 2, "page_start": 1 + i % 3, "page_end": 1 + i % 3,
               "char_start": 0, "char_end": len(t), "tokens": 12, "context": "Pumps | Care" if i % 2 == 0 else ""}
              for i, t in enumerate(texts)]
    factory = index or "Flat"
    manifest = _manifest(DIM, n, factory=factory, stored=index is not None,
                         params={"efSearch": 16} if index and "HNSW" in index else {"nprobe": 2} if index and "IVF" in index else None)
    extra: list[tuple[str, str, bytes]] = []
    if lexical:
        b = LexicalBuilder()
        for c in chunks:
            b.add(c["text"], context=c["context"])
        meta, lex = b.finish()
        manifest["lexical"] = meta
        manifest["retrieval"] = {**RetrievalSettings().to_manifest(), "unit": unit}
        extra += lex
    if probes:
        extra += _probes(DIM, rng)
    if encoder:
        graph = encoder_graph()
        digest = hashlib.sha256(graph).hexdigest()
        manifest["embedder"]["runtime"] = {"graph_sha256": digest}
        manifest["encoder"] = {"format": "onnx", "graph": "encoder_graph", "tokenizer": "encoder_tokenizer",
                               "graph_sha256": digest, "precision": "float32", "inputs": ["input_ids", "attention_mask"],
                               "output": "embedding", "pooling": "cls", "normalized": True,
                               "query_prompt": "query: ", "do_lower_case": False, "max_seq_length": 64,
                               "truncation": "longest_first", "batching": "one", "opset": 17}
        extra += [("encoder_graph", "onnx", graph), ("encoder_tokenizer", "json", b'{"version": "1.0", "model": {}}')]
    if attributes:  # 1.7 (FORMAT.md §2.10): a row per chunk (the sources alternate), one key of each type
        from kbc.format.attributes import AttributeRows

        rows = AttributeRows()
        for i in range(n):
            rows.add(i, i % 2, {"product": ["x200", "x300", "x310"][i % 3], "year": 2019 + i % 6,
                                "tags": ["en", "de"][: 1 + i % 2], "released": f"20{20 + i % 5}-0{1 + i % 9}-1{i % 9}"})
        manifest["attributes"], data = rows.section(manifest["sources"])
        extra.append(("attributes", "json", data))
    blob = None
    if index:
        import faiss

        idx = faiss.index_factory(DIM, index, faiss.METRIC_INNER_PRODUCT)
        reps = 80 if "PQ" in index else 40  # 16 PQ centroids want 39 points each, or FAISS warns
        idx.train(np.tile(vecs, (reps, 1)) + rng.standard_normal((reps * n, DIM)).astype(np.float32) * 0.01)
        if add_with_ids is not None:
            idx.add_with_ids(vecs, np.asarray(add_with_ids, dtype=np.int64))
        else:
            idx.add(vecs)
        blob = faiss.serialize_index(idx).tobytes()
    path = write_bundle(tmp / f"{name}.kbpack", manifest=manifest, vectors=vecs, chunks=chunks, index=blob, dtype=dtype,
                        binary=binary, chunks_per_block=block, layout=layout, extra_sections=extra)
    return path.read_bytes()


def bases() -> dict[str, bytes]:
    """Small real bundles, each valid by the schema and by both readers."""
    import faiss

    faiss.cvar.distance_compute_blas_threshold = 20  # quiet and deterministic on tiny inputs
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        return {
            "float32-lexical-probes": _write(t, "a"),
            "float16": _write(t, "b", dtype="float16"),
            "int8-binary": _write(t, "c", dtype="int8", binary=True),
            "pages": _write(t, "d", unit="page", n=13, block=4),
            "hnsw": _write(t, "e", index="HNSW8"),
            "ivf": _write(t, "f", index="IVF2,Flat", lexical=False),
            "ivf-pq": _write(t, "j", index="IVF2,PQ4x4", lexical=False, probes=False),
            "pq": _write(t, "k", index="PQ4x4", lexical=False, probes=False),
            "encoder": _write(t, "g", encoder=True),
            "bare": _write(t, "h", lexical=False, probes=False, n=2, block=64),
            "empty": _write(t, "i", lexical=False, probes=False, n=0),
            "attributes": _write(t, "l", attributes=True, n=13, block=4),
            "by-source": _write(t, "m", layout="by-source", n=13, block=4),
        }


def _raw_manifest(data: bytes, pattern: str, replacement: str) -> bytes:
    """The manifest text edited as text: for numbers json.dumps cannot write (1e30 as an integer key's value)."""
    text = sections(data)["manifest"][1].decode()
    new, n = re.subn(pattern, replacement, text, count=1)
    assert n == 1, pattern
    return rebuild(data, {"manifest": new.encode()})


def _index_with_ids(ids_of) -> bytes:
    """An "ivf" or "idmap" base whose stored index names the ids `ids_of(n)`: genuine FAISS bytes,
    written by FAISS itself, only the ids forged."""
    with tempfile.TemporaryDirectory() as tmp:
        n = len(TEXTS)
        return _write(Path(tmp), "f", index="IVF2,Flat", lexical=False, add_with_ids=ids_of(n))


def _with_chunk_sources(data: bytes, source: int, field: str = "source") -> bytes:
    """The bundle rewritten with every chunk's `field` (its `source` index unless told) set to
    `source` (FORMAT.md 2.1)."""
    from kbc.format.bundle import Bundle, write_bundle

    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.kbpack", Path(tmp) / "out.kbpack"
        src.write_bytes(data)
        with Bundle(src) as old:
            manifest = {k: v for k, v in old.manifest.items() if k not in ("format", "vectors", "chunks")}
            chunks = [{**{k: v for k, v in c.items() if k != "id"}, field: source} for c in old.iter_chunks()]
            vectors = np.array(old.vectors)
        write_bundle(out, manifest=manifest, vectors=vectors, chunks=chunks)
        return out.read_bytes()


# name -> (forge(base bundles) -> bytes). Each breaks exactly one rule of manifest.schema.json
# (or, for the index, "a stored index can answer"): a conforming reader may misread it.
SCHEMA_CASES = {
    # issue 27's cases
    "probe threshold given as a string": lambda b: with_json_section(b["float32-lexical-probes"], "probes",
                                                                     set_path("threshold", "0.99")),
    "chunk count given as a float": lambda b: _raw_manifest(b["float32-lexical-probes"], r'"chunks":\{"block_size":(\d+),"compression":"zstd","count":(\d+)',
                                                            r'"chunks":{"block_size":\1,"compression":"zstd","count":\2.0'),
    "vector count given as a float": lambda b: _raw_manifest(b["float32-lexical-probes"], r'"count":(\d+),"dim"', r'"count":\1.0,"dim"'),
    "probe kind given as an object": lambda b: with_json_section(b["float32-lexical-probes"], "probes",
                                                                 set_path("probes.0.kind", {"short": True})),
    "source index a huge integer": lambda b: with_manifest(b["float32-lexical-probes"], set_path("sources.0.size", 10**30)),
    "block size of 1e30": lambda b: _raw_manifest(b["float32-lexical-probes"], r'"block_size":\d+', '"block_size":1e30'),
    "block size a huge integer": lambda b: _raw_manifest(b["float32-lexical-probes"], r'"block_size":\d+', '"block_size":' + "9" * 30),
    "ivf ids beyond the chunk count": lambda b: _index_with_ids(lambda n: np.arange(n) + 10**12),
    "ivf ids negative": lambda b: _index_with_ids(lambda n: -np.arange(n) - 2),
    # further schema rules
    "embedder name a number": lambda b: with_manifest(b["float32-lexical-probes"], set_path("embedder.name", 7)),
    "embedder normalize a string": lambda b: with_manifest(b["float32-lexical-probes"], set_path("embedder.normalize", "yes")),
    "embedder pooling unknown": lambda b: with_manifest(b["float32-lexical-probes"], set_path("embedder.pooling", "median")),
    "embedder max_seq_length zero": lambda b: with_manifest(b["float32-lexical-probes"], set_path("embedder.max_seq_length", 0)),
    "weights_sha256 not hex": lambda b: with_manifest(b["float32-lexical-probes"], set_path("embedder.weights_sha256", "x" * 64)),
    "created not a timestamp": lambda b: with_manifest(b["float32-lexical-probes"], set_path("created", "yesterday")),
    "kbc_version a list": lambda b: with_manifest(b["float32-lexical-probes"], set_path("kbc_version", ["0.1"])),
    "format name not kbpack": lambda b: with_manifest(b["float32-lexical-probes"], set_path("format.name", "zip")),
    "chunks encoding not msgpack": lambda b: with_manifest(b["float32-lexical-probes"], set_path("chunks.encoding", "cbor")),
    "counts value negative": lambda b: with_manifest(b["float32-lexical-probes"], set_path("counts.files", -1)),
    "counts value a float": lambda b: with_manifest(b["float32-lexical-probes"], set_path("counts.pages", 4.5)),
    "source path a number": lambda b: with_manifest(b["float32-lexical-probes"], set_path("sources.0.path", 12)),
    "source chunks negative": lambda b: with_manifest(b["float32-lexical-probes"], set_path("sources.1.chunks", -4)),
    "index stored a string": lambda b: with_manifest(b["float32-lexical-probes"], set_path("index.stored", "no")),
    "chunking overlap negative": lambda b: with_manifest(b["float32-lexical-probes"], set_path("chunking.overlap", -1)),
    "lexical k1 a string": lambda b: with_manifest(b["float32-lexical-probes"], set_path("lexical.k1", "1.2")),
    "lexical b above 1": lambda b: with_manifest(b["float32-lexical-probes"], set_path("lexical.b", 1.5)),
    "lexical terms a float": lambda b: with_manifest(b["float32-lexical-probes"], set_path("lexical.terms", 3.0)),
    "lexical stop_words a number": lambda b: with_manifest(b["float32-lexical-probes"], set_path("lexical.tokenizer.stop_words", 1)),
    "retrieval depth a float": lambda b: with_manifest(b["float32-lexical-probes"], set_path("retrieval.depth", 100.0)),
    "retrieval weight a string": lambda b: with_manifest(b["float32-lexical-probes"], set_path("retrieval.weight", "0.4")),
    "encoder inputs not strings": lambda b: with_manifest(b["encoder"], set_path("encoder.inputs", [1, 2])),
    "encoder opset a string": lambda b: with_manifest(b["encoder"], set_path("encoder.opset", "17")),
    "skipped entry without a reason": lambda b: with_manifest(b["float32-lexical-probes"], set_path("skipped", [{"path": "x"}])),
    "embedder object missing": lambda b: with_manifest(b["float32-lexical-probes"], lambda m: m.pop("embedder")),
    "counts object missing": lambda b: with_manifest(b["float32-lexical-probes"], lambda m: m.pop("counts")),
    "binary candidates a float": lambda b: with_manifest(b["int8-binary"], set_path("vectors.binary.candidates", 1000.0)),
    "probe tokens a string": lambda b: with_json_section(b["float32-lexical-probes"], "probes", set_path("probes.0.tokens", "3")),
    "probe max_seq_length a float": lambda b: with_json_section(b["float32-lexical-probes"], "probes",
                                                                set_path("max_seq_length", 64.0)),
    "probe prompt a number": lambda b: with_json_section(b["float32-lexical-probes"], "probes", set_path("prompt", 3)),
    # issue 43's cases: keys the schema no longer requires (readers do without them), integral floats
    # and counts past 2^64 (refused), chunk sources past the list (tolerated up to 2^63-1, FORMAT.md 2.1)
    "chunking object missing": lambda b: with_manifest(b["float32-lexical-probes"], lambda m: m.pop("chunking")),
    "index object missing": lambda b: with_manifest(b["float32-lexical-probes"], lambda m: m.pop("index")),
    "sources list missing": lambda b: with_manifest(b["bare"], lambda m: m.pop("sources")),
    "kbc_version missing": lambda b: with_manifest(b["float32-lexical-probes"], lambda m: m.pop("kbc_version")),
    "counts files missing": lambda b: with_manifest(b["float32-lexical-probes"], lambda m: m["counts"].pop("files")),
    "counts value an integral float": lambda b: with_manifest(b["float32-lexical-probes"], set_path("counts.files", 2.0)),
    "counts value past 2^64": lambda b: with_manifest(b["float32-lexical-probes"], set_path("counts.pages", 2**64)),
    "source chunks an integral float": lambda b: with_manifest(b["float32-lexical-probes"], set_path("sources.0.chunks", 4.0)),
    "source without a sha256": lambda b: with_manifest(b["float32-lexical-probes"], lambda m: m["sources"][0].pop("sha256")),
    "kbc_version a number": lambda b: with_manifest(b["float32-lexical-probes"], set_path("kbc_version", 1)),
    "chunk source index 2^64-1": lambda b: _with_chunk_sources(b["bare"], 2**64 - 1),
    "chunk source index past the sources": lambda b: _with_chunk_sources(b["bare"], 2),
    # issue 43 item 6b: int fields past int64 (libkbpack saturated them to 2^63-1; now refused by both)
    "chunk source index 2^63": lambda b: _with_chunk_sources(b["bare"], 2**63),
    "chunk source index 2^63-1": lambda b: _with_chunk_sources(b["bare"], 2**63 - 1),
    "chunk page_start 2^63": lambda b: _with_chunk_sources(b["bare"], 2**63, "page_start"),
    "chunk page_end 2^64-1": lambda b: _with_chunk_sources(b["bare"], 2**64 - 1, "page_end"),
    # one block whatever the count, so the offsets agree: Python verified it, libkbpack refused it
    "block size 10^30 over one block": lambda b: _raw_manifest(b["bare"], r'"block_size":\d+', '"block_size":1' + "0" * 30),
}


def schema_cases(base: dict[str, bytes] | None = None) -> dict[str, bytes]:
    base = base or bases()
    return {name: forge(base) for name, forge in SCHEMA_CASES.items()}


def hostile(genuine: bytes) -> dict[str, bytes]:
    """tests/test_hostile_bundles.py's cases on `genuine` (a bundle with an index, a lexical index and
    retrieval settings), with the exit code `inspect --verify` gives each there."""
    import test_hostile_bundles as h

    return {name: forge(genuine) for name, (forge, _) in h.CASES.items()}


def hostile_attributes(data: bytes) -> dict[str, bytes]:
    """tests/test_attributes.py's crafted attribute sections and manifest objects (FORMAT.md §2.10) on
    `data` (a bundle with attributes), every checksum recomputed."""
    import test_attributes as a

    return {name: forge(data) for name, (forge, _) in a.CASES.items()}


def with_graph(data: bytes, graph: bytes) -> bytes:
    """`data` (a bundle with an encoder) with its ONNX graph replaced and the graph's SHA-256
    recomputed into both manifest records, as an attacker would."""
    m = manifest_of(data)
    m["encoder"]["graph_sha256"] = m["embedder"]["runtime"]["graph_sha256"] = hashlib.sha256(graph).hexdigest()
    return rebuild(data, {"encoder_graph": graph, "manifest": json.dumps(m).encode()})


def hostile_encoder(data: bytes, n_graph_mutations: int = 24) -> dict[str, bytes]:
    """tests/test_hostile_encoder.py's crafted graphs (external data, in an initializer or a Constant,
    a custom-op domain, a disallowed op, an oversized initializer, a subgraph), and the graphs it
    runs that the walk passes, and byte mutations of `data`'s own graph, each in `data`'s encoder with
    every checksum recomputed."""
    import test_hostile_encoder as h

    out = {name: with_graph(data, make()) for name, (make, _) in h.GRAPHS.items()}
    out.update({f"passes the walk, {kind}": with_graph(data, h._runtime_graph(kind))
                for kind in ("unloadable", "allocates 8 GiB", "wrong shape")})
    import onnx

    graph = bytes(sections(data)["encoder_graph"][1])
    weights = [bytes(t.raw_data) for t in onnx.load_from_string(graph).graph.initializer]
    spans = [(graph.find(w), len(w)) for w in weights if w]
    headers = [i for i in range(len(graph)) if not any(a <= i < a + n for a, n in spans)]  # not weights
    rng = np.random.default_rng(27)
    for i in range(n_graph_mutations):  # the seed's graph with 1 to 4 header bytes replaced, its checksums recomputed
        buf = bytearray(graph)
        for _ in range(rng.integers(1, 5)):
            buf[headers[rng.integers(len(headers))]] = rng.integers(256)
        out[f"mutated graph {i}"] = with_graph(data, bytes(buf))
    return out


def mutations(data: bytes, n: int, seed: int = 0) -> list[bytes]:
    """n copies of `data`, each with 1 to 8 bytes of one section replaced and every checksum
    recomputed (test_fuzz_bundle's mutation, from a fixed seed)."""
    import struct

    count, table_offset = struct.unpack_from("<IQ", data, 12)
    spans = []
    for i in range(count):
        offset, length = struct.unpack_from("<QQ", data, table_offset + 128 * i + 48)
        if length:
            spans.append((offset, length))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        offset, length = spans[rng.integers(len(spans))]
        buf = bytearray(data)
        for _ in range(rng.integers(1, 9)):
            buf[offset + rng.integers(length)] = rng.integers(256)
        out.append(resign(bytes(buf)))
    return out


def crafted_set(extra: dict[str, bytes] | None = None, n_mutations: int = 12) -> dict[str, bytes]:
    """Every seed, by name: bases, schema cases, hostile cases on the HNSW base, crafted encoder graphs,
    mutations of each base."""
    base = bases()
    out = {f"base {k}": v for k, v in base.items()}
    out.update({f"schema {k}": v for k, v in schema_cases(base).items()})
    out.update({f"hostile {k}": v for k, v in hostile(base["hnsw"]).items()})
    out.update({f"hostile encoder {k}": v for k, v in hostile_encoder(base["encoder"]).items()})
    out.update({f"hostile attributes {k}": v for k, v in hostile_attributes(base["attributes"]).items()})
    for k, v in list(base.items()) + list((extra or {}).items()):
        if k in (extra or {}):
            out[f"extra {k}"] = v
        if len(v) > 128:
            for i, m in enumerate(mutations(v, n_mutations, seed=len(k))):
                out[f"mutated {k} {i}"] = m
    return out


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60]


def write_seeds(folder: Path, seeds: dict[str, bytes], max_bytes: int | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (name, data) in enumerate(seeds.items()):
        if max_bytes is not None and len(data) > max_bytes:
            continue
        p = folder / f"{i:03d}-{_slug(name)}.kbpack"
        p.write_bytes(data)
        paths.append(p)
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write libkbpack's fuzz seed corpus (see this file's docstring).")
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--max-bytes", type=int, default=262144, help="leave out seeds larger than this (the fuzzer's -max_len)")
    ap.add_argument("--extra", type=Path, nargs="*", default=[], help="real bundles to add, with their mutations")
    ap.add_argument("--mutations", type=int, default=12, help="mutated copies of each base bundle")
    a = ap.parse_args(argv)
    extra = {p.name: p.read_bytes() for p in a.extra}
    paths = write_seeds(a.outdir, crafted_set(extra, a.mutations), a.max_bytes)
    print(f"{len(paths)} seeds in {a.outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
