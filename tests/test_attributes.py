"""Document attributes (FORMAT.md §2.10): what a build records (front matter, JSONL metadata, kind,
title), how the section is checked, and the crafted sections both readers must refuse alike.

CASES are applied by tests/fuzz_seeds.py (`hostile_attributes`) to its attributes base, so they are
also in the crafted set that tests/test_c_verify_differential.py and the sanitizer tests run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import fuzz_seeds
from conftest import kbc_cli
from forge import manifest_of, rebuild, sections, with_manifest

# ---------------------------------------------------------------- crafted sections


def _rows(edit):
    """A forge: the attributes section's JSON passed through `edit(doc)`."""
    def forge(data: bytes) -> bytes:
        doc = json.loads(sections(data)["attributes"][1])
        edit(doc)
        return rebuild(data, {"attributes": json.dumps(doc).encode()})
    return forge


def _raw(text: bytes):
    return lambda data: rebuild(data, {"attributes": text})


def _meta(edit):
    def forge(data: bytes) -> bytes:
        return with_manifest(data, lambda m: edit(m["attributes"]) if "attributes" in m else None)
    return forge


def _set_value(key: str, value, row: int = 0):
    """Row `row`'s value of `key` (by the manifest's key order) replaced."""
    def forge(data: bytes) -> bytes:
        names = [k["name"] for k in manifest_of(data)["attributes"]["keys"]]

        def edit(doc):
            doc["rows"][row][2 + names.index(key)] = value
        return _rows(edit)(data)
    return forge


def _whole_manifest(edit):
    return lambda data: with_manifest(data, edit)


def _keys(edit):
    return _meta(lambda a: edit(a["keys"]))


def _drop_section(data: bytes) -> bytes:
    return rebuild(data, drop=("attributes",))


