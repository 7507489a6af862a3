"""The package's layers (docs/extending.md#layout): every kbc module imports only from its own layer or the
ones below it, so a change to a lower layer never needs a higher one and there is no cycle. The
rule is read off the source (every `import` and `from ... import`, lazy ones inside functions
included), not off what happens to be loaded."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "kbc"

# lowest first; a module may import its own layer and any below
LAYERS = [
    ("base", ["kbc.errors", "kbc.records", "kbc.modes"]),
    ("infra", ["kbc.infra"]),
    ("files", ["kbc.readers", "kbc.format"]),
    ("models and ranking", ["kbc.backends", "kbc.search"]),
    ("build", ["kbc.engines", "kbc.stages"]),
    ("query", ["kbc.query"]),
    ("entry points", ["kbc.options", "kbc.pipeline", "kbc.tools", "kbc.exporters"]),
    ("cli", ["kbc.cli", "kbc.__main__"]),
]


def layer_of(module: str) -> int | None:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every kbc import in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "kbc"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "kbc":
                continue
            # `from kbc.format import vectors` imports the module kbc.format.vectors
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((node.lineno, sub if (ROOT / Path(*sub.split("."))).with_suffix(".py").exists()
                            or (ROOT / Path(*sub.split(".")) / "__init__.py").exists() else target))
    return out


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    missing = [module_name(p) for p in MODULES if module_name(p) != "kbc" and layer_of(module_name(p)) is None]
    assert not missing, f"modules in no layer (add them to LAYERS and docs/extending.md's Layout): {missing}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_flow_down(path):
    name = module_name(path)
    if name == "kbc":
        return  # the package's front door imports what it offers, lazily
    own = layer_of(name)
    up = []
    for line, target in imports_of(path):
        if target == "kbc":  # the package itself: __version__
            continue
        rank = layer_of(target)
        assert rank is not None, f"{name}:{line} imports {target}, which is in no layer"
        if rank > own:
            up.append(f"{name}:{line} imports {target} ({LAYERS[rank][0]} above {LAYERS[own][0]})")
    assert not up, "\n".join(up)


def test_no_two_modules_share_a_name():
    """Someone told "fix the chunker" finds one file called that: module names are unique across
    the package (package front doors aside)."""
    seen: dict[str, list[str]] = {}
    for p in MODULES:
        if p.name not in ("__init__.py", "__main__.py"):
            seen.setdefault(p.stem, []).append(module_name(p))
    assert not {k: v for k, v in seen.items() if len(v) > 1}
