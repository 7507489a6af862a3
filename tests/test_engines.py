"""Stages and engines: the registries (a reader, backend, engine or exporter is one file), the Ray
engine building the same bytes as the local one, and device selection without a GPU."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

import kbc
from conftest import run_kbc
from kbc.errors import InputError, ModelError


def _docs(root: Path, n: int = 12) -> Path:
    docs = root / "docs"
    docs.mkdir()
    for i in range(n):
        (docs / f"pump{i:02d}.md").write_text(
            f"# Pump {i}\n\nPump {i} moves {i * 10} litres of water uphill every hour.\n\n"
            f"## Care\n\nOil pump {i} each spring; replace its seal after {i + 2} years.\n" * 3)
    return docs


def test_registries_list_the_builtins_and_the_cli_shows_them():
    from kbc.backends import BACKENDS
    from kbc.engines import ENGINES
    from kbc.exporters import EXPORTERS
    from kbc.readers import READERS, kind_for

    assert {"pdf", "markdown", "text", "records"} <= set(READERS)
    assert kind_for(".PDF") == "pdf" and kind_for(".xyz") is None
    assert {"onnx", "onnx-int8", "torch"} <= set(BACKENDS)
    assert {"local", "ray"} <= set(ENGINES)
    assert {"edge-slm-json", "jsonl", "npy"} <= set(EXPORTERS)
    help_text = run_kbc("build", "--help", env={"COLUMNS": "200"}).stdout
    assert "<onnx|onnx-int8|torch>" in help_text and "<local|ray>" in help_text and ".jsonl" in help_text


def test_a_plugin_reader_in_one_file_works_end_to_end(tmp_path, tiny_model):
    """A reader registered by a module outside kbc (KBC_PLUGINS) is used by the walk, by the
    extraction worker processes (which inherit the variable), listed in --help and recorded in the
    manifest."""
    plugin = tmp_path / "plugins" / "kbc_recipe_reader.py"
    plugin.parent.mkdir()
    plugin.write_text(textwrap.dedent('''
        from kbc.readers import register_reader
        from kbc.records import Problem
        from kbc.readers.textclean import join_pages

        @register_reader("recipe", suffixes=(".recipe",), description="recipe cards: TITLE: line, then steps")
        def read_recipe(src, data, out, opts):
            lines = data.decode("utf-8").splitlines()
            if not lines or not lines[0].startswith("TITLE:"):
                out.problems.append(Problem(src.rel, "skipped", "no TITLE: line"))
                return
            out.page_count = 1
            doc = join_pages(src.rel, ["\\n".join(lines[1:])], [None])
            doc.title = lines[0][6:].strip()
            out.documents.append(doc)
    '''))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "bread.recipe").write_text("TITLE: Sourdough bread\nMix flour and starter.\nBake at 230 degrees.\n")
    (docs / "broken.recipe").write_text("no title here\n")
    env = {"KBC_PLUGINS": "kbc_recipe_reader",
           "PYTHONPATH": os.pathsep.join([str(plugin.parent), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "kb.kbpack"
    proc = run_kbc("build", str(docs), "-o", str(out), "--model", str(tiny_model), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["files"] == 1 and report["skipped"][0]["reason"] == "no TITLE: line"
    info = json.loads(run_kbc("inspect", str(out), "--json", "-n", "1", env=env).stdout)
    assert info["chunks"][0]["context"] == "Sourdough bread"  # the title the reader found (it holds the path words)
    assert "Bake at 230" in info["chunks"][0]["text"]
    assert ".recipe" in run_kbc("build", "--help", env={**env, "COLUMNS": "200"}).stdout
    # without the plugin .recipe is no reader's suffix: its bytes are text, so the text reader takes
    # both files whole (the TITLE: line is just text then, and nothing is skipped)
    plain = run_kbc("build", str(docs), "-o", str(tmp_path / "x.kbpack"), "--model", str(tiny_model), "--json")
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["files"] == 2 and not json.loads(plain.stdout)["skipped"]


def test_device_selection_without_a_gpu(tiny_model):
    from kbc.backends import load_embedder
    from kbc.backends.onnx import _providers
    from kbc.backends.model import read_spec, resolve_model

    ref = resolve_model(str(tiny_model))
    spec = read_spec(ref)
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has onnxruntime's CUDA provider")
    assert _providers("auto") == (("CPUExecutionProvider",), "cpu")
    auto = load_embedder(spec, ref, backend="onnx", device="auto")
    assert "device" not in auto.spec.runtime  # a CPU build's manifest is the same as without --device
    with pytest.raises(ModelError, match="no CUDA provider"):
        load_embedder(spec, ref, backend="onnx", device="cuda")
    with pytest.raises(ModelError, match="cpu or cuda"):
        load_embedder(spec, ref, backend="onnx", device="tpu")
    with pytest.raises(InputError, match="^backend must be one of"):
        load_embedder(spec, ref, backend="tensorrt")


def test_torch_device_selection_without_a_gpu():
    import torch

    from kbc.backends.torch import _torch_device

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    assert _torch_device(None) == "cpu" and _torch_device("auto") == "cpu"
    with pytest.raises(ModelError, match="no CUDA GPU"):
        _torch_device("cuda")


def test_engine_ray_without_ray_is_a_one_line_error_naming_the_extra(tmp_path, monkeypatch):
    import sys

    from kbc.engines import open_engine

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(InputError, match=r"pip install 'kbc\[ray\]'"):
        open_engine("ray")
    with pytest.raises(InputError, match="^engine must be one of"):
        open_engine("spark")


@pytest.mark.ray
def test_ray_engine_builds_the_same_bytes_as_the_local_one(tmp_path, tiny_model):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'kbc[ray]')")
    docs = _docs(tmp_path)
    common = dict(model=str(tiny_model), index="HNSW16", cache_dir=tmp_path / "cache")
    local = kbc.build([docs], tmp_path / "local.kbpack", use_cache=False, **common)
    cold = kbc.build([docs], tmp_path / "ray.kbpack", engine="ray", use_cache=False, **common)
    assert (tmp_path / "ray.kbpack").read_bytes() == (tmp_path / "local.kbpack").read_bytes()
    assert cold.chunks == local.chunks > 12 and cold.cache["chunks_embedded"] == cold.chunks
    # with a warm cache the driver removes hits before anything is sent to the cluster
    kbc.build([docs], tmp_path / "fill.kbpack", **common)
    warm = kbc.build([docs], tmp_path / "ray-warm.kbpack", engine="ray", **common)
    assert warm.cache["chunks_embedded"] == 0 and warm.cache["files_cached"] == 12
    assert (tmp_path / "ray-warm.kbpack").read_bytes() == (tmp_path / "local.kbpack").read_bytes()
