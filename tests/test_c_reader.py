"""The format promise: a C program written from FORMAT.md reads what the Python writer wrote."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from kbc.bundle import Bundle, write_bundle



def python_printout(path: Path) -> str:
    with Bundle(path) as b:
        enc = b.sections["vectors"].encoding
        lines = [f"dim={b.dim} count={b.count} dtype={enc}"]
        if b.count:
            lines.append("first=" + " ".join(f"{float(x):.8f}" for x in b.vectors[0][:8]))
    return "\n".join(lines) + "\n"


def test_c_reader_matches_python_on_sample_bundle(c_reader, sample_bundle):
    out = subprocess.run([str(c_reader), str(sample_bundle)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == python_printout(sample_bundle)
    assert out.stdout.startswith("dim=384 ")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_c_reader_matches_python_on_synthetic(c_reader, tmp_path, dtype):
    vecs = np.random.default_rng(7).standard_normal((5, 12)).astype(np.float32)
    p = write_bundle(tmp_path / "s.kbpack", manifest={}, vectors=vecs, chunks=[{"text": str(i)} for i in range(5)],
                     dtype=dtype)
    out = subprocess.run([str(c_reader), str(p)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == python_printout(p)


def test_c_reader_detects_damaged_vectors(c_reader, sample_bundle, tmp_path):
    data = bytearray(sample_bundle.read_bytes())
    with Bundle(sample_bundle) as b:
        off = b.sections["vectors"].offset
    data[off + 5] ^= 0x10
    bad = tmp_path / "bad.kbpack"
    bad.write_bytes(bytes(data))
    out = subprocess.run([str(c_reader), str(bad)], capture_output=True, text=True)
    assert out.returncode == 3 and "vectors: sha256 mismatch" in out.stderr
