"""Names as data (issue 44): a file name holding a newline, a tab or an escape sequence is printed
quoted with C escapes in every human output (build summary and its skipped/ignored lists, query,
inspect, diff), so it cannot split a log line or drive a terminal; --json keeps the exact name."""

from __future__ import annotations

import json
import re

import pytest

from conftest import kbc_cli
from kbc.cli.typer_app import _safe, quote_name

# what must never reach human output from a name: controls other than the line ends kbc writes itself
RAW = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")

NAMES = {"line\nbreak.md": '"line\\nbreak.md"', "tab\there.md": '"tab\\there.md"',
         "\x1b[31mred.md": '"\\033[31mred.md"'}


@pytest.mark.parametrize("name, shown", [("plain name.md", "plain name.md"), ("a\nb.md", '"a\\nb.md"'),
                                         ("a\tb", '"a\\tb"'), ("\x1b]0;title\x07", '"\\033]0;title\\a"'),
                                         ('say "hi"\n', '"say \\"hi\\"\\n"'), ("r\u202etxt.md", '"r\\342\\200\\256txt.md"'),
                                         ("caf\u00e9.md", "caf\u00e9.md"), ("\x85", '"\\302\\205"')])
def test_quote_name_escapes_as_git_does(name, shown):
    assert quote_name(name) == shown
    assert not RAW.search(quote_name(name))


def test_safe_text_is_one_line():
    assert _safe("reason:\nsecond line\x1b[2J") == "reason:\\nsecond line\\033[2J"


@pytest.fixture(scope="module")
def odd_corpus(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("names")
    docs = root / "docs"
    docs.mkdir()
    for i, name in enumerate(NAMES):
        (docs / name).write_text(f"# Greenhouse {i}\n\nTomatoes need warmth and water every morning, note {i}.\n")
    (docs / "broken\nfile.pdf").write_bytes(b"%PDF-1.4 not really a pdf\n")  # skipped, named in the summary
    (docs / ".odd\tfile.md").write_text("hidden")  # not built: listed as ignored
    out = root / "kb.kbpack"
    build = kbc_cli("build", str(docs), "-o", str(out), "--model", str(tiny_model), "--progress", "none")
    assert build.returncode == 0, build.stderr
    as_json = kbc_cli("build", str(docs), "-o", str(root / "again.kbpack"), "--model", str(tiny_model), "--json")
    return out, build, json.loads(as_json.stdout)


def test_build_summary_quotes_names(odd_corpus):
    _, build, report = odd_corpus
    assert not RAW.search(build.stdout + build.stderr), build.stdout
    assert '    "broken\\nfile.pdf": ' in build.stdout
    assert '    ".odd\\tfile.md": ' in build.stdout
    assert [p["source"] for p in report["skipped"]] == ["broken\nfile.pdf"]  # --json: the exact name
    assert ".odd\tfile.md" in [i["path"] for i in report["ignored"]]


def test_query_and_inspect_quote_names_json_keeps_them(odd_corpus, tiny_model):
    out, _, _ = odd_corpus
    human = kbc_cli("query", str(out), "tomatoes warmth water", "-k", "3", "--model", str(tiny_model))
    assert human.returncode == 0, human.stderr
    assert not RAW.search(human.stdout + human.stderr)
    shown = {quoted for quoted in NAMES.values() if quoted in human.stdout}
    assert len(shown) == 3, human.stdout
    machine = json.loads(kbc_cli("query", str(out), "tomatoes warmth water", "-k", "3", "--model", str(tiny_model),
                                 "--json").stdout)
    assert {h["source"] for h in machine["hits"]} == set(NAMES)

    inspect = kbc_cli("inspect", str(out), "--chunks", "3")
    assert inspect.returncode == 0, inspect.stderr
    assert not RAW.search(inspect.stdout)
    assert all(f"  {quoted}  " in inspect.stdout for quoted in NAMES.values())
    assert '"broken\\nfile.pdf": ' in inspect.stdout


def test_diff_quotes_names(odd_corpus, tmp_path, tiny_model):
    out, _, _ = odd_corpus
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "new\x1b[2Jone.md").write_text("# New\n\nSomething else entirely.\n")
    other = tmp_path / "other.kbpack"
    kbc_cli("build", str(docs), "-o", str(other), "--model", str(tiny_model), "-q", check=True)
    d = kbc_cli("diff", str(out), str(other))
    assert d.returncode == 7 and not RAW.search(d.stdout), d.stdout
    assert '+ "new\\033[2Jone.md"' in d.stdout and '- "line\\nbreak.md"' in d.stdout


def test_kbpack_search_output_reads_for_people_and_json_for_programs(odd_corpus, kbpack_tool):
    import subprocess

    out, _, _ = odd_corpus
    human = subprocess.run([str(kbpack_tool), "search", str(out), "--mode", "lexical", "-k", "3", "--",
                            "tomatoes warmth water"], capture_output=True, text=True, timeout=60)
    assert human.returncode == 0 and human.stderr == "", human.stderr
    assert not RAW.search(human.stdout), human.stdout
    firsts = [line for line in human.stdout.splitlines() if re.match(r"\d+\. ", line)]
    assert len(firsts) == 3 and all(re.match(r"\d+\. \d+\.\d{4}  \S", line) for line in firsts), human.stdout
    assert {q for q in NAMES.values() if q in human.stdout} == set(NAMES.values())
    assert "Tomatoes need warmth and water" in human.stdout  # the chunk's first words
    machine = subprocess.run([str(kbpack_tool), "search", str(out), "--mode", "lexical", "-k", "3", "--json", "--",
                              "tomatoes warmth water"], capture_output=True, text=True, timeout=60)
    hits = json.loads(machine.stdout)["hits"]
    assert {h["source_path"] for h in hits} == set(NAMES)  # the exact names
    assert [round(h["score"], 4) for h in hits] == [float(line.split()[1]) for line in firsts]
