"""The .kbpack file (spec: schemas/FORMAT.md): the reader and writer (bundle.py) and one module per
section codec: vectors.py (f32/f16/int8/binary rows), bm25.py (the lexical sections: tokenizer,
builder, reader and BM25 scoring), probes.py, retrieval.py (the manifest's `retrieval` object),
and the guard that bounds the FAISS index before FAISS parses it (faiss_guard.py); the encoder's
guard is kbpack_runtime.guard (runtimes/python), shared with the device runtime.

Imports: kbc.errors, kbc.records, kbc.modes, each other and kbpack_runtime.guard (standard library
only); nothing above (search, query, stages, tools, cli), so a reader can be read, and trusted, on
its own.
"""
