"""How big is the update a device downloads? For each (OLD, NEW) pair of bundles: the new bundle's size,
the .kbdelta `kbc delta` writes (zstd, the old bundle as prefix, long-distance matching) and how long it
took, against a section-aware delta estimated from below (a section identical to one in OLD costs nothing;
a chunk block or vector row found in OLD costs nothing; every other section is compressed against OLD's
section of the same name), the share of chunks that changed, and what each section of NEW costs on its
own against OLD's same-named section (which part of the bundle an update rewrites). The "layout"
column is NEW's chunk layout (FORMAT.md §2.1): give the same change built both ways (`kbc build
--layout fixed|by-source`) as two pairs to compare them in one run.

    python bench/delta_sizes.py LABEL:OLD.kbpack:NEW.kbpack ... [--json out.json]

The figures in docs/updates.md came from this script; it names the CPU it ran on."""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import msgpack
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kbc.format.bundle import Bundle  # noqa: E402
from kbc.tools.delta import _compress_against, build_delta  # noqa: E402
from kbc.tools.diff import diff_bundles  # noqa: E402

REFERENCE_BYTES = 16  # what a section-aware delta would spend to say "copy this block or row from OLD"


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def sections(path: Path) -> tuple[dict[str, bytes], dict]:
    with Bundle(path) as b:
        data = path.read_bytes()
        return ({name: data[s.offset:s.offset + s.length] for name, s in b.sections.items()}, dict(b.manifest))


def row_bytes(name: str, manifest: dict, length: int) -> int | None:
    """The size of one row of a section that holds one row per chunk, else None."""
    count = manifest.get("vectors", {}).get("count") or 0
    if name in ("vectors", "vectors_binary", "lex_doc_lengths") and count and length % count == 0:
        return length // count
    return None


def frames(chunks: bytes, offsets: bytes) -> list[bytes]:
    ends = [int.from_bytes(offsets[i:i + 8], "little") for i in range(0, len(offsets), 8)]
    return [chunks[a:b] for a, b in zip(ends, ends[1:])]


def section_aware_estimate(old: dict[str, bytes], new: dict[str, bytes], old_m: dict, new_m: dict) -> int:
    total = 0
    old_hashes = {hashlib.sha256(v).digest() for v in old.values()}
    for name, data in new.items():
        if hashlib.sha256(data).digest() in old_hashes:
            total += REFERENCE_BYTES
            continue
        if name == "chunks":
            known = {hashlib.sha256(f).digest() for f in frames(old["chunks"], old["chunk_offsets"])}
            for f in frames(data, new["chunk_offsets"]):
                total += REFERENCE_BYTES if hashlib.sha256(f).digest() in known else len(f)
            continue
        size = row_bytes(name, new_m, len(data))
        if size and name in old and row_bytes(name, old_m, len(old[name])) == size:
            known = {old[name][i:i + size] for i in range(0, len(old[name]), size)}
            carried = b"".join(r for r in (data[i:i + size] for i in range(0, len(data), size)) if r not in known)
            rows_referenced = (len(data) - len(carried)) // size
            total += rows_referenced * REFERENCE_BYTES // 4 + len(zstandard.ZstdCompressor(level=3).compress(carried))
            continue
        total += len(_compress_against(old.get(name, b""), data, 3))
    return total + 256  # header and table


def source_aligned_frames(path: Path, block_size: int = 64) -> list[bytes]:
    """The chunk blocks a writer would make if every source started a new block (the format's blocks are
    `block_size` chunks in id order, so one chunk added or removed re-encodes every block after it):
    each source's chunks in runs of at most block_size, msgpack'd and compressed as BundleWriter does."""
    cctx = zstandard.ZstdCompressor(level=10, write_content_size=True, write_checksum=False)
    by_source: dict[int, list[dict]] = {}
    with Bundle(path) as b:
        for ch in b.iter_chunks():
            by_source.setdefault(ch["source"], []).append(ch)
        paths = {i: s["path"] for i, s in enumerate(b.sources)}
    frames_out = []
    for source, chunks in by_source.items():
        for i in range(0, len(chunks), block_size):
            # the source index is renumbered when a source is added or removed: keyed by path instead; `id` is
            # what iter_chunks adds, not stored
            run = [{**{k: v for k, v in c.items() if k != "id"}, "source": paths[source]} for c in chunks[i:i + block_size]]
            frames_out.append(cctx.compress(msgpack.packb(run, use_bin_type=True)))
    return frames_out


def measure(label: str, old_path: Path, new_path: Path, level: int) -> dict:
    old_raw, new_raw = old_path.read_bytes(), new_path.read_bytes()
    t = time.perf_counter()
    delta = build_delta(old_raw, new_raw, level=level)
    seconds = time.perf_counter() - t
    old_s, old_m = sections(old_path)
    new_s, new_m = sections(new_path)
    d = diff_bundles(old_path, new_path)
    with Bundle(new_path) as b:
        layout = b.layout
    per_section = {name: len(_compress_against(old_s.get(name, b""), data, 3)) for name, data in new_s.items()}
    n_new = d.chunks_added + d.chunks_kept
    known = {hashlib.sha256(f).digest() for f in source_aligned_frames(old_path)}
    carried = sum(len(f) for f in source_aligned_frames(new_path) if hashlib.sha256(f).digest() not in known)
    aligned = len(delta) - per_section.get("chunks", 0) + carried if len(delta) > 192 else len(delta)
    return {"case": label, "layout": layout, "new_bytes": len(new_raw), "old_bytes": len(old_raw), "delta_bytes": len(delta),
            "delta_share": len(delta) / len(new_raw), "delta_seconds": round(seconds, 3),
            "section_aware_estimate_bytes": section_aware_estimate(old_s, new_s, old_m, new_m),
            "source_aligned_blocks_estimate_bytes": aligned,
            "chunks": {"new": n_new, "added": d.chunks_added, "removed": d.chunks_removed,
                       "changed_share": (d.chunks_added + d.chunks_removed) / max(1, n_new)},
            "sections_against_old": dict(sorted(per_section.items(), key=lambda kv: -kv[1]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pairs", nargs="+", help="LABEL:OLD:NEW")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--level", type=int, default=9, help="zstd level of the delta (kbc delta's default: 9)")
    args = ap.parse_args()
    rows = []
    for spec in args.pairs:
        label, old, new = spec.split(":")
        rows.append(measure(label, Path(old), Path(new), args.level))
    print(f"CPU: {cpu_name()}; delta at zstd level {args.level}")
    print("| case | layout | new bundle | delta | share | section-aware (est.) | source-aligned blocks (est.) "
          "| chunks changed | kbc delta time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        c = r["chunks"]
        print(f"| {r['case']} | {r['layout']} | {r['new_bytes']:,} B | {r['delta_bytes']:,} B | {100 * r['delta_share']:.2f}% | "
              f"{r['section_aware_estimate_bytes']:,} B | {r['source_aligned_blocks_estimate_bytes']:,} B "
              f"({100 * r['source_aligned_blocks_estimate_bytes'] / r['new_bytes']:.2f}%) | +{c['added']} -{c['removed']} of {c['new']} "
              f"({100 * c['changed_share']:.1f}%) | {r['delta_seconds']} s |")
    for r in rows:
        top = ", ".join(f"{k} {v:,}" for k, v in list(r["sections_against_old"].items())[:6])
        print(f"{r['case']}: bytes per section against OLD's: {top}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "level": args.level, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