# name -> (forge, exit code of `kbc inspect --verify` and `kbpack verify`: 0 intact, 3 invalid)
CASES = {
    "manifest object not an object": (_whole_manifest(lambda m: m.__setitem__("attributes", [])), 3),
    "version 2": (_meta(lambda a: a.__setitem__("version", 2)), 3),
    "version 1.0": (_meta(lambda a: a.__setitem__("version", 1.0)), 3),
    "version true": (_meta(lambda a: a.__setitem__("version", True)), 3),
    "section named otherwise": (_meta(lambda a: a.__setitem__("section", "attrs")), 3),
    "keys not a list": (_meta(lambda a: a.__setitem__("keys", {"a": "string"})), 3),
    "65 keys": (_keys(lambda k: k.extend({"name": f"k{i}", "type": "string"} for i in range(65 - len(k)))), 3),
    "key name starts with a digit": (_keys(lambda k: k[0].__setitem__("name", "1kind")), 3),
    "key named path": (_keys(lambda k: k[0].__setitem__("name", "path")), 3),
    "key name with a space": (_keys(lambda k: k[0].__setitem__("name", "a b")), 3),
    "key name of 65 characters": (_keys(lambda k: k[0].__setitem__("name", "a" * 65)), 3),
    "key name of 64 characters": (_keys(lambda k: k[0].__setitem__("name", "a" * 64)), 0),
    "key name not a string": (_keys(lambda k: k[0].__setitem__("name", 7)), 3),
    "key twice": (_keys(lambda k: k[1].__setitem__("name", k[0]["name"])), 3),
    "unknown type": (_keys(lambda k: k[0].__setitem__("type", "float")), 3),
    "section missing": (_drop_section, 3),
    "section without manifest object": (_whole_manifest(lambda m: m.pop("attributes")), 3),
    "manifest object null, no section": (lambda d: _whole_manifest(lambda m: m.__setitem__("attributes", None))(
        _drop_section(d)), 0),
    "section encoded as msgpack": (lambda d: rebuild(d, encodings={"attributes": "msgpack"}), 3),
    "not JSON": (_raw(b"{rows: []}"), 3),
    "invalid UTF-8": (_raw(b'{"rows": [[0, 0, "\xff"]]}'), 3),
    "not an object": (_raw(b"[]"), 3),
    "rows not a list": (_rows(lambda d: d.__setitem__("rows", {})), 3),
    "no rows for chunks": (_rows(lambda d: d.__setitem__("rows", [])), 3),
    "more rows than chunks": (_rows(lambda d: d["rows"].extend([d["rows"][-1]] * 20)), 3),
    "row not an array": (_rows(lambda d: d["rows"].__setitem__(1, {"first": 1})), 3),
    "row one value short": (_rows(lambda d: d["rows"][1].pop()), 3),
    "row one value long": (_rows(lambda d: d["rows"][1].append(None)), 3),
    "first row not at 0": (_rows(lambda d: d["rows"][0].__setitem__(0, 1) or d["rows"].pop(1)), 3),
    "first chunks not increasing": (_rows(lambda d: d["rows"][2].__setitem__(0, 1)), 3),
    "first chunk beyond the chunks": (_rows(lambda d: d["rows"][-1].__setitem__(0, 99)), 3),
    "first chunk 1.0": (_rows(lambda d: d["rows"][1].__setitem__(0, 1.0)), 3),
    "first chunk true": (_rows(lambda d: d["rows"][1].__setitem__(0, True)), 3),
    "source beyond the sources": (_rows(lambda d: d["rows"][1].__setitem__(1, 2)), 3),
    "source negative": (_rows(lambda d: d["rows"][1].__setitem__(1, -1)), 3),
    "fewer rows, longer runs": (_rows(lambda d: d.__setitem__("rows", d["rows"][::3])), 0),
    "string of 1025 characters": (_set_value("product", "é" * 1025), 3),
    "string of 1024 characters": (_set_value("product", "é" * 1024), 0),
    "string of 1024 astral characters": (_set_value("product", "😀" * 1024), 0),
    "string with a lone surrogate": (_set_value("product", "x\ud800y"), 0),
    "string a number": (_set_value("product", 200), 3),
    "list of 65 strings": (_set_value("tags", ["t"] * 65), 3),
    "list of 64 strings": (_set_value("tags", ["t"] * 64), 0),
    "list holding a number": (_set_value("tags", ["en", 1]), 3),
    "list holding a list": (_set_value("tags", [["en"]]), 3),
    "list nested deep": (_set_value("tags", [[[[[["en"]]]]]]), 3),
    "list a string": (_set_value("tags", "en"), 3),
    "integer 2^53": (_set_value("year", 2 ** 53), 3),
    "integer 2^53 - 1": (_set_value("year", 2 ** 53 - 1), 0),
    "integer -(2^53 - 1)": (_set_value("year", -(2 ** 53 - 1)), 0),
    "integer 1.5": (_set_value("year", 1.5), 3),
    "integer 2020.0": (_set_value("year", 2020.0), 3),
    "integer true": (_set_value("year", True), 3),
    "integer a string": (_set_value("year", "2020"), 3),
    "integer as an exponent": (lambda d: _raw(sections(_set_value("year", 77777)(d))["attributes"][1]
                                              .replace(b"77777", b"7e4"))(d), 3),
    "date 2023-02-29": (_set_value("released", "2023-02-29"), 3),
    "date 2024-02-29": (_set_value("released", "2024-02-29"), 0),
    "date 0000-01-01": (_set_value("released", "0000-01-01"), 3),
    "date 2023-1-01": (_set_value("released", "2023-1-01"), 3),
    "date with a time": (_set_value("released", "2023-01-01T00:00"), 3),
    "date in escapes": (lambda d: _raw(sections(_set_value("released", "2023-01-05")(d))["attributes"][1]
                                       .replace(b'"2023-01-05"', b'"\\u0032023-01-05"'))(d), 0),
    "null values": (_set_value("product", None, row=3), 0),
    "unknown key in the section": (_rows(lambda d: d.__setitem__("comment", "hello")), 0),
}


