"""Extraction on hostile and real-world PDFs: generated files always, ../shared/pdfs when present."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import SHARED, kbc_cli
from kbc.readers.guarded import ExtractOptions, extract_file
from kbc.engines.workers import extract_all
from kbc.stages.sources import discover
from pdfgen import encrypt_pdf, make_pdf

PDFS = SHARED / "pdfs"
needs_shared = pytest.mark.skipif(not (PDFS / "MANIFEST.md").exists(), reason="../shared/pdfs not present")


def one(path: Path, reader: str | None = None, **kw):
    [src] = discover([path])
    return extract_file(src, variants=(("pdf", reader),) if reader else (), **kw)


@pytest.fixture(params=["pdfium", "pypdf"])
def reader(request) -> str:
    """Each PDF reader variant (--pdf-reader) must report hostile files the same way."""
    return request.param


def reasons(ex) -> list[str]:
    return [f"{p.severity}: {p.reason}" for p in ex.problems]


# --------------------------------------------------------------------------- generated files


def test_generated_text_pdf_has_pages_and_spans(tmp_path, reader):
    p = tmp_path / "two.pdf"
    p.write_bytes(make_pdf(["First page about owls.", "Second page about bats."]))
    ex = one(p, reader)
    assert ex.problems == [] and ex.page_count == 2
    [doc] = ex.documents
    assert [doc.text[pg.start:pg.end] for pg in doc.pages] == ["First page about owls.", "Second page about bats."]


def test_encrypted_with_empty_user_password_opens(tmp_path, reader):
    p = tmp_path / "aes.pdf"
    p.write_bytes(encrypt_pdf(make_pdf(["Filed under seal, readable by all."]), user_password=""))
    ex = one(p, reader)
    assert ex.problems == []
    assert "readable by all" in ex.documents[0].text


@pytest.mark.parametrize("algorithm", ["AES-256", "RC4-128"])
def test_encrypted_with_a_password_is_skipped_or_opened_with_it(tmp_path, algorithm, reader):
    p = tmp_path / "locked.pdf"
    p.write_bytes(encrypt_pdf(make_pdf(["The vault code."]), user_password="s3cret", algorithm=algorithm))
    assert reasons(one(p, reader)) == ["skipped: encrypted: needs a password (use --password)"]
    opened = one(p, passwords=["wrong", "s3cret"], reader=reader)
    assert opened.problems == [] and "vault code" in opened.documents[0].text


@pytest.mark.parametrize("damage, expect", [
    (lambda d: b"", "file is empty"),
    (lambda d: b"%PDF-1.7\nthis is not a pdf at all\n", "unreadable PDF"),
    (lambda d: d[:20] + bytes(len(d) - 20), "unreadable PDF"),  # header, then zeros
])
def test_corrupt_files_are_skipped_with_a_one_line_reason(tmp_path, damage, expect, reader):
    p = tmp_path / "bad.pdf"
    p.write_bytes(damage(make_pdf(["text"])))
    [r] = reasons(one(p, reader))
    assert r.startswith("skipped: ") and expect in r and "\n" not in r


def test_truncated_download_recovers_or_says_why(tmp_path, reader):
    data = make_pdf(["Page one survives the cut.", "Page two is lost."])
    p = tmp_path / "cut.pdf"
    p.write_bytes(data[: int(len(data) * 0.6)])
    ex = one(p, reader)
    # pypdf rebuilds the object table when it can; either the first page comes back or the file
    # is skipped with the parser's reason, never an exception
    if ex.documents:
        assert "Page one survives" in ex.documents[0].text
    else:
        assert reasons(ex)[0].startswith("skipped: unreadable PDF")


def test_pages_without_text_are_named(tmp_path, reader):
    p = tmp_path / "partly-scanned.pdf"
    p.write_bytes(make_pdf(["Typed page.", "", "", "Typed again.", ""]))
    ex = one(p, reader)
    assert reasons(ex) == ["degraded: no text on pages 2-3, 5 (scanned or image-only?)"]
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(make_pdf(["", ""]))
    assert reasons(one(scan, reader)) == ["skipped: no text layer on any of its 2 pages (scanned? OCR is not done)"]


def test_a_file_that_makes_the_parser_spin_is_stopped(tmp_path):
    (tmp_path / "slow.pdf").write_bytes(make_pdf(["spin"], repeat_ops=600_000))
    (tmp_path / "fine.md").write_text("# Fine\n\nThis file is fine.\n")
    # pypdf: it takes seconds over these 600,000 operators on any machine, where PDFium may finish
    # within the second; the limit itself is the workers', whichever reader runs
    out = list(extract_all(discover([tmp_path]), ExtractOptions(workers=2, timeout_s=1.0, variants=(("pdf", "pypdf"),))))
    by_name = {e.source.rel: e for e in out}
    assert reasons(by_name["slow.pdf"]) == ["skipped: extraction took longer than 1 s; stopped"]
    assert by_name["fine.md"].problems == [] and "fine" in by_name["fine.md"].documents[0].text


def test_a_file_that_balloons_hits_the_memory_limit(tmp_path):
    big = tmp_path / "huge.html"  # (a text file's reader reads a document's worth of it: 40 MB)
    with open(big, "wb") as f:
        f.truncate(600 << 20)  # sparse: costs no disk, but reading it needs 600 MB
    out = list(extract_all(discover([tmp_path]), ExtractOptions(workers=1, memory_mb=400)))
    [r] = reasons(out[0])
    assert r.startswith("skipped: ") and ("memory limit" in r or "process died" in r)


def test_parallel_extraction_equals_serial(tmp_path):
    for i in range(6):
        (tmp_path / f"doc{i}.pdf").write_bytes(make_pdf([f"Document {i} page {j} about topic {i * j}." for j in range(3)]))
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 nope")
    (tmp_path / "notes.md").write_text("# Notes\n\nplain text\n")
    sources = discover([tmp_path])
    serial = list(extract_all(sources, ExtractOptions(workers=0)))
    parallel = list(extract_all(sources, ExtractOptions(workers=3)))
    assert [e.source.rel for e in parallel] == [s.rel for s in sources]
    for a, b in zip(serial, parallel):
        assert (a.sha256, a.page_count, a.documents, a.problems) == (b.sha256, b.page_count, b.documents, b.problems)


def test_build_lists_every_problem_and_strict_writes_nothing(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.pdf").write_bytes(make_pdf(["Useful text about gardening and tomatoes."]))
    (docs / "locked.pdf").write_bytes(encrypt_pdf(make_pdf(["secret"]), user_password="pw"))
    (docs / "scan.pdf").write_bytes(make_pdf([""]))
    (docs / "half.pdf").write_bytes(make_pdf(["Typed.", ""]))
    (docs / "junk.pdf").write_bytes(b"not a pdf")
    out = tmp_path / "kb.kbpack"
    proc = kbc_cli("build", str(docs), "-o", str(out), "--json", check=True)
    rep = json.loads(proc.stdout)
    skipped = {p["source"]: p["reason"] for p in rep["skipped"]}
    degraded = {p["source"]: p["reason"] for p in rep["degraded"]}
    assert set(skipped) == {"locked.pdf", "scan.pdf", "junk.pdf"} and set(degraded) == {"half.pdf"}
    assert "needs a password" in skipped["locked.pdf"] and "no text layer" in skipped["scan.pdf"]
    human = kbc_cli("build", str(docs), "-o", str(out), check=True).stdout
    assert "skipped (3):" in human and "degraded (1):" in human and "junk.pdf: unreadable PDF" in human
    assert kbc_cli("inspect", str(out), "--verify").returncode == 0

    strict_out = tmp_path / "strict.kbpack"
    proc = kbc_cli("build", str(docs), "-o", str(strict_out), "--strict")
    assert proc.returncode == 5 and not strict_out.exists()
    assert "locked.pdf" in proc.stderr
    assert not list(tmp_path.glob("strict.kbpack*"))  # no temp file left behind either

    with_pw = kbc_cli("build", str(docs), "-o", str(out), "--password", "pw", "--json", check=True)
    assert "locked.pdf" not in {p["source"] for p in json.loads(with_pw.stdout)["skipped"]}


# --------------------------------------------------------------------------- ../shared/pdfs


@needs_shared
@pytest.mark.parametrize("name, expect", [
    ("empty.pdf", "skipped: unreadable PDF: file is empty"),
    ("libreoffice-writer-password.pdf", "skipped: encrypted: needs a password"),
    ("grayscale-image.pdf", "skipped: no text layer on any of its 1 pages"),
    ("imagemagick-CCITTFaxDecode.pdf", "skipped: no text layer on any of its 1 pages"),
])
def test_shared_hostile_files_are_reported_with_the_right_reason(name, expect, reader):
    [r] = reasons(one(PDFS / name, reader))
    assert r.startswith(expect)


@needs_shared
def test_shared_files_that_must_open(reader):
    polish = one(PDFS / "issue-625-identity-cmap.pdf", reader)  # AES/RC4 with an empty user password
    assert polish.problems == [] and any(c in polish.documents[0].text for c in "ąęłńóśźż")
    locked = one(PDFS / "libreoffice-writer-password.pdf", passwords=["openpassword"], reader=reader)
    assert locked.problems == [] and len(locked.documents[0].text) > 400
    corrupt = one(PDFS / "zen_of_python_corrupted.pdf", reader)  # recoverable structure damage
    assert corrupt.documents and "Beautiful is better than ugly" in " ".join(corrupt.documents[0].text.split())
    french = one(PDFS / "2023-06-20-PV.pdf", reader)
    assert "é" in french.documents[0].text


@needs_shared
def test_shared_ligatures_become_letters(reader):
    for name, word in (("crazyones-pdfa.pdf", "misfits"), ("GeoTopo-komprimiert.pdf", "Auflage")):
        text = one(PDFS / name, reader).documents[0].text
        assert not any("\ufb00" <= c <= "\ufb06" for c in text), name
        assert word in text, name


@needs_shared
def test_shared_folder_builds_and_strict_fails(tmp_path, tiny_model):
    """The tiny test model: what is asserted is extraction's verdicts and a valid bundle, and the
    default model would spend most of a minute embedding these 760 chunks."""
    out = tmp_path / "pdfs.kbpack"
    proc = kbc_cli("build", str(PDFS), "-o", str(out), "--json", "--model", str(tiny_model), check=True)
    rep = json.loads(proc.stdout)
    skipped = {p["source"]: p["reason"] for p in rep["skipped"]}
    assert set(skipped) == {"empty.pdf", "libreoffice-writer-password.pdf", "grayscale-image.pdf",
                            "imagemagick-CCITTFaxDecode.pdf"}
    assert "issue-625-identity-cmap.pdf" not in skipped
    assert kbc_cli("inspect", str(out), "--verify").returncode == 0
    strict = tmp_path / "strict.kbpack"
    assert kbc_cli("build", str(PDFS), "-o", str(strict), "--model", str(tiny_model), "--strict").returncode == 5
    assert not strict.exists()


# ------------------------------------------------------------ titles and headings (chunk context)

def test_meaningful_titles_only():
    from kbc.readers.textclean import meaningful_title

    assert meaningful_title("Form 10-K for Microsoft Corp") == "Form 10-K for Microsoft Corp"
    # the application's window title over its input file is a generator's title (issue 26): the
    # document's first heading or its own file name is used instead
    assert meaningful_title("Microsoft Word - annual report.docx") is None
    for junk in ("0000764478-17-000008", "Untitled", "", None, 42, "10811.exe", "zen_of_python.txt"):
        assert meaningful_title(junk) is None


def test_page_headings_are_short_capitalised_lines_at_the_top():
    from kbc.readers.textclean import page_heading

    assert page_heading("NETFLIX, INC.\nCONSOLIDATED BALANCE SHEETS\n(in thousands, except share data)\n2017 2016") == \
        "NETFLIX, INC. — CONSOLIDATED BALANCE SHEETS"
    assert page_heading("continued from the previous page, where the sentence began and goes on at length\nMore") == ""
    assert page_heading("Note 5 - Acquisitions and Divestitures\nOn August 1, 2022, the Company completed") == \
        "Note 5 - Acquisitions and Divestitures"
    assert page_heading("A\nB\nC\nD") == ""  # no word of three letters
    assert page_heading("") == ""


def test_markdown_heading_paths_cover_their_sections():
    from kbc.readers.textclean import markdown_headings

    text = "# Guide\n\nintro\n\n## Install\n\ntext\n\n### Linux\n\nmore\n\n## Use\n\nend"
    spans = markdown_headings(text)
    assert [h for _, _, h in spans] == ["Guide", "Guide > Install", "Guide > Install > Linux", "Guide > Use"]
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a < b for a, b, _ in spans) and all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
    assert text[spans[2][0]:spans[2][1]].startswith("### Linux")


def test_control_characters_are_cleaned():
    from kbc.readers.textclean import clean_text

    assert clean_text("net\x00income\x07 1,577\x1b[2J") == "net income 1,577 [2J"


def test_a_huge_text_file_is_cut_and_reported_not_chunked_without_bound(tmp_path, monkeypatch):
    import kbc.readers.guarded as X

    monkeypatch.setattr(X, "MAX_DOCUMENT_CHARS", 1000)
    p = tmp_path / "big.md"
    p.write_text("# Title\n\n" + "word " * 5000)
    src = discover([p])[0]
    ex = extract_file(src)
    doc = ex.documents[0]
    assert len(doc.text) == 1000 and doc.pages[-1].end <= 1000 and all(b <= 1000 for _, b, _ in doc.headings)
    assert any(pr.severity == "degraded" and "cut at 1,000 characters" in pr.reason for pr in ex.problems)


# ------------------------------------------------------- table rows (the pdfium reader, real filings)

FILINGS = SHARED / "eval" / "financebench-dev" / "pdfs"
needs_filings = pytest.mark.skipif(not FILINGS.is_dir(), reason="../shared/eval/financebench-dev not present")

# Five statement pages of the dev filings (1-based physical page) and line items that sit on them,
# each with the first number of its row as the filing prints it. On pypdf's text of these pages the
# label and its numbers land on different lines; a footnote marker set higher (Best Buy's "(4)")
# or cells set on baselines a few points apart (3M's "Proceeds from sale of businesses") split
# pdfium's own lines too.
STATEMENT_ROWS = {
    ("NETFLIX_2017_10K", 45): [("Total current liabilities", "5,466,312"), ("Cash and cash equivalents", "2,822,795"),
                               ("Long-term debt", "6,499,432"), ("Accumulated other comprehensive loss", "(20,557)")],
    ("3M_2018_10K", 60): [("Purchases of property, plant and equipment (PP&E)", "(1,577)"),
                          ("Depreciation and amortization", "1,488"),
                          ("Proceeds from sale of businesses, net of cash sold", "846"),
                          ("Net cash provided by (used in) operating activities", "6,439")],
    ("BESTBUY_2023_10K", 28): [("Restructuring charges (4)", "147"), ("Intangible asset amortization (3)", "86"),
                               ("Non-GAAP operating income", "2,028"), ("Operating income", "1,795")],
    ("AMCOR_2023_10K", 52): [("Total current liabilities", "4,476"), ("Goodwill", "5,366"),
                             ("Trade payables", "2,690"), ("Property, plant, and equipment, net", "3,762")],
    ("MICROSOFT_2023_10K", 60): [("Total current assets", "184,257"), ("Short-term unearned revenue", "50,901"),
                                 ("Retained earnings", "118,848"), ("Total liabilities", "205,753")],
}


def _row_of(page_text: str, label: str) -> str:
    line = next((ln for ln in page_text.split("\n") if ln.startswith(label)), None)
    assert line is not None, f"no line starts with {label!r}"
    return line


@needs_filings
@pytest.mark.parametrize("stem, page", list(STATEMENT_ROWS))
def test_statement_rows_keep_their_numbers_on_one_line(stem, page):
    doc = one(FILINGS / f"{stem}.pdf").documents[0]  # the default reader
    span = doc.pages[page - 1]
    text = doc.text[span.start:span.end]
    for label, first_number in STATEMENT_ROWS[(stem, page)]:
        row = _row_of(text, label)
        numbers = row[len(label):].replace("$", " ").split()
        assert numbers and numbers[0] == first_number, (label, row)


@needs_filings
def test_pypdf_splits_the_rows_pdfium_keeps():
    """What the row test guards against: pypdf's text of a balance sheet puts a line item's
    numbers at the start of the next line."""
    span_text = lambda ex, n: ex.documents[0].text[ex.documents[0].pages[n - 1].start:ex.documents[0].pages[n - 1].end]
    pypdf = span_text(one(FILINGS / "NETFLIX_2017_10K.pdf", "pypdf"), 45)
    assert not any(ln.startswith("Total current liabilities") and "5,466,312" in ln for ln in pypdf.split("\n"))


def test_the_reader_is_chosen_recorded_and_keys_the_cache(tmp_path):
    from kbc.format.bundle import Bundle

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.pdf").write_bytes(make_pdf(["Revenue grew in the owl business.", "Bats were flat."]))
    cache = tmp_path / "cache"
    built = {}
    for reader in ("pypdf", "pdfium"):
        out = tmp_path / f"{reader}.kbpack"
        rep = json.loads(kbc_cli("build", str(docs), "-o", str(out), "--pdf-reader", reader, "--json",
                                 "--cache-dir", str(cache), check=True).stdout)
        with Bundle(out) as b:
            m = b.manifest
        built[reader] = rep
        assert m["build_options"]["pdf_reader"] == reader
        assert f"({reader}" in m["extraction"]["readers"]["pdf"]
    # the second build found nothing in the cache: the reader is part of the extraction key
    assert built["pdfium"]["cache"]["files_extracted"] == 1 and built["pdfium"]["cache"]["files_cached"] == 0
    again = json.loads(kbc_cli("build", str(docs), "-o", str(tmp_path / "again.kbpack"), "--pdf-reader", "pypdf",
                               "--json", "--cache-dir", str(cache), check=True).stdout)
    assert again["cache"]["files_cached"] == 1
    bad = kbc_cli("build", str(docs), "-o", str(tmp_path / "x.kbpack"), "--pdf-reader", "pdfminer")
    assert bad.returncode == 2 and "pdfminer" in bad.stderr and "Traceback" not in bad.stderr


def test_an_unknown_reader_in_a_config_file_is_one_line(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nSome text about owls.\n")
    (tmp_path / "kbc.toml").write_text('pdf-reader = "pdfminer"\n')
    proc = kbc_cli("build", str(docs), "-o", str(tmp_path / "x.kbpack"))
    assert proc.returncode == 2 and "pdfminer" in proc.stderr and "pdfium" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.kbpack").exists()
