"""Build stages over plain records. Each stage owns its settings, its cache lookups (keyed by the
content hashes and settings it alone defines) and its part of the manifest; an engine
(`kbc.engines`) only moves records between them, and `kbc.pipeline.build` wires them together.

    discover (kbc.stages.sources)  -> SourceFile
    ExtractStage            -> Extracted (documents, pages, problems)    cache: file sha256 + reader settings
    ChunkStage              -> chunk records (the dicts the bundle stores) cache: file sha256 + chunk settings
    EmbedStage              -> float32 vectors                             cache: embedder identity + prompt + text
    BundleSink              -> the .kbpack (chunks, vectors, lexical index, FAISS index, manifest)
"""
