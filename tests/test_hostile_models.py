"""What a model folder may make kbc do (issue 43, item 3): weights load from safetensors only unless
the user passes --allow-pickle-weights (unpickling runs code), never with trust_remote_code, and
tokenizer and config files are size-checked before anything parses them, for --model and --rerank
alike. The folders are the tests' tiny models, altered."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from conftest import run_kbc
from kbc.backends.model import MAX_TOKENIZER_FILE_BYTES, check_model_folder, resolve_model
from kbc.errors import ModelError
from test_rerank import make_tiny_cross_encoder


def _pickled(src: Path, dst: Path) -> Path:
    """The same model with its weights as pytorch_model.bin (a torch pickle) and no .safetensors."""
    import torch
    from safetensors.torch import load_file

    shutil.copytree(src, dst)
    torch.save(load_file(str(dst / "model.safetensors")), dst / "pytorch_model.bin")
    (dst / "model.safetensors").unlink()
    return dst


def _docs(tmp_path: Path) -> Path:
    d = tmp_path / "docs"
    d.mkdir()
    (d / "pump.md").write_text("# Pump\n\nPrime the pump with water before the first start.\n")
    return d


def test_a_model_whose_weights_are_a_pickle_is_refused_unless_the_user_allows_it(tmp_path, tiny_model):
    model = _pickled(tiny_model, tmp_path / "pickled-model")
    docs = _docs(tmp_path)
    out = run_kbc("build", str(docs), "-o", str(tmp_path / "kb.kbpack"), "--model", str(model), "--workers", "0")
    assert out.returncode == 4 and not (tmp_path / "kb.kbpack").exists(), out.stderr
    assert out.stderr.strip().splitlines() == [
        f"kbc: error: {model / 'pytorch_model.bin'}: the model's weights are a pickle, which can run code when "
        "loaded; convert them to .safetensors, or pass --allow-pickle-weights if you trust this folder"]
    ok = run_kbc("build", str(docs), "-o", str(tmp_path / "kb.kbpack"), "--model", str(model), "--workers", "0",
                 "--allow-pickle-weights", "--quiet")
    assert ok.returncode == 0 and (tmp_path / "kb.kbpack").exists(), ok.stderr


def test_loaders_are_asked_for_safetensors_and_no_remote_code(tmp_path, tiny_model, monkeypatch):
    """sentence-transformers and transformers are told, not left to their defaults (which have
    changed between versions)."""
    import sentence_transformers

    seen: dict = {}

    class Refuse(Exception):
        pass

    def capture(*args, **kwargs):
        seen.update(kwargs)
        raise Refuse

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", capture)
    from kbc.backends.model import read_spec
    from kbc.backends.torch import SentenceTransformerEmbedder

    ref = resolve_model(str(tiny_model))
    with pytest.raises(ModelError):
        SentenceTransformerEmbedder(ref, read_spec(ref))
    assert seen["trust_remote_code"] is False and seen["model_kwargs"] == {"use_safetensors": True}


def test_an_oversized_tokenizer_is_refused_before_it_is_parsed(tmp_path, tiny_model):
    model = tmp_path / "big-tokenizer"
    shutil.copytree(tiny_model, model)
    tj = model / "tokenizer.json"
    # still a valid tokenizer.json (JSON allows trailing whitespace): without the check it loads, slowly
    with open(tj, "ab") as f:
        f.write(b" " * (MAX_TOKENIZER_FILE_BYTES + 1))
    out = run_kbc("build", str(_docs(tmp_path)), "-o", str(tmp_path / "kb.kbpack"), "--model", str(model),
                  "--workers", "0")
    [line] = out.stderr.strip().splitlines()
    assert out.returncode == 4 and re.fullmatch(rf"kbc: error: {re.escape(str(tj))}: 32\.\d MiB is over the 32 MiB "
                                                r"limit for a model's tokenizer files", line), out.stderr


def test_a_reranker_folder_is_checked_the_same_way(tmp_path):
    from kbc.query.rerank import load_reranker

    ce = make_tiny_cross_encoder(tmp_path / "ce")
    load_reranker(ce)  # sound as made
    vocab = ce / "vocab.txt"
    with open(vocab, "ab") as f:
        f.truncate(MAX_TOKENIZER_FILE_BYTES + 1)  # sparse: no disk
    with pytest.raises(ModelError, match=r"vocab\.txt: 32\.0 MiB is over the 32 MiB limit"):
        load_reranker(ce)
    vocab.unlink()
    weights = ce / "model.safetensors"
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(str(weights)), ce / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(ModelError, match=r"pytorch_model\.bin: the model's weights are a pickle"):
        load_reranker(ce)


def test_config_files_are_size_checked_too(tmp_path, tiny_model):
    model = tmp_path / "big-config"
    shutil.copytree(tiny_model, model)
    with open(model / "1_Pooling" / "config.json", "ab") as f:
        f.write(b" " * (5 << 20))
    with pytest.raises(ModelError, match=r"1_Pooling/config\.json: 5\.0 MiB is over the 4 MiB limit"):
        check_model_folder(model)
