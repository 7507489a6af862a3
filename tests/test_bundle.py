"""The .kbpack format: round trip, integrity, versioning, hostile input."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import kbc_cli
from forge import resign
from kbc.format import bundle as B
from kbc.format import writer
from kbc.format.bundle import Bundle, BundleWriter, write_bundle
from kbc.errors import BundleError, InputError


def make_chunks(n: int) -> list[dict]:
    return [{"text": f"chunk number {i} " + "é漢" * (i % 5), "source": i % 3, "seq": i, "page_start": 1 + i // 10,
             "page_end": 1 + i // 10, "char_start": i * 10, "char_end": i * 10 + 9} for i in range(n)]


def _flat_index(vecs: np.ndarray) -> bytes:
    import faiss

    index = faiss.IndexFlatIP(vecs.shape[1])
    index.add(vecs)
    return faiss.serialize_index(index).tobytes()


@pytest.fixture
def small(tmp_path) -> tuple[Path, np.ndarray, list[dict]]:
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((150, 16)).astype(np.float32)
    chunks = make_chunks(150)
    path = tmp_path / "small.kbpack"
    write_bundle(path, manifest={"embedder": {"name": "test"}, "sources": [{"path": "a.md"}]}, vectors=vecs,
                 chunks=chunks, index=_flat_index(vecs), chunks_per_block=16)
    return path, vecs, chunks


def test_round_trip_every_field(small):
    path, vecs, chunks = small
    with Bundle(path) as b:
        assert (b.major, b.minor) == (B.FORMAT_MAJOR, B.FORMAT_MINOR)
        assert b.count == 150 and b.dim == 16
        assert np.array_equal(b.vectors, vecs)
        for i in (0, 15, 16, 149):
            got = b.chunk(i)
            assert got.pop("id") == i
            assert got == chunks[i]
        assert [c["text"] for c in b.iter_chunks()] == [c["text"] for c in chunks]
        assert bytes(b.index_bytes()) == _flat_index(vecs)
        assert b.manifest["embedder"] == {"name": "test"}
        assert b.manifest["vectors"] == {"count": 150, "dim": 16, "dtype": "float32"}
        for s in b.sections.values():
            assert s.offset % 64 == 0
        b.verify()


def test_vectors_are_zero_copy_and_read_only(small):
    path, vecs, _ = small
    with Bundle(path) as b:
        v = b.vectors
        assert not v.flags.writeable
        assert not v.flags.owndata  # a view over the mapping, not a copy


def test_float16_option(tmp_path):
    vecs = np.random.default_rng(1).standard_normal((10, 8)).astype(np.float32)
    path = write_bundle(tmp_path / "h.kbpack", manifest={}, vectors=vecs, chunks=make_chunks(10), dtype="float16")
    with Bundle(path) as b:
        assert b.vectors.dtype == np.dtype("<f2")
        assert b.sections["vectors"].length == 10 * 8 * 2
        np.testing.assert_allclose(b.vectors.astype(np.float32), vecs, rtol=1e-3, atol=1e-3)


def test_deterministic_bytes(tmp_path):
    vecs = np.arange(64, dtype=np.float32).reshape(8, 8)
    a = write_bundle(tmp_path / "a.kbpack", manifest={"k": [1, 2]}, vectors=vecs, chunks=make_chunks(8))
    b = write_bundle(tmp_path / "b.kbpack", manifest={"k": [1, 2]}, vectors=vecs, chunks=make_chunks(8))
    assert a.read_bytes() == b.read_bytes()


def test_single_byte_flip_in_each_section_is_detected_and_named(small, tmp_path):
    path, _, _ = small
    data = path.read_bytes()
    with Bundle(path) as b:
        sections = list(b.sections.values())
        table_offset = b.table_offset
    targets = [(s.name, s.offset + s.length // 2) for s in sections if s.length]
    targets += [("table", table_offset + 40), ("header", 40)]
    for expected, pos in targets:
        bad = bytearray(data)
        bad[pos] ^= 0x01
        p = tmp_path / f"flip-{expected}.kbpack"
        p.write_bytes(bytes(bad))
        with pytest.raises(BundleError) as err:
            with Bundle(p) as b:
                b.verify()
        assert err.value.section == expected, (expected, str(err.value))


def test_every_single_byte_flip_fails_verify(small, tmp_path):
    """Not a sample: every byte of a small bundle, flipped one at a time, must fail verification."""
    vecs = np.ones((3, 4), dtype=np.float32)
    path = write_bundle(tmp_path / "tiny.kbpack", manifest={"a": 1}, vectors=vecs, chunks=make_chunks(3))
    data = path.read_bytes()
    p = tmp_path / "flip.kbpack"
    for pos in range(len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0x80
        p.write_bytes(bytes(bad))
        with pytest.raises(BundleError):
            with Bundle(p) as b:
                b.verify()


def test_padding_damage_caught_by_whole_file_digest(small, tmp_path):
    path, _, _ = small
    with Bundle(path) as b:
        s = b.sections["chunks"]
        pad_pos = s.offset + s.length  # chunks length is not a multiple of 64 here
        assert pad_pos % 64
    bad = bytearray(path.read_bytes())
    bad[pad_pos] = 0xFF
    p = tmp_path / "pad.kbpack"
    p.write_bytes(bytes(bad))
    with pytest.raises(BundleError) as err:
        with Bundle(p) as b:
            b.verify()
    assert err.value.section == "file"


@pytest.mark.parametrize("where", ["header", "section", "table", "one-short"])
def test_truncation_gives_clear_error(small, tmp_path, where):
    path, _, _ = small
    data = path.read_bytes()
    with Bundle(path) as b:
        cut = {"header": 50, "section": b.sections["vectors"].offset + 100,
               "table": b.table_offset + 10, "one-short": len(data) - 1}[where]
    p = tmp_path / "cut.kbpack"
    p.write_bytes(data[:cut])
    with pytest.raises(BundleError) as err:
        Bundle(p)
    assert "truncated" in str(err.value) or "shorter" in str(err.value)


def test_wrong_magic(small, tmp_path):
    path, _, _ = small
    p = tmp_path / "m.kbpack"
    p.write_bytes(b"GGUF" + path.read_bytes()[4:])
    with pytest.raises(BundleError, match="not a .kbpack"):
        Bundle(p)


def _rewrite_header(data: bytes, **fields) -> bytes:
    (magic, major, minor, count, table_offset, length, table_sha, body_sha, _) = B._HEADER.unpack(data[:128])
    vals = dict(magic=magic, major=major, minor=minor, count=count, table_offset=table_offset, length=length,
                table_sha=table_sha, body_sha=body_sha)
    vals.update(fields)
    head = B._HEADER.pack(vals["magic"], vals["major"], vals["minor"], vals["count"], vals["table_offset"],
                          vals["length"], vals["table_sha"], vals["body_sha"], b"\0" * 32)
    head = head[:96] + hashlib.sha256(head[:96]).digest()
    return head + data[128:]


def test_newer_major_refused_naming_both_versions(small, tmp_path):
    path, _, _ = small
    p = tmp_path / "v2.kbpack"
    p.write_bytes(_rewrite_header(path.read_bytes(), major=B.FORMAT_MAJOR + 1, minor=3))
    with pytest.raises(BundleError) as err:
        Bundle(p)
    msg = str(err.value)
    assert f"{B.FORMAT_MAJOR + 1}.3" in msg and f"{B.FORMAT_MAJOR}.{B.FORMAT_MINOR}" in msg


def test_newer_minor_with_unknown_section_is_read(tmp_path, monkeypatch):
    """A future 1.x writer adds an optional section; this reader skips it and reads the rest."""
    monkeypatch.setattr(writer, "FORMAT_MINOR", B.FORMAT_MINOR + 7)  # the writer writes the version it knows
    vecs = np.eye(4, dtype=np.float32)
    path = write_bundle(tmp_path / "future.kbpack", manifest={}, vectors=vecs, chunks=make_chunks(4),
                        extra_sections=[("future_thing", "cbor", b"\x01\x02\x03")])
    monkeypatch.undo()
    with Bundle(path) as b:
        assert b.minor == B.FORMAT_MINOR + 7
        assert "future_thing" in b.sections
        assert np.array_equal(b.vectors, vecs)
        assert b.chunk(3)["text"] == make_chunks(4)[3]["text"]
        b.verify()


@pytest.mark.parametrize("field,value", [("count", 10**9), ("table_offset", 2**62), ("length", 2**63)])
def test_absurd_header_fields_rejected_without_allocation(small, tmp_path, field, value):
    path, _, _ = small
    p = tmp_path / "absurd.kbpack"
    p.write_bytes(_rewrite_header(path.read_bytes(), **{field: value}))
    with pytest.raises(BundleError):
        Bundle(p)


def test_absurd_section_length_in_table(small, tmp_path):
    path, _, _ = small
    data = bytearray(path.read_bytes())
    with Bundle(path) as b:
        toff, n = b.table_offset, b.section_count
    entry = toff  # first entry: patch its length to 2**60 and re-seal table + header checksums
    struct.pack_into("<Q", data, entry + 56, 2**60)
    table = bytes(data[toff:toff + n * 128])
    fixed = _rewrite_header(bytes(data), table_sha=hashlib.sha256(table).digest())
    p = tmp_path / "len.kbpack"
    p.write_bytes(fixed)
    with pytest.raises(BundleError, match="outside the data area"):
        Bundle(p)


def test_decompression_bomb_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(B, "MAX_BLOCK_BYTES", 1000)
    chunks = [{"text": "x" * 5000}]
    path = write_bundle(tmp_path / "bomb.kbpack", manifest={}, vectors=np.ones((1, 2), np.float32), chunks=chunks)
    with Bundle(path) as b:
        with pytest.raises(BundleError, match="limit"):
            b.chunk(0)


def test_writer_is_atomic_previous_file_survives(tmp_path):
    target = tmp_path / "kb.kbpack"
    target.write_bytes(b"previous bundle")
    with pytest.raises(RuntimeError):
        with BundleWriter(target, dim=4) as w:
            w.add(make_chunks(2), np.ones((2, 4), np.float32))
            raise RuntimeError("killed mid-build")
    assert target.read_bytes() == b"previous bundle"
    assert [p.name for p in tmp_path.iterdir()] == ["kb.kbpack"]  # no temporary left behind


def test_writer_rejects_bad_output_paths(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        BundleWriter(tmp_path / "missing" / "x.kbpack", dim=4)
    with pytest.raises(InputError, match="is a directory"):
        BundleWriter(tmp_path, dim=4)


def test_reader_never_unpickles_and_rejects_msgpack_ext(tmp_path):
    import msgpack
    import zstandard

    frame = zstandard.ZstdCompressor().compress(msgpack.packb([msgpack.ExtType(42, b"payload")]))
    with BundleWriter(tmp_path / "e.kbpack", dim=2) as w:
        w.add([{"text": "a"}], np.ones((1, 2), np.float32))
        w._pending = []
        w._spool.write(frame)
        w._block_offsets.append(len(frame))
        w.finish({})
    with Bundle(tmp_path / "e.kbpack") as b:
        with pytest.raises(BundleError, match="extension type"):
            b.chunk(0)


def test_importing_reader_and_cli_does_not_import_torch():
    code = ("import sys, kbc.format.bundle, kbc.cli, kbc.query.knowledge_base, kbc.search.dense; "
            "bad = [m for m in ('torch', 'sentence_transformers', 'transformers', 'faiss', 'onnxruntime') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_open_large_bundle_is_lazy(tmp_path):
    """100k chunks: opening decodes no chunk block and copies no vectors."""
    n, d = 100_000, 8
    vecs = np.zeros((n, d), np.float32)
    chunks = [{"text": "t"} for _ in range(n)]
    path = write_bundle(tmp_path / "big.kbpack", manifest={}, vectors=vecs, chunks=chunks, chunks_per_block=64)
    with Bundle(path) as b:
        assert b._checked == {"manifest"}  # nothing else touched by open
        assert b._block_cache is None
        assert b.chunk(99_999)["id"] == 99_999
        assert b._block_cache[0] == 99_999 // 64


# ---------------------------------------------------------------- fuzz


@pytest.fixture(scope="module")
def fuzz_seed_bytes(tmp_path_factory) -> bytes:
    vecs = np.random.default_rng(3).standard_normal((40, 8)).astype(np.float32)
    p = tmp_path_factory.mktemp("fuzz") / "seed.kbpack"
    write_bundle(p, manifest={"sources": [{"path": "x"}]}, vectors=vecs, chunks=make_chunks(40), chunks_per_block=8)
    return p.read_bytes()


def _open_everything(path: Path) -> None:
    with Bundle(path) as b:
        b.verify()
        for i in range(b.count):
            b.chunk(i)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_reader_raises_only_its_own_error(fuzz_seed_bytes, tmp_path, data):
    raw = bytearray(fuzz_seed_bytes)
    mode = data.draw(st.sampled_from(["flip", "truncate", "splice", "random"]))
    if mode == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            pos = data.draw(st.integers(0, len(raw) - 1))
            raw[pos] = data.draw(st.integers(0, 255))
    elif mode == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    elif mode == "splice":
        pos = data.draw(st.integers(0, len(raw)))
        raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=200))
    else:
        raw = bytearray(B.MAGIC) + bytearray(data.draw(st.binary(min_size=0, max_size=600)))
    p = tmp_path / "fuzz.kbpack"
    p.write_bytes(bytes(raw))
    try:
        _open_everything(p)
    except BundleError:
        pass


def test_fuzz_structurally_valid_but_lying_manifest(tmp_path):
    """Checksums right, content wrong: a manifest that lies about counts must still fail cleanly."""
    for lie in ({"count": 10**12}, {"dim": -1}, {"dtype": "float64"}, {"count": "many"}):
        path = tmp_path / "lie.kbpack"
        with BundleWriter(path, dim=4) as w:
            w.add(make_chunks(2), np.ones((2, 4), np.float32))
            real_finish = w._add_bytes

            def patched(name, enc, data, _real=real_finish):
                if name == "manifest":
                    m = json.loads(data)
                    m["vectors"].update(lie)
                    data = B._canonical_json(m)
                _real(name, enc, data)
            w._add_bytes = patched
            w.finish({})
        with pytest.raises(BundleError):
            _open_everything(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_vectors_with_valid_checksums_fail_verify(tmp_path, bad):
    vecs = np.eye(4, 8, dtype=np.float32)
    p = B.write_bundle(tmp_path / "v.kbpack", manifest={}, vectors=vecs, chunks=[{"text": str(i)} for i in range(4)])
    with B.Bundle(p) as b:
        off = b.sections["vectors"].offset
    data = bytearray(p.read_bytes())
    data[off + 2 * 8 * 4 + 12:off + 2 * 8 * 4 + 16] = np.float32(bad).tobytes()  # row 2, column 3
    forged = tmp_path / "forged.kbpack"
    forged.write_bytes(resign(bytes(data)))
    with B.Bundle(forged) as b:
        with pytest.raises(BundleError, match="row 2 holds NaN or infinity") as e:
            b.verify()
    assert e.value.section == "vectors"
    proc = kbc_cli("inspect", str(forged), "--verify")
    assert proc.returncode == 3 and "row 2" in proc.stderr


def test_a_block_of_millions_of_tiny_objects_is_refused_while_decoding(tmp_path):
    """Inside the decompressed-size cap, tiny msgpack objects would cost ~70x their bytes in memory:
    the reader refuses nested arrays and more maps than chunks before building them. The writer
    checksums the forged block, as an attacker's would."""
    import msgpack
    import zstandard

    for payload in ([{"text": "a", "junk": [0] * 5_000_000}], [{"text": "a", "m": {"k": {}}}]):
        frame = zstandard.ZstdCompressor().compress(msgpack.packb(payload))
        path = tmp_path / "bomb.kbpack"
        with BundleWriter(path, dim=2) as w:
            w.add([{"text": "a"}], np.ones((1, 2), np.float32))
            w._pending = []
            w._spool.write(frame)
            w._block_offsets.append(len(frame))
            w.finish({})
        with Bundle(path) as b:
            with pytest.raises(BundleError, match="block 0 cannot be decoded"):
                b.chunk(0)


