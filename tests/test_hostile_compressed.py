"""Compressed inputs as untrusted input (issue 43): a multi-member gzip (what `cat a.gz b.gz` makes,
and gzip itself reads) comes back byte for byte whatever its layout, and the build's own process
reads only the first bytes of a compressed file; the whole stream is decompressed in the worker."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kbc.readers.compressed import STEP, NotCompressed, decompress
from kbc.readers.guarded import extract_file
from kbc.stages.sources import discover

ROOT = Path(__file__).resolve().parent.parent


def _text(n: int, seed: str) -> bytes:
    """n bytes of text that barely compresses (hex digests), so a member's input spans buffers."""
    out, i = bytearray(), 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}{i}".encode()).hexdigest().encode() + (b"\n" if i % 3 == 0 else b" ")
        i += 1
    return bytes(out[:n])


# member sizes in bytes: a first member over 1 MiB (its end falls inside a later read), members that
# end on and around the 1 MiB step, empty members first, between and last, many small members
LAYOUTS = {
    "first member over 1 MiB": [3 << 20, 14_000],
    "small then large": [14_000, 3 << 20],
    "members around the step": [STEP - 1, STEP, STEP + 1, 7],
    "empty members": [0, 5000, 0, 0, 1 << 20, 0],
    "forty small members": [2000] * 40,
}


@pytest.mark.parametrize("layout", LAYOUTS, ids=list(LAYOUTS))
def test_a_multi_member_gzip_round_trips_exactly(layout):
    members = [_text(n, f"{layout}{i}") for i, n in enumerate(LAYOUTS[layout])]
    data = b"".join(gzip.compress(m, compresslevel=1) for m in members)
    want = b"".join(members)
    assert gzip.decompress(data) == want  # what gzip itself reads
    assert decompress(data, "gzip", 1 << 30) == want
    # zero padding after the last member (tar, dd) ends the stream; anything else is an error
    assert decompress(data + bytes(700), "gzip", 1 << 30) == want
    with pytest.raises(NotCompressed, match="data after the end of the stream"):
        decompress(data + b"trailing garbage", "gzip", 1 << 30)


@pytest.mark.parametrize("codec,compress", [("bzip2", bz2.compress), ("xz", lzma.compress)])
def test_multi_stream_bzip2_and_xz_round_trip_too(codec, compress):
    members = [_text(n, f"{codec}{i}") for i, n in enumerate([3 << 20, 0, 14_000])]
    assert decompress(b"".join(compress(m) for m in members), codec, 1 << 30) == b"".join(members)


def test_a_multi_member_gz_file_is_read_as_its_text(tmp_path):
    first, second = _text(2 << 20, "a").decode(), "The second member says: prime the pump first."
    path = tmp_path / "notes.txt.gz"
    path.write_bytes(gzip.compress(first.encode()) + gzip.compress(second.encode()))
    [src] = discover([tmp_path])
    text = extract_file(src).documents[0].text
    assert text.count("prime the pump first") == 1 and text.endswith(second)


def test_forty_two_mib_members_cost_the_walk_kilobytes_and_the_worker_says_why(tmp_path):
    """82 KB of 40 members of 2 MiB of zeros took the walk (in the build's own process) to 3.8 GB:
    here the walk runs under a 1 GiB address-space limit and must use a few MiB."""
    path = tmp_path / "zeros.txt.gz"
    path.write_bytes(gzip.compress(bytes(2 << 20), compresslevel=9) * 40)
    assert path.stat().st_size < 100_000
    script = textwrap.dedent(f"""
        import json, resource, tracemalloc
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from kbc.stages.sources import discover
        tracemalloc.start()
        skipped = []
        found = discover([{str(tmp_path)!r}], skipped=skipped)
        print(json.dumps([[s.rel for s in found], skipped, tracemalloc.get_traced_memory()[1]]))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    found, skipped, peak = json.loads(run.stdout)
    assert found == ["zeros.txt.gz"] and skipped == [] and peak < 4 << 20, run.stdout
    # the worker decompresses it whole, against the per-file limit: 80 MiB is over 64 MiB
    from kbc.readers.compressed import CompressedSource

    ex = extract_file(CompressedSource(path, path.name, "text+gzip", 64 << 20))
    assert [(p.severity, p.reason) for p in ex.problems] == [
        ("skipped", "decompresses to more than 64 MiB, the limit per file (--max-file-mb)")]