def _python_verdict(path: Path) -> int:
    from kbc.errors import BundleError
    from kbc.format.bundle import Bundle

    try:
        with Bundle(path) as b:
            b.verify()
        return 0
    except BundleError:
        return 3


@pytest.fixture(scope="module")
def attributes_base() -> bytes:
    return fuzz_seeds.bases()["attributes"]


def test_the_base_is_intact_and_has_every_type(attributes_base, tmp_path):
    path = tmp_path / "base.kbpack"
    path.write_bytes(attributes_base)
    assert _python_verdict(path) == 0
    from kbc.format.bundle import Bundle

    with Bundle(path) as b:
        t = b.attributes()
        assert t.keys == {"kind": "string", "product": "string", "released": "date", "tags": "list", "year": "integer"}
        assert t.firsts == list(range(13))  # the sources alternate: a row per chunk


def test_crafted_sections_both_readers_same_verdict(attributes_base, tmp_path, kbpack_tool):
    """Every crafted case: Python's verify and libkbpack's reach the verdict the case expects, and
    refusals name the attributes section or the manifest."""
    wrong = []
    for name, (forge, expected) in CASES.items():
        path = tmp_path / f"{fuzz_seeds._slug(name)}.kbpack"
        path.write_bytes(forge(attributes_base))
        py = _python_verdict(path)
        c = subprocess.run([str(kbpack_tool), "verify", str(path)], capture_output=True, text=True, timeout=60)
        if py != expected or c.returncode != expected:
            wrong.append(f"{name}: python {py}, C {c.returncode} {c.stderr.strip()}, expected {expected}")
        elif expected:
            assert c.stderr.startswith(("kbpack: attributes: ", "kbpack: manifest: ")), (name, c.stderr)
    assert not wrong, "\n".join(wrong)


def test_a_reader_that_knows_no_attributes_section_still_reads_the_bundle(attributes_base, tmp_path):
    """A 1.6 reader skips unknown sections (FORMAT.md §4): the section is named in the table and is
    just bytes to it. Here: the table lists it, and a bundle with it dropped entirely still opens."""
    path = tmp_path / "no-attributes.kbpack"
    path.write_bytes(_whole_manifest(lambda m: m.pop("attributes"))(_drop_section(attributes_base)))
    from kbc.format.bundle import Bundle

    with Bundle(path) as b:
        b.verify()
        assert b.attributes() is None


# ---------------------------------------------------------------- what a build records


def test_front_matter_is_read_and_left_out_of_the_text():
    from kbc.readers.markdown import split_front_matter

    attrs, rest = split_front_matter(b"---\nproduct: x200\nyear: 2023\nquoted: '2023'\ntags: [hardware, en]\n"
                                     b"langs:\n  - en\n  - de\nnested:\n  a: 1\ndraft: true\n---\n# Title\nBody\n")
    assert attrs == {"product": "x200", "year": 2023, "quoted": "2023", "tags": ["hardware", "en"],
                     "langs": ["en", "de"], "draft": True}
    assert rest == b"# Title\nBody\n"
    assert split_front_matter(b"# No front matter\n---\n") == ({}, b"# No front matter\n---\n")
    assert split_front_matter(b"---\nunclosed: 1\n")[0] == {}  # no closing line: it is text


def test_types_settle_over_every_document():
    from kbc.format.attributes import AttributeRows

    rows = AttributeRows()
    rows.add(0, 0, {"a": 1, "b": "2023-01-01", "c": "x", "d": True})
    rows.add(3, 1, {"a": "one", "b": "2023-02-01", "c": ["y", "z"]})
    rows.add(4, 1, None)  # the same document's later chunks: no new row
    meta, data = rows.section([{"path": "a.md", "kind": "markdown"}, {"path": "b.md", "kind": "markdown"}])
    assert {k["name"]: k["type"] for k in meta["keys"]} == {"kind": "string", "a": "string", "b": "date", "c": "list",
                                                             "d": "string"}
    names = [k["name"] for k in meta["keys"]]
    assert json.loads(data)["rows"] == [[0, 0, *[{"kind": "markdown", "a": "1", "b": "2023-01-01", "c": ["x"],
                                                  "d": "true"}[n] for n in names]],
                                        [3, 1, *[{"kind": "markdown", "a": "one", "b": "2023-02-01", "c": ["y", "z"],
                                                  "d": None}[n] for n in names]]]


