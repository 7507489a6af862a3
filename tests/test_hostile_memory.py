"""The memory a file may take (issue 43): reading one file grows its worker's resident memory by at
most the per-file budget (ExtractOptions.file_memory_mb, docs/limits.md), whatever the reader, and a
file past it is skipped with that reason. Each bomb here sits just under --max-file-mb, is small on
disk, and is read by a real worker process whose peak resident memory (ru_maxrss) is measured."""

from __future__ import annotations

import bz2
import io
import json
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET_MB = 256  # the per-file budget these tests give the worker (the default is 2048)
# the worker's own footprint before it reads a file (interpreter, readers, pdfium): about 40 MB here
WORKER_BASE_MB = 100


def _worker_peak(path: Path, kind: str, max_file_mb: float, variant: str | None = None) -> dict:
    """Extract one file in one worker process (as a build does) and report its problems, its text's
    length and the worker's peak resident memory in MB."""
    script = textwrap.dedent(f"""
        import dataclasses, json, resource, time
        from pathlib import Path
        from kbc.engines.workers import extract_all
        from kbc.readers.compressed import CompressedSource
        from kbc.readers.guarded import ExtractOptions
        from kbc.records import SourceFile
        p, kind = Path({str(path)!r}), {kind!r}
        src = (CompressedSource(p, p.name, kind, int({max_file_mb!r} * 2**20)) if "+" in kind
               else SourceFile(p, p.name, kind))
        # (built field by field so that the same script measures a kbc from before the budget)
        budget = {{"file_memory_mb": {BUDGET_MB}}} if "file_memory_mb" in {{f.name for f in dataclasses.fields(ExtractOptions)}} else {{}}
        opts = ExtractOptions(workers=1, timeout_s=120, variants=(("pdf", {variant!r}),) if {variant!r} else (), **budget)
        start = time.monotonic()
        [ex] = list(extract_all([src], opts))
        print(json.dumps({{"peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                          "seconds": time.monotonic() - start, "chars": sum(len(d.text) for d in ex.documents),
                          "head": ex.documents[0].text[:100] if ex.documents else "",
                          "problems": [[q.severity, q.reason] for q in ex.problems]}}))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)


def _bz2_repeated(path: Path, block: bytes, times: int) -> Path:
    """bzip2 streams may follow one another (bzip2 reads them as one file): one stream compressed
    once and repeated makes a bomb of any size in milliseconds."""
    path.write_bytes(bz2.compress(block) * times)
    return path


def test_a_bz2_of_nuls_is_skipped_as_no_text_not_empty_in_bounded_memory(tmp_path):
    # 200 MiB of NULs in 1.2 KB, against a limit of 256 MiB: held whole, it took a worker to 644 MB
    bomb = _bz2_repeated(tmp_path / "zeros.txt.bz2", bytes(50 << 20), 4)
    assert bomb.stat().st_size < 4096
    got = _worker_peak(bomb, "text+bzip2", 256)
    assert got["problems"][-1] == ["skipped", "no text in it: its characters are all NULs, control characters or spaces"]
    assert got["peak_mb"] < BUDGET_MB, got


def test_a_bz2_of_text_keeps_a_documents_worth_and_says_so_in_bounded_memory(tmp_path):
    line = b"The pump primes in four minutes; check the seal before every start. " * 15 + b"\n"
    block = (line * (1 + (1 << 20) // len(line)))[:1 << 20]
    bomb = _bz2_repeated(tmp_path / "manual.txt.bz2", block, 72)  # 72 MiB of text in 36 KB, limit 80 MiB
    got = _worker_peak(bomb, "text+bzip2", 80)
    assert ["degraded", "only its first 40 MB of 72 MiB of text read: a document keeps 20,000,000 characters "
            "at most; split the file to keep the rest"] in got["problems"]
    assert got["chars"] == 20_000_000 and got["peak_mb"] < BUDGET_MB, got


def _pdf_with_one_huge_stream(mib: int) -> bytes:
    """A one-page PDF whose content stream is a line of text and `mib` MiB of spaces, deflated in
    about 1 KB a MiB: compressed once, the same full-flushed piece repeats."""
    head, block = b"BT /F1 11 Tf 72 740 Td (Greenhouse pump notes) Tj ET\n", b" " * (1 << 20)
    c = zlib.compressobj(9)
    first = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    piece = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    end = c.flush()[:-4]  # the final block; its checksum is the whole stream's, computed below
    adler = zlib.adler32(head)
    for _ in range(mib):
        adler = zlib.adler32(block, adler)
    stream = first + piece * mib + end + struct.pack(">I", adler)
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
               b"/Contents 5 0 R >>",
               f"<< /Length {len(stream)} /Filter /FlateDecode >>\nstream\n".encode() + stream + b"\nendstream"]
    out = io.BytesIO()
    out.write(b"%PDF-1.7\n")
    offsets = []
    for num, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(f"{num} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    out.write(b"".join(f"{off:010d} 00000 n \n".encode() for off in offsets))
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def test_a_pdf_whose_one_stream_inflates_to_1_gib_stays_in_the_budget_with_either_reader(tmp_path):
    small = tmp_path / "small.pdf"
    small.write_bytes(_pdf_with_one_huge_stream(1))
    got = _worker_peak(small, "pdf", 1024)
    assert got["head"] == "Greenhouse pump notes" and got["problems"] == [], got  # the PDF itself is sound
    bomb = tmp_path / "bomb.pdf"
    bomb.write_bytes(_pdf_with_one_huge_stream(1024))
    assert bomb.stat().st_size < 2 << 20
    # pdfium inflates it whole (2.1 GB resident before the budget): now stopped at the budget, and said so
    got = _worker_peak(bomb, "pdf", 1024, "pdfium")
    assert got["problems"] == [["skipped", f"reading it took more than {BUDGET_MB:,} MiB of memory, the budget per "
                                "file; it may be a decompression bomb"]]
    assert got["peak_mb"] < BUDGET_MB + WORKER_BASE_MB, got
    # pypdf bounds its own decompression: under the budget, whatever it makes of the page
    got = _worker_peak(bomb, "pdf", 1024, "pypdf")
    assert got["peak_mb"] < BUDGET_MB + WORKER_BASE_MB, got


def test_a_sparse_text_file_is_not_read_whole(tmp_path):
    """8 KiB of text, then a 900 MiB hole (no disk): it was read whole, 2.8 GB and a minute."""
    path = tmp_path / "notes.txt"
    with open(path, "wb") as f:
        f.write(b"Greenhouse notes: water at dawn. " * 250)
        f.truncate(900 << 20)
    got = _worker_peak(path, "text", 1024)
    assert ["degraded", "only its first 40 MB of 900 MiB of text read: a document keeps 20,000,000 characters "
            "at most; split the file to keep the rest"] in got["problems"]
    assert got["head"].startswith("Greenhouse notes: water at dawn.") and got["chars"] > 8000, got
    assert got["peak_mb"] < BUDGET_MB and got["seconds"] < 30, got
