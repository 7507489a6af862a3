"""Optional second stage: re-score the first stage's hits with a cross-encoder, desktop side only.

Retrieval (dense, lexical or hybrid) scores a question and a chunk separately; a cross-encoder
reads the two together and so judges relevance better, at the price of one model call per
(question, chunk) pair. So it re-orders a short candidate list the first stage already found:

    from kbc.query.rerank import load_reranker, rerank, candidates_for
    reranker = load_reranker("models/ms-marco-MiniLM-L-6-v2")       # a local directory, never a hub id
    hits = kb.search(question, k=candidates_for(5))
    for r in rerank(reranker, question, hits, k=5):
        print(r.hit.score, r.first_stage_score, r.hit.source)

Re-ranking never touches a bundle: what was built, and what a device reads, stays the same.

A re-ranker kind is one function `load(path, *, device, batch_size, max_length) -> Reranker` that
joins the registry with

    @register_reranker("onnx-cross-encoder", description="...")
    def load_onnx_ce(path, *, device=None, batch_size=32, max_length=None): ...

like the embedding backends of kbc.backends. This module imports no torch or sentence-transformers
until a model is loaded, so `import kbc.query.rerank` costs what numpy costs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Callable, Generic, Iterable, Protocol, Sequence, TypeVar

import numpy as np

from ..stages.splitter import CONTEXT_SEPARATOR
from ..errors import InputError, ModelError, option


class RankedPassage(Protocol):
    """What rerank() needs of a first-stage hit (kbc.query.knowledge_base.Hit is one, a dataclass
    that dataclasses.replace copies). Declared here, not imported, so that this module does not
    import knowledge_base, which imports it: the two modules would otherwise form an import cycle."""
    rank: int
    score: float
    text: str
    context: str | None


HitT = TypeVar("HitT", bound=RankedPassage)  # the caller's hit type, handed back re-ordered

# The most first-stage hits one rerank() call scores: a cross-encoder costs a model call per hit
# (about 1-5 ms each for a MiniLM on a CPU), so 200 keeps one question under a second or so. Hits
# past it are dropped, not appended unscored: their first-stage scores are not comparable with
# the cross-encoder's.
MAX_RERANK_CANDIDATES = 200
# How many first-stage hits to fetch per hit wanted, and never fewer than this: a cross-encoder can
# only promote what the first stage found, and 20-50 candidates hold most of what it would promote.
CANDIDATES_PER_HIT = 5
MIN_RERANK_CANDIDATES = 20
# Used when neither the tokenizer nor the model config caps the input length (a tokenizer saved
# without model_max_length reports 10**30): what BERT-family cross-encoders are trained at.
DEFAULT_MAX_LENGTH = 512
# Text is cut to max_length * this many characters before tokenising, so a huge passage or question
# is never tokenised whole; the tokenizer then truncates to max_length tokens exactly. The cut only
# drops text truncation would have dropped anyway unless tokens average more than 16 characters.
CHARS_PER_TOKEN_BOUND = 16


class Reranker(Protocol):
    """What rerank() needs: a name (for reports) and a deterministic pair scorer."""

    name: str

    def score(self, question: str, passages: Sequence[str]) -> np.ndarray:
        """One float64 relevance score per passage, higher is more relevant."""
        ...


LoadFn = Callable[..., Reranker]


@dataclass(frozen=True)
class RerankerKind:
    name: str
    description: str
    load: LoadFn


RERANKERS: dict[str, RerankerKind] = {}


def register_reranker(name: str, *, description: str) -> Callable[[LoadFn], LoadFn]:
    def add(fn: LoadFn) -> LoadFn:
        RERANKERS[name] = RerankerKind(name, description, fn)
        return fn
    return add


def check_reranker(kind: str) -> None:
    if kind not in RERANKERS:
        raise InputError(f"{option('kind', '--rerank-kind')} must be one of {', '.join(RERANKERS)}, not {kind!r}")


def load_reranker(path: str | os.PathLike, *, kind: str = "cross-encoder", device: str | None = None,
                  batch_size: int = 32, max_length: int | None = None) -> Reranker:
    """Load a re-ranker from a local model directory (never a download: kbc runs offline).

    `device` is as for the embedders (None or "cpu", "cuda", "auto", "mps"...); `batch_size` pairs
    go through the model at once; `max_length` caps question + passage tokens where the model's
    own tokenizer/config does not (or overrides it). Problems are ModelError / InputError naming the
    directory, in one line.
    """
    check_reranker(kind)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"{option('batch_size')} must be a whole number of at least 1, not {batch_size!r}")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)
                                   or max_length < 8):
        raise InputError(f"{option('max_length')} must be a whole number of at least 8, not {max_length!r}")
    return RERANKERS[kind].load(Path(path), device=device, batch_size=batch_size, max_length=max_length)


def passage_text(hit: RankedPassage) -> str:
    """What a re-ranker reads of a hit: what the embedder read at build time (context, then text;
    kbc.stages.chunk.embedded_text), so a chunk's title or path counts for it here too."""
    return f"{hit.context}{CONTEXT_SEPARATOR}{hit.text}" if hit.context else hit.text


