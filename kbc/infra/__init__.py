"""Infrastructure every layer may lean on: cache.py (the content-addressed build cache) and
plugins.py (KBC_PLUGINS and entry points: code execution, loaded only from the environment).

Imports: the base modules (errors, records) only.
"""
