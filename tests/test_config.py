"""Build options from kbc.toml / [tool.kbc], their precedence, and rebuilding from a bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import kbc_cli
from kbc.format.bundle import Bundle


@pytest.fixture
def project(tmp_path) -> Path:
    docs = tmp_path / "docs"
    (docs / "drafts").mkdir(parents=True)
    (docs / "pumps.md").write_text("# Pumps\n\n" + "The pump moves water uphill every hour of the day. " * 20)
    (docs / "drafts" / "wip.md").write_text("# WIP\n\nNot ready.\n")
    return tmp_path


def _manifest(path: Path) -> dict:
    with Bundle(path) as b:
        return dict(b.manifest)


def test_kbc_toml_is_found_upward_and_flags_override_it(project, tiny_model):
    (project / "kbc.toml").write_text(f'model = "{tiny_model}"\nchunk-size = 30\nexclude = ["drafts"]\n'
                                      'no_lexical = true\n')
    out = project / "kb.kbpack"
    proc = kbc_cli("build", str(project / "docs"), "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["config_file"] == str(project / "kbc.toml")
    m = _manifest(out)
    assert m["chunking"]["size"] == 30 and "lexical" not in m and {"path": "drafts/", "reason":
                                                                     "excluded by --exclude drafts"} in m["ignored"]
    assert m["build_options"]["chunk_size"] == 30 and m["build_options"]["model"] == str(tiny_model)
    kbc_cli("build", str(project / "docs"), "-o", str(out), "--chunk-size", "40", "-q", check=True)
    assert _manifest(out)["chunking"]["size"] == 40  # the flag wins
    kbc_cli("build", str(project / "docs"), "-o", str(out), "--no-config", "--model", str(tiny_model), "-q",
            check=True)
    assert _manifest(out)["chunking"]["size"] != 30 and "lexical" in _manifest(out)


def test_pyproject_tool_kbc_is_read(project, tiny_model):
    (project / "pyproject.toml").write_text(f'[project]\nname = "x"\n\n[tool.kbc]\nmodel = "{tiny_model}"\n'
                                            'chunk_size = 25\n')
    out = project / "kb.kbpack"
    kbc_cli("build", str(project / "docs"), "-o", str(out), "-q", check=True)
    assert _manifest(out)["chunking"]["size"] == 25


@pytest.mark.parametrize("text, message", [
    ("chunk-sise = 3\n", "unknown option 'chunk-sise'"),
    ("chunk-size = \"big\"\n", "chunk-size must be int, not str"),
    ("password = [\"x\"]\n", "passwords are not read from files"),
    ("chunk-size = \n", "not valid TOML"),
])
def test_a_bad_config_is_one_line_naming_the_file(project, text, message):
    (project / "kbc.toml").write_text(text)
    proc = kbc_cli("build", str(project / "docs"), "-o", str(project / "kb.kbpack"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert str(project / "kbc.toml") in proc.stderr and message in proc.stderr


def test_a_bundle_can_be_rebuilt_from_its_recorded_options(project, tiny_model):
    (project / "kbc.toml").write_text(f'model = "{tiny_model}"\nchunk-size = 30\nexclude = ["drafts"]\n')
    first = project / "a.kbpack"
    kbc_cli("build", str(project / "docs"), "-o", str(first), "-q", check=True)
    (project / "kbc.toml").unlink()
    again = project / "b.kbpack"
    kbc_cli("build", str(project / "docs"), "-o", str(again), "--from-bundle", str(first), "--model", str(tiny_model),
            "-q", check=True)
    assert again.read_bytes() == first.read_bytes()


def test_a_bundle_never_chooses_the_model_or_backend(project, tiny_model):
    """A bundle from anywhere records the model (a path, perhaps ../ or absolute) and backend it was
    built with: --from-bundle takes them only when the user's own options name the same, never
    silently, so a downloaded bundle cannot make this machine load a folder it points at."""
    first = project / "a.kbpack"
    kbc_cli("build", str(project / "docs"), "-o", str(first), "--model", str(tiny_model), "-q", check=True)
    again = project / "b.kbpack"
    proc = kbc_cli("build", str(project / "docs"), "-o", str(again), "--from-bundle", str(first), "-q")
    assert proc.returncode == 2 and not again.exists()
    assert proc.stderr.count("\n") == 1 and "a bundle does not choose the model" in proc.stderr
    assert str(tiny_model) in proc.stderr and "pass --model yourself" in proc.stderr
    # the same model given by the user, and a backend the bundle records but the user resolves otherwise
    proc = kbc_cli("build", str(project / "docs"), "-o", str(again), "--from-bundle", str(first), "-q",
                   "--model", str(tiny_model), "--backend", "torch")
    assert proc.returncode == 2 and "was built with --backend onnx" in proc.stderr and not again.exists()


def test_a_config_inside_the_docs_folder_is_never_read(project, tiny_model):
    """The docs folder is untrusted: a kbc.toml dropped into it cannot lift the build's limits."""
    (project / "docs" / "kbc.toml").write_text('follow-symlinks = true\nworkers = 0\nchunk-size = 20\n')
    out = project / "kb.kbpack"
    proc = kbc_cli("build", str(project / "docs"), "-o", str(out), "--model", str(tiny_model), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["config_file"] is None and _manifest(out)["chunking"]["size"] != 20


def test_odd_pyprojects_and_forged_bundle_options(project, tiny_model):
    (project / "pyproject.toml").write_text('tool = "kbc"\n')
    out = project / "kb.kbpack"
    kbc_cli("build", str(project / "docs"), "-o", str(out), "--model", str(tiny_model), "-q", check=True)
    from kbc.cli.config import checked_options, RECORDED
    from kbc.errors import InputError

    with pytest.raises(InputError, match="'ray_address' is not an option a bundle records"):
        checked_options({"ray_address": "ray://elsewhere:10001"}, where="b.kbpack", allowed=RECORDED)


def test_a_bundle_cannot_lift_the_limits_that_protect_a_build():
    from kbc.cli.config import RECORDED, checked_options
    from kbc.errors import InputError

    for key, value in (("follow_symlinks", True), ("max_file_mb", 1e12), ("workers", 0)):
        with pytest.raises(InputError, match="not an option a bundle records"):
            checked_options({key: value}, where="forged.kbpack", allowed=RECORDED)
