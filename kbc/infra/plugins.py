"""Plugins: modules outside kbc that add readers, backends, engines or exporters by calling the
registries' `register_*` functions when imported. They are found through the `kbc.plugins` entry
point group (`[project.entry-points."kbc.plugins"] myformat = "my_package.kbc_reader"`) and the
`KBC_PLUGINS` environment variable (comma-separated module names), which extraction workers and
Ray workers inherit, so a plugin reader runs wherever extraction runs.

Loading a plugin is code execution: importing the module runs whatever it holds, with the rights of
the user running kbc, in the CLI and in every extraction and Ray worker. So plugins are named only
by whoever controls the environment (KBC_PLUGINS) or the installed packages (entry points), never by
input: a kbc.toml or `[tool.kbc]` `plugins` key is refused (kbc.cli.config), a bundle's recorded build
options cannot hold one, and nothing else kbc reads (documents, bundles, config) is consulted here.
Set KBC_PLUGINS only to modules you would run yourself; a CI job that builds untrusted branches
should not take it from them."""

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
