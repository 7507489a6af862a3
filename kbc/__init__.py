"""kbc: compile documents into one verified .kbpack knowledge-base file for offline RAG.

    import kbc
    report = kbc.build(["docs/"], "kb.kbpack")
    with kbc.open("kb.kbpack") as kb:
        for hit in kb.search("How do I configure logging?", k=5):
            print(hit.score, hit.source, hit.pages, hit.text)

Heavy modules (torch, sentence-transformers, onnxruntime, faiss) load only when a call needs them.
"""

__version__ = "0.1.0"

__all__ = ["build", "open", "open_bundle", "__version__"]


def __getattr__(name):
    """`kbc.build` is kbc.pipeline.build itself (its signature and help), imported on first use."""
    if name == "build":
        from .pipeline import build

        return build
    raise AttributeError(f"module 'kbc' has no attribute {name!r}")


def open(path, **kwargs):  # noqa: A001 - mirrors the builtin on purpose: kbc.open(path)
    """Open a bundle for querying: returns a kbc.query.knowledge_base.KnowledgeBase."""
    from .query.knowledge_base import KnowledgeBase

    return KnowledgeBase(path, **kwargs)


def open_bundle(path):
    """Open a bundle's raw contents (manifest, vectors, chunks) without any model."""
    from .format.bundle import Bundle

    return Bundle(path)
