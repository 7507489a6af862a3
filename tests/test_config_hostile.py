"""A config file is untrusted input (issue 27 item 5): every kbc.toml / [tool.kbc] value is checked
against the type and range of the `kbc build` flag it stands for, the file's size, encoding and
nesting are bounded before it is parsed, and neither a config file nor a bundle can name plugins.

Each hostile case is one line on stderr naming the file and the key, exit 2 (InputError), no
traceback, through the CLI and through `kbc.cli.config.load_config`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import kbc_cli, run_kbc
from kbc.cli import config as C
from kbc.errors import InputError

# (name, kbc.toml text, the key as the message must name it, words the message must hold)
VALUES = [
    ("string-for-int", 'chunk-size = "big"\n', "chunk-size", ["must be int, not str", "from 1 to 1,000,000"]),
    ("float-for-count", "chunk-size = 200.0\n", "chunk-size", ["must be int, not float", "200.0"]),
    ("float-for-workers", "workers = 2.5\n", "workers", ["must be int, not float"]),
    ("negative-chunk-size", "chunk-size = -5\n", "chunk-size", ["from 1 to 1,000,000", "not -5"]),
    ("zero-chunk-size", "chunk_size = 0\n", "chunk_size", ["from 1 to 1,000,000", "not 0"]),
    ("negative-overlap", "chunk-overlap = -1\n", "chunk-overlap", ["from 0 to", "not -1"]),
    ("huge-int", "chunk-size = 9223372036854775807\n", "chunk-size", ["from 1 to 1,000,000"]),
    ("huge-bignum", "batch-size = " + "9" * 200 + "\n", "batch-size", ["from 1 to 4,096", "-bit integer"]),
    ("huge-batch", "batch-size = 100000\n", "batch-size", ["from 1 to 4,096", "not 100000"]),
    ("huge-workers", "workers = 100000\n", "workers", ["from 0 to", "not 100000"]),
    ("bool-for-int", "chunk-size = true\n", "chunk-size", ["must be int, not bool"]),
    ("bool-for-number", "max-file-mb = true\n", "max-file-mb", ["not bool"]),
    ("int-for-bool", "strict = 1\n", "strict", ["must be bool, not int", "true or false"]),
    ("string-for-bool", 'no-lexical = "yes"\n', "no-lexical", ["must be bool, not str"]),
    ("table-for-scalar", "chunk-size = { value = 3 }\n", "chunk-size", ["must be int, not table"]),
    ("subtable-for-scalar", "[model]\npath = \"x\"\n", "model", ["must be str, not table"]),
    ("list-for-string", 'model = ["a", "b"]\n', "model", ["must be str, not list"]),
    ("string-for-list", 'exclude = "drafts"\n', "exclude", ["must be list, not str"]),
    ("list-of-ints", "include = [1, 2]\n", "include", ["list of strings", "int"]),
    ("nested-list", 'exclude = [["drafts"]]\n', "exclude", ["list of strings", "list"]),
    ("nan", "file-timeout = nan\n", "file-timeout", ["(0, 86,400]", "not nan"]),
    ("inf", "max-file-mb = inf\n", "max-file-mb", ["(0, 1,048,576]", "not inf"]),
    ("negative-inf", "file_timeout = -inf\n", "file_timeout", ["not -inf"]),
    ("zero-timeout", "file-timeout = 0\n", "file-timeout", ["(0, 86,400]"]),
    ("huge-timeout", "file-timeout = 1e300\n", "file-timeout", ["(0, 86,400]"]),
    ("negative-max-file-mb", "max-file-mb = -1\n", "max-file-mb", ["(0, 1,048,576]"]),
    ("datetime-for-int", "chunk-size = 1979-05-27\n", "chunk-size", ["must be int, not date"]),
    ("bad-choice", 'backend = "tensorflow"\n', "backend", ["must be one of", "onnx", "'tensorflow'"]),
    ("bad-chunk-unit", 'chunk-unit = "words"\n', "chunk-unit", ["tokens, chars, document"]),
    ("bad-vectors", 'vectors = "f64"\n', "vectors", ["must be one of", "f32"]),
    ("bad-engine", 'engine = "spark"\n', "engine", ["must be one of", "local"]),
    ("bad-context", 'context = "all"\n', "context", ["auto, none"]),
    ("bad-encoding", 'encoding = "no-such-codec"\n', "encoding", ["not an encoding"]),
    ("huge-string", 'index = "' + "F" * 5000 + '"\n', "index", ["5,000 characters", "4096"]),
    ("nul-in-string", 'model = "a\\u0000b"\n', "model", ["NUL"]),
    ("unknown-key-typo", "chunk-sise = 3\n", "chunk-sise", ["unknown option", "did you mean chunk-size?"]),
    ("unknown-key-case", "Max-File-MB = 3\n", "Max-File-MB", ["unknown option", "did you mean max-file-mb?"]),
    ("unknown-key-underscores", "batch_sise = 3\n", "batch_sise", ["did you mean batch_size?"]),
    ("unknown-key-far", "colour = 3\n", "colour", ["unknown option", "known: model, chunk-unit"]),
    ("key-twice", "chunk-size = 3\nchunk_size = 4\n", "chunk_size", ["given twice"]),
    ("password", 'password = ["x"]\n', "password", ["passwords are not read from files"]),
    ("plugins", 'plugins = ["evil_plugin"]\n', "plugins",
     ["plugins load only from the KBC_PLUGINS environment variable"]),
    ("kbc-plugins", 'KBC_PLUGINS = "evil_plugin"\n', "KBC_PLUGINS",
     ["plugins load only from the KBC_PLUGINS environment variable"]),
]

# (name, bytes of the file, words the message must hold): the file itself, before any key is read
FILES = [
    ("malformed", b"a = 1\nchunk-size = \n", ["not valid TOML", "line 2"]),
    ("not-utf8", b'chunk-size = 3\nmodel = "\xff\xfe"\n', ["not valid TOML", "line 2", "not UTF-8"]),
    ("latin1", b'query-prompt = "caf\xe9"\n', ["line 1", "not UTF-8"]),
    ("deep-arrays", b"x = " + b"[" * 100_000 + b"]" * 100_000 + b"\n", ["line 1", "nested more than 32 deep"]),
    ("deep-inline-tables", b"x = " + b"{a = " * 50 + b"1" + b"}" * 50 + b"\n", ["nested more than 32 deep"]),
    ("too-big", b"# " + b"x" * (1 << 20) + b"\n", ["a config file may hold at most", "1 MiB"]),
    ("unreadable-number", b"\n\nchunk-size = " + b"9" * 5000 + b"\n", ["not valid TOML", "line 3", "5,000 digits"]),
    ("bom-garbage", b"\xef\xbb\xbfchunk-size = 3\n", ["not valid TOML"]),
]


def _project(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nThe pump moves water uphill.\n")
    return docs


def _assert_one_line(proc, *words: str) -> str:
    err = proc.stderr
    assert proc.returncode == 2 == InputError.exit_code, (proc.returncode, proc.stdout, err)
    assert err.count("\n") == 1 and err.startswith("kbc: error: "), err
    assert "Traceback" not in err and "internal error" not in err, err
    for w in words:
        assert w in err, (w, err)
    return err


# Every case goes through load_config and through `kbc build` run in this process (kbc_cli: the
# entry point's parsing and error handling; exit 2, one line, nothing written); one case of each
# kind of error also through `kbc build` in a child process, as a shell runs it (each costs a
# process start).
THROUGH_THE_CLI = {"string-for-int", "float-for-count", "huge-bignum", "bool-for-int", "table-for-scalar",
                   "list-for-string", "nan", "datetime-for-int", "bad-choice", "bad-encoding", "huge-string",
                   "nul-in-string", "unknown-key-typo", "unknown-key-far", "key-twice", "password", "plugins"}
IN_A_CHILD_PROCESS = {"string-for-int", "huge-bignum", "nan", "unknown-key-typo", "plugins"}


def test_the_cases_run_through_the_cli_exist():
    assert IN_A_CHILD_PROCESS <= THROUGH_THE_CLI <= {v[0] for v in VALUES}


@pytest.mark.parametrize("name, text, key, words", VALUES, ids=[v[0] for v in VALUES])
def test_a_hostile_value_is_one_line_naming_file_and_key(tmp_path, name, text, key, words):
    docs = _project(tmp_path)
    cfg = tmp_path / "kbc.toml"
    cfg.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as e:
        C.load_config(cfg)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{cfg}: ") and all(w in msg for w in words), msg
    assert f"{key}" in msg.split(": ", 1)[1]
    out = tmp_path / "kb.kbpack"
    for run in (kbc_cli, run_kbc) if name in IN_A_CHILD_PROCESS else (kbc_cli,):
        proc = run("build", str(docs), "-o", str(out))
        _assert_one_line(proc, str(cfg), key, *words)
        assert not out.exists()


PYPROJECT = [v for v in VALUES if v[0] in ("float-for-count", "nan", "unknown-key-typo", "plugins", "table-for-scalar")]


@pytest.mark.parametrize("name, text, key, words", PYPROJECT, ids=[v[0] for v in PYPROJECT])
def test_pyproject_tool_kbc_is_checked_alike(tmp_path, name, text, key, words):
    docs = _project(tmp_path)
    cfg = tmp_path / "pyproject.toml"
    body = text.replace("[model]", "[tool.kbc.model]")
    cfg.write_text('[project]\nname = "x"\n\n[tool.kbc]\n' + body, encoding="utf-8")
    with pytest.raises(InputError) as e:
        C.load_config(cfg)
    assert str(cfg) in str(e.value) and key in str(e.value) and "[tool.kbc]" in str(e.value)
    proc = kbc_cli("build", str(docs), "-o", str(tmp_path / "kb.kbpack"))
    _assert_one_line(proc, str(cfg), "[tool.kbc]", key, *words)


def test_a_tool_kbc_that_is_not_a_table(tmp_path):
    docs = _project(tmp_path)
    cfg = tmp_path / "pyproject.toml"
    cfg.write_text("[tool]\nkbc = 5\n")
    proc = kbc_cli("build", str(docs), "-o", str(tmp_path / "kb.kbpack"))
    _assert_one_line(proc, str(cfg), "[tool.kbc]", "must be a table of options, not int")


@pytest.mark.parametrize("name, data, words", FILES, ids=[f[0] for f in FILES])
def test_a_hostile_file_is_one_line_naming_it(tmp_path, name, data, words):
    docs = _project(tmp_path)
    cfg = tmp_path / "kbc.toml"
    cfg.write_bytes(data)
    with pytest.raises(InputError) as e:
        C.load_config(cfg)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{cfg}: ") and all(w in msg for w in words), msg
    proc = kbc_cli("build", str(docs), "-o", str(tmp_path / "kb.kbpack"))
    _assert_one_line(proc, str(cfg), *words)


def test_config_that_is_not_a_regular_file(tmp_path):
    docs = _project(tmp_path)
    for target in ("/dev/zero", str(tmp_path)):
        proc = kbc_cli("build", str(docs), "-o", str(tmp_path / "kb.kbpack"), "--config", target)
        _assert_one_line(proc, target, "not a regular file")


def test_an_odd_key_is_named_on_one_line(tmp_path):
    """A quoted TOML key may hold a newline or be very long: the message quotes and shortens it."""
    docs = _project(tmp_path)
    cfg = tmp_path / "kbc.toml"
    for text, shown in (('"chunk\\nsize" = 3\n', "'chunk\\nsize'"), ('"' + "k" * 5000 + '" = 3\n', "...")):
        cfg.write_text(text)
        proc = kbc_cli("build", str(docs), "-o", str(tmp_path / "kb.kbpack"))
        err = _assert_one_line(proc, str(cfg), "unknown option", shown)
        assert len(err) < 1000


def test_near_limit_values_still_work(tmp_path):
    """The bounds are those of the flags: values at their edges load, typed as given."""
    cfg = tmp_path / "kbc.toml"
    cfg.write_text('chunk-unit = "chars"\nchunk-size = 1000000\nchunk-overlap = 0\nbatch-size = 4096\n'
                   'workers = 0\nfile-timeout = 86400\nmax-file-mb = 0.5\nstrict = false\nexclude = []\n'
                   'include = ["*.md"]\nencoding = "latin-1"\n')
    got = C.load_config(cfg)
    assert got["chunk_size"] == 1_000_000 and got["batch_size"] == 4096 and got["workers"] == 0
    assert got["file_timeout"] == 86400 and got["max_file_mb"] == 0.5 and got["exclude"] == []
    nested = tmp_path / "nested.toml"
    nested.write_text('exclude = ["a"]\n# ' + "[" * 100 + '\nquery-prompt = "' + "{" * 100 + '"\n'
                      + "document-prompt = '''" + "[" * 100 + "'''\n")
    got = C.load_config(nested)  # brackets in comments and strings are not nesting
    assert got["query_prompt"] == "{" * 100 and got["document_prompt"] == "[" * 100


def test_the_bounds_are_the_pipelines():
    from kbc import pipeline

    assert C.SPECS["batch_size"].hi == pipeline.MAX_BATCH_SIZE
    assert C.SPECS["workers"].hi == pipeline.MAX_WORKERS
    assert C.SPECS["file_timeout"].hi == pipeline.MAX_FILE_TIMEOUT_S


def test_a_config_file_never_loads_a_plugin(tmp_path):
    """`plugins = [...]` in kbc.toml is refused, and the module it names is never imported."""
    docs = _project(tmp_path)
    marker = tmp_path / "plugin-ran"
    plugins = tmp_path / "site"
    plugins.mkdir()
    (plugins / "evil_plugin.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (tmp_path / "kbc.toml").write_text('plugins = ["evil_plugin"]\n')
    proc = run_kbc("build", str(docs), "-o", str(tmp_path / "kb.kbpack"), env={"PYTHONPATH": str(plugins),
                                                                               "KBC_PLUGINS": ""})
    _assert_one_line(proc, str(tmp_path / "kbc.toml"), "plugins",
                     "plugins load only from the KBC_PLUGINS environment variable")
    assert not marker.exists()


@pytest.mark.parametrize("key", ["plugins", "kbc_plugins"])
def test_a_bundle_never_names_a_plugin(key):
    with pytest.raises(InputError, match="plugins load only from the KBC_PLUGINS environment variable"):
        C.checked_options({key: ["evil_plugin"]}, where="forged.kbpack build_options", allowed=C.RECORDED)


def test_a_forged_bundles_build_options_are_checked(tmp_path, genuine):
    """--from-bundle: a bundle's recorded options pass the same checks, and cannot name plugins."""
    from forge import rebuild, sections

    docs = _project(tmp_path)
    m = json.loads(sections(genuine)["manifest"][1])
    for options, words in (({"plugins": ["evil_plugin"]}, ["plugins load only from the KBC_PLUGINS"]),
                           ({"chunk_size": 1e30}, ["chunk_size must be int, not float"]),
                           ({"chunk_size": 10**40}, ["chunk_size must be an integer from 1", "-bit integer"]),
                           ({"include": "*.md"}, ["include must be list, not str"])):
        forged = tmp_path / "forged.kbpack"
        forged.write_bytes(rebuild(genuine, {"manifest": json.dumps({**m, "build_options": options}).encode()}))
        proc = kbc_cli("build", str(docs), "-o", str(tmp_path / "kb.kbpack"), "--from-bundle", str(forged),
                       "--no-config")
        _assert_one_line(proc, f"{forged} build_options", *words)
