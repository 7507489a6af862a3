"""Commands' work that is neither building nor querying: evaluate.py (`kbc eval`), probe.py
(`kbc probe`: another engine's vectors against the bundle's probes), diff.py (`kbc diff`).

Imports: kbc.query, kbc.format, kbc.search, kbc.stages.sources and the base modules.
"""
