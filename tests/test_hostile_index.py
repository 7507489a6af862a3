"""A stored FAISS index that declares huge sizes, for every index type kbc writes: `inspect --verify`,
`query` and `export` each end in one line and exit 3 (or, for export, which never loads the index,
exit 0) under a 1.5 GB address-space limit, because kbc/format/faiss_guard.py bounds every declared
size against the section's bytes before FAISS allocates anything (FORMAT.md §5.1). Before the
guard, a Flat index declaring ~3 GB of vectors took verify and query to ~3 GB resident."""

from __future__ import annotations

import json

import pytest

from conftest import run_kbc
from forge import rebuild, sections
from test_hostile_bundles import _bounded

# what `kbc build --index` writes, small enough to train on the corpus below (32-d tiny model)
FACTORIES = {"HNSW8": "HNSW,Flat", "IVF4,Flat": "IVF,Flat", "IVF4,PQ4x4": "IVF,PQ", "PQ4x4": "PQ"}
HUGE = 1 << 40
# the scalar fields that size an allocation FAISS makes before it reads what should fill it
SIZE_WORDS = ("length", "ntotal", "nlist")


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model) -> dict[str, bytes]:
    docs = tmp_path_factory.mktemp("index-docs")
    for i in range(40):
        (docs / f"pump{i}.md").write_text(f"# Pump {i}\n\nPump {i} moves {i * 37} litres an hour uphill.\n\n"
                                          f"## Care {i}\n\nOil pump {i} every {i % 7 + 1} weeks in spring.\n")
    out = {}
    for factory in FACTORIES:
        path = tmp_path_factory.mktemp("index") / "kb.kbpack"
        run_kbc("build", str(docs), "-o", str(path), "--model", str(tiny_model), "--index", factory, "-q",
                "--chunk-size", "16", "--chunk-overlap", "0", check=True)
        out[factory] = path.read_bytes()
    return out


def _cases(built) -> list[tuple[str, str, bytes]]:
    from kbc.format import faiss_guard

    cases = []
    for factory, data in built.items():
        index = bytes(sections(data)["index"][1])
        m = json.loads(sections(data)["manifest"][1])
        count, dim = m["vectors"]["count"], m["vectors"]["dim"]
        for field, pos in faiss_guard.field_offsets(index, count=count, dim=dim).items():
            if not any(w in field for w in SIZE_WORDS):
                continue
            width = 4 if field.endswith(" d") else 8
            forged = index[:pos] + HUGE.to_bytes(8, "little")[:width] + index[pos + width:]
            cases.append((factory, field, rebuild(data, {"index": forged})))
    return cases


def test_every_index_type_kbc_writes_is_covered(built):
    from kbc.format import faiss_guard

    kinds = set()
    for data in built.values():
        m = json.loads(sections(data)["manifest"][1])
        kinds.add(faiss_guard.check_index(bytes(sections(data)["index"][1]), count=m["vectors"]["count"],
                                          dim=m["vectors"]["dim"]))
    assert kinds == set(FACTORIES.values())
    assert len(_cases(built)) >= 3 * len(FACTORIES)


def test_a_declared_huge_index_is_refused_in_bounded_memory(built, tiny_model, tmp_path):
    failures = []
    for factory, field, data in _cases(built):
        path = tmp_path / "forged.kbpack"
        path.write_bytes(data)
        for name, args in (("verify", ["inspect", str(path), "--verify"]),
                           ("query", ["query", str(path), "how often is the pump oiled", "--model", str(tiny_model)]),
                           ("export", ["export", str(path), "-", "--to", "jsonl"])):
            proc = _bounded(*args)
            lines = proc.stderr.strip().splitlines()
            ok = proc.returncode == 3 and len(lines) == 1 and lines[0].startswith("kbc: error: ") and "index" in lines[0]
            if name == "export":  # export reads chunks and vectors, never the index
                ok = ok or proc.returncode == 0
            if not ok:
                failures.append(f"{factory} {field}={HUGE} {name}: exit {proc.returncode}: {proc.stderr[-300:]}")
    assert not failures, "\n".join(failures)