def test_declared_attributes_apply_by_glob_and_override():
    from kbc.format.attributes import AttributeRows

    rows = AttributeRows()
    rows.add(0, 0, {"product": "own"})
    rows.add(2, 1, {})
    meta, data = rows.section([{"path": "manuals/x200/a.md", "kind": "markdown"}, {"path": "b.md", "kind": "text"}],
                              [(None, {"lang": "en"}), ("manuals/x200/**", {"product": "x200", "tags": ["hw"]})])
    names = [k["name"] for k in meta["keys"]]
    rows_out = [dict(zip(names, r[2:])) for r in json.loads(data)["rows"]]
    assert rows_out[0] == {"kind": "markdown", "lang": "en", "product": "x200", "tags": ["hw"]}
    assert rows_out[1] == {"kind": "text", "lang": "en", "product": None, "tags": None}


DOCS = {
    "manuals/x200/setup.md": "---\nproduct: x200\nyear: 2023\ntags: [hardware, en]\nreleased: 2023-04-01\n---\n"
                             "# Setup\n\nPlug the X200 into power. Hold the button for three seconds.\n",
    "manuals/x300.md": "---\nproduct: x300\nyear: 2021\ntags:\n  - hardware\n  - de\n---\n# X300\n\n"
                       "The X300 needs a reset after a power loss.\n",
    "notes.md": "# Notes\n\nGeneral notes about power and batteries.\n",
}


def test_build_records_front_matter_jsonl_metadata_and_kind(tmp_path, tiny_model):
    docs = tmp_path / "docs"
    for rel, text in DOCS.items():
        (docs / rel).parent.mkdir(parents=True, exist_ok=True)
        (docs / rel).write_text(text)
    (docs / "faq.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "title": f"FAQ {i}", "text": f"answer {i}",
                                                        "metadata": {"lang": ["de", "en"][i % 2], "year": 2020 + i}})
                                            + "\n" for i in range(4)))
    out = tmp_path / "kb.kbpack"
    kbc_cli("build", str(docs), "-o", str(out), "--model", str(tiny_model), "-q", check=True)
    from kbc.format.bundle import Bundle
    from kbc.format.filters import compile_filter

    with Bundle(out) as b:
        b.verify()
        t = b.attributes()
        assert t.keys == {"kind": "string", "title": "string", "lang": "string", "product": "string",
                          "released": "date", "tags": "list", "year": "integer"}
        paths = b.source_paths()

        def matched(*where):
            return sorted({paths[b.chunk(int(i))["source"]] for i in compile_filter(list(where), t, paths).ids})

        assert matched("product=x200") == ["manuals/x200/setup.md"]
        assert matched("tags=de,en", "year<2023") == ["manuals/x300.md"]
        assert matched("kind=records", "lang=en") == ["faq.jsonl"]
        assert len(compile_filter(["kind=records", "lang=en"], t, paths).ids) == 2  # records q1 and q3
        assert matched("path:**/*.md") == ["manuals/x200/setup.md", "manuals/x300.md", "notes.md"]
        assert matched("path:*.md") == ["notes.md"]
        assert matched("released>=2023-04-01") == ["manuals/x200/setup.md"]
        # the front matter is not text: no chunk holds it
        assert not any("product:" in c["text"] for c in b.iter_chunks())


