from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DOCS = ROOT / "sample_docs"
SHARED = Path(os.environ.get("KBC_SHARED", ROOT.parent / "shared"))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Tests never touch the user's cache; one ONNX export per test session."""
    if "KBC_TEST_CACHE_DIR" in os.environ:
        os.environ["KBC_CACHE_DIR"] = os.environ["KBC_TEST_CACHE_DIR"]
    else:
        os.environ["KBC_CACHE_DIR"] = str(tmp_path_factory.mktemp("kbc-cache"))
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


def run_kbc(*args: str, env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "kbc", *args], capture_output=True, text=True, env=full_env,
                          cwd=ROOT, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"kbc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def sample_bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "sample.kbpack"
    run_kbc("build", str(SAMPLE_DOCS), "-o", str(out), "--quiet", check=True)
    return out


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
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"), seed=0)


LIBKBPACK_SRC = ROOT / "readers" / "c"


def find_c_compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


@dataclass(frozen=True)
class LibKbpack:
    """readers/c built by its Makefile: the library, its header and the `kbpack` tool."""
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


@pytest.fixture(scope="session")
def libkbpack(tmp_path_factory) -> LibKbpack:
    """`make -C readers/c` once per test session, into a temporary folder. Skipped, with the reason,
    without make, a C compiler or zstd.h (the Makefile's `check` target says which).
    LIBKBPACK_CFLAGS="-std=c99 -O1 -g -fsanitize=address,undefined" runs the C tests under sanitizers."""
    cc = find_c_compiler()
    if shutil.which("make") is None or cc is None:
        pytest.skip("libkbpack: no make or no C compiler on this machine")
    build = tmp_path_factory.mktemp("libkbpack")
    make = ["make", "-s", "-C", str(LIBKBPACK_SRC), f"BUILD={build}", f"CC={cc}"]
    cflags = os.environ.get("LIBKBPACK_CFLAGS")
    if cflags:
        make.append(f"CFLAGS={cflags}")
    check = subprocess.run([*make, "check"], capture_output=True, text=True)
    if check.returncode != 0 and os.environ.get("KBC_REQUIRE_LIBKBPACK"):  # CI: a missing zstd.h is a failure
        pytest.fail(check.stderr.strip() or check.stdout.strip() or "libkbpack: prerequisites missing")
    if check.returncode != 0:
        pytest.skip(check.stderr.strip() or check.stdout.strip() or "libkbpack: prerequisites missing")
    proc = subprocess.run(make, capture_output=True, text=True)
    assert proc.returncode == 0, f"make -C readers/c failed:\n{proc.stdout}\n{proc.stderr}"
    lib = LibKbpack(cc=cc, build=build, include=LIBKBPACK_SRC)
    return replace(lib, cflags=tuple(cflags.split())) if cflags else lib


@pytest.fixture(scope="session")
def kbpack_tool(libkbpack) -> Path:
    """The `kbpack` command-line tool (readers/c/kbpack_cli.c over libkbpack)."""
    return libkbpack.tool


@pytest.fixture(scope="session")
def genuine(tmp_path_factory, tiny_model) -> bytes:
    """A real bundle (HNSW index, lexical sections, probes) built with the tiny test model: what
    the hostile-bundle tests, in Python and in C, forge their cases from."""
    base = tmp_path_factory.mktemp("genuine")
    docs = base / "docs"
    docs.mkdir()
    for i in range(6):
        (docs / f"pumps{i}.md").write_text(f"# Pump {i}\n\nThe pump {i} moves water uphill at {i * 100} litres "
                                           f"an hour.\n\n## Care\n\nOil the pump {i} every spring.\n")
    out = base / "genuine.kbpack"
    run_kbc("build", str(docs), "-o", str(out), "--model", str(tiny_model), "--index", "HNSW16", "-q", check=True)
    return out.read_bytes()
