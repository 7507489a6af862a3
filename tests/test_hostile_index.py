"""A stored FAISS index that declares huge sizes, for every index type kbc writes: `inspect --verify`,
`query` and `export` each end in one line and exit 3 (or, for export, which never loads the index,
exit 0) under a 1.5 GB address-space limit and without ever coming near it, because
kbc/format/faiss_guard.py bounds every declared size against the section's bytes before FAISS
allocates anything (FORMAT.md §5.1). Before the guard, a Flat index declaring ~3 GB of vectors took
verify and query to ~3 GB resident; a declared 1 GiB fits under the limit, so only the measured
peak shows whether it was allocated."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT, kbc_cli
from forge import rebuild, sections
from test_hostile_bundles import MEMORY_LIMIT, TIME_LIMIT_S

# what `kbc build --index` writes, small enough to train on the corpus below (32-d tiny model)
FACTORIES = {"HNSW8": "HNSW,Flat", "IVF4,Flat": "IVF,Flat", "IVF4,PQ4x4": "IVF,PQ", "PQ4x4": "PQ"}
HUGE = 1 << 28  # elements: 1 GiB of floats or int32 links, under the address-space limit
PEAK_LIMIT_MB = 700  # a normal cold `kbc query` with the tiny model peaks near 300 MB
# the scalar fields that size the big allocations FAISS makes before it reads what should fill
# them (vectors, codes, graph links, centroids, list sizes), and the index's own count
SIZE_FIELDS = ("stored index ntotal", "codes length", "neighbors length", "centroids length", "sizes length",
               "levels length")


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model) -> dict[str, bytes]:
    docs = tmp_path_factory.mktemp("index-docs")
    for i in range(40):
        (docs / f"pump{i}.md").write_text(f"# Pump {i}\n\nPump {i} moves {i * 37} litres an hour uphill.\n\n"
                                          f"## Care {i}\n\nOil pump {i} every {i % 7 + 1} weeks in spring.\n")
    out = {}
    for factory in FACTORIES:
        path = tmp_path_factory.mktemp("index") / "kb.kbpack"
        kbc_cli("build", str(docs), "-o", str(path), "--model", str(tiny_model), "--index", factory, "-q",
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
            if not field.endswith(SIZE_FIELDS):
                continue
            width = 4 if field.endswith(" d") else 8
            forged = index[:pos] + HUGE.to_bytes(8, "little")[:width] + index[pos + width:]
            cases.append((factory, field, rebuild(data, {"index": forged})))
    return cases


PEAK = textwrap.dedent("""
    import json, resource, subprocess, sys
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
    p = subprocess.run([sys.executable, "-m", "kbc", *sys.argv[3:]], capture_output=True, text=True,
                       timeout=float(sys.argv[2]), preexec_fn=limit)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    print(json.dumps({"rc": p.returncode, "stderr": p.stderr, "peak_mb": peak}))
""")


def _peak(*args: str) -> dict:
    """kbc ARGS under the address-space limit, from a small wrapper process: exit code, stderr and
    the command's own peak resident memory (the wrapper's only child)."""
    proc = subprocess.run([sys.executable, "-c", PEAK, str(MEMORY_LIMIT), str(TIME_LIMIT_S), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=TIME_LIMIT_S + 30)
    return json.loads(proc.stdout)


def test_every_index_type_kbc_writes_is_covered(built):
    from kbc.format import faiss_guard

    kinds = set()
    for data in built.values():
        m = json.loads(sections(data)["manifest"][1])
        kinds.add(faiss_guard.check_index(bytes(sections(data)["index"][1]), count=m["vectors"]["count"],
                                          dim=m["vectors"]["dim"]))
    assert kinds == set(FACTORIES.values())
    assert len(_cases(built)) >= 2 * len(FACTORIES)


def test_a_declared_huge_index_is_refused_in_bounded_memory(built, tiny_model, tmp_path):
    failures, exported = [], set()
    for factory, field, data in _cases(built):
        path = tmp_path / "forged.kbpack"
        path.write_bytes(data)
        commands = [("verify", ["inspect", str(path), "--verify"]),
                    ("query", ["query", str(path), "how often is the pump oiled", "--model", str(tiny_model)])]
        if factory not in exported:  # export never loads the index: once per type shows it stays bounded
            exported.add(factory)
            commands.append(("export", ["export", str(path), "-", "--to", "jsonl"]))
        for name, args in commands:
            got = _peak(*args)
            lines = got["stderr"].strip().splitlines()
            ok = got["rc"] == 3 and len(lines) == 1 and lines[0].startswith("kbc: error: ") and "index" in lines[0]
            if name == "export":  # export reads chunks and vectors, never the index
                ok = ok or got["rc"] == 0
            if not ok or got["peak_mb"] > PEAK_LIMIT_MB:
                failures.append(f"{factory} {field}={HUGE} {name}: exit {got['rc']}, peak {got['peak_mb']} MB: "
                                f"{got['stderr'][-300:]}")
    assert not failures, "\n".join(failures)
