"""`kbpack verify` (libkbpack's kbp_verify) and `kbc inspect --verify` (Bundle.verify) reach the same
verdict, intact (exit 0) or invalid (exit 3), on every crafted bundle: issue 27 item 2, "both readers
reach the same verdict on every crafted case". A conforming device reader that trusts libkbpack's
verdict must be able to use exactly the bundles kbc's reader can.

The crafted set is the one the sanitizer tests run (tests/fuzz_seeds.py: small real bundles of every
kind, the schema cases, mutations of each with checksums recomputed, and the hostile cases on a real
`kbc build` output), plus every scalar field of every FAISS index type kbc's readers accept, forged
to values around its limits: the C walk of the index (faiss_index.c, check_index) must refuse what
kbc/format/faiss_guard.py (and FAISS's own loader) refuse, and nothing else.

The crafted set holds the encoder seed (a minimal real ONNX graph), byte mutations of its graph and
tests/test_hostile_encoder.py's crafted graphs, every checksum recomputed: libkbpack's walk of the
graph (onnx_check.c) must refuse what runtimes/python/kbpack_runtime/guard.py refuses, in the same words, with
the same constants and the same operator allow-list."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import fuzz_seeds

TIME_LIMIT_S = 60


def python_verdict(path: Path) -> tuple[int | str, str]:
    """Bundle.verify (what `kbc inspect --verify` runs): 0 intact, 3 invalid; anything else raised is
    a crash of the Python reader, reported as such."""
    from kbc.format.bundle import Bundle
    from kbc.errors import BundleError

    try:
        with Bundle(path) as b:
            b.verify()
        return 0, "intact"
    except BundleError as e:
        return 3, str(e).replace(str(path), "BUNDLE")
    except Exception as e:  # noqa: BLE001 - a crash is a disagreement to list, not a test error
        return f"crash {type(e).__name__}", str(e).splitlines()[0][:200] if str(e) else ""


def c_verdict(tool: Path, path: Path) -> tuple[int, str]:
    out = subprocess.run([str(tool), "verify", str(path)], capture_output=True, text=True, timeout=TIME_LIMIT_S)
    if out.returncode == 0:
        assert out.stdout == "intact\n", out.stdout
    else:
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("kbpack: "), (path.name, out.stderr)
    return out.returncode, out.stderr.strip() or "intact"


def disagreements(tool: Path, cases: dict[str, Path]) -> list[str]:
    lines = []
    for name, path in cases.items():
        (py, py_msg), (c, c_msg) = python_verdict(path), c_verdict(tool, path)
        if py != c:
            lines.append(f"{name}: python {py} ({py_msg}) / C {c} ({c_msg})")
    return lines


@pytest.fixture(scope="module")
def crafted(crafted_bundles) -> dict[str, Path]:
    """Every crafted bundle by name, one file each: the set tests/test_c_sanitizers.py runs
    (conftest.crafted_bundles, written once per test run)."""
    return crafted_bundles


def test_both_readers_reach_the_same_verdict_on_every_crafted_bundle(kbpack_tool, crafted):
    assert len(crafted) > 150
    found = disagreements(kbpack_tool, crafted)
    assert not found, f"{len(found)} of {len(crafted)} crafted bundles get different verdicts:\n" + "\n".join(found)


def test_both_readers_refuse_a_crafted_encoder_graph_in_the_same_words(kbpack_tool, crafted):
    graphs = {k: v for k, v in crafted.items() if k.startswith("hostile encoder ")}
    assert len(graphs) >= 6 + 3 + 20
    refused = 0
    for name, path in graphs.items():
        (py, py_msg), (c, c_msg) = python_verdict(path), c_verdict(kbpack_tool, path)
        assert py == c, (name, py_msg, c_msg)
        if py_msg.startswith("BUNDLE: encoder_graph: "):
            refused += 1
            assert c_msg == "kbpack: " + py_msg.removeprefix("BUNDLE: "), name
    assert refused >= 6 + 10


def test_the_c_graph_walk_uses_the_python_constants_and_allow_list():
    from conftest import LIBKBPACK_SRC
    from kbpack_runtime import guard as encoder_guard

    source = (LIBKBPACK_SRC / "onnx_check.c").read_text()
    listed = re.search(r"ALLOWED_OPS\[\] = \{(.*?)\};", source, re.S)
    assert listed, "onnx_check.c has no ALLOWED_OPS list"
    ops = re.findall(r'"([^"]*)"', listed.group(1))
    assert len(ops) == len(set(ops)) and set(ops) == encoder_guard.ALLOWED_OPS
    for name in ("MAX_GRAPH_BYTES", "MAX_TENSOR_BYTES", "MAX_NODES", "MAX_TENSORS", "MAX_TENSOR_RANK"):
        m = re.search(rf"^#define {name} (.+?)(?:\s*/\*.*)?$", source, re.M)
        assert m, f"onnx_check.c does not define {name}"
        assert eval(m.group(1).replace("(uint64_t)", "")) == getattr(encoder_guard, name), name  # noqa: S307
    encoder = (LIBKBPACK_SRC / "encoder.c").read_text()
    for name in ("MAX_TOKENIZER_BYTES", "MAX_TOKENIZER_DEPTH"):
        m = re.search(rf"^#define {name} (.+?)$", encoder, re.M)
        assert m and eval(m.group(1).replace("(uint64_t)", "")) == getattr(encoder_guard, name), name  # noqa: S307


# every FAISS type kbc/format/faiss_guard.py lets FAISS load, as small real indexes written by FAISS
INDEX_FACTORIES = ["HNSW8", "IVF2,Flat", "IVF2,PQ4x4", "PQ4x4", "PQ2x4", "Flat"]


def forged_fields(index: bytes, count: int, dim: int):
    """(field, width, value, index bytes) for each scalar field the guard reads, set to values
    around the limits (0, 1, +-1 of the true value, all ones, the sign bit, the budgets)."""
    from kbc.format import faiss_guard

    for field, pos in faiss_guard.field_offsets(index, count=count, dim=dim).items():
        for width in (1, 4, 8):
            if pos + width > len(index):
                continue
            true = int.from_bytes(index[pos:pos + width], "little")
            top = (1 << (8 * width)) - 1
            for value in sorted({0, 1, 2, 8, 9, 256, 4097, true + 1, true - 1, top, 1 << (8 * width - 1)}):
                value &= top
                if value != true:
                    yield field, width, value, index[:pos] + value.to_bytes(width, "little") + index[pos + width:]


def test_both_readers_reach_the_same_verdict_on_every_forged_index_field(kbpack_tool, tmp_path):
    import faiss

    from forge import rebuild, sections

    faiss.cvar.distance_compute_blas_threshold = 20
    cases = {}
    for factory in INDEX_FACTORIES:
        data = fuzz_seeds._write(tmp_path, "x" + factory.replace(",", ""), index=factory, lexical=False, probes=False)
        index = bytes(sections(data)["index"][1])
        for field, width, value, forged in forged_fields(index, len(fuzz_seeds.TEXTS), fuzz_seeds.DIM):
            path = tmp_path / f"{len(cases):05d}.kbpack"
            path.write_bytes(rebuild(data, {"index": forged}))
            cases[f"{factory} {field} (u{8 * width} = {value})"] = path
    assert len(cases) > 1000
    found = disagreements(kbpack_tool, cases)
    assert not found, f"{len(found)} of {len(cases)} forged indexes get different verdicts:\n" + "\n".join(found)
