"""The reference backend: sentence-transformers on torch. Heavy import, any model, any torch device."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .model import EmbedderSpec, ModelRef, check_model_folder
from ..errors import ModelError, option
from . import register_backend


class SentenceTransformerEmbedder:
    """The reference path: sentence-transformers on torch. Heavy import, any model."""

    def __init__(self, ref: ModelRef, spec: EmbedderSpec, *, device: str | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # loading bars and notices say nothing to a kbc user
        hf_logging.disable_progress_bar()

        check_model_folder(ref.path, allow_pickle_weights=ref.allow_pickle_weights)
        try:
            # never code from the folder (trust_remote_code), and a pickle only when the user allowed it
            self.model = SentenceTransformer(
                str(ref.path), device=device, local_files_only=True, trust_remote_code=False,
                model_kwargs={} if ref.allow_pickle_weights else {"use_safetensors": True})
        except Exception as e:
            raise ModelError(f"{ref.path}: sentence-transformers could not load the model: {e}") from None
        dim_of = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        got = dim_of()
        if got != spec.dim:
            raise ModelError(f"{ref.path}: model produces {got}-d vectors, its config says {spec.dim}")
        self.model.max_seq_length = spec.max_seq_length
        self.spec = spec

    def _encode(self, texts: Sequence[str], prompt: str, batch_size: int) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        vecs = self.model.encode(list(texts), prompt=prompt or None, batch_size=batch_size,
                                 convert_to_numpy=True, show_progress_bar=False,
                                 normalize_embeddings=self.spec.normalize)
        return np.asarray(vecs, dtype=np.float32)

    def embed_documents(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        return self._encode(texts, self.spec.document_prompt, batch_size)

    def embed_queries(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        return self._encode(texts, self.spec.query_prompt, batch_size)


def _torch_device(device: str | None) -> str:
    import torch

    cuda = torch.cuda.is_available()
    if device in (None, "cpu") or (device == "auto" and not cuda):
        return "cpu"
    if device in ("cuda", "auto"):
        if not cuda:
            raise ModelError(f"{option('device')} cuda: torch sees no CUDA GPU here (use {option('device')} cpu)")
        return "cuda"
    return device  # mps, cuda:1, ...: torch says whether it has it


@register_backend("torch", description="sentence-transformers on torch: the reference, any model; --device cuda/mps")
def load_torch(ref: ModelRef, spec: EmbedderSpec, *, device: str | None = None, sessions: int = 1):
    from dataclasses import replace

    used = _torch_device(device)
    embedder = SentenceTransformerEmbedder(ref, spec, device=used)
    if used != "cpu":
        embedder.spec = replace(embedder.spec, runtime={**embedder.spec.runtime, "device": used})
    return embedder
