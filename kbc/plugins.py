"""Plugins: modules outside kbc that add readers, backends, engines or exporters by calling the
registries' `register_*` functions when imported. They are found through the `kbc.plugins` entry
point group (`[project.entry-points."kbc.plugins"] myformat = "my_package.kbc_reader"`) and the
`KBC_PLUGINS` environment variable (comma-separated module names), which extraction workers and
Ray workers inherit, so a plugin reader runs wherever extraction runs."""

from __future__ import annotations

import importlib
import os
import sys

_loaded = False


def load_plugins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    names = [n.strip() for n in os.environ.get("KBC_PLUGINS", "").split(",") if n.strip()]
    try:
        from importlib.metadata import entry_points

        names += [ep.value for ep in entry_points(group="kbc.plugins")]
    except Exception:  # broken metadata of an unrelated package must not stop kbc
        pass
    for name in names:
        try:
            importlib.import_module(name.split(":")[0])
        except Exception as e:
            print(f"kbc: warning: plugin {name} not loaded ({type(e).__name__}: {e})", file=sys.stderr)
