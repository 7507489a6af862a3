"""The documentation a user reads is true: README.md and docs/ (issue 38).

- every relative link in README.md and docs/**/*.md leads to a file that exists, and to a heading
  of it where the link names one (#anchor, as GitHub makes heading anchors);
- every command block of the README runs as written, in order, in a folder laid out like the
  clone (`.venv`, `sample_docs/`, `sample_eval/`), except the block with the two set-up commands
  (`make sample`, `make test`: they install, and `make test` would run this test);
- a code block preceded by `<!-- example: PATH -->` is that file, byte for byte, and a Python one
  runs: so an example is the tested file, not a copy that drifts from it;
- the README's C block (the C runtime's example) is compiled, linked and run against a bundle by
  tests/test_libkbpack.py, which takes the README's one ```c block: this test only checks that
  there is exactly one.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, kbc_cli

DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
README = ROOT / "README.md"
README_MAX_LINES = 250  # issue 38: a README a newcomer reads in five minutes

FENCE = re.compile(r"^(```+|~~~+)")
LINK = re.compile(r"(?<!!)\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?")
EXAMPLE_MARKER = re.compile(r"^<!--\s*example:\s*(\S+)\s*-->\s*$")


# ------------------------------------------------------------------------------------------------
# Markdown, read as GitHub renders it (the subset these pages use)

def blocks_and_prose(text: str) -> tuple[list[tuple[int, str, str]], list[tuple[int, str]]]:
    """(fenced code blocks as (line number of the fence, info string, body), prose lines as
    (line number, text)). Links and headings are only looked for in prose."""
    blocks, prose = [], []
    fence, info, body, start = None, "", [], 0
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence, info, body, start = m.group(1), line[len(m.group(1)):].strip(), [], n
        elif fence is not None and line.strip() == fence:
            blocks.append((start, info, "\n".join(body) + "\n"))
            fence = None
        elif fence is not None:
            body.append(line)
        else:
            prose.append((n, line))
    assert fence is None, f"a code block opened on line {start} is never closed"
    return blocks, prose


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: its text lower-cased, markup and punctuation dropped
    (letters, digits, '_', '-' and spaces kept), spaces made hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays, its target goes
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors_of(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file; repeated headings get -1, -2, ... as on GitHub."""
    _, prose = blocks_and_prose(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose:
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = github_anchor(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links_of(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every link and image in the file's prose, inline code left out."""
    _, prose = blocks_and_prose(path.read_text(encoding="utf-8"))
    out = []
    for n, line in prose:
        line = re.sub(r"`[^`]*`", "", line)
        out += [(n, m.group(1)) for m in LINK.finditer(line)] + [(n, m.group(1)) for m in IMAGE.finditer(line)]
    return out


def broken_links(path: Path) -> list[str]:
    """One line per relative link of `path` that does not resolve: a missing file or folder, or an
    #anchor that is no heading of the Markdown file it names. Web and mail links are not followed."""
    problems = []
    for n, target in links_of(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(ROOT)}:{n}: {target}"
        if not dest.exists():
            problems.append(f"{where}: no such file")
        elif not dest.resolve().is_relative_to(ROOT):
            problems.append(f"{where}: outside the repository")
        elif anchor and dest.suffix == ".md" and anchor not in anchors_of(dest):
            problems.append(f"{where}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    return problems


def test_the_pages_exist():
    assert README in DOC_FILES and len(DOC_FILES) > 5, DOC_FILES


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    problems = broken_links(path)
    assert not problems, "\n".join(problems)


def test_the_link_check_finds_what_is_broken(tmp_path, monkeypatch):
    """The checker itself: a missing file and a missing anchor are found; good anchors (a repeated
    heading's -1 included), web links and links in inline code pass."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Exit codes, for CI\n\n## Exit codes, for CI\n\n```sh\n# not a heading\n```\n")
    (tmp_path / "README.md").write_text(
        "[ok](docs/a.md#exit-codes-for-ci) [second](docs/a.md#exit-codes-for-ci-1) [web](https://example.com/x)\n"
        "[gone](docs/missing.md) [bad anchor](docs/a.md#not-a-heading) `[in code](docs/nowhere.md)`\n"
        "[self](#intro)\n\n## Intro\n")
    problems = broken_links(tmp_path / "README.md")
    assert len(problems) == 2, problems
    assert "README.md:2: docs/missing.md: no such file" in problems[0]
    assert "no heading with anchor #not-a-heading in docs/a.md" in problems[1]


def test_the_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/"


# ------------------------------------------------------------------------------------------------
# Examples that are files

def marked_examples(path: Path) -> list[tuple[int, Path, str]]:
    """(line, example file, block body) for every block right after an `<!-- example: PATH -->`
    line; PATH is relative to the repository root."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    blocks, _ = blocks_and_prose(text)
    by_start = {start: body for start, _, body in blocks}
    out = []
    for n, line in enumerate(lines, 1):
        m = EXAMPLE_MARKER.match(line)
        if m:
            nxt = next((k for k in range(n + 1, len(lines) + 1) if lines[k - 1].strip()), None)
            assert nxt in by_start, f"{path.relative_to(ROOT)}:{n}: an example marker must come right before a code block"
            out.append((n, ROOT / m.group(1), by_start[nxt]))
    return out


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_marked_examples_are_their_files(path):
    for n, example, body in marked_examples(path):
        where = f"{path.relative_to(ROOT)}:{n}"
        assert example.is_file(), f"{where}: the example {example.relative_to(ROOT)} does not exist"
        assert body == example.read_text(encoding="utf-8"), \
            f"{where}: the block differs from {example.relative_to(ROOT)}: copy the file into the page"


def test_every_readme_python_block_is_a_tested_file():
    blocks, _ = blocks_and_prose(README.read_text(encoding="utf-8"))
    python = [body for _, info, body in blocks if info == "python"]
    marked = {body for _, _, body in marked_examples(README)}
    assert python, "the README shows no Python example"
    assert all(body in marked for body in python), \
        "every ```python block of the README comes from a file (<!-- example: PATH --> before it)"


def test_the_readme_has_one_c_block():
    """tests/test_libkbpack.py compiles and runs the README's one ```c block (it takes the first)."""
    blocks, _ = blocks_and_prose(README.read_text(encoding="utf-8"))
    assert [info for _, info, _ in blocks].count("c") == 1


# ------------------------------------------------------------------------------------------------
# The README's commands, run

SETUP_COMMANDS = ("make sample", "make test")
# What the README says a line exits with when it is not 0.
EXPECTED_EXIT = {".venv/bin/kbc diff": 7}
SHELL_SYNTAX = re.compile(r"[|;&<>`$]")


def readme_command_blocks() -> list[list[str]]:
    """The README's sh blocks, as lines, without the set-up block."""
    blocks, _ = blocks_and_prose(README.read_text(encoding="utf-8"))
    sh = [body for _, info, body in blocks if info in ("sh", "bash", "shell", "console")]
    setup = [b for b in sh if any(c in b for c in SETUP_COMMANDS)]
    assert len(setup) == 1 and all(c in setup[0] for c in SETUP_COMMANDS), "the set-up block moved or changed"
    return [[line for line in b.splitlines() if line.strip()] for b in sh if b is not setup[0]]


def run_line(line: str, workdir: Path) -> subprocess.CompletedProcess:
    """A README line: a plain `.venv/bin/kbc ...` in this process, anything with shell syntax
    (a redirection, a pipe) in bash, as a user's shell would run it."""
    args = shlex.split(line, comments=True)
    if args and args[0] == ".venv/bin/kbc" and not SHELL_SYNTAX.search(line.split("#", 1)[0]):
        return kbc_cli(*args[1:], cwd=workdir)  # in this process: no second of start-up per line
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", line], cwd=workdir, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def clone_like(tmp_path_factory) -> Path:
    """A folder laid out like the clone after `make sample`: the README's lines name .venv/bin/kbc,
    sample_docs/ and sample_eval/ by relative path; what they write stays in this folder."""
    if not (ROOT / ".venv" / "bin" / "kbc").exists():
        pytest.skip("no .venv/bin/kbc in the clone: the README's lines name it (make install makes it)")
    d = tmp_path_factory.mktemp("readme")
    (d / ".venv").symlink_to(ROOT / ".venv", target_is_directory=True)
    for name in ("sample_docs", "sample_eval"):
        (d / name).symlink_to(ROOT / name, target_is_directory=True)
    return d


def test_every_readme_command_runs(clone_like):
    ran = []
    for block in readme_command_blocks():
        for line in block:
            proc = run_line(line, clone_like)
            expected = next((code for start, code in EXPECTED_EXIT.items() if line.startswith(start)), 0)
            assert proc.returncode == expected, f"$ {line}\nexit {proc.returncode}, README says {expected}\n" \
                                                f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            ran.append((line, proc))
    assert len(ran) >= 10
    out = {line.split("#")[0].strip(): proc.stdout for line, proc in ran}
    verify = next(v for k, v in out.items() if "--verify" in k)
    assert "intact" in verify
    evals = [v for k, v in out.items() if k.startswith(".venv/bin/kbc eval")]
    assert evals and all("hybrid*" in v for v in evals)
    assert (clone_like / "kb.kbpack").is_file() and (clone_like / "embeddings.json").stat().st_size > 0
    assert (clone_like / "probes.txt").read_text().count("\n") >= 10  # one input per probe


def test_the_readme_python_examples_run(clone_like):
    """Run after the commands above (this file's order): they build kb.kbpack in the same folder."""
    if not (clone_like / "kb.kbpack").exists():
        pytest.skip("kb.kbpack was not built: test_every_readme_command_runs did not run or failed first")
    examples = [example for _, example, _ in marked_examples(README) if example.suffix == ".py"]
    assert examples
    for example in examples:
        proc = subprocess.run([sys.executable, str(example)], cwd=clone_like, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip(), f"{example.relative_to(ROOT)} printed nothing"
