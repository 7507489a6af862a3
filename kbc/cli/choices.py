"""Option choices that list a registry (--backend, --engine, --export, --vectors, --pdf-reader), shown
in `--help`: a new backend, engine, exporter or reader file shows up here. Imported by the commands
that offer them, so a command without them (`kbc query`) never imports the registries' modules."""

from __future__ import annotations

from enum import Enum

from ..backends import all_backends
from ..engines import DESCRIPTIONS as ENGINE_DESCRIPTIONS
from ..exporters import EXPORTERS
from ..format.vectors import PRESETS as VECTOR_PRESETS
from ..readers import VARIANTS as READER_VARIANTS
from ..readers import variants_of

BackendChoice = Enum("BackendChoice", {name: name for name in all_backends()}, type=str)
EngineChoice = Enum("EngineChoice", {name: name for name in ENGINE_DESCRIPTIONS}, type=str)
_BACKEND_HELP = "; ".join(f"{b.name}: {b.description}" for b in all_backends().values())
ExportChoice = Enum("ExportChoice", {name: name for name in EXPORTERS}, type=str)
VectorsChoice = Enum("VectorsChoice", {name: name for name in VECTOR_PRESETS}, type=str)
_VECTORS_HELP = "; ".join(f"{p.name}: {p.description}" for p in VECTOR_PRESETS.values())
_EXPORT_HELP = "; ".join(f"{e.name}: {e.description}" for e in EXPORTERS.values())
PdfReaderChoice = Enum("PdfReaderChoice", {name: name for name in variants_of("pdf")}, type=str)
_PDF_READER_HELP = "; ".join(f"{name}: {READER_VARIANTS['pdf'][name].description}" for name in variants_of("pdf"))
_ENGINE_HELP = "; ".join(f"{name}: {d}" for name, d in ENGINE_DESCRIPTIONS.items())
