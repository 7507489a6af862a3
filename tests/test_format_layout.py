"""The by-source chunk layout (FORMAT.md §2.1, format 1.8; issue 41): blocks that never span two sources,
their sources in the `chunk_blocks` table instead of in the records, so that adding or removing a
document leaves every other document's zstd frames byte for byte as they were (a small update delta).
Both readers hand out the same chunks, `source` included, and refuse the same crafted tables naming the
same part; a reader that knows only the fixed layout refuses such a bundle instead of misreading it."""

from __future__ import annotations

import json
import subprocess

import msgpack
import numpy as np
import pytest
import zstandard

import test_hostile_bundles as hostile
from conftest import kbc_cli
from kbc.errors import BundleError
from kbc.format import bundle as B
from kbc.format.bundle import Bundle, write_bundle

DIM = 8


def _chunks(sources: list[int]) -> list[dict]:
    return [{"text": f"chunk {i} of source {s}", "seq": i, "page_start": 1, "page_end": 1, "source": s}
            for i, s in enumerate(sources)]


def _write(path, chunks: list[dict], layout: str, block: int = 4, n_sources: int = 3):
    vectors = np.random.default_rng(len(chunks)).standard_normal((len(chunks), DIM)).astype(np.float32)
    manifest = {"sources": [{"path": f"doc{i}.md"} for i in range(n_sources)]}
    return write_bundle(path, manifest=manifest, vectors=vectors, chunks=chunks, chunks_per_block=block, layout=layout)


def _frames(path) -> list[bytes]:
    with Bundle(path) as b:
        data = path.read_bytes()
        chunks, offsets = b.sections["chunks"], b.sections["chunk_offsets"]
        ends = np.frombuffer(data[offsets.offset:offsets.offset + offsets.length], "<u8").tolist()
        return [data[chunks.offset + a:chunks.offset + z] for a, z in zip(ends, ends[1:])]


def test_by_source_blocks_hold_one_source_each_and_read_back_as_the_fixed_layout_does(tmp_path):
    sources = [0] * 5 + [1] * 2 + [2] * 9 + [7]  # 7: past the 3 sources, which names none ("?")
    chunks = _chunks(sources)
    read = {}
    for layout in ("fixed", "by-source"):
        path = _write(tmp_path / f"{layout}.kbpack", chunks, layout)
        with Bundle(path) as b:
            b.verify()
            read[layout] = [c for c in b.iter_chunks()]
            assert [b.source_path(c) for c in read[layout]][-2:] == ["doc2.md", "?"]
            assert (b.major, b.minor) == (1, 8)
    assert read["by-source"] == read["fixed"] == [{**c, "id": i} for i, c in enumerate(chunks)]

    path = tmp_path / "by-source.kbpack"
    with Bundle(path) as b:
        assert b.sections["chunks"].encoding == "zstd-msgpack-src"
        table = np.frombuffer(bytes(b._section("chunk_blocks")), "<u8").reshape(-1, 2).tolist()
    # a block of at most 4 starts at each source's first chunk; nothing starts elsewhere
    assert table == [[0, 0], [4, 0], [5, 1], [7, 2], [11, 2], [15, 2], [16, 7]]
    decoded = [msgpack.unpackb(zstandard.ZstdDecompressor().decompress(f)) for f in _frames(path)]
    assert [len(d) for d in decoded] == [4, 1, 2, 4, 4, 1, 1]
    assert not any("source" in r for d in decoded for r in d)  # the table holds it, once per block
    again = _write(tmp_path / "again.kbpack", chunks, "by-source")
    assert again.read_bytes() == path.read_bytes()  # byte-identical builds stay so


def test_a_document_added_or_removed_leaves_the_other_documents_frames_as_they_were(tmp_path):
    """What makes deltas small (docs/updates.md): in the by-source layout every frame of the documents
    that did not change is in the old bundle byte for byte, although their chunk ids and source indices
    moved; in the fixed layout the frames after the change are all new."""
    def corpus(docs):
        chunks = []
        for index, (name, n) in enumerate(docs):
            chunks += [{"text": f"{name} part {k}", "seq": k, "source": index} for k in range(n)]
        return chunks

    old_docs = [("a", 10), ("b", 6), ("c", 9)]
    new_docs = [("a", 10), ("x", 3), ("b", 6), ("c", 9)]
    for layout, all_kept in (("by-source", True), ("fixed", False)):
        old = _write(tmp_path / f"old-{layout}.kbpack", corpus(old_docs), layout, n_sources=3)
        new = _write(tmp_path / f"new-{layout}.kbpack", corpus(new_docs), layout, n_sources=4)
        old_frames, new_frames = set(_frames(old)), _frames(new)
        carried = [f for f in new_frames if f not in old_frames]
        if all_kept:  # only x's one block is new
            assert len(carried) == 1 and len(new_frames) == 9
        else:
            assert len(carried) == len(new_frames) - 2  # every block from x's on


@pytest.mark.parametrize("sources, part, says", [
    ([0, 0, 0, 0], "chunks", "unknown encoding 'zstd-msgpack-src'"),  # one block either way
    ([0, 0, 1], "chunk_offsets", "expected 2 u64le entries, found 24 bytes"),  # 1 block of 4, or 2 by source
])
def test_a_reader_that_knows_only_the_fixed_layout_refuses_a_by_source_bundle(tmp_path, monkeypatch, sources, part,
                                                                               says):
    """A 1.7 reader (kbc/format/bundle.py and libkbpack before 1.8) knows one chunks encoding and refuses
    any other when it opens the file, in one line: the layout's new encoding name is what keeps it from
    misreading the blocks. Where the two layouts' block counts differ it finds chunk_offsets' length
    wrong first (it counts blocks as count / block_size), which refuses the file as surely."""
    path = _write(tmp_path / "src.kbpack", _chunks(sources), "by-source")
    monkeypatch.setattr(B, "LAYOUTS", {"fixed": "zstd-msgpack"})
    with pytest.raises(BundleError) as e:
        Bundle(path)
    assert e.value.section == part and says in str(e.value)