def candidates_for(k: int) -> int:
    """How many first-stage hits to fetch so that rerank(..., k=k) has something to choose from."""
    return min(MAX_RERANK_CANDIDATES, max(k * CANDIDATES_PER_HIT, MIN_RERANK_CANDIDATES, k))


@dataclass(frozen=True)
class Reranked(Generic[HitT]):
    """One re-ranked hit: `hit` carries the re-ranker's score and its new 1-based rank; what the
    first stage said is kept beside it (reports, eval comparisons, score fusion)."""

    hit: HitT
    first_stage_score: float
    first_stage_rank: int


def rerank(reranker: Reranker, question: str, hits: Iterable[HitT], *, k: int | None = None,
           text: Callable[[HitT], str] = passage_text) -> list[Reranked[HitT]]:
    """The hits re-ordered by `reranker`'s score, best first, at most `k` of them.

    Only the first MAX_RERANK_CANDIDATES hits (in first-stage order) are scored; equal scores keep
    first-stage order, so the result is deterministic. Each returned hit is a copy with `score` the
    re-ranker's and `rank` its new position; `Reranked.first_stage_score/rank` keep the old ones.
    `[r.hit for r in rerank(...)]` is a plain hit list for code that prints or evaluates hits.
    """
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
        raise InputError(f"{option('k')} must be a whole number of at least 0, not {k!r}")
    candidates = list(islice(hits, MAX_RERANK_CANDIDATES))
    if not candidates or k == 0:
        return []
    scores = np.asarray(reranker.score(question, [text(h) for h in candidates]), dtype=np.float64)
    if scores.shape != (len(candidates),):
        raise ModelError(f"re-ranker {reranker.name} gave {scores.shape} scores for {len(candidates)} passages")
    if not np.all(np.isfinite(scores)):
        raise ModelError(f"re-ranker {reranker.name} gave a non-finite score (NaN or inf)")
    order = np.argsort(-scores, kind="stable")  # stable: ties keep first-stage order
    if k is not None:
        order = order[:k]
    return [Reranked(hit=replace(candidates[i], score=float(scores[i]), rank=new_rank),
                     first_stage_score=float(candidates[i].score), first_stage_rank=candidates[i].rank)
            for new_rank, i in enumerate(order, 1)]


# ---------------------------------------------------------------------------------------------
# The built-in kind: a sentence-transformers CrossEncoder on torch.

def _read_config(path: Path) -> dict:
    """The checks that must come before loading: sentence-transformers would otherwise take an
    embedding model (BertModel) for a cross-encoder and score with a randomly initialised head."""
    if not path.exists():
        raise ModelError(f"{path}: no such directory (a re-ranker is a local cross-encoder model directory)")
    if not path.is_dir():
        raise ModelError(f"{path}: not a directory (a re-ranker is a local cross-encoder model directory)")
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ModelError(f"{path}: not a cross-encoder model directory: it has no config.json")
    from ..backends.model import MAX_CONFIG_FILE_BYTES

    if cfg_path.stat().st_size > MAX_CONFIG_FILE_BYTES:
        raise ModelError(f"{cfg_path}: {cfg_path.stat().st_size / 2**20:,.1f} MiB is over the "
                         f"{MAX_CONFIG_FILE_BYTES >> 20} MiB limit for a model's config files")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ModelError(f"{path}: config.json is unreadable: {_one_line(e)}") from None
    if not isinstance(cfg, dict):
        raise ModelError(f"{path}: config.json is not a JSON object")
    archs = cfg.get("architectures") or []
    if not isinstance(archs, list) or not any(isinstance(a, str) and a.endswith("ForSequenceClassification")
                                              for a in archs):
        raise ModelError(f"{path}: not a cross-encoder: config.json architectures is {archs or 'missing'}, "
                         "a cross-encoder is a ...ForSequenceClassification model")
    labels = cfg.get("id2label")
    n_labels = len(labels) if isinstance(labels, dict) else cfg.get("num_labels", 2)
    if n_labels != 1:
        raise ModelError(f"{path}: not a relevance cross-encoder: it has {n_labels} output labels, "
                         "a re-ranker has 1 (a score per pair)")
    return cfg


