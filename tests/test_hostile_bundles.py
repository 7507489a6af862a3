"""Crafted bundles, one per class of attack, each with every checksum recomputed (forge.rebuild):
whatever a bundle holds, every command that reads it ends in bounded time and memory with exit 0
(the bundle was usable, and nothing it holds reached the terminal unescaped) or exit 3 and one line
naming what is wrong, and the bundle file is left as it was.

Each command runs in a child process with an address-space limit (RLIMIT_AS, `ulimit -v`) and a
timeout, so a reader that allocates what a manifest asks for, or loops, fails the test instead of
the machine."""

from __future__ import annotations

import json
import subprocess
import sys

import msgpack
import numpy as np
import pytest
import zstandard

from conftest import ROOT, with_address_space
from forge import manifest_of, rebuild, sections, set_path, with_manifest

MEMORY_LIMIT = 1536 << 20  # a normal `kbc query` with onnxruntime runs under 1 GiB of address space
TIME_LIMIT_S = 90


def _refuse(literal: str):
    raise AssertionError(f"exported {literal}, which standard JSON parsers reject")


def _bounded(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(with_address_space(MEMORY_LIMIT, [sys.executable, "-m", "kbc", *args]), capture_output=True,
                          text=True, cwd=ROOT, timeout=TIME_LIMIT_S)


def _chunk_block(data: bytes, chunks: list) -> bytes:
    frame = zstandard.ZstdCompressor().compress(msgpack.packb(chunks))
    m = manifest_of(data)
    m["vectors"]["count"] = m["chunks"]["count"] = len(chunks)
    m.pop("lexical"), m.pop("retrieval"), m.pop("index")  # dense search over the new vectors only
    m.pop("attributes", None)  # its rows ran over the old chunks (FORMAT.md §2.10)
    dim = m["vectors"]["dim"]
    vecs = np.zeros((len(chunks), dim), np.float32)
    vecs[:, 0] = 1
    return rebuild(data, {"chunks": frame, "chunk_offsets": np.array([0, len(frame)], "<u8").tobytes(),
                          "vectors": vecs.tobytes(), "manifest": json.dumps(m).encode()},
                   drop=("index", "attributes") + tuple(n for n in sections(data) if n.startswith("lex_")))


def by_source(data: bytes, *, blocks=None, table=None, with_table: bool = True) -> bytes:
    """`data` laid out again by source (FORMAT.md §2.1, 1.8), as BundleWriter(layout="by-source") lays it
    out: a block per run of one source's chunks, at most block_size long, records without `source`, the
    `chunk_blocks` table of (first chunk id, source). Then `blocks` (the list of each block's records)
    and `table` (its n x 2 u64 array) edited as an attacker would, every checksum recomputed."""
    import tempfile
    from pathlib import Path

    from kbc.format.bundle import Bundle

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.kbpack"
        path.write_bytes(data)
        with Bundle(path) as b:
            chunks = [{k: v for k, v in c.items() if k != "id"} for c in b.iter_chunks()]
            block_size = b.block_size
    groups: list[tuple[int, int, list]] = []
    for i, c in enumerate(chunks):
        source = c.pop("source")
        if groups and groups[-1][1] == source and len(groups[-1][2]) < block_size:
            groups[-1][2].append(c)
        else:
            groups.append((i, source, [c]))
    records = [g[2] for g in groups]
    pairs = np.array([[g[0], g[1]] for g in groups], dtype="<u8").reshape(-1, 2)
    records = blocks(records) if blocks else records
    pairs = np.asarray(table(pairs) if table else pairs, dtype="<u8")
    cctx = zstandard.ZstdCompressor(level=10, write_content_size=True, write_checksum=False)
    frames = [cctx.compress(msgpack.packb(r, use_bin_type=True)) for r in records]
    offsets = np.cumsum([0] + [len(f) for f in frames]).astype("<u8")
    return rebuild(data, {"chunks": b"".join(frames), "chunk_offsets": offsets.tobytes()},
                   encodings={"chunks": "zstd-msgpack-src"},
                   add={"chunk_blocks": ("u64le", pairs.tobytes())} if with_table else None)


def lexical_lengths(data: bytes, edit=None) -> bytes:
    """`data` with both lexical offset arrays stored as lengths (FORMAT.md §2.4, 1.8: a 0, then each
    entry's length), `edit` applied to each lengths array, every checksum recomputed."""
    found = sections(data)
    replace = {}
    for name in ("lex_vocab_offsets", "lex_postings_offsets"):
        lengths = np.diff(np.frombuffer(found[name][1], "<u4"), prepend=np.uint32(0)).astype("<u4")
        replace[name] = np.asarray(edit(lengths) if edit else lengths, dtype="<u4").tobytes()
    return rebuild(data, replace, encodings={name: "u32le-lengths" for name in replace})


def _set(array, at, value):
    array = array.copy()
    array[at] = value
    return array


def _faiss_flat_claiming(ntotal: int, dim: int) -> bytes:
    import faiss

    raw = bytearray(faiss.serialize_index(faiss.IndexFlatIP(dim)).tobytes())
    # IndexFlat layout: fourcc, d (i32), ntotal (i64), ...; then the codes vector's u64 length
    raw[8:16] = ntotal.to_bytes(8, "little")
    raw[-8:] = (ntotal * dim * 4).to_bytes(8, "little")
    return bytes(raw)


def _deeply_nested(data: bytes) -> bytes:
    text = sections(data)["manifest"][1]
    return rebuild(data, {"manifest": text[:-1] + b', "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"})


# name -> (forge(genuine bytes) -> bytes, the exit code of `inspect --verify`; other commands give it or 0)
CASES = {
    "manifest nested 100k deep": (_deeply_nested, 3),
    "400-digit integer for the vector count": (
        lambda d: rebuild(d, {"manifest": sections(d)["manifest"][1].replace(
            b'"count":', b'"count":' + b"9" * 400 + b',"was":', 1)}), 3),
    "embedder dim disagrees with the vectors": (lambda d: with_manifest(d, set_path("embedder.dim", 7)), 3),
    "sources is a string": (lambda d: with_manifest(d, set_path("sources", "everything")), 3),
    # informative objects a reader does not need: the bundle stays usable, exactly (flat) searched
    "chunking and index objects missing": (
        lambda d: with_manifest(d, lambda m: (m.pop("chunking"), m.pop("index"))), 0),
    "30 MB query prompt": (lambda d: with_manifest(d, set_path("embedder.query_prompt", "x" * 30_000_000)), 3),
    "absurd efSearch": (lambda d: with_manifest(d, set_path("index.search_params", {"efSearch": 10**12})), 3),
    "index handed over as another encoding": (lambda d: rebuild(d, encodings={"index": "pickle"}), 3),
    "FAISS index declaring 2^40 vectors": (
        lambda d: rebuild(d, {"index": _faiss_flat_claiming(1 << 40, manifest_of(d)["vectors"]["dim"])}), 3),
    "index of another size": (
        lambda d: rebuild(d, {"index": _faiss_flat_claiming(0, manifest_of(d)["vectors"]["dim"])}), 3),
    "chunk block of five million tiny objects": (
        lambda d: _chunk_block(d, [{"text": "a", "junk": [0] * 5_000_000}]), 3),
    "vectors dtype is a list": (lambda d: with_manifest(d, set_path("vectors.dtype", ["float32"])), 3),
    "a msgpack timestamp in a chunk field": (
        lambda d: _chunk_block(d, [{"text": "a", "when": msgpack.Timestamp(0, 0)}]), 3),
    "chunk fields of the wrong type": (
        lambda d: _chunk_block(d, [{"text": "a", "page_start": "1", "source": True}]), 3),
    "lexical index claiming a billion documents": (
        lambda d: with_manifest(d, set_path("lexical.doc_count", 10**9)), 3),
    "lexical postings past their section": (
        lambda d: rebuild(d, {"lex_postings_offsets": np.full(
            len(sections(d)["lex_postings_offsets"][1]) // 4, 2**31, "<u4").tobytes()}), 3),
    "NaN vectors": (lambda d: rebuild(d, {"vectors": b"\x00\x00\xc0\x7f" * (len(sections(d)["vectors"][1]) // 4)}), 3),
    # the by-source chunk layout (1.8, FORMAT.md §2.1): as the writer lays it out it is usable; its block
    # table is held to the file (tests/test_format_layout.py: both readers name the same part)
    "by-source chunks as the writer lays them out": (by_source, 0),
    "by-source chunks, source indices past the sources": (
        lambda d: by_source(d, table=lambda t: _set(t, (slice(None), 1), 10**6)), 0),
    "by-source chunks without their block table": (lambda d: by_source(d, with_table=False), 3),
    "by-source block table naming more blocks than chunks": (
        lambda d: by_source(d, table=lambda t: np.repeat(t, 1000, axis=0)), 3),
    "by-source block table with first ids not rising": (lambda d: by_source(d, table=lambda t: _set(t, (-1, 0), 0)), 3),
    "by-source block longer than block_size": (lambda d: with_manifest(
        by_source(d, blocks=lambda bs: [sum(bs, [])], table=lambda t: t[:1]), set_path("chunks.block_size", 1)), 3),
    "by-source source index 2^63": (lambda d: by_source(d, table=lambda t: _set(t, (0, 1), 2**63)), 3),
    "by-source record naming its source too": (
        lambda d: by_source(d, blocks=lambda bs: [[{**bs[0][0], "source": 0}, *bs[0][1:]], *bs[1:]]), 3),
    "by-source block holding fewer chunks than its span": (lambda d: by_source(d, blocks=lambda bs: [bs[0][:-1], *bs[1:]]), 3),
    "block table beside fixed-layout chunks": (lambda d: rebuild(d, add={"chunk_blocks": ("u64le", bytes(16))}), 3),
    # lexical offsets stored as lengths (1.8, FORMAT.md §2.4), as the by-source layout writes them
    "lexical offsets as lengths": (lexical_lengths, 0),
    "lexical lengths adding up past their section": (lambda d: lexical_lengths(d, lambda a: _set(a, -1, a[-1] + 1)), 3),
    "lexical lengths starting past 0": (lambda d: lexical_lengths(d, lambda a: _set(a, 0, 1)), 3),
    "lexical lengths wrapping around 2^32": (lambda d: lexical_lengths(d, lambda a: _set(a, 1, 2**32 - 1)), 3),
    # each list weighted by its standout (1.8, FORMAT.md §2.5.1): a JSON boolean, nothing a reader could
    # take as true or false by its own rule (tests/test_c_pages.py: both readers name the manifest)
    "standout_weighting 1": (lambda d: with_manifest(d, set_path("retrieval.standout_weighting", 1)), 3),
    "standout_weighting 'yes'": (lambda d: with_manifest(d, set_path("retrieval.standout_weighting", "yes")), 3),
    # the answer-strength threshold (1.8, FORMAT.md §2.11): null or a number in [-1, 1], nothing one reader
    # could apply and another ignore (tests/test_c_answer.py: both readers name the manifest)
    "min_strength 2": (lambda d: with_manifest(d, set_path("retrieval.min_strength", 2)), 3),
    "min_strength -1.5": (lambda d: with_manifest(d, set_path("retrieval.min_strength", -1.5)), 3),
    "min_strength '0.4'": (lambda d: with_manifest(d, set_path("retrieval.min_strength", "0.4")), 3),
    "min_strength true": (lambda d: with_manifest(d, set_path("retrieval.min_strength", True)), 3),
    "min_strength []": (lambda d: with_manifest(d, set_path("retrieval.min_strength", [])), 3),
}

COMMANDS = {
    "verify": lambda p, model: ["inspect", str(p), "--verify"],
    "inspect": lambda p, model: ["inspect", str(p), "-n", "3"],
    "query": lambda p, model: ["query", str(p), "how often is the pump oiled", "-k", "3", "--model", str(model)],
    "export": lambda p, model: ["export", str(p), "-", "--to", "jsonl"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_forged_bundle_is_refused_in_one_line_within_bounds(case, genuine, tiny_model, tmp_path):
    forge, expected = CASES[case]
    path = tmp_path / "forged.kbpack"
    path.write_bytes(forge(genuine))
    before = path.read_bytes()
    outcomes = {}
    for name, command in COMMANDS.items():
        proc = _bounded(*command(path, tiny_model))
        lines = proc.stderr.strip().splitlines()
        outcomes[name] = proc.returncode
        if proc.returncode != 0:
            assert len(lines) == 1 and lines[0].startswith("kbc: error: "), (name, proc.stderr[-2000:])
            assert "internal error" not in proc.stderr, (name, proc.stderr)
        elif name == "export":  # what it writes is standard JSON: no NaN or Infinity literals
            for line in proc.stdout.splitlines():
                json.loads(line, parse_constant=_refuse)
    # every command either refuses (exit 3) or, for parts it never reads, works; verify always refuses
    assert outcomes["verify"] == expected, outcomes
    assert set(outcomes.values()) <= {0, expected}, outcomes
    assert path.read_bytes() == before


def test_escape_sequences_in_a_bundle_never_reach_the_terminal(genuine, tiny_model, tmp_path):
    """Chunk text and source paths are the bundle author's: printed, their control characters are
    replaced, so they cannot clear the screen, retitle the window or hide a hyperlink."""
    evil = "\x1b]0;pwned\x07\x1b[2J\x1b]8;;http://x\x1b\\"
    path = tmp_path / "evil.kbpack"
    chunks = [{"text": f"{evil} the pump is oiled every spring", "source": 0, "seq": 0, "page_start": 1,
               "page_end": 1, "context": evil}]
    data = _chunk_block(genuine, chunks)
    m = manifest_of(data)
    m["sources"] = [{**m["sources"][0], "path": f"{evil}.md"}]
    path.write_bytes(rebuild(data, {"manifest": json.dumps(m).encode()}))
    for name, command in COMMANDS.items():
        if name == "export":
            continue  # JSON output escapes control characters by definition
        proc = _bounded(*command(path, tiny_model))
        assert proc.returncode == 0, (name, proc.stderr)
        assert "\x1b" not in proc.stdout + proc.stderr and "\x07" not in proc.stdout + proc.stderr, name
    assert "pump" in _bounded(*COMMANDS["query"](path, tiny_model)).stdout
