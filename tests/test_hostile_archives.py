"""DOCX, EPUB and HTML as untrusted input: zip bombs (honest and lying directories), too many
entries, entity expansion, external entities naming local files and deep nesting are each a
skipped file with its reason, in bounded memory. The tests build the hostile files themselves."""

from __future__ import annotations

import io
import json
import random
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import pytest

from kbc.readers.guarded import extract_file
from kbc.readers import archive
from kbc.readers.archive import ArchiveLimits, ArchiveRefused, open_archive
from kbc.records import SourceFile

ROOT = Path(__file__).resolve().parent.parent
SECRET = "TOPSECRET-7f3a9c"


def _deflate_repeated(head: bytes, chunk: bytes, n: int, tail: bytes) -> bytes:
    """A raw deflate stream of head + chunk * n + tail, made in milliseconds for any n: after a
    full flush the compressor starts afresh, so the compressed chunk is the same every time."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    piece = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    return first + piece * n + c.compress(tail) + c.flush()


def _raw_zip(entries: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip written by hand: (name, stored bytes, method, declared size, crc), so a test can
    declare what it likes."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, body, method, size, crc in entries:
        offset = out.tell()
        n = name.encode()
        out.write(struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, len(body), size,
                              len(n), 0) + n + body)
        central.write(struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc,
                                  len(body), size, len(n), 0, 0, 0, 0, 0, offset) + n)
    cd = central.getvalue()
    return (out.getvalue() + cd + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(entries), len(entries),
                                              len(cd), out.tell(), 0))


def _docx_with(document_xml_stream: bytes, size: int, crc: int = 0, method: int = 8) -> bytes:
    """A minimal Word package whose document.xml is the given compressed stream."""
    from docx import Document

    base = io.BytesIO()
    Document().save(base)
    entries = []
    with zipfile.ZipFile(base) as zf:
        for info in zf.infolist():
            if info.filename == "word/document.xml":
                entries.append((info.filename, document_xml_stream, method, size, crc))
            else:
                body = zf.read(info)
                entries.append((info.filename, body, 0, len(body), zlib.crc32(body)))
    return _raw_zip(entries)


def _docx_xml(body_xml: str, prolog: str = "") -> bytes:
    """A real .docx whose document.xml is replaced by this body (and DOCTYPE prolog)."""
    from docx import Document

    base = io.BytesIO()
    Document().save(base)
    out = io.BytesIO()
    ns = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    with zipfile.ZipFile(base) as zf, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as new:
        for info in zf.infolist():
            body = zf.read(info)
            if info.filename == "word/document.xml":
                body = (f'<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n{prolog}'
                        f'<w:document {ns}><w:body>{body_xml}</w:body></w:document>').encode()
            new.writestr(info.filename, body)
    return out.getvalue()


def _epub_chapter(chapter: str) -> bytes:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("x")
    book.set_title("Hostile")
    book.set_language("en")
    c = epub.EpubHtml(title="One", file_name="c1.xhtml", lang="en")
    c.content = "<html><body><p>placeholder chapter text</p></body></html>"
    book.add_item(c)
    book.spine = [c]
    book.add_item(epub.EpubNav())
    path = io.BytesIO()
    epub.write_epub(path, book)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(path.getvalue())) as zf, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as new:
        for info in zf.infolist():
            if info.filename.endswith("c1.xhtml"):  # stored: a deep chapter deflates like a zip bomb
                new.writestr(info.filename, chapter.encode(), compress_type=zipfile.ZIP_STORED)
            else:
                new.writestr(info, zf.read(info))
    return out.getvalue()


def _extract(tmp_path: Path, name: str, data: bytes, kind: str):
    p = tmp_path / name
    p.write_bytes(data)
    return extract_file(SourceFile(p, name, kind))


def _text(ex) -> str:
    return "\n".join(d.text for d in ex.documents)


def _skip_reason(ex) -> str:
    assert not ex.documents, _text(ex)[:200]
    (problem,) = [p for p in ex.problems if p.severity == "skipped"]
    return problem.reason


ENTITY_FILE = f'<!DOCTYPE d [<!ENTITY s SYSTEM "file://{{secret}}">]>\n'
ENTITY_REL = '<!DOCTYPE d [<!ENTITY s SYSTEM "secret.txt">]>\n'
LAUGHS = ("<!DOCTYPE d [<!ENTITY a0 \"lol\">"
          + "".join(f'<!ENTITY a{i} "{("&a%d;" % (i - 1)) * 10}">' for i in range(1, 10)) + "]>\n")


# --------------------------------------------------------------------------- zip bounds

def test_a_docx_that_expands_to_3_gb_is_refused_from_its_directory(tmp_path):
    chunk = b" " * (1 << 20)
    stream = _deflate_repeated(b"", chunk, 3000, b"")
    data = _docx_with(stream, size=3000 << 20)
    assert len(data) < 8 << 20  # a few MB on disk
    reason = _skip_reason(_extract(tmp_path, "bomb.docx", data, "docx"))
    assert reason.startswith("refused DOCX: entry 'word/document.xml' expands to more than 128 MiB"), reason


def test_a_directory_that_understates_a_size_is_caught_while_inflating_in_bounded_memory(tmp_path):
    """The directory says 10 KB; the stream inflates to 2 GB. zipfile's read() would inflate it
    in one call (2 GB) before cutting it to the declared size: the copy is counted a step at a time."""
    head = b'<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
    stream = _deflate_repeated(head, b" " * (1 << 20), 2048, b"</w:document>")
    first = zlib.decompressobj(-15).decompress(stream, 10_000)
    bomb = tmp_path / "liar.docx"
    bomb.write_bytes(_docx_with(stream, size=10_000, crc=zlib.crc32(first)))  # even the CRC of its prefix matches
    script = textwrap.dedent(f"""
        import json, resource, sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from kbc.readers.guarded import extract_file
        from kbc.records import SourceFile
        def peak_mb():  # VmHWM: this program's own peak; ru_maxrss keeps the forking parent's across exec
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        ex = extract_file(SourceFile(Path({str(bomb)!r}), "liar.docx", "docx"))
        print(json.dumps({{"reasons": [p.reason for p in ex.problems], "docs": len(ex.documents),
                          "maxrss_mb": peak_mb()}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout)
    assert got["docs"] == 0 and len(got["reasons"]) == 1 and "DOCX" in got["reasons"][0], got
    assert got["maxrss_mb"] < 400, got  # without the counted copy: > 2,000 MB


def test_entry_count_directory_size_duplicates_methods_and_encryption_are_refused():
    many = io.BytesIO()
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(archive.MAX_ENTRIES + 1):
            zf.writestr(f"p{i}.xml", b"")
    with pytest.raises(ArchiveRefused, match="10,001 entries"):
        open_archive(many.getvalue())
    long_names = io.BytesIO()
    with zipfile.ZipFile(long_names, "w") as zf:
        for i in range(100):
            zf.writestr(f"{i}" + "n" * 50_000, b"")
    with pytest.raises(ArchiveRefused, match="directory is"):
        open_archive(long_names.getvalue())
    body = b"<x/>"
    twice = _raw_zip([("a.xml", body, 0, len(body), zlib.crc32(body))] * 2)
    with pytest.raises(ArchiveRefused, match="two entries named 'a.xml'"):
        open_archive(twice)
    bz = io.BytesIO()
    with zipfile.ZipFile(bz, "w", zipfile.ZIP_BZIP2) as zf:
        zf.writestr("a.xml", body)
    with pytest.raises(ArchiveRefused, match="compression method 12"):
        open_archive(bz.getvalue())
    locked = bytearray(_raw_zip([("a.xml", body, 0, len(body), zlib.crc32(body))]))
    cd = locked.find(b"PK\x01\x02")
    locked[cd + 8] |= 1  # the central directory's "encrypted" flag
    with pytest.raises(ArchiveRefused, match="encrypted"):
        open_archive(bytes(locked))


def test_part_total_and_ratio_bounds_and_the_per_file_limit():
    def zipped(parts: dict[str, bytes]) -> bytes:
        b = io.BytesIO()
        with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, body in parts.items():
                zf.writestr(name, body)
        return b.getvalue()

    rand = random.Random(0).randbytes(100_000)  # deflates not at all
    small = ArchiveLimits(part_bytes=150_000, total_bytes=250_000, ratio=100, ratio_floor=10_000)
    copy, parts = open_archive(zipped({"a.xml": rand, "b.xml": rand}), small)
    assert parts == {"a.xml": rand, "b.xml": rand}
    assert zipfile.ZipFile(copy).read("b.xml") == rand  # the stored copy holds the same bytes
    with pytest.raises(ArchiveRefused, match="more than"):
        open_archive(zipped({"a.xml": rand, "b.xml": rand, "c.xml": rand}), small)  # 300 KB in all
    with pytest.raises(ArchiveRefused, match="'a.xml' expands to more than"):
        open_archive(zipped({"a.xml": rand * 2}), small)
    with pytest.raises(ArchiveRefused, match="zip bomb"):
        open_archive(zipped({"a.xml": b" " * 100_000}), small)
    # media is emptied, not read: a book's photographs do not count against the limits
    copy, parts = open_archive(zipped({"a.xml": rand, "img/p.png": b"\0" * 10_000_000}), small)
    assert "img/p.png" not in parts and zipfile.ZipFile(copy).read("img/p.png") == b""

    class Opts:
        max_file_bytes = 1 << 20
    assert archive.limits_for(Opts()).total_bytes == 1 << 20  # --max-file-mb bounds decompressed bytes
    assert archive.limits_for(object()).total_bytes == archive.MAX_ARCHIVE_BYTES


def test_an_ordinary_docx_with_a_picture_reads_as_before(tmp_path):
    from docx import Document

    def png() -> bytes:
        def chunk(t, d):
            return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
        raw = b"".join(b"\x00" + b"\xff\x00\x00" * 4 for _ in range(4))
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    d = Document()
    d.add_heading("Pumps", level=1)
    d.add_paragraph("Before the picture.")
    d.add_picture(io.BytesIO(png()))
    d.add_paragraph("After the picture.")
    d.save(tmp_path / "pic.docx")
    ex = extract_file(SourceFile(tmp_path / "pic.docx", "pic.docx", "docx"))
    assert not ex.problems and _text(ex) == "## Pumps\n\nBefore the picture.\n\nAfter the picture."


# --------------------------------------------------------------------------- entities and nesting

def _hostile_files(secret: Path) -> dict[str, tuple[str, bytes]]:
    p = f"<w:p><w:r><w:t>visible words then &s; end</w:t></w:r></w:p>"
    chapter = ("<?xml version='1.0' encoding='utf-8'?>\n{prolog}<html xmlns='http://www.w3.org/1999/xhtml'>"
               "<body><h1>Chapter</h1><p>visible words of the chapter then &s; end.</p></body></html>")
    page = ("{prolog}<html><head><title>T</title></head><body><h1>Page</h1>"
            "<p>visible words of the page then &s; end of it.</p></body></html>")
    file_entity = ENTITY_FILE.format(secret=secret)
    return {
        "file.docx": ("docx", _docx_xml(p, file_entity)),
        "rel.docx": ("docx", _docx_xml(p, ENTITY_REL)),
        "laughs.docx": ("docx", _docx_xml(p.replace("&s;", "&a9;"), LAUGHS)),
        "file.epub": ("epub", _epub_chapter(chapter.format(prolog=file_entity))),
        "rel.epub": ("epub", _epub_chapter(chapter.format(prolog=ENTITY_REL))),
        "laughs.epub": ("epub", _epub_chapter(chapter.format(prolog=LAUGHS).replace("&s;", "&a9;"))),
        "file.xhtml": ("html", page.format(prolog=file_entity).encode()),
        "rel.html": ("html", page.format(prolog=ENTITY_REL).encode()),
        "laughs.html": ("html", page.format(prolog=LAUGHS).replace("&s;", "&a9;").encode()),
        "deep.html": ("html", ("<html><body><p>top</p>" + "<div>" * 100_000 + "deep words" + "</div>" * 100_000
                               + "</body></html>").encode()),
        "deep.epub": ("epub", _epub_chapter("<html><body>" + "<div>" * 100_000 + "deep words" + "</div>" * 100_000
                                            + "</body></html>")),
    }


def test_entities_and_deep_markup_are_skipped_with_their_reason(tmp_path, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    monkeypatch.chdir(tmp_path)  # where a relative entity would resolve
    for name, (kind, data) in _hostile_files(secret).items():
        reason = _skip_reason(_extract(tmp_path, name, data, kind))
        expected = ("nested deeper than 255 levels" if name.startswith("deep") else
                    "document type declaration" if kind == "docx" else "declares XML entities")
        assert expected in reason and reason.startswith(f"refused {kind.upper()}"), (name, reason)


@pytest.mark.parametrize("guard", ["declares_dtd", "declares_entities", "html_declares_entities"])
def test_the_parsers_do_not_expand_entities_even_without_the_check(tmp_path, monkeypatch, guard):
    """The second guard: with the declaration check switched off, the parsers' own switches
    (resolve_entities=False, an HTML parser) still never put the named file's text in a document."""
    from kbc.readers import docx as docx_reader, epub as epub_reader, html as html_reader

    for module in (archive, docx_reader, epub_reader, html_reader):
        if hasattr(module, guard):
            monkeypatch.setattr(module, guard, lambda data: False)
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    monkeypatch.chdir(tmp_path)
    kinds = {"declares_dtd": "docx", "declares_entities": "epub", "html_declares_entities": "html"}
    for name, (kind, data) in _hostile_files(secret).items():
        if kind != kinds[guard] or name.startswith("deep"):
            continue
        ex = _extract(tmp_path, name, data, kind)
        assert SECRET not in _text(ex) and "lollollol" not in _text(ex), (name, _text(ex)[:200])


def test_a_build_skips_each_hostile_file_and_no_other_files_text_reaches_a_chunk(tmp_path, tiny_model):
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("# Pumps\n\nThe pump moves water uphill every hour of the day.\n")
    hostile = _hostile_files(secret)
    for name, (_, data) in hostile.items():
        (docs / name).write_bytes(data)
    (docs / "bomb.docx").write_bytes(_docx_with(_deflate_repeated(b"", b" " * (1 << 20), 3000, b""), 3000 << 20))
    out = tmp_path / "kb.kbpack"
    script = textwrap.dedent("""
        import json, resource, subprocess, sys
        proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
        peak = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, 0) // 1024
        print(json.dumps({"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr[-2000:], "peak_mb": peak}))
    """)
    proc = subprocess.run([sys.executable, "-c", script, sys.executable, "-m", "kbc", "build", str(docs), "-o", str(out),
                           "--model", str(tiny_model), "--json"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=600)
    got = json.loads(proc.stdout)
    assert got["rc"] == 0, got["stderr"]
    report = json.loads(got["stdout"])
    skipped = {p["source"]: p["reason"] for p in report["skipped"]}
    assert set(skipped) == set(hostile) | {"bomb.docx"}, skipped
    assert "expands to more than 128 MiB" in skipped["bomb.docx"]
    assert got["peak_mb"] < 1500, got["peak_mb"]  # measured before the bounds: 2.1 GB for the bomb alone
    from kbc.format.bundle import Bundle

    with Bundle(out) as b:
        texts = [json.dumps(b.chunk(i)) for i in range(len(b.vectors))]
    assert texts and any("uphill" in t for t in texts) and not any(SECRET in t for t in texts)
