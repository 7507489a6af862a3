"""Option choices that list a registry (--to, kbc eval's --vectors), shown in `--help`: a new exporter
or vector preset shows up here. Imported by the commands that offer them, so a command without them
(`kbc query`) never imports the registries' modules. `kbc build`'s choices come from kbc.options."""

from __future__ import annotations

from enum import Enum

from ..exporters import EXPORTERS
from ..format.vectors import PRESETS as VECTOR_PRESETS

ExportChoice = Enum("ExportChoice", {name: name for name in EXPORTERS}, type=str)
VectorsChoice = Enum("VectorsChoice", {name: name for name in VECTOR_PRESETS}, type=str)
_EXPORT_HELP = "; ".join(f"{e.name}: {e.description}" for e in EXPORTERS.values())
