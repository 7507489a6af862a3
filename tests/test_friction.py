"""What a newcomer trips over (issue 26): compressed and extensionless text, empty questions, FAISS's
own error text, generators' default titles, what `kbc inspect` lists, and an `import kbc` that a
folder named kbc beside a script cannot shadow. In-process wherever kbc's own process is not what
is tested."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import re
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import kbc
from conftest import ROOT, skip_summary
from kbc.cli import app
from kbc.errors import InputError
from kbc.readers.guarded import extract_file
from kbc.stages.sources import discover

runner = CliRunner()
NOTES = "# Pump notes\n\nThe centrifugal pump hums when the impeller wears.\n"


def _one_error_line(out) -> str:
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kbc: error: "), out.stderr
    return lines[0]


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory, tiny_model) -> Path:
    """Built in this process (no extraction workers): what the query and inspect tests read."""
    base = tmp_path_factory.mktemp("friction")
    docs = base / "docs"
    docs.mkdir()
    (docs / "notes.md").write_text(NOTES)
    (docs / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (docs / "blob").write_bytes(bytes(range(256)) * 4)
    out = base / "kb.kbpack"
    kbc.build(docs, out, model=str(tiny_model), workers=0)
    return out


# ------------------------------------------------------------------ text wherever it is

def _bomb(path: Path, codec: str, mib: int) -> Path:
    """`mib` MiB of zeros, compressed block by block (never all in memory)."""
    block = bytes(1 << 20)
    if codec == "gzip":
        c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        data = b"".join(c.compress(block) for _ in range(mib)) + c.flush()
    elif codec == "bzip2":
        c = bz2.BZ2Compressor(9)
        data = b"".join(c.compress(block) for _ in range(mib)) + c.flush()
    else:
        c = lzma.LZMACompressor()
        data = b"".join(c.compress(block) for _ in range(mib)) + c.flush()
    path.write_bytes(data)
    return path


@pytest.fixture()
def doc_tree(tmp_path) -> Path:
    """What /usr/share/doc holds: compressed text of known and unknown types, extensionless text."""
    d = tmp_path / "doc"
    d.mkdir()
    (d / "notes.md.gz").write_bytes(gzip.compress(NOTES.encode()))
    (d / "guide.rst.bz2").write_bytes(bz2.compress(b"Priming\n=======\n\nFill the casing with water first.\n"))
    (d / "faq.txt.xz").write_bytes(lzma.compress("Crème brûlée for the pump crew.".encode("latin-1")))
    (d / "changelog.Debian.gz").write_bytes(gzip.compress(b"pump (1.2) stable; urgency=low\n\n  * Quieter bearings.\n"))
    (d / "copyright").write_text("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
                                 "Upstream-Name: pump\n")
    (d / "README.abs-guide").write_text("The advanced pump scripting guide, in plain text.\n")
    (d / "latin1-notes").write_bytes("Pompe à eau: vérifier le joint chaque été.".encode("latin-1"))
    (d / "blob").write_bytes(bytes(range(256)) * 4)
    (d / "empty").write_bytes(b"")
    (d / "data.tar.gz").write_bytes(gzip.compress(b"ustar\x00" + bytes(500)))
    (d / "script.py.gz").write_bytes(gzip.compress(b"print('pump')\n"))
    (d / "broken.gz").write_bytes(b"not gzip at all")
    (d / "cut.md.gz").write_bytes(gzip.compress(NOTES.encode())[:-6])
    return d


def test_compressed_and_extensionless_text_is_read_and_the_rest_says_why(doc_tree):
    ignored: list = []
    skipped: list = []
    found = {s.rel: s.kind for s in discover([doc_tree], ignored=ignored, skipped=skipped)}
    assert found == {"notes.md.gz": "markdown+gzip", "guide.rst.bz2": "rst+bzip2", "faq.txt.xz": "text+xz",
                     "changelog.Debian.gz": "text+gzip", "copyright": "text", "README.abs-guide": "text",
                     "latin1-notes": "text"}
    assert dict(ignored) == {
        "blob": "unsupported file type (no extension): its bytes are not text",
        "empty": "empty file of no known type (no extension)",
        "data.tar.gz": "unsupported file type .tar.gz",
        "script.py.gz": "code file .py.gz: read only with --code"}
    assert dict(skipped) == {"broken.gz": "not a valid gzip file: incorrect header check",
                             "cut.md.gz": "not a valid gzip file: the file ends before the stream does (truncated)"}
    assert "script.py.gz" in {s.rel for s in discover([doc_tree], opted_in=("code",))}


def test_a_compressed_file_reads_as_its_uncompressed_self(doc_tree, tmp_path):
    plain = tmp_path / "notes.md"
    plain.write_text(NOTES)
    by_rel = {s.rel: s for s in discover([doc_tree])}
    unzipped = extract_file(discover([plain])[0]).documents[0]
    for rel, want in (("notes.md.gz", unzipped), ):
        doc = extract_file(by_rel[rel]).documents[0]
        assert (doc.text, doc.title, doc.headings) == (want.text, want.title, want.headings)
    rst = extract_file(by_rel["guide.rst.bz2"]).documents[0]
    assert rst.title == "Priming" and "Fill the casing" in rst.text
    assert extract_file(by_rel["faq.txt.xz"]).documents[0].text == "Crème brûlée for the pump crew."
    assert extract_file(by_rel["latin1-notes"]).documents[0].text == "Pompe à eau: vérifier le joint chaque été."


def test_a_single_named_file_is_sniffed_too(doc_tree):
    assert [s.kind for s in discover([doc_tree / "copyright"])] == ["text"]
    assert [s.kind for s in discover([doc_tree / "changelog.Debian.gz"])] == ["text+gzip"]
    with pytest.raises(InputError, match=r"blob: unsupported file type \(no extension\): its bytes are not text; "
                                         r"supported: .*any other file whose bytes are text"):
        discover([doc_tree / "blob"])


@pytest.mark.parametrize("codec,suffix", [("gzip", ".gz"), ("bzip2", ".bz2"), ("xz", ".xz")])
def test_a_compression_bomb_is_a_skip_with_its_reason_in_bounded_memory(tmp_path, codec, suffix):
    import tracemalloc

    from kbc.readers.compressed import CompressedSource

    d = tmp_path / "docs"
    d.mkdir()
    (d / "ok.md").write_text(NOTES)
    bomb = _bomb(d / f"zeros.txt{suffix}", codec, 128)  # against a limit of 4 MiB
    assert bomb.stat().st_size < 1 << 20
    skipped: list = []
    tracemalloc.start()
    try:
        found = discover([d], skipped=skipped, max_file_bytes=4 << 20)
        walk_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        # the worker bounds itself again (the file may have changed since the walk)
        ex = extract_file(CompressedSource(bomb, bomb.name, f"text+{codec}", 4 << 20))
        read_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    reason = "decompresses to more than 4 MiB, the limit per file (--max-file-mb)"
    # the walk, in the build's process, reads only the first bytes; the worker measures the whole stream
    assert [s.rel for s in found] == ["ok.md", bomb.name] and skipped == []
    assert [(p.severity, p.reason) for p in ex.problems] == [("skipped", reason)] and not ex.documents
    # the limit, a step or two and the codec's own state (xz's default dictionary is 8 MiB), not 128 MiB
    assert walk_peak < 24 << 20 and read_peak < 24 << 20, (walk_peak, read_peak)


def test_a_build_reads_compressed_text_and_lists_the_bomb(tmp_path, tiny_model):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "notes.md.gz").write_bytes(gzip.compress(NOTES.encode()))
    _bomb(d / "zeros.txt.gz", "gzip", 8)
    out = runner.invoke(app, ["build", str(d), "-o", str(tmp_path / "kb.kbpack"), "--model", str(tiny_model),
                              "--workers", "0", "--max-file-mb", "2", "--json"])
    assert out.exit_code == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["files"] == 1 and [(p["source"], p["reason"]) for p in report["skipped"]] == [
        ("zeros.txt.gz", "decompresses to more than 2 MiB, the limit per file (--max-file-mb)")]
    strict = runner.invoke(app, ["build", str(d), "-o", str(tmp_path / "s.kbpack"), "--model", str(tiny_model),
                                 "--workers", "0", "--max-file-mb", "2", "--strict"])
    assert strict.exit_code == 5 and not (tmp_path / "s.kbpack").exists()


# ------------------------------------------------------------------ errors in kbc's words

@pytest.mark.parametrize("question", ["", "   ", "\t\n"])
def test_an_empty_question_is_exit_2_in_one_line(small_bundle, tiny_model, question):
    for args in (["query", str(small_bundle), question], ["query", str(small_bundle), question, "--unit", "page"],
                 ["query", str(small_bundle), question, "--mode", "lexical", "--json"]):
        out = runner.invoke(app, args)
        assert out.exit_code == 2
        assert _one_error_line(out) == "kbc: error: the question is empty: ask something to retrieve context for"
    with kbc.open(small_bundle, model=str(tiny_model)) as kb:
        for call in (lambda: kb.search(question), lambda: kb.search_pages(question, mode="lexical"),
                     lambda: kb.search_many(["pump", question])):
            with pytest.raises(InputError, match="is empty"):
                call()
        assert kb.search("pump", k=1)  # a real question still answers


def test_an_empty_query_in_an_eval_file_is_exit_2_naming_it(small_bundle, tiny_model, tmp_path):
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"_id": "q1", "text": "pump hums"}\n{"_id": "q2", "text": "  "}\n')
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("q1\tnotes.md\t1\n")
    out = runner.invoke(app, ["eval", str(small_bundle), "--queries", str(queries), "--qrels", str(qrels),
                              "--model", str(tiny_model)])
    assert out.exit_code == 2 and _one_error_line(out) == f"kbc: error: {queries}: query 'q2' is empty"


def test_a_factory_string_faiss_refuses_is_one_line_with_valid_examples(tmp_path, tiny_model):
    from kbc.search.dense import build_index

    want = "index 'Bogus': not a FAISS factory string FAISS accepts; valid ones are e.g. Flat, HNSW32, IVF1024,Flat"
    with pytest.raises(InputError) as e:
        build_index(np.eye(8, 32, dtype=np.float32), "Bogus")
    assert str(e.value) == want
    d = tmp_path / "docs"
    d.mkdir()
    (d / "notes.md").write_text(NOTES)
    for factory in ("Bogus", "HNSW32,Nonsense"):
        out = runner.invoke(app, ["build", str(d), "-o", str(tmp_path / "kb.kbpack"), "--model", str(tiny_model),
                                  "--workers", "0", "--index", factory])
        line = _one_error_line(out)
        assert out.exit_code == 2 and line == f"kbc: error: --{want.replace('Bogus', factory)}"
        assert not re.search(r"faiss::|std::|Error in|\.cpp", line)


# ------------------------------------------------------------------ titles that are the document's

GENERATOR_TITLES = ["Word Document", "Microsoft Word - x.doc", "MICROSOFT WORD - Annual Report.docx", "untitled",
                    "Untitled-3", "Untitled document", "PowerPoint Presentation", "Microsoft PowerPoint - deck.pptx",
                    "Slide 1", "slide12", "Document1", "Document", "Presentation1", "Book1", "Sheet1",
                    "New Microsoft Word Document", "New Text Document", "Insert title here", "(untitled)", "Doc1"]
REAL_TITLES = ["Form 10-K for Microsoft Corp", "Word Documents in Court: a guide", "Untitled Goose Game review",
               "Document management policy", "Slide rules and their history", "Book of Kells", "Chapter 1",
               "Title IX compliance", "Annual Report 2020"]


@pytest.mark.parametrize("title", GENERATOR_TITLES)
def test_a_generators_default_title_is_no_title(title):
    from kbc.readers.textclean import meaningful_title

    assert meaningful_title(title) is None
    assert meaningful_title(title.lower()) is None and meaningful_title(f"  {title.upper()} ") is None


@pytest.mark.parametrize("title", REAL_TITLES)
def test_a_real_title_is_kept(title):
    from kbc.readers.textclean import meaningful_title

    assert meaningful_title(title) == title


def test_a_docx_without_a_real_title_takes_its_first_heading_or_its_file_name(tmp_path, tiny_model):
    from docx import Document

    d = tmp_path / "docs"
    d.mkdir()
    for name, heading in (("policy.docx", None), ("handbook.docx", "Valve care")):
        doc = Document()
        doc.core_properties.title = "Word Document"
        if heading:
            doc.add_heading(heading, level=1)
        doc.add_paragraph("Exercise every gate valve twice a year so the stem does not seize.")
        doc.save(d / name)
    titles = {s.rel: extract_file(s).documents[0].title for s in discover([d])}
    assert titles == {"handbook.docx": "Valve care", "policy.docx": None}
    kbc.build(d, tmp_path / "kb.kbpack", model=str(tiny_model), workers=0)
    from kbc.format.bundle import Bundle

    with Bundle(tmp_path / "kb.kbpack") as b:
        contexts = {b.source_path(c): c.get("context") for c in (b.chunk(i) for i in range(b.count))}
    assert contexts["policy.docx"] == "policy" and contexts["handbook.docx"].startswith("Valve care")
    assert not any("Word Document" in c for c in contexts.values())


def test_inspect_lists_the_ignored_files_beside_the_skipped(small_bundle):
    human = runner.invoke(app, ["inspect", str(small_bundle)])
    assert human.exit_code == 0
    listed = human.stdout.split("ignored (2", 1)[1].splitlines()[1:3]
    assert listed == ["  blob: unsupported file type (no extension): its bytes are not text",
                      "  photo.png: unsupported file type .png"]
    info = json.loads(runner.invoke(app, ["inspect", str(small_bundle), "--json"]).stdout)
    assert info["ignored"] == [{"path": "blob", "reason": "unsupported file type (no extension): its bytes are not text"},
                               {"path": "photo.png", "reason": "unsupported file type .png"}]


# ------------------------------------------------------------------ the test run explains its skips

def test_skips_are_summed_up_by_reason():
    class Report:
        def __init__(self, reason):
            self.longrepr = ("tests/x.py", 1, f"Skipped: {reason}")

    reports = [Report("../shared not present")] * 3 + [Report("no zstd.h")] + [Report("../shared not present")]
    assert skip_summary(reports) == "5 skipped: 4 ../shared not present; 1 no zstd.h"
    assert skip_summary([]) is None


def test_the_test_run_ends_with_the_skip_line(tmp_path):
    (tmp_path / "test_some.py").write_text(
        "import pytest\n\n@pytest.mark.skipif(True, reason='no GPU here')\ndef test_a():\n    pass\n\n"
        "def test_b():\n    pytest.skip('corpus not present')\n\n"
        "@pytest.mark.skipif(True, reason='no GPU here')\ndef test_c():\n    pass\n\ndef test_d():\n    pass\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                           "-o", "addopts=", "--rootdir", str(tmp_path), str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "tests")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 skipped: 2 no GPU here; 1 corpus not present" in proc.stdout.splitlines()


# ------------------------------------------------------------------ an import a folder named kbc cannot shadow

SCRIPT = "import {name}\nprint({name}.{attr}())\n"


def _editable_mode() -> str | None:
    """The editable mode the Makefile installs kbc in (None: setuptools' default, the import finder)."""
    m = re.search(r"editable_mode=(\w+)", (ROOT / "Makefile").read_text())
    return m.group(1) if m else None


def test_the_makefiles_install_mode_is_not_shadowed_by_a_clone_folder(tmp_path):
    """A small package laid out as kbc is (the package folder inside a clone folder of the same
    name, no src/), built editable in the Makefile's mode; a script beside the clone imports it."""
    from zipfile import ZipFile

    clone = tmp_path / "kbcdummy"
    (clone / "kbcdummy").mkdir(parents=True)
    (clone / "kbcdummy" / "__init__.py").write_text("def build():\n    return 'the package'\n")
    (clone / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools>=64"]\n'
                                          'build-backend = "setuptools.build_meta"\n[project]\nname = "kbcdummy"\n'
                                          'version = "0"\n[tool.setuptools.packages.find]\ninclude = ["kbcdummy*"]\n')
    mode = _editable_mode()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    build = subprocess.run([sys.executable, "-c", "import sys, setuptools.build_meta as b; "
                            "print(b.build_editable(sys.argv[1], {'editable_mode': sys.argv[2]} if sys.argv[2] else None))",
                            str(wheels), mode or ""], cwd=clone, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    site = tmp_path / "site"
    with ZipFile(wheels / build.stdout.strip().splitlines()[-1]) as z:
        z.extractall(site, [n for n in z.namelist() if not n.split("/")[0].endswith(".dist-info")])
    script = tmp_path / "use_it.py"  # beside the clone folder: sys.path[0] holds a `kbcdummy/` with no __init__
    script.write_text(f"import site, sys\nsite.addsitedir({str(site)!r})\n" + SCRIPT.format(name="kbcdummy", attr="build"))
    proc = subprocess.run([sys.executable, "-S", str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "the package", (mode, proc.stderr[-500:])


def test_a_script_beside_a_folder_named_kbc_imports_the_installed_kbc(tmp_path):
    import importlib.metadata as md

    files = [str(f) for f in (md.distribution("kbc").files or [])]
    if any(f.endswith("_finder.py") and "__editable__" in f for f in files):
        pytest.skip("kbc is installed in setuptools' finder mode, from before the Makefile's "
                    f"editable_mode={_editable_mode()}: run make install")
    clone = tmp_path / "kbc"  # a clone of the repository: the package is kbc/kbc, the clone has no __init__
    (clone / "kbc").mkdir(parents=True)
    (clone / "README.md").write_text("a clone\n")
    (tmp_path / "use_kbc.py").write_text("import kbc\nprint(callable(kbc.build), kbc.__file__)\n")
    proc = subprocess.run([sys.executable, "use_kbc.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-1000:]
    ok, where = proc.stdout.split()
    assert ok == "True" and Path(where).resolve() == (ROOT / "kbc" / "__init__.py").resolve()