def test_declared_attributes_inspect_and_diff(tmp_path, tiny_model):
    """kbc.toml's [[attributes]] tables and --attr land in the bundle over the documents' own; inspect
    lists them (human and JSON); diff names the file whose attributes changed; a bad table is one
    line, exit 2, before anything is built."""
    project = tmp_path / "project"
    docs = project / "docs"
    for rel, text in DOCS.items():
        (docs / rel).parent.mkdir(parents=True, exist_ok=True)
        (docs / rel).write_text(text)
    (project / "kbc.toml").write_text('[[attributes]]\nmatch = "manuals/**"\naudience = "customer"\n'
                                      'series = ["x", "hw"]\n\n[[attributes]]\nmatch = "notes.md"\naudience = "staff"\n')
    a, b = tmp_path / "a.kbpack", tmp_path / "b.kbpack"
    kbc_cli("build", str(docs), "-o", str(a), "--model", str(tiny_model), "-q", check=True)
    kbc_cli("build", str(docs), "-o", str(b), "--model", str(tiny_model), "-q", "--attr", "lang=en",
            "--attr", "manuals/x300.md:year=1999", check=True)
    info = json.loads(kbc_cli("inspect", str(a), "--json", check=True).stdout)
    by_key = {k["name"]: k for k in info["attributes"]}
    assert by_key["audience"]["values"] == [{"value": "customer", "chunks": 2}, {"value": "staff", "chunks": 1}]
    assert by_key["series"]["type"] == "list" and "lang" not in by_key
    human = kbc_cli("inspect", str(a), check=True).stdout
    assert "  audience (string, 3 chunks): customer (2), staff (1)" in human
    hits = json.loads(kbc_cli("query", str(a), "power", "--mode", "lexical", "--where", "audience=staff", "--json",
                              check=True).stdout)
    assert hits["matched"] == 1 and [h["source"] for h in hits["hits"]] == ["notes.md"]
    # --attr on the command line replaces the file's, as every flag overrides kbc.toml
    by_key = {k["name"]: k for k in json.loads(kbc_cli("inspect", str(b), "--json", check=True).stdout)["attributes"]}
    assert "audience" not in by_key and by_key["lang"]["chunks"] == 3
    assert {"value": 1999, "chunks": 1} in by_key["year"]["values"]
    diff = kbc_cli("diff", str(a), str(b))
    assert diff.returncode == 7 and "\nattributes.manuals/x300.md: {" in diff.stdout
    changes = json.loads(kbc_cli("diff", str(a), str(b), "--json").stdout)["settings"]["attributes"]
    old, new = changes["manuals/x300.md"]
    assert (old["audience"], old["year"]) == ("customer", 2021) and (new.get("audience"), new["year"]) == (None, 1999)
    assert "lang" in changes["keys"][1] and "audience" not in changes["keys"][1]  # keys: old -> new
    (project / "kbc.toml").write_text('[[attributes]]\nmatch = "manuals/**"\n"bad key" = "x"\n')
    bad = kbc_cli("build", str(docs), "-o", str(tmp_path / "c.kbpack"), "--model", str(tiny_model), "-q")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "attributes table 1" in bad.stderr
    assert not (tmp_path / "c.kbpack").exists()


