"""The .kbpack file (spec: schemas/FORMAT.md): the reader and writer (bundle.py) and one module per
section codec: vectors.py (f32/f16/int8/binary rows), bm25.py (the lexical sections: tokenizer,
builder, reader and BM25 scoring), probes.py, retrieval.py (the manifest's `retrieval` object),
and the guards that bound untrusted sections before a library parses them (faiss_guard.py,
encoder_guard.py).

Imports: kbc.errors, kbc.records, kbc.modes and each other only; nothing above (search, query,
stages, tools, cli), so a reader can be read, and trusted, on its own.
"""
