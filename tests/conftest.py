from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DOCS = ROOT / "sample_docs"
SHARED = Path(os.environ.get("KBC_SHARED", ROOT.parent / "shared"))
# A test's stderr is not a terminal, so `kbc build` would print its plain progress lines there (as in
# a CI log); the tests of those lines ask for them with --progress, the rest read the error line alone.
os.environ["KBC_PROGRESS"] = "none"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Tests never touch the user's cache. One cache per test run, shared by its xdist workers
    (kbc's cache is safe for concurrent builds): one ONNX export of each model, and sample_docs
    embedded once, whichever worker builds it first."""
    if "KBC_TEST_CACHE_DIR" in os.environ:
        os.environ["KBC_CACHE_DIR"] = os.environ["KBC_TEST_CACHE_DIR"]
    else:
        cache = _run_root(tmp_path_factory) / "kbc-cache"
        cache.mkdir(exist_ok=True)
        os.environ["KBC_CACHE_DIR"] = str(cache)
    os.environ["SOURCE_DATE_EPOCH"] = "1700000000"
    yield


def skip_summary(reports) -> str | None:
    """One line for the skipped tests, grouped by reason, most first: "225 skipped: 200 libkbpack:
    zstd.h not found ...; 25 ../shared/pdfs not present". Skips here are machine prerequisites (a C
    toolchain, zstd.h, the ../shared corpora, ray), not failures; the line says which are missing."""
    from collections import Counter

    reasons: Counter[str] = Counter()
    for rep in reports:
        longrepr = getattr(rep, "longrepr", None)
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr or "")
        reason = " ".join(reason.removeprefix("Skipped: ").split())
        reasons[reason[:117] + "..." if len(reason) > 120 else reason] += 1
    if not reasons:
        return None
    return f"{sum(reasons.values())} skipped: " + "; ".join(f"{n} {r}" for r, n in reasons.most_common())


def pytest_terminal_summary(terminalreporter):
    line = skip_summary(terminalreporter.stats.get("skipped", []))
    if line:
        terminalreporter.write_line(line, yellow=True)


# The longest test files (seconds on a 2-core machine, 2026-12-04), run first: `make test` hands
# files to its xdist workers in collection order (--dist loadfile --no-loadscope-reorder), so a
# long file started last would keep one worker busy while the other sits idle. The rest follow in
# their usual order; the order of the tests within a file is never changed.
LONGEST_FIRST = ("test_runtime_arm.py", "test_runtime_js.py", "test_libkbpack.py", "test_c_sanitizers.py",
                 "test_c_pages.py", "test_runtime_java.py",
                 "test_hostile_bundles.py",
                 "test_extract.py", "test_pipeline.py", "test_cache.py", "test_engines.py", "test_hostile_index.py",
                 "test_c_compact.py", "test_c_verify_differential.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # a stable sort


def with_address_space(limit_bytes: int, argv) -> list[str]:
    """argv run under an address-space limit (RLIMIT_AS) of `limit_bytes`, set by sh's `ulimit -v`
    before it execs the program. A preexec_fn would set the same limit, but it makes subprocess
    fork this whole test process (torch loaded: about 0.1 s a run, hundreds of runs) instead of
    spawning the child."""
    return ["/bin/sh", "-c", f'ulimit -v {limit_bytes // 1024} && exec "$@"', "sh", *map(str, argv)]


def run_kbc(*args: str, env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """`python -m kbc ARGS` in a child process: for what only a process shows (its exit status and
    stderr from kbc's entry point, signals, memory limits, imports, environment read at start-up)."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "kbc", *args], capture_output=True, text=True, env=full_env,
                          cwd=ROOT, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"kbc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@contextlib.contextmanager
def _environment(env: dict | None):
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def kbc_cli(*args: str, env: dict | None = None, check: bool = False, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """`kbc ARGS` run in this process through the entry point `python -m kbc` calls (kbc.cli.main:
    the same argument parsing, one-line errors, exit codes and --json error object), with stdin,
    stdout and stderr captured as run_kbc captures them and `env` added to os.environ meanwhile.
    It saves the ~0.5 s a child Python spends importing kbc, for tests that are not about the
    process; an exception kbc lets escape fails the test (a child would print a traceback, exit 1).
    It runs in `cwd` (the clone by default)."""
    from click.testing import CliRunner

    from kbc.cli import main

    argv, was_in, term = sys.argv, os.getcwd(), signal.getsignal(signal.SIGTERM)
    code: int | str | None = 0
    runner = CliRunner()
    with _environment(env), runner.isolation() as streams:
        sys.argv = ["kbc", *args]
        os.chdir(cwd)
        try:
            main()
        except SystemExit as e:
            code = e.code
        finally:
            sys.argv = argv
            os.chdir(was_in)
            signal.signal(signal.SIGTERM, term)
            sys.stdout.flush()
            sys.stderr.flush()
        stdout, stderr = streams[0].getvalue(), streams[1].getvalue()
    code = 0 if code is None else code if isinstance(code, int) else 1
    proc = subprocess.CompletedProcess(["kbc", *args], code, stdout.decode("utf-8", "replace"),
                                       stderr.decode("utf-8", "replace"))
    if check and proc.returncode != 0:
        raise AssertionError(f"kbc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


_XDIST_WORKER = False  # this process is an xdist worker (not a plain run, nor a pytest a test starts)


def pytest_configure(config):
    global _XDIST_WORKER
    _XDIST_WORKER = hasattr(config, "workerinput")


def _run_root(tmp_path_factory) -> Path:
    """The folder one pytest run shares across its xdist workers (each has its own basetemp in it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if _XDIST_WORKER else base


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder `build(folder)` fills once per test run, whichever xdist worker asks first: the
    others wait on a file lock and reuse it. A build that fails is not marked done, so the next
    asker builds again (and fails the same way, in its own test)."""
    root = _run_root(tmp_path_factory) / "kbc-built-once"
    root.mkdir(exist_ok=True)
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def sample_bundle(tmp_path_factory) -> Path:
    """sample_docs built by `kbc build` with the default model, once per test run."""
    def build(d: Path) -> None:
        run_kbc("build", str(SAMPLE_DOCS), "-o", str(d / "sample.kbpack"), "--quiet", check=True)

    return built_once(tmp_path_factory, "sample", build) / "sample.kbpack"


def make_tiny_model(d: Path, *, seed: int = 0) -> Path:
    """A small random BERT saved as a sentence-transformers directory: exercises the any-model path.

    CLS pooling, 32-d, 64 tokens, e5-style prompts in its config: everything differs from the default.
    """
    import torch
    from transformers import BertConfig, BertModel

    from kbc.backends.model import resolve_model

    default = resolve_model(None).path
    vocab_size = sum(1 for _ in open(default / "vocab.txt", encoding="utf-8"))
    cfg = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(seed)
    BertModel(cfg).save_pretrained(d, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(default / name, d / name)
    (d / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (d / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": False}))
    (d / "1_Pooling").mkdir()
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                             "pooling_mode_cls_token": True,
                                                             "pooling_mode_mean_tokens": False}))
    (d / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {"query": "query: ", "document": "passage: "}, "default_prompt_name": None,
         "similarity_fn_name": "cosine"}))
    return d


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return built_once(tmp_path_factory, "tiny-model", lambda d: make_tiny_model(d, seed=0))


@pytest.fixture(scope="session")
def tiny_encoder_bundle(tmp_path_factory, tiny_model) -> Path:
    """sample_docs with the 32-d test model and its query encoder (--with-encoder, format 1.3),
    built once per test run: 330 chunks in 6 blocks of 64, the last one partial."""
    def build(d: Path) -> None:
        kbc_cli("build", str(SAMPLE_DOCS), "-o", str(d / "tiny.kbpack"), "--model", str(tiny_model), "--with-encoder",
                "-q", check=True)

    return built_once(tmp_path_factory, "tiny-encoder", build) / "tiny.kbpack"


LIBKBPACK_SRC = ROOT / "runtimes" / "c"


def find_c_compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


@dataclass(frozen=True)
class LibKbpack:
    """runtimes/c built by its Makefile: the library, its header and the `kbpack` tool."""
    cc: str
    build: Path  # libkbpack.a, libkbpack.so, kbpack
    include: Path  # kbpack.h
    cflags: tuple[str, ...] = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror")

    @property
    def tool(self) -> Path:
        return self.build / "kbpack"

    def compile(self, source: Path, exe: Path) -> Path:
        """Compile and link a C program against libkbpack.a, as a user of the library would."""
        cmd = [self.cc, *self.cflags, f"-I{self.include}", "-o", str(exe), str(source), str(self.build / "libkbpack.a"),
               "-lzstd", "-lm"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return exe


def sources_key(*extra: str) -> str:
    """A short hash of runtimes/c (every file in it) and `extra` (compiler, flags, target): the name
    of a build of it, so a build made once per test run is never one of other sources or flags."""
    h = hashlib.sha256()
    for path in sorted(p for p in LIBKBPACK_SRC.iterdir() if p.is_file()):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for part in extra:
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def make_libkbpack(tmp_path_factory, target: str | None = None, cflags: str | None = None) -> tuple[str, Path]:
    """`make -C runtimes/c [target]` once per test run (whichever xdist worker is first; the others
    reuse that build), into a folder named by sources_key. Skipped, with the reason, without make, a
    C compiler or zstd.h (the Makefile's `check` target says which); under KBC_REQUIRE_LIBKBPACK (CI)
    a missing prerequisite is a failure. Returns (the compiler, the build folder)."""
    cc = find_c_compiler()
    if shutil.which("make") is None or cc is None:
        pytest.skip("libkbpack: no make or no C compiler on this machine")
    make = ["make", "-s", "-C", str(LIBKBPACK_SRC), f"CC={cc}"]
    if cflags:
        make.append(f"CFLAGS={cflags}")
    check = subprocess.run([*make, "check"], capture_output=True, text=True)
    if check.returncode != 0 and os.environ.get("KBC_REQUIRE_LIBKBPACK"):  # CI: a missing zstd.h is a failure
        pytest.fail(check.stderr.strip() or check.stdout.strip() or "libkbpack: prerequisites missing")
    if check.returncode != 0:
        pytest.skip(check.stderr.strip() or check.stdout.strip() or "libkbpack: prerequisites missing")

    def build(folder: Path) -> None:
        proc = subprocess.run([*make, f"BUILD={folder}", *([target] if target else [])], capture_output=True, text=True)
        assert proc.returncode == 0, f"make -C runtimes/c {target or ''} failed:\n{proc.stdout}\n{proc.stderr}"

    name = f"libkbpack-{target or 'all'}-{sources_key(cc, cflags or '', target or '')}"
    return cc, built_once(tmp_path_factory, name, build)


@pytest.fixture(scope="session")
def libkbpack(tmp_path_factory) -> LibKbpack:
    """`make -C runtimes/c` once per test run, into a temporary folder (make_libkbpack).
    LIBKBPACK_CFLAGS="-std=c99 -O1 -g -fsanitize=address,undefined" runs the C tests under sanitizers."""
    cflags = os.environ.get("LIBKBPACK_CFLAGS")
    cc, build = make_libkbpack(tmp_path_factory, cflags=cflags)
    lib = LibKbpack(cc=cc, build=build, include=LIBKBPACK_SRC)
    return replace(lib, cflags=tuple(cflags.split())) if cflags else lib


@pytest.fixture(scope="session")
def kbpack_tool(libkbpack) -> Path:
    """The `kbpack` command-line tool (runtimes/c/kbpack_cli.c over libkbpack)."""
    return libkbpack.tool


@pytest.fixture(scope="session")
def genuine(tmp_path_factory, tiny_model) -> bytes:
    """A real bundle (HNSW index, lexical sections, probes) built with the tiny test model, once
    per test run: what the hostile-bundle tests, in Python and in C, forge their cases from."""
    def build(base: Path) -> None:
        docs = base / "docs"
        docs.mkdir()
        for i in range(6):
            (docs / f"pumps{i}.md").write_text(f"# Pump {i}\n\nThe pump {i} moves water uphill at {i * 100} litres "
                                               f"an hour.\n\n## Care\n\nOil the pump {i} every spring.\n")
        run_kbc("build", str(docs), "-o", str(base / "genuine.kbpack"), "--model", str(tiny_model), "--index",
                "HNSW16", "-q", check=True)

    return (built_once(tmp_path_factory, "genuine", build) / "genuine.kbpack").read_bytes()


@pytest.fixture(scope="session")
def crafted_bundles(tmp_path_factory, genuine) -> dict[str, Path]:
    """Every crafted bundle by name, one file each, written once per test run: tests/fuzz_seeds.py's
    set (with the real `genuine` build as an extra base) and test_hostile_bundles' cases on
    `genuine`. What the C sanitizer and differential tests run."""
    import fuzz_seeds

    def build(folder: Path) -> None:
        seeds = fuzz_seeds.crafted_set({"genuine": genuine})
        seeds.update({f"hostile on genuine {k}": v for k, v in fuzz_seeds.hostile(genuine).items()})
        paths = fuzz_seeds.write_seeds(folder / "seeds", seeds)
        assert len(paths) == len(seeds)
        (folder / "names.json").write_text(json.dumps(dict(zip(seeds, (p.name for p in paths)))))

    folder = built_once(tmp_path_factory, "crafted", build)
    return {name: folder / "seeds" / file for name, file in json.loads((folder / "names.json").read_text()).items()}


def require_or_skip(reason: str) -> None:
    """A missing toolchain for another target (WebAssembly, aarch64): a skip with the reason, or under
    KBC_REQUIRE_RUNTIMES (set by .ci/run, which installs them) a failure."""
    if os.environ.get("KBC_REQUIRE_RUNTIMES"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def zstd_source(tmp_path_factory) -> Path:
    """zstd's C sources (zstd.c, zstd.h) for the targets that have no libzstd package (runtimes/js's
    WebAssembly, the aarch64 cross build): KBC_ZSTD_SRC when set (a folder holding them), else
    `make -C runtimes/c zstd-src` once per test run (the `zstandard` sdist from PyPI, SHA-256 checked)."""
    if os.environ.get("KBC_ZSTD_SRC"):
        folder = Path(os.environ["KBC_ZSTD_SRC"])
        if not (folder / "zstd.c").is_file():
            pytest.fail(f"KBC_ZSTD_SRC={folder} holds no zstd.c")
        return folder

    def fetch(folder: Path) -> None:
        proc = subprocess.run(["make", "-s", "-C", str(LIBKBPACK_SRC), "zstd-src", f"ZSTD_SRC={folder}",
                               f"PYTHON={sys.executable}"], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(" ".join((proc.stderr or proc.stdout).split())[-300:])

    try:
        return built_once(tmp_path_factory, "zstd-src", fetch)
    except RuntimeError as e:
        require_or_skip(f"zstd sources: `make -C runtimes/c zstd-src` failed (no PyPI?): {e}")
