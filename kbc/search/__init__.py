"""Ranking over a bundle's contents: dense.py (exact and FAISS inner-product search, and building a
FAISS index), fusion.py (hybrid fusion and pages as the unit, FORMAT.md §2.5 and §2.8). BM25
scoring lives with its sections, in kbc/format/bm25.py.

Imports: kbc.format and the base modules (errors, records, modes).
"""
