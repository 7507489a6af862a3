"""One declaration per build option (kbc.options.BUILD_OPTIONS): the CLI's flags, a config file's
checks, a bundle's recorded build_options, --from-bundle and kbc.build(...) are all read off it, so
an option added in that one place is seen by all of them, and the spellings cannot drift apart."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

import kbc
from kbc import options as O
from kbc.cli import config as C
from kbc.errors import InputError

ROOT = Path(__file__).resolve().parent.parent


def test_every_declared_option_is_a_flag_a_config_key_and_a_keyword():
    from kbc.cli.cmd_build import build as command

    flags = inspect.signature(command).parameters
    keywords = inspect.signature(kbc.build).parameters
    for o in O.BUILD_OPTIONS:
        assert o.key in flags, o.name
        assert (o.name in keywords) == o.library, o.name
        assert (o.key in C.SPECS) == o.config, o.name
        assert (o.key in C.RECORDED) == o.recorded, o.name
    # what protects the machine never travels in a bundle, and secrets never come from a file
    for name in ("follow_symlinks", "max_file_mb", "code", "workers", "engine", "ray_address", "cache_dir", "passwords"):
        assert not O.BY_NAME[name].recorded, name
    assert not O.BY_NAME["passwords"].config and not O.BY_NAME["model"].bundle_chooses


def test_the_library_checks_its_keywords_against_the_declaration(tmp_path):
    (tmp_path / "a.md").write_text("# a\n\nsome text\n")
    out = tmp_path / "kb.kbpack"
    for bad, message in ((dict(batch_size=0), "batch_size must be an integer from 1 to 4,096, not 0"),
                         (dict(file_timeout=float("nan")), "file_timeout must be a number of seconds in (0, "),
                         (dict(vectors="f64"), "vectors must be one of f32, f16, int8, binary, not 'f64'"),
                         (dict(lexical="no"), "lexical must be true or false, not 'no'"),
                         (dict(include="*.md"), "include must be a list of at most"),
                         (dict(workers=2**70), "workers must be an integer from 0 to "),
                         (dict(max_file_mb=0), "max_file_mb must be a number of MiB in (0, ")):
        with pytest.raises(InputError) as e:
            kbc.build([tmp_path / "a.md"], out, **bad)
        assert str(e.value).startswith(message), str(e.value)
    with pytest.raises(TypeError, match="unexpected keyword argument 'chunksize'"):
        kbc.build([tmp_path / "a.md"], out, chunksize=10)
    assert not out.exists()


def test_negated_flags_keep_their_spelling_in_files_and_records():
    lexical = O.BY_NAME["lexical"]
    assert lexical.cli_flag == "--no-lexical" and lexical.key == "no_lexical" and lexical.negated
    assert O.from_keys({"no_lexical": True, "no_cache": False}, where="x") == {"lexical": False, "use_cache": True}
    recorded = O.record(O.checked({"lexical": False, "vectors": "f16"}))
    assert recorded["no_lexical"] is True and recorded["float16"] is True and "use_cache" not in recorded
    with pytest.raises(InputError, match="float16 and vectors 'int8' disagree"):
        O.from_keys({"float16": True, "vectors": "int8"}, where="x")


# A throwaway option declared in one place, before kbc's CLI and pipeline load, as a plugin would.
_SCRIPT = r'''
import json, sys
from kbc import options
options.declare(options.BuildOption("shoe_size", "int", 7, lo=1, hi=20, recorded=True,
                                   help="A throwaway option for the test."))
from kbc.cli.typer_app import app
import kbc.cli.cmd_build  # registers the command
from typer.testing import CliRunner
import kbc

def cli(*args):
    r = CliRunner().invoke(app, list(args))
    return {"code": r.exit_code, "stdout": r.stdout, "stderr": r.stderr}

def recorded(path):
    with kbc.open_bundle(path) as b:
        return b.manifest["build_options"]

docs, model, out = sys.argv[1:4]
result = {"help": cli("build", "-h")["stdout"]}
result["flag"] = cli("build", docs, "-o", out + "/flag.kbpack", "-m", model, "-q", "--shoe-size", "11")
result["flag_recorded"] = recorded(out + "/flag.kbpack")
result["flag_bad"] = cli("build", docs, "-o", out + "/bad.kbpack", "-m", model, "-q", "--shoe-size", "40")
open(out + "/cfg/kbc.toml", "w").write("shoe-size = 12\n")  # beside, not above, docs: found only when named
result["config"] = cli("build", docs, "-o", out + "/config.kbpack", "-m", model, "-q", "--config", out + "/cfg/kbc.toml")
result["config_recorded"] = recorded(out + "/config.kbpack")
open(out + "/cfg/bad.toml", "w").write('shoe-size = "big"\n')
result["config_bad"] = cli("build", docs, "-o", out + "/bad.kbpack", "-m", model, "-q", "--config", out + "/cfg/bad.toml")
result["from_bundle"] = cli("build", docs, "-o", out + "/again.kbpack", "-m", model, "-q", "--from-bundle",
                            out + "/flag.kbpack")
result["from_bundle_recorded"] = recorded(out + "/again.kbpack")
kbc.build([docs], out + "/lib.kbpack", model=model, shoe_size=13)
result["library_recorded"] = recorded(out + "/lib.kbpack")
try:
    kbc.build([docs], out + "/lib-bad.kbpack", model=model, shoe_size=0)
except Exception as e:
    result["library_bad"] = f"{type(e).__name__}: {e}"
print(json.dumps(result))
'''


def test_an_option_declared_once_reaches_the_cli_config_record_bundle_and_library(tmp_path, tiny_model):
    docs = tmp_path / "docs"
    docs.mkdir()
    (tmp_path / "cfg").mkdir()
    (docs / "a.md").write_text("# Shoes\n\nA shoe size is a number.\n")
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(docs), str(tiny_model), str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout.splitlines()[-1])
    assert "--shoe-size <int>" in r["help"] and "A throwaway option for the test." in r["help"]
    assert r["flag"]["code"] == 0 and r["flag_recorded"]["shoe_size"] == 11
    assert r["flag_bad"]["code"] == 2 and "--shoe-size must be an integer from 1 to 20, not 40" in r["flag_bad"]["stderr"]
    assert r["config"]["code"] == 0 and r["config_recorded"]["shoe_size"] == 12
    assert r["config_bad"]["code"] == 2 and "shoe-size must be int, not str" in r["config_bad"]["stderr"]
    assert r["from_bundle"]["code"] == 0 and r["from_bundle_recorded"]["shoe_size"] == 11
    assert r["library_recorded"]["shoe_size"] == 13
    assert r["library_bad"] == "InputError: shoe_size must be an integer from 1 to 20, not 0"


def test_a_declared_check_runs_before_the_build_reads_anything(tmp_path):
    """An option's own check (BuildOption.check: --attr's grammar) runs with the type and range
    checks, before the model loads or a file is read: the model named here does not even exist."""
    from kbc.cli import main  # noqa: F401 (registers the commands)
    from kbc.cli.typer_app import app
    from typer.testing import CliRunner

    out = tmp_path / "kb.kbpack"
    r = CliRunner().invoke(app, ["build", str(ROOT / "sample_docs"), "-o", str(out), "-m", str(tmp_path / "no-model"),
                                 "--attr", "product=x200", "--attr", "no equals sign"])
    assert r.exit_code == 2 and not out.exists()
    assert r.stderr.strip().splitlines() == [
        "kbc: error: --attr 'no equals sign': expected [GLOB:]KEY=VALUE, KEY an attribute name "
        "([A-Za-z_][A-Za-z0-9_.-]*, at most 64 characters, not path)"]
