"""Everyday CLI habits, `kbc diff` and `kbc cache`; in-process (typer's CliRunner) where the
command's own process is not what is tested."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import kbc
from conftest import kbc_cli, make_tiny_model, run_kbc
from kbc.cli import app

runner = CliRunner()


def test_version_help_and_completion():
    out = runner.invoke(app, ["--version"])
    assert out.exit_code == 0 and out.stdout.startswith(f"kbc {kbc.__version__} (writes .kbpack format 1.")
    assert runner.invoke(app, ["-V"]).stdout == out.stdout
    short = runner.invoke(app, ["build", "-h"])
    assert short.exit_code == 0 and "--engine" in short.stdout and "<local|ray>" in short.stdout
    assert "--install-completion" in runner.invoke(app, ["-h"]).stdout
    assert "Example: kbc diff" in runner.invoke(app, ["diff", "-h"]).stdout


def test_usage_errors_are_one_line_and_json_callers_get_an_error_object(tmp_path):
    """In a child process: what a shell sees, exit code and stderr from `python -m kbc` itself."""
    proc = run_kbc("build", str(tmp_path), "--frobnicate")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("kbc: error: No such option: --frobnicate") and "kbc build -h" in proc.stderr
    proc = run_kbc("query", str(tmp_path / "missing.kbpack"), "pumps", "--json")
    assert proc.returncode == 2
    assert json.loads(proc.stdout) == {"error": {"code": 2, "message": f"{tmp_path / 'missing.kbpack'}: no such file"}}
    bad_choice = run_kbc("build", str(tmp_path), "-o", str(tmp_path / "x.kbpack"), "--engine", "spark", "--json")
    assert bad_choice.returncode == 2 and json.loads(bad_choice.stdout)["error"]["code"] == 2


def test_hits_show_physical_pages_and_labels_where_they_differ():
    from kbc.query.knowledge_base import Hit

    h = Hit(rank=1, score=0.5, chunk_id=0, source="a.pdf", page_start=5, page_end=6, char_start=0, char_end=1,
            text="t", label_start="iv", label_end="v")
    assert h.pages == "5-6" and h.labels == "iv-v" and h.to_dict()["labels"] == "iv-v"
    same = Hit(rank=1, score=0.5, chunk_id=0, source="a.pdf", page_start=3, page_end=3, char_start=0, char_end=1,
               text="t", label_start="3", label_end="3")
    assert same.pages == "3" and same.labels is None and "labels" not in same.to_dict()


def test_library_build_takes_a_path_or_str_and_shows_its_signature(tmp_path, tiny_model):
    params = inspect.signature(kbc.build).parameters
    assert "paths" in params and params["model"].kind is inspect.Parameter.KEYWORD_ONLY
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Pumps\n\nThe pump moves water uphill.\n")
    for arg in (str(docs), docs):
        report = kbc.build(arg, tmp_path / "kb.kbpack", model=str(tiny_model))
        assert report.files == 1


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory, tiny_model):
    base = tmp_path_factory.mktemp("diff")
    one, two = base / "one", base / "two"
    for d in (one, two):
        d.mkdir()
        (d / "same.md").write_text("# Same\n\nThis document does not change between the builds.\n")
    (one / "changed.md").write_text("# Valves\n\nGate valves are exercised twice a year.\n")
    (two / "changed.md").write_text("# Valves\n\nGate valves are exercised four times a year.\n")
    (one / "removed.md").write_text("# Old\n\nA note that the second build no longer has.\n")
    (two / "added.md").write_text("# New\n\nA note that only the second build has.\n")
    paths = {}
    for name, folder, model in (("a", one, tiny_model), ("b", two, tiny_model), ("c", one, None)):
        out = base / f"{name}.kbpack"
        if model is None:
            model = make_tiny_model(base / "other-model", seed=1)
        kbc_cli("build", str(folder), "-o", str(out), "--model", str(model), "-q", check=True)
        paths[name] = out
    return paths


def test_diff_reports_sources_chunks_and_settings_and_gates_ci(two_builds):
    same = kbc_cli("diff", str(two_builds["a"]), str(two_builds["a"]))
    assert same.returncode == 0 and same.stdout.strip().endswith("no differences")
    proc = kbc_cli("diff", str(two_builds["a"]), str(two_builds["b"]), "--json")
    assert proc.returncode == 7, proc.stderr
    d = json.loads(proc.stdout)
    assert d["sources"] == {"added": ["added.md"], "removed": ["removed.md"], "changed": ["changed.md"]}
    assert d["chunks"]["added"] == 2 and d["chunks"]["removed"] == 2 and d["chunks"]["kept"] == 1
    assert d["settings"] == {} and d["changed"] is True
    model = json.loads(kbc_cli("diff", str(two_builds["a"]), str(two_builds["c"]), "--json").stdout)
    assert model["sources"] == {"added": [], "removed": [], "changed": []} and model["chunks"]["kept"] == 3
    assert "weights_sha256" in model["settings"]["embedder"] and model["vectors_changed"] is True
    human = kbc_cli("diff", str(two_builds["a"]), str(two_builds["b"])).stdout
    assert "+ added.md" in human and "- removed.md" in human and "~ changed.md" in human


def test_cache_info_and_clear(tmp_path, tiny_model):
    cache = tmp_path / "cache"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Pumps\n\nThe pump moves water uphill.\n")
    kbc.build([docs], tmp_path / "kb.kbpack", model=str(tiny_model), cache_dir=cache)
    keep = cache / "my-notes.txt"
    keep.write_text("not kbc's")
    info = json.loads(runner.invoke(app, ["cache", "info", "--cache-dir", str(cache), "--json"]).stdout)
    assert info["path"] == str(cache) and info["bytes"] > 0 and info["entries"]["vectors"] >= 1
    assert info["entries"]["extracted"] >= 2  # the file's text and its chunk list
    out = runner.invoke(app, ["cache", "clear", "--cache-dir", str(cache)])
    assert out.exit_code == 0 and out.stdout.startswith("cleared ")
    after = json.loads(runner.invoke(app, ["cache", "info", "--cache-dir", str(cache), "--json"]).stdout)
    assert after["entries"] == {} and after["onnx_exports"] == [] and keep.read_text() == "not kbc's"


def test_cache_prune_by_age_then_size_and_an_old_cache_gets_the_new_column(tmp_path, tiny_model):
    import sqlite3

    cache = tmp_path / "cache"
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"{i}.md").write_text(f"# Note {i}\n\nPump number {i} moves water uphill.\n")
    kbc.build([docs], tmp_path / "kb.kbpack", model=str(tiny_model), cache_dir=cache)
    db = sqlite3.connect(cache / "cache.sqlite3")
    before = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("extracted", "vectors")}
    assert before["vectors"] >= 3 and db.execute("SELECT MIN(used) FROM vectors").fetchone()[0] > 0
    db.execute("UPDATE vectors SET used = used - 40 * 86400 WHERE rowid = (SELECT MIN(rowid) FROM vectors)")
    db.commit()
    db.close()

    out = runner.invoke(app, ["cache", "prune", "--older-than", "30d", "--cache-dir", str(cache), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["entries"] == {"file_hash": 0, "extracted": 0, "vectors": 1}
    # a rebuild reads its entries back, which makes them recent: nothing more is old
    kbc.build([docs], tmp_path / "kb.kbpack", model=str(tiny_model), cache_dir=cache)
    out = runner.invoke(app, ["cache", "prune", "--older-than", "30d", "--cache-dir", str(cache), "--json"])
    assert sum(json.loads(out.stdout)["entries"].values()) == 0
    out = runner.invoke(app, ["cache", "prune", "--max-size", "1KB", "--cache-dir", str(cache)])
    assert out.exit_code == 0 and out.stdout.startswith("removed ")
    db = sqlite3.connect(cache / "cache.sqlite3")
    assert db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0] == 0
    db.close()
    for bad, said in ((["--older-than", "soon"], "--older-than 'soon': expected a number with a unit"),
                      (["--max-size", "2 parsecs"], "--max-size '2 parsecs'"), ([], "needs --older-than, --max-size")):
        out = runner.invoke(app, ["cache", "prune", "--cache-dir", str(cache), *bad])
        assert out.exit_code == 2 and said in out.stderr

    old = tmp_path / "old"  # a cache written before `used` existed still opens, its entries the oldest
    old.mkdir()
    db = sqlite3.connect(old / "cache.sqlite3")
    db.execute("CREATE TABLE vectors (key BLOB PRIMARY KEY, value BLOB NOT NULL)")
    db.execute("INSERT INTO vectors VALUES (x'01', x'00000000')")
    db.commit()
    db.close()
    out = runner.invoke(app, ["cache", "prune", "--older-than", "1d", "--cache-dir", str(old), "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout)["entries"]["vectors"] == 1


def test_cache_prune_while_another_kbc_holds_the_database_is_one_line(tmp_path, tiny_model, monkeypatch):
    import sqlite3

    from kbc.infra import cache as cache_module

    cache = tmp_path / "cache"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Pumps\n\nThe pump moves water uphill.\n")
    kbc.build([docs], tmp_path / "kb.kbpack", model=str(tiny_model), cache_dir=cache)
    monkeypatch.setattr(cache_module, "BUSY_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(cache / "cache.sqlite3", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # what a long write by another process looks like
    try:
        out = runner.invoke(app, ["cache", "prune", "--older-than", "0s", "--cache-dir", str(cache)])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert out.exit_code == 2, out.output
    assert "cannot prune the build cache (database is locked)" in out.stderr and "internal error" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    out = runner.invoke(app, ["cache", "prune", "--max-size", "1KB", "--cache-dir", str(cache), "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout)["entries"]["vectors"] >= 1  # once free, it prunes


@pytest.mark.parametrize("option, value", [("file_timeout", 1e9), ("workers", 10**6), ("file_timeout", float("nan"))])
def test_out_of_range_options_are_input_errors(tmp_path, option, value):
    from kbc.errors import InputError

    (tmp_path / "a.md").write_text("# a\n")
    with pytest.raises(InputError, match=f"^{option} must"):  # as the library calls it
        kbc.build([tmp_path / "a.md"], tmp_path / "kb.kbpack", **{option: value})


def test_library_errors_name_keywords_and_the_cli_names_flags(tmp_path):
    from kbc.errors import InputError

    (tmp_path / "a.md").write_text("# a\n")
    with pytest.raises(InputError, match="^chunk_overlap must be >= 0 and smaller than chunk_size"):
        kbc.build(tmp_path / "a.md", tmp_path / "kb.kbpack", chunk_size=10, chunk_overlap=10)
    out = CliRunner().invoke(app, ["build", str(tmp_path / "a.md"), "-o", str(tmp_path / "kb.kbpack"),
                                   "--chunk-size", "10", "--chunk-overlap", "10"])
    assert out.exit_code == 2 and "--chunk-overlap must be >= 0 and smaller than --chunk-size" in out.stderr
    with pytest.raises(InputError, match="^chunk_size must be an integer from 1 to 1,000,000, not 0"):  # the CLI left the library's names
        kbc.build(tmp_path / "a.md", tmp_path / "kb.kbpack", chunk_size=0)


def test_a_command_imports_only_its_own_module_and_a_typo_still_gets_every_suggestion():
    """`kbc query` is the start-up-time path: it must not pay for the readers, engines and exporters
    that only `kbc build` uses. A mistyped command loads every command so the suggestion can name it."""
    import subprocess
    import sys

    probe = ("import sys, atexit\n"
             "atexit.register(lambda: print(' '.join(sorted(m for m in sys.modules if m.startswith('kbc.'))),"
             " file=sys.stderr))\n"
             "sys.argv = ['kbc'] + sys.argv[1:]\n"
             "from kbc.cli import main\nmain()\n")
    proc = subprocess.run([sys.executable, "-c", probe, "query", "--help"], capture_output=True, text=True, timeout=120)
    loaded = set(proc.stderr.split())
    assert proc.returncode == 0 and "--unit" in proc.stdout
    assert "kbc.cli.cmd_query" in loaded and "kbc.cli.cmd_build" not in loaded and "kbc.cli.choices" not in loaded
    typo = subprocess.run([sys.executable, "-c", probe, "querry"], capture_output=True, text=True, timeout=120)
    assert typo.returncode == 2 and "Did you mean 'query'" in typo.stderr
