"""Asking a bundle a question, as the library and `kbc query` do: knowledge_base.py (KnowledgeBase:
the embedder the bundle records, search, pages, the device prompt) and rerank.py (the optional
cross-encoder stage).

Imports: kbc.format, kbc.search, kbc.backends, kbc.infra and the base modules.
"""
