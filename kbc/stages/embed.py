"""Embed stage: the model, described exactly; each window of chunk records looked up in the vector
cache (and in --reuse bundles) on the driver, so only misses reach the engine; new vectors stored
back; the probe set embedded as queries for the bundle's conformance check."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field

import numpy as np

from ..backends import check_backend, load_embedder
from ..infra.background import Background
from ..infra.cache import vector_key
from ..backends.model import EmbedderSpec, TokenCounter, check_model_folder, read_spec, resolve_model
from .chunk import embedded_text


def embedder_identity(spec: EmbedderSpec) -> str:
    """Everything that decides a chunk's vector besides its text and prompt."""
    parts = [spec.weights_sha256, spec.backend, spec.precision, spec.pooling, str(spec.normalize),
             str(spec.max_seq_length), str(spec.do_lower_case), json.dumps(spec.runtime, sort_keys=True)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


@dataclass
class Window:
    """Chunk records on their way through the embed stage: vectors found so far, and the rows
    (`todo`) whose texts the engine must embed."""
    records: list[dict]
    vectors: np.ndarray
    todo: list[int]
    texts: list[str]
    keys: list[bytes] = field(default_factory=list)
    reused: int = 0

    @property
    def todo_texts(self) -> list[str]:
        return [self.texts[i] for i in self.todo]


class EmbedStage:
    """The model is described at once (read from its files: what chunking needs) and made ready to
    run in a background thread (an ONNX conversion or torch import takes a second or more), so that
    extraction and chunking start meanwhile. `embedder`, `spec` and `identity` wait for it."""

    def __init__(self, *, model: str | None, backend: str, device: str | None, query_prompt: str | None,
                 document_prompt: str | None, batch_size: int, sessions: int, cache=None, reuse=(),
                 allow_pickle_weights: bool = False):
        check_backend(backend)
        self.ref = resolve_model(model, allow_pickle_weights=allow_pickle_weights)
        # before anything parses the folder, and before extraction starts: its tokenizer and config
        # sizes, and weights that load without running code
        check_model_folder(self.ref.path, allow_pickle_weights=allow_pickle_weights)
        self.described: EmbedderSpec = read_spec(self.ref, query_prompt=query_prompt, document_prompt=document_prompt,
                                                 file_hasher=cache.file_sha256 if cache is not None else None)
        self.counter = TokenCounter(self.ref.path, do_lower_case=self.described.do_lower_case)
        self._loading = Background(lambda: load_embedder(self.described, self.ref, backend=backend, device=device,
                                                         sessions=sessions), name="kbc-model")
        self._identity: str | None = None
        self.batch_size, self.cache = batch_size, cache
        self.stats = {"chunks_cached": 0, "chunks_embedded": 0}
        self.seconds = 0.0
        self.reused = None
        if reuse:
            self.reused = ReusedVectors(self.identity, self.spec, embed=lambda texts: self.embedder.embed_documents(texts))
            try:
                self.stats["reused_from_bundles"] = sum(self.reused.add_bundle(old) for old in reuse)
                self.stats["reuse_checked"] = self.reused.checked
            except BaseException:
                self.reused.close()  # the bundles opened before the one that failed
                raise
            self.stats["chunks_reused"] = 0

    @property
    def embedder(self):
        return self._loading.result()

    @property
    def spec(self) -> EmbedderSpec:
        """What the manifest records: the description, with the backend's precision and runtime."""
        return self.embedder.spec

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = embedder_identity(self.spec)
        return self._identity

    @property
    def load_seconds(self) -> float:
        return self._loading.seconds

    def warm(self) -> None:
        """Make the first session ahead of need (from a background thread)."""
        try:
            embedder = self.embedder
        except BaseException:  # a model that failed to load is reported by the build, not here
            return
        getattr(embedder, "warm", lambda: None)()

    def prepare(self, records: list[dict]) -> Window:
        """Look the window up in the cache and the reused bundles; what is left is `todo`."""
        t = time.perf_counter()
        texts = [embedded_text(r) for r in records]
        w = Window(records, np.zeros((len(texts), self.spec.dim), dtype=np.float32), list(range(len(texts))), texts)
        if self.cache is not None or self.reused is not None:
            w.keys = [vector_key(self.identity, self.spec.document_prompt, t) for t in texts]
        if self.cache is not None:
            found = self.cache.get_vectors(w.keys, self.spec.dim)
            w.todo = [i for i, v in enumerate(found) if v is None]
            for i, v in enumerate(found):
                if v is not None:
                    w.vectors[i] = v
        if self.reused is not None and w.todo:
            still = []
            for i in w.todo:
                v = self.reused.get(w.keys[i])
                if v is None:
                    still.append(i)
                else:
                    w.vectors[i] = v
            w.reused, w.todo = len(w.todo) - len(still), still
        self.seconds += time.perf_counter() - t
        return w

    def complete(self, w: Window, fresh: np.ndarray) -> np.ndarray:
        """The window's vectors with the engine's `fresh` ones (rows `todo`) in place, stored in the cache."""
        t = time.perf_counter()
        if w.todo:
            w.vectors[w.todo] = fresh
            if self.cache is not None:
                self.cache.put_vectors((w.keys[i], fresh[j]) for j, i in enumerate(w.todo))
        self.stats["chunks_cached"] += len(w.texts) - len(w.todo) - w.reused
        self.stats["chunks_embedded"] += len(w.todo)
        if self.reused is not None:
            self.stats["chunks_reused"] += w.reused
        self.seconds += time.perf_counter() - t
        return w.vectors

    def probes(self) -> tuple[dict, np.ndarray]:
        """Reference vectors for the probe set, embedded as queries (see kbc.format.probes); cached like chunks."""
        from ..format.probes import make_probe_meta, probe_texts

        spec = self.spec
        probes = probe_texts(self.counter, max_seq_length=spec.max_seq_length, prompt=spec.query_prompt)
        texts = [p["text"] for p in probes]
        keys = [vector_key(self.identity, "query:" + spec.query_prompt, t) for t in texts]
        found = self.cache.get_vectors(keys, spec.dim) if self.cache is not None else [None] * len(texts)
        if any(v is None for v in found):
            vectors = np.asarray(self.embedder.embed_queries(texts), dtype=np.float32)
            if self.cache is not None:
                self.cache.put_vectors(zip(keys, vectors))
        else:
            vectors = np.stack(found).astype(np.float32)
        return make_probe_meta(probes, prompt=spec.query_prompt, max_seq_length=spec.max_seq_length), vectors

    def manifest(self) -> dict:
        return {"embedder": self.spec.to_manifest()}

    def close(self) -> None:
        # A build that failed early waits a little for the model thread, not for a whole torch
        # export: what it writes to the cache is renamed into place whole, or not at all.
        self._loading.join(timeout=2.0)
        if self.reused is not None:
            if self.reused.rejected:
                self.stats["reuse_rejected"] = self.reused.rejected  # non-finite or not unit length: re-embedded
            self.reused.close()


# --reuse re-embeds some of each bundle's rows and refuses the bundle when one differs: every row of
# a small bundle, else REUSE_SAMPLE rows chosen by their text's hash (the same every build) and as
# many chosen at random (a forger who knows the first rule cannot know the second).
REUSE_CHECK_ALL = 16
REUSE_SAMPLE = 8
# the same embedder on the same text: equal to float32 rounding (one text a run), or to batch padding
# noise (torch); a vector of another model or text is far below
REUSE_MIN_COSINE = 0.999


class ReusedVectors:
    """--reuse: vectors of earlier bundles made by the identical embedder, offered chunk by chunk.

    A bundle is untrusted input (its checksums prove nothing about who wrote it, and its embedder
    record is only a claim): a sample of its rows is re-embedded (`embed`) and the bundle refused
    when one differs, so a bundle whose vectors are not its claimed model's is an error naming it.
    Its vectors never enter the shared cache either, where later builds without --reuse would ship
    them: they serve this build only, and only when finite (and of unit length for a normalising
    embedder).
    """

    def __init__(self, identity: str, spec: EmbedderSpec, *, embed=None):
        self.identity, self.spec, self.embed = identity, spec, embed
        self._rows: dict[bytes, tuple[np.ndarray, int]] = {}
        self._bundles: list = []
        self.rejected = 0
        self.checked = 0  # rows re-embedded to check the bundles

    def add_bundle(self, path) -> int:
        """Index one bundle's chunks; returns how many it offers (0 for another embedder)."""
        import heapq
        import os
        import random

        from ..errors import InputError
        from ..format.bundle import Bundle

        old = Bundle(path)
        rec = old.manifest.get("embedder", {})
        try:
            same = (embedder_identity(EmbedderSpec(**rec)) == self.identity
                    and rec.get("document_prompt") == self.spec.document_prompt
                    and old.manifest["vectors"]["dtype"] == "float32" and old.dim == self.spec.dim)
        except (TypeError, ValueError, AttributeError, KeyError):
            same = False
        if not same:  # another model, precision or prompt: its vectors are not ours
            old.close()
            return 0
        self._bundles.append(old)  # closed by close(), also when reading it fails below
        vectors = old.vectors
        every = old.count <= REUSE_CHECK_ALL
        at_random = set() if every else set(random.Random(os.urandom(16)).sample(range(old.count), REUSE_SAMPLE))
        by_hash: list[tuple[bytes, int, str]] = []  # the REUSE_SAMPLE rows of the largest key, kept as a heap
        sample: dict[int, str] = {}
        for i, chunk in enumerate(old.iter_chunks()):
            text = embedded_text(chunk)
            key = vector_key(self.identity, self.spec.document_prompt, text)
            self._rows[key] = (vectors, i)
            if every or i in at_random:
                sample[i] = text
            elif len(by_hash) < REUSE_SAMPLE:
                heapq.heappush(by_hash, (key, i, text))
            elif by_hash and key > by_hash[0][0]:
                heapq.heapreplace(by_hash, (key, i, text))
        sample.update((i, text) for _, i, text in by_hash)
        if self.embed is not None and sample:
            rows = sorted(sample)
            fresh = np.asarray(self.embed([sample[i] for i in rows]), dtype=np.float64)
            stored = np.asarray(vectors[rows], dtype=np.float64)
            self.checked += len(rows)
            norms = np.linalg.norm(fresh, axis=1) * np.linalg.norm(stored, axis=1)
            cosine = (fresh * stored).sum(axis=1) / np.maximum(norms, 1e-30)
            ratio = np.linalg.norm(stored, axis=1) / np.maximum(np.linalg.norm(fresh, axis=1), 1e-30)
            bad = [r for r, c, q in zip(rows, cosine, ratio) if not (c >= REUSE_MIN_COSINE and abs(q - 1) <= 1e-2)]
            if bad:
                raise InputError(f"{path}: --reuse refused: {len(bad)} of the {len(rows)} vectors re-embedded to check "
                                 f"it (row {bad[0]} first) are not what {self.spec.name} makes of their text; "
                                 "its vectors are not its recorded embedder's")
        return old.count

    def get(self, key: bytes) -> np.ndarray | None:
        hit = self._rows.get(key)
        if hit is None:
            return None
        v = np.asarray(hit[0][hit[1]], dtype=np.float32)
        if not np.isfinite(v).all() or (self.spec.normalize and abs(float(np.linalg.norm(v)) - 1.0) > 1e-3):
            self.rejected += 1
            return None
        return v

    def close(self) -> None:
        self._rows.clear()
        for b in self._bundles:
            b.close()
