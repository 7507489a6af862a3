"""The embedding backend registry, used by build and query alike.

A backend is one function `load(ref, spec, *, device, sessions) -> Embedder` (an object with
`spec`, `embed_documents` and `embed_queries`) that joins the registry with

    @register_backend("openvino", description="...")
    def load_openvino(ref, spec, *, device=None, sessions=1): ...

in one new file of this package, imported at the bottom of this module. `--backend` choices and
help come from here; the loaded embedder's `spec` (backend, precision, runtime) is what the
manifest records and what keys the vector cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .model import Embedder, EmbedderSpec, ModelRef
from ..errors import InputError, option

LoadFn = Callable[..., Embedder]


@dataclass(frozen=True)
class Backend:
    name: str
    description: str
    load: LoadFn


BACKENDS: dict[str, Backend] = {}


def register_backend(name: str, *, description: str) -> Callable[[LoadFn], LoadFn]:
    def add(fn: LoadFn) -> LoadFn:
        BACKENDS[name] = Backend(name, description, fn)
        return fn
    return add


def all_backends() -> dict[str, Backend]:
    """Every backend, the plugins' included: what `--backend` lists and checks against."""
    load_plugins()
    return BACKENDS


def check_backend(backend: str) -> None:
    # Plugins load only when a name is not built in: `kbc query` on a bundle a built-in backend made
    # never pays for the entry-point scan (50 ms of a 0.6 s cold query).
    if backend not in BACKENDS and backend not in all_backends():
        raise InputError(f"{option('backend')} must be one of {', '.join(BACKENDS)}, not {backend!r}")


def load_embedder(spec: EmbedderSpec, ref: ModelRef, *, backend: str, device: str | None = None,
                  sessions: int = 1) -> Embedder:
    check_backend(backend)
    return BACKENDS[backend].load(ref, spec, device=device, sessions=sessions)


from . import onnx, torch  # noqa: E402,F401  (the built-in backends register themselves)

from ..infra.plugins import load_plugins  # noqa: E402