@pytest.mark.parametrize("source", [None, -1, 2**63, True, "0"])
def test_the_by_source_writer_needs_every_chunks_source_index(tmp_path, source):
    chunk = {"text": "x"} if source is None else {"text": "x", "source": source}
    with pytest.raises(ValueError, match="source index"):
        _write(tmp_path / "x.kbpack", [chunk], "by-source")
    assert not list(tmp_path.iterdir())  # nothing left behind


def test_no_chunks_by_source(tmp_path, kbpack_tool):
    path = _write(tmp_path / "empty.kbpack", [], "by-source")
    with Bundle(path) as b:
        b.verify()
        assert b.count == 0 and b.sections["chunk_blocks"].length == 0
    assert subprocess.run([str(kbpack_tool), "verify", str(path)], capture_output=True, text=True).stdout == "intact\n"


def test_kbc_build_layout_by_source_is_recorded_and_searches_as_the_fixed_layout(tmp_path, tiny_model):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(4):
        (docs / f"pump{i}.md").write_text(f"# Pump {i}\n\n" + f"Pump {i} moves water uphill every spring. " * (40 + i))
    built = {}
    for layout in ("fixed", "by-source"):
        out = tmp_path / f"{layout}.kbpack"
        flags = ["--layout", "by-source"] if layout == "by-source" else []
        kbc_cli("build", str(docs), "-o", str(out), "--model", str(tiny_model), "-q", *flags, check=True)
        query = kbc_cli("query", str(out), "how often is the pump oiled", "-k", "5", "--json", "--model",
                        str(tiny_model), check=True)
        with Bundle(out) as b:
            b.verify()
            built[layout] = (b.manifest["build_options"], b.sections["chunks"].encoding, "chunk_blocks" in b.sections,
                             list(b.iter_chunks()), [(h["chunk_id"], h["source"], h["score"]) for h in json.loads(query.stdout)["hits"]])
    fixed, by_source = built["fixed"], built["by-source"]
    assert "layout" not in fixed[0] and fixed[1:3] == ("zstd-msgpack", False)  # the default: as before
    assert by_source[0]["layout"] == "by-source" and by_source[1:3] == ("zstd-msgpack-src", True)
    assert by_source[3] == fixed[3] and by_source[4] == fixed[4]  # the same chunks, the same answers


def test_the_by_source_layout_stores_lexical_offsets_as_lengths_and_scores_alike(tmp_path):
    """FORMAT.md §2.4 (1.8): lengths stay where they were when an earlier term changes; read back, they
    are the same offsets, so BM25 gives the same scores."""
    from kbc.format.bm25 import LexicalBuilder

    chunks = _chunks([0, 0, 1, 1, 1, 2])
    builder = LexicalBuilder()
    for c in chunks:
        builder.add(c["text"] + " pump oil", context="")
    meta, lexical = builder.finish()
    scores, encodings = {}, {}
    for layout in ("fixed", "by-source"):
        vectors = np.ones((len(chunks), DIM), np.float32)
        path = write_bundle(tmp_path / f"{layout}.kbpack", manifest={"lexical": meta}, vectors=vectors,
                            chunks=chunks, layout=layout, extra_sections=lexical)
        with Bundle(path) as b:
            b.verify()
            scores[layout] = b.lexical().scores("source 1 chunk pump").tolist()
            encodings[layout] = {n: b.sections[n].encoding for n in ("lex_vocab_offsets", "lex_postings_offsets")}
    assert set(encodings["fixed"].values()) == {"u32le"} and set(encodings["by-source"].values()) == {"u32le-lengths"}
    assert scores["by-source"] == scores["fixed"] and max(scores["fixed"]) > 0


# ---------------------------------------------------------------- libkbpack reads it as kbc does


def test_libkbpack_hands_out_every_chunk_of_a_by_source_bundle_as_kbc_does(kbpack_tool, genuine, tmp_path):
    path = tmp_path / "src.kbpack"
    path.write_bytes(hostile.by_source(genuine, table=lambda t: hostile._set(t, (-1, 1), 10**6)))  # last: no source
    with Bundle(path) as b:
        expected = [(c, b.source_path(c)) for c in b.iter_chunks()]
    assert expected[-1][1] == "?" and len({c["source"] for c, _ in expected}) > 2
    for chunk, source_path in expected:
        out = subprocess.run([str(kbpack_tool), "chunk", str(path), str(chunk["id"])], capture_output=True, text=True)
        got = json.loads(out.stdout)
        assert got["source_path"] == source_path
        assert {k: got[k] for k in chunk} == chunk


@pytest.mark.parametrize("case", sorted(c for c in hostile.CASES if "by-source" in c or "block table" in c
                                        or "lexical lengths" in c or "as lengths" in c))
def test_both_readers_refuse_a_crafted_block_table_naming_the_same_part(case, kbpack_tool, genuine, tmp_path):
    forge, expected = hostile.CASES[case]
    path = tmp_path / "forged.kbpack"
    path.write_bytes(forge(genuine))
    try:
        with Bundle(path) as b:
            b.verify()
        python = "intact"
    except BundleError as e:
        python = f"{e.section}: {e.detail}"
    out = subprocess.run([str(kbpack_tool), "verify", str(path)], capture_output=True, text=True)
    c = out.stdout.strip() if out.returncode == 0 else out.stderr.strip().removeprefix("kbpack: ")
    assert out.returncode == expected and c == python, (out.returncode, c, python)
