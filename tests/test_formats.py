"""Every supported format in one folder (files the test makes): text and headings come through,
encodings are detected or forced, a bad JSONL line costs only that line, and everything that is
not built is listed with its reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import kbc_cli
from kbc.readers import READERS
from kbc.stages.sources import discover

HTML = """<!doctype html><html><head><meta charset="utf-8"><title>Pump manual</title></head><body>
<nav><ul><li><a href="/">Home</a></li><li><a href="/shop">Shop the sale now</a></li></ul></nav>
<main><article><h1>Installing the pump</h1>
<p>Bolt the centrifugal pump to a level concrete base and connect the inlet hose before anything else.</p>
<h2>Priming</h2><p>Fill the casing with clean water before the first start; a dry run ruins the mechanical seal.</p>
</article></main><footer>Copyright 2026 ACME Pumps. All rights reserved. Privacy policy.</footer></body></html>"""


def _docx(path: Path) -> None:
    from docx import Document

    d = Document()
    d.core_properties.title = "Valve maintenance handbook"
    d.add_heading("Valve maintenance handbook", level=0)
    d.add_heading("Gate valves", level=1)
    d.add_paragraph("Exercise every gate valve twice a year so the stem does not seize.")
    t = d.add_table(rows=2, cols=2)
    t.cell(0, 0).text, t.cell(0, 1).text = "Valve", "Torque"
    t.cell(1, 0).text, t.cell(1, 1).text = "DN100", "45 Nm"
    d.save(path)


def _epub(path: Path) -> None:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("pumps-1")
    book.set_title("The Pump Book")
    book.set_language("en")
    chapters = []
    for i, (title, body) in enumerate([("Impellers", "Closed impellers suit clean water and reach the best efficiency."),
                                       ("Seals", "Mechanical seals must never run dry; flush them before start-up.")]):
        c = epub.EpubHtml(title=title, file_name=f"c{i}.xhtml", lang="en")
        c.content = f"<html><body><h1>{title}</h1><p>{body} {body}</p></body></html>"
        book.add_item(c)
        chapters.append(c)
    book.toc = chapters
    book.spine = chapters
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    epub.write_epub(str(path), book)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("formats") / "docs"
    d.mkdir()
    (d / "page.html").write_text(HTML)
    _docx(d / "valves.docx")
    _epub(d / "book.epub")
    (d / "guide.rst").write_text("Pump guide\n==========\n\nIntro about pumps.\n\nWiring\n------\n\n"
                                 "Connect the motor to a 16 A breaker.\n")
    (d / "notes.adoc").write_text("= Seal notes\n\n== Flushing\n\nFlush the seal chamber for ten minutes.\n")
    (d / "plan.org").write_text("#+TITLE: Service plan\n* TODO Spring check :pumps:\nGrease the bearings in April.\n")
    (d / "flows.csv").write_text("pump,flow\nP1,40 l/min\nP2,55 l/min\n")
    (d / "levels.tsv").write_text("tank\tlevel\nT1\t80 %\n")
    (d / "latin1.txt").write_bytes("Crème brûlée pour le café du personnel de maintenance.".encode("latin-1"))
    (d / "utf16.txt").write_bytes("Seals of the UTF-16 pump".encode("utf-16"))
    (d / "readme.md").write_text("# Readme\n\n## Safety\n\nLock out the motor first.\n")
    (d / "records.jsonl").write_text('{"_id": "a", "text": "impeller wear record"}\n{broken\n'
                                     '{"_id": "b", "text": "bearing noise record"}\n')
    (d / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (d / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (d / ".hidden.md").write_text("# secret\n")
    return d


def test_every_reader_kind_is_in_the_folder(mixed):
    kinds = {s.kind for s in discover([mixed])}
    assert kinds >= {"html", "docx", "epub", "rst", "asciidoc", "org", "csv", "tsv", "text", "markdown", "records"}
    assert set(READERS) - kinds == {"pdf", "code"}  # PDFs: test_extract.py; code: opt-in, below


def test_a_mixed_folder_builds_with_text_headings_and_reasons(mixed, tmp_path, tiny_model):
    out = tmp_path / "kb.kbpack"
    proc = kbc_cli("build", str(mixed), "-o", str(out), "--model", str(tiny_model), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    ignored = {i["path"]: i["reason"] for i in report["ignored"]}
    assert ignored == {"photo.png": "unsupported file type .png", ".hidden.md": "hidden file (name starts with '.')"}
    skipped = {p["source"]: p["reason"] for p in report["skipped"]}
    assert list(skipped) == ["binary.txt"] and "pass --encoding" in skipped["binary.txt"]
    degraded = {p["source"]: p["reason"] for p in report["degraded"]}
    assert degraded == {"records.jsonl": "1 bad line(s) skipped: line 2: not a JSON object"}

    info = json.loads(kbc_cli("inspect", str(out), "--json", "-n", "200").stdout)
    assert info["counts"]["ignored_files"] == 2
    by_source: dict[str, list[dict]] = {}
    paths = [s["path"] for s in info["sources"]]
    for ch in info["chunks"]:
        by_source.setdefault(paths[ch["source"]], []).append(ch)

    def text(name: str) -> str:
        return " ".join(c["text"] for c in by_source[name])

    def contexts(name: str) -> str:
        return " ".join(c.get("context", "") for c in by_source[name])

    assert "level concrete base" in text("page.html") and "Home" not in text("page.html")
    assert "Copyright" not in text("page.html") and "Installing the pump" in contexts("page.html")
    assert "45 Nm" in text("valves.docx") and "Valve maintenance handbook" in contexts("valves.docx")
    assert "never run dry" in text("book.epub") and "The Pump Book" in contexts("book.epub")
    assert by_source["book.epub"][-1]["page_end"] == 2  # a page per chapter
    assert "Pump guide" in contexts("guide.rst") and "Seal notes" in contexts("notes.adoc")
    assert "Service plan" in contexts("plan.org")
    assert "pump: P2; flow: 55 l/min" in text("flows.csv") and "tank: T1; level: 80 %" in text("levels.tsv")
    assert "Crème brûlée pour le café" in text("latin1.txt")
    assert "Seals of the UTF-16 pump" in text("utf16.txt")
    assert "Readme" in contexts("readme.md")
    assert {c["record"] for c in by_source["records.jsonl"]} == {"a", "b"}


@pytest.mark.parametrize("name, paths", [
    ("page.html", ["Installing the pump", "Installing the pump > Priming"]),
    ("valves.docx", ["Valve maintenance handbook", "Valve maintenance handbook > Gate valves"]),
    ("book.epub", ["Impellers", "Seals"]),
    ("guide.rst", ["Pump guide", "Pump guide > Wiring"]),
    ("notes.adoc", ["Seal notes", "Seal notes > Flushing"]),
    ("plan.org", ["Spring check"]),
    ("readme.md", ["Readme", "Readme > Safety"]),
])
def test_each_structured_format_keeps_its_heading_paths(mixed, name, paths):
    from kbc.readers.guarded import extract_file

    src = next(s for s in discover([mixed]) if s.rel == name)
    ex = extract_file(src)
    assert not ex.problems, ex.problems
    assert [h for _, _, h in ex.documents[0].headings] == paths


def test_source_code_is_read_only_when_asked(tmp_path, tiny_model):
    docs = tmp_path / "repo"
    (docs / "src").mkdir(parents=True)
    (docs / "README.md").write_text("# Pump controller\n\nFirmware for the pump controller.\n")
    (docs / "src" / "pump.py").write_text("def prime(pump):\n    \"\"\"Fill the casing before the first start.\"\"\"\n"
                                          "    pump.valve.open()\n\n\nclass Seal:\n    pass\n")
    (docs / "src" / "config.yaml").write_text("pump:\n  max_flow: 55\n")
    (docs / "logo.svg").write_text("<svg/>")
    without = {i["path"]: i["reason"] for i in json.loads(kbc_cli(
        "build", str(docs), "-o", str(tmp_path / "a.kbpack"), "--model", str(tiny_model), "--json").stdout)["ignored"]}
    assert without == {"src/pump.py": "code file .py: read only with --code",
                       "src/config.yaml": "code file .yaml: read only with --code",
                       "logo.svg": "unsupported file type .svg"}
    proc = kbc_cli("build", str(docs), "-o", str(tmp_path / "b.kbpack"), "--model", str(tiny_model), "--code", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [i["path"] for i in report["ignored"]] == ["logo.svg"] and report["files"] == 3
    info = json.loads(kbc_cli("inspect", str(tmp_path / "b.kbpack"), "--json", "-n", "50").stdout)
    paths = [s["path"] for s in info["sources"]]
    code = [c for c in info["chunks"] if paths[c["source"]] == "src/pump.py"]
    assert "def prime(pump):\n    \"\"\"Fill the casing" in code[0]["text"]  # indentation kept
    assert code[0]["context"] == "src pump"
    from kbc.format.bundle import Bundle

    with Bundle(tmp_path / "b.kbpack") as b:  # never lifted from a bundle: --code widens what a build reads
        assert "code" not in b.manifest["build_options"]


def test_encoding_can_be_forced(tmp_path, tiny_model):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "koi.txt").write_bytes("Насос перекачивает воду".encode("koi8-r"))
    out = tmp_path / "kb.kbpack"
    kbc_cli("build", str(d), "-o", str(out), "--model", str(tiny_model), "--encoding", "koi8-r", "-q", check=True)
    info = json.loads(kbc_cli("inspect", str(out), "--json", "-n", "1").stdout)
    assert info["chunks"][0]["text"] == "Насос перекачивает воду"
    bad = kbc_cli("build", str(d), "-o", str(out), "--model", str(tiny_model), "--encoding", "klingon")
    assert bad.returncode == 2 and bad.stderr.strip() == "kbc: error: --encoding klingon: unknown encoding"


def test_patterns_match_folders_and_a_folder_with_nothing_to_build_says_why(tmp_path):
    d = tmp_path / "docs"
    (d / "drafts" / "old").mkdir(parents=True)
    (d / "drafts" / "old" / "x.md").write_text("# x\n")
    (d / "keep.md").write_text("# keep\n")
    (d / "a.png").write_bytes(b"png")
    ignored: list = []
    found = discover([d], exclude=["drafts"], ignored=ignored)
    assert [s.rel for s in found] == ["keep.md"] and ("drafts/", "excluded by --exclude drafts") in ignored
    assert [s.rel for s in discover([d], include=["drafts"])] == ["drafts/old/x.md"]
    from kbc.errors import InputError

    with pytest.raises(InputError, match=r"nothing to build.*2 excluded by --exclude \*\.md.*1 unsupported file type \.png"):
        discover([d], exclude=["*.md"])


def test_file_arguments_obey_patterns_and_name_collisions(tmp_path):
    from kbc.errors import InputError

    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "readme.md").write_text(f"# {d}\n")
    (tmp_path / "a" / "other.md").write_text("# other\n")
    with pytest.raises(InputError, match="two inputs share the name 'readme.md'"):
        discover([tmp_path / "a" / "readme.md", tmp_path / "b" / "readme.md"])
    ignored: list = []
    found = discover([tmp_path / "a" / "readme.md", tmp_path / "a" / "other.md"], exclude=["readme.md"],
                     ignored=ignored)
    assert [s.rel for s in found] == ["other.md"] and ignored == [("readme.md", "excluded by --exclude readme.md")]


def test_an_excluded_linked_folder_is_ignored_not_a_problem(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# a\n")
    (tmp_path / "docs" / "vendor").symlink_to(tmp_path)
    skipped, ignored = [], []
    discover([tmp_path / "docs"], exclude=["vendor"], skipped=skipped, ignored=ignored)
    assert skipped == [] and ignored == [("vendor/", "excluded by --exclude vendor")]


def test_jsonl_records_may_hold_line_separators_in_their_strings(tmp_path):
    from kbc.readers.guarded import extract_file

    p = tmp_path / "r.jsonl"
    p.write_text('{"_id": "1", "text": "before\u2028after and \u0085 next"}\n{"_id": "2", "text": "second"}\n',
                 encoding="utf-8")
    ex = extract_file(discover([p])[0])
    assert not ex.problems and [d.record_id for d in ex.documents] == ["1", "2"]


def test_identical_bytes_in_files_of_other_kinds_or_paths_keep_their_own_chunks(tmp_path, tiny_model):
    """The chunk cache is keyed by kind and path as well as bytes: the context comes from the path."""
    import kbc

    docs = tmp_path / "docs"
    docs.mkdir()
    body = "name,role\nalice,admin\nbob,operator\n"
    (docs / "people.csv").write_text(body)
    (docs / "zzz-notes.txt").write_text(body)
    cache = tmp_path / "cache"
    kbc.build([docs], tmp_path / "warm.kbpack", model=str(tiny_model), cache_dir=cache)
    kbc.build([docs], tmp_path / "cached.kbpack", model=str(tiny_model), cache_dir=cache)
    kbc.build([docs], tmp_path / "clean.kbpack", model=str(tiny_model), use_cache=False)
    assert (tmp_path / "cached.kbpack").read_bytes() == (tmp_path / "clean.kbpack").read_bytes()
    from kbc.format.bundle import Bundle

    with Bundle(tmp_path / "clean.kbpack") as b:
        texts = {b.source_path(c): c["text"] for c in b.iter_chunks()}
    assert texts["people.csv"].startswith("name: alice") and texts["zzz-notes.txt"].startswith("name,role")