@pytest.mark.parametrize("manifest, message", [
    ({"sources": {"path": "x"}}, "'sources' is dict"),
    ({"sources": [{"path": 3}]}, "'path' string"),
    ({"embedder": {"dim": 9}}, "embedder.dim 9 disagrees"),
    ({"chunking": "tokens"}, "'chunking' is str"),
    ({"index": []}, "'index' is list"),
])
def test_mistyped_manifest_objects_are_invalid_bundles(tmp_path, manifest, message):
    p = B.write_bundle(tmp_path / "m.kbpack", manifest=manifest, vectors=np.eye(2, 4, dtype=np.float32),
                       chunks=[{"text": "a"}, {"text": "b"}])
    with pytest.raises(BundleError, match=message):
        B.Bundle(p)
    proc = kbc_cli("inspect", str(p))
    assert proc.returncode == 3 and proc.stderr.count("\n") == 1


def test_mistyped_chunk_fields_are_invalid_bundles(tmp_path):
    p = B.write_bundle(tmp_path / "c.kbpack", manifest={}, vectors=np.eye(2, 4, dtype=np.float32),
                       chunks=[{"text": "a", "page_start": "1"}, {"text": "b", "source": True}])
    with B.Bundle(p) as b:
        with pytest.raises(BundleError, match="'page_start' is str"):
            b.chunk(0)