def _one_line(e: BaseException) -> str:
    s = " ".join(str(e).split()) or type(e).__name__
    return s if len(s) <= 300 else s[:297] + "..."


class CrossEncoderReranker:
    """A sentence-transformers CrossEncoder scoring (question, passage) pairs.

    The score is the model's raw logit, not the sigmoid `predict` applies by default: the order is
    the same (sigmoid is monotonic) but float32 sigmoids saturate to 1.0 for confident pairs and
    would turn the best candidates into ties.
    """

    def __init__(self, path: Path, *, device: str | None = None, batch_size: int = 32,
                 max_length: int | None = None):
        from ..backends.model import check_model_folder

        _read_config(path)
        check_model_folder(path)  # tokenizer and config sizes, and safetensors weights only, before loading
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from sentence_transformers import CrossEncoder
        from torch import nn
        from transformers.utils import logging as hf_logging

        from ..backends.torch import _torch_device

        hf_logging.set_verbosity_error()  # loading bars and notices say nothing to a kbc user
        hf_logging.disable_progress_bar()
        used = _torch_device(device)
        try:
            self.model = CrossEncoder(str(path), device=used, local_files_only=True, max_length=max_length,
                                      activation_fn=nn.Identity(), trust_remote_code=False,
                                      model_kwargs={"use_safetensors": True})
        except Exception as e:
            raise ModelError(f"{path}: sentence-transformers could not load the cross-encoder: {_one_line(e)}") \
                from None
        if self.model.tokenizer is None:
            raise ModelError(f"{path}: the cross-encoder has no tokenizer")
        if max_length is None and (not self.model.max_seq_length or self.model.max_seq_length > 100_000):
            self.model.max_seq_length = DEFAULT_MAX_LENGTH
        self.max_length = int(self.model.max_seq_length)
        self.max_chars = self.max_length * CHARS_PER_TOKEN_BOUND
        self.path, self.device, self.batch_size = path, used, batch_size
        self.name = f"cross-encoder:{path.name}"

    def score(self, question: str, passages: Sequence[str]) -> np.ndarray:
        if not passages:
            return np.zeros(0, dtype=np.float64)
        q = question[:self.max_chars]
        # Each distinct passage once: repeated chunks (boilerplate, duplicated files) then score
        # exactly alike and keep their first-stage order; scored in one batch, float32 kernels can
        # give identical rows answers an ulp apart.
        cut = [p[:self.max_chars] for p in passages]
        unique = list(dict.fromkeys(cut))
        try:
            out = self.model.predict([(q, p) for p in unique], batch_size=self.batch_size,
                                     show_progress_bar=False, convert_to_numpy=True)
        except Exception as e:
            raise ModelError(f"{self.path}: the cross-encoder failed to score: {_one_line(e)}") from None
        by_text = dict(zip(unique, np.asarray(out, dtype=np.float64).reshape(len(unique)).tolist()))
        return np.array([by_text[p] for p in cut], dtype=np.float64)


@register_reranker("cross-encoder", description="a sentence-transformers CrossEncoder directory on torch "
                                                "(e.g. ms-marco-MiniLM-L-6-v2); --device cuda/mps")
def load_cross_encoder(path: Path, *, device: str | None = None, batch_size: int = 32,
                       max_length: int | None = None) -> Reranker:
    return CrossEncoderReranker(path, device=device, batch_size=batch_size, max_length=max_length)