def test_a_rebuild_with_attributes_is_byte_identical(tmp_path, tiny_model):
    docs = tmp_path / "docs"
    for rel, text in DOCS.items():
        (docs / rel).parent.mkdir(parents=True, exist_ok=True)
        (docs / rel).write_text(text)
    outs = [tmp_path / "one.kbpack", tmp_path / "two.kbpack"]
    for out in outs:
        kbc_cli("build", str(docs), "-o", str(out), "--model", str(tiny_model), "-q", "--attr", "lang=en", check=True)
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_docx_core_properties_but_not_the_generators_defaults(tmp_path):
    """A DOCX's author, language and keywords are attributes where the document sets them; the
    author python-docx's template writes is a generator's default, not the document's."""
    import io

    import docx

    from kbc.readers import ReadOptions
    from kbc.readers.docx import read_docx
    from kbc.records import Extracted, SourceFile

    def read(edit) -> dict:
        d = docx.Document()
        d.add_paragraph("The pump is oiled every spring.")
        edit(d.core_properties)
        buf = io.BytesIO()
        d.save(buf)
        out = Extracted(SourceFile(tmp_path / "a.docx", "a.docx", "docx"), "0" * 64, 0, 0)
        read_docx(out.source, buf.getvalue(), out, ReadOptions())
        return out.documents[0].attributes

    assert read(lambda c: None) == {}  # the template's author "python-docx" is left out
    assert read(lambda c: (setattr(c, "author", "Ada Lovelace"), setattr(c, "language", "en-GB"),
                           setattr(c, "keywords", "pumps; oil, spring"))) == {
        "author": "Ada Lovelace", "language": "en-GB", "keywords": ["pumps", "oil", "spring"]}


def test_a_build_that_reuses_cached_extraction_keeps_the_documents_attributes(tmp_path, tiny_model):
    """The build cache keeps each document's own attributes with its text: a build whose chunking
    differs from the one that filled the cache (so it re-chunks cached extractions) records the
    same front matter and JSONL metadata as a build from nothing."""
    docs = tmp_path / "docs"
    for rel, text in DOCS.items():
        (docs / rel).parent.mkdir(parents=True, exist_ok=True)
        (docs / rel).write_text(text)
    env = {"KBC_CACHE_DIR": str(tmp_path / "cache")}
    first, second, fresh = tmp_path / "first.kbpack", tmp_path / "second.kbpack", tmp_path / "fresh.kbpack"
    kbc_cli("build", str(docs), "-o", str(first), "--model", str(tiny_model), "-q", "--chunk-size", "20", env=env,
            check=True)
    kbc_cli("build", str(docs), "-o", str(second), "--model", str(tiny_model), "-q", env=env, check=True)
    kbc_cli("build", str(docs), "-o", str(fresh), "--model", str(tiny_model), "-q", "--no-cache", check=True)
    from kbc.format.bundle import Bundle

    with Bundle(second) as b, Bundle(fresh) as f:
        assert b.attributes().keys == f.attributes().keys and len(f.attributes().keys) > 2
    assert second.read_bytes() == fresh.read_bytes()


@pytest.mark.parametrize("reader", ["pdfium", "pypdf"])
def test_pdf_info_author_subject_and_keywords_but_not_a_generators_placeholder(tmp_path, tiny_model, reader):
    """A PDF's Info dictionary gives `author`, `subject` and `keywords` (a list) as attributes, the
    same through both PDF readers; a placeholder author ("Administrator") is no author."""
    import io

    from pypdf import PdfReader, PdfWriter

    from pdfgen import make_pdf

    docs = tmp_path / "docs"
    docs.mkdir()
    for name, author in (("report.pdf", "Jane Roe"), ("memo.pdf", "Administrator")):
        writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf([f"The {name} text about greenhouse heating."]))))
        writer.add_metadata({"/Author": author, "/Subject": "Greenhouse heating", "/Keywords": "heating; winter, glass"})
        with open(docs / name, "wb") as f:
            writer.write(f)
    out = tmp_path / "kb.kbpack"
    kbc_cli("build", str(docs), "-o", str(out), "--model", str(tiny_model), "-q", "--pdf-reader", reader, check=True)
    from kbc.query.knowledge_base import KnowledgeBase

    with KnowledgeBase(out) as kb:
        sources = {h.source for h in kb.search("greenhouse heating", k=5, mode="lexical", where=["author=Jane Roe"])}
        assert sources == {"report.pdf"}
        both = {h.source for h in kb.search("greenhouse heating", k=5, mode="lexical",
                                            where=["keywords=winter", "subject=Greenhouse heating"])}
        assert both == {"report.pdf", "memo.pdf"}
