"""`kbc delta` / `kbc apply` (kbc/tools/delta.py, FORMAT.md §8): a delta rebuilds the new bundle byte for
byte; identical bundles give a 192-byte delta; every hostile delta (wrong base, damaged or truncated
header or payload, sizes beyond the file or the limit, a decompression bomb, a result failing its
checksum) is refused with one line, exit 3, naming the part that failed, and nothing is written.
hostile_deltas() is the crafted set tests/test_c_delta.py hands to libkbpack too: both must agree."""

from __future__ import annotations

import hashlib
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zstandard

from conftest import ROOT, built_once, kbc_cli, run_kbc
from kbc.errors import BundleError
from kbc.tools import delta as D

DOCS = {
    "pumps.md": "# Pumps\n\nThe pump moves water uphill at 300 litres an hour.\n\n## Care\n\nOil the pump every spring.\n",
    "valves.md": "# Valves\n\nA gate valve is either open or shut; do not throttle with it.\n",
    "filters.md": "# Filters\n\nRinse the sand filter weekly. Replace the cartridge every season.\n" * 6,
    "tanks.md": "# Tanks\n\nThe header tank feeds the boiler by gravity.\n\n" + "Check the float valve yearly. " * 40,
}


@pytest.fixture(scope="session")
def bundles(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """Bundles built with the tiny test model: base; base plus one document (added); base with one
    paragraph changed (changed); and base built again (rebuilt), which must be byte-identical."""
    def build(d: Path) -> None:
        variants = {"base": dict(DOCS), "rebuilt": dict(DOCS),
                    "added": {**DOCS, "hoses.md": "# Hoses\n\nCoil the hose loosely; kinks crack it in frost.\n"},
                    "changed": {**DOCS, "valves.md": DOCS["valves.md"] + "\nA ball valve turns a quarter.\n"}}
        for name, files in variants.items():
            src = d / f"{name}-docs"
            src.mkdir()
            for fname, text in files.items():
                (src / fname).write_text(text)
            kbc_cli("build", str(src), "-o", str(d / f"{name}.kbpack"), "--model", str(tiny_model), "-q", check=True)

    folder = built_once(tmp_path_factory, "delta-bundles", build)
    return {name: folder / f"{name}.kbpack" for name in ("base", "rebuilt", "added", "changed")}


# ---------------------------------------------------------------- the crafted set (shared with test_c_delta)

_FIELDS = struct.Struct("<8sHHIQQ32s32sQ")


def reseal(delta: bytes, *, payload: bytes | None = None, reserved: bytes | None = None, **fields) -> bytes:
    """`delta` with header fields replaced (and, given `payload`, its payload, length and SHA-256), the
    header's own SHA-256 recomputed: a header only the field under test makes wrong."""
    names = ("magic", "major", "minor", "method", "old_size", "new_size", "old_sha256", "new_sha256", "payload_length")
    values = dict(zip(names, _FIELDS.unpack_from(delta)))
    body = delta[D.HEADER_SIZE:] if payload is None else payload
    payload_sha = delta[128:160] if payload is None else hashlib.sha256(payload).digest()
    if payload is not None:
        values["payload_length"] = len(payload)
    values.update(fields)
    head = _FIELDS.pack(*(values[n] for n in names))
    head += (reserved if reserved is not None else bytes(128 - len(head))) + payload_sha
    return head + hashlib.sha256(head).digest() + body


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x55]) + data[at + 1:]


def lying_frame(real_size: int, claimed: int) -> bytes:
    """A zstd frame of `real_size` zero bytes whose header says `claimed`: a decompression bomb that
    declares a small size (its 4-byte content size field patched)."""
    frame = bytearray(zstandard.ZstdCompressor(level=3, write_content_size=True, write_checksum=False)
                      .compress(bytes(real_size)))
    descriptor = frame[4]
    assert descriptor >> 6 == 2 and not descriptor & 0x03, "expected a 4-byte content size and no dictionary id"
    at = 5 if descriptor & 0x20 else 6  # a single-segment frame has no window byte before the size
    frame[at:at + 4] = struct.pack("<I", claimed)
    return bytes(frame)


def hostile_deltas(old: bytes, new: bytes, other: bytes) -> dict[str, tuple[bytes, str, str]]:
    """name -> (delta bytes, which base to apply it to: "old" or "other", the part both readers must name)."""
    good = D.build_delta(old, new)
    frame = good[D.HEADER_SIZE:]
    big_bomb = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(bytes(64 << 20))
    unsized = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(new)
    return {
        "empty file": (b"", "old", "header"),
        "shorter than the header": (good[:100], "old", "header"),
        "wrong magic": (reseal(good, magic=b"KBPACK\0\0"), "old", "header"),
        "format 2.0": (reseal(good, major=2), "old", "header"),
        "header damaged": (flip(good, 20), "old", "header"),
        "header checksum damaged": (flip(good, 170), "old", "header"),
        "unknown method": (reseal(good, method=2), "old", "header"),
        "reserved bytes set": (reseal(good, reserved=b"\1" + bytes(23)), "old", "header"),
        "new size over the limit": (reseal(good, new_size=D.MAX_BUNDLE_BYTES + 1), "old", "header"),
        "old size over the limit": (reseal(good, old_size=1 << 62), "old", "header"),
        "empty payload but the bundles differ": (reseal(good, payload=b""), "old", "header"),
        "payload truncated": (good[:-10], "old", "payload"),
        "payload length beyond the file": (reseal(good, payload_length=1 << 62), "old", "payload"),
        "bytes after the payload": (good + bytes(5), "old", "payload"),
        "payload damaged": (flip(good, D.HEADER_SIZE + len(frame) // 2), "old", "payload"),
        "payload not zstd": (reseal(good, payload=os.urandom(300)), "old", "payload"),
        "frame without a size": (reseal(good, payload=unsized), "old", "payload"),
        "bomb: frame declares 64 MiB, header the new size": (reseal(good, payload=big_bomb), "old", "payload"),
        "bomb: frame and header declare 1000 bytes, it decodes to 8 MiB": (
            reseal(good, payload=lying_frame(8 << 20, 1000), new_size=1000), "old", "payload"),
        "two frames": (reseal(good, payload=frame + zstandard.ZstdCompressor(write_content_size=True).compress(b"")),
                       "old", "payload"),
        "new size differs from the frame's": (reseal(good, new_size=len(new) + 1), "old", "payload"),
        "wrong base (another bundle)": (good, "other", "base"),
        "result fails its checksum": (reseal(good, new_sha256=bytes(32)), "old", "result"),
    }


def same_size_other_base(old: bytes) -> bytes:
    """A base of the old bundle's size with one byte changed: only its SHA-256 tells it apart."""
    return flip(old, len(old) // 2)


# ---------------------------------------------------------------- tests

def test_apply_rebuilds_the_new_bundle_byte_for_byte(bundles, tmp_path):
    assert bundles["base"].read_bytes() == bundles["rebuilt"].read_bytes(), "builds are not byte-identical"
    for name in ("added", "changed"):
        delta, out = tmp_path / f"{name}.kbdelta", tmp_path / f"{name}.kbpack"
        kbc_cli("delta", str(bundles["base"]), str(bundles[name]), "-o", str(delta), check=True)
        proc = kbc_cli("apply", str(bundles["base"]), str(delta), "-o", str(out), check=True)
        assert "verified" in proc.stdout
        assert out.read_bytes() == bundles[name].read_bytes()
        assert delta.stat().st_size < bundles[name].stat().st_size // 4, "a one-document change is not small"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "temporary files left behind"


def test_a_delta_that_would_not_rebuild_the_new_bundle_is_never_written(bundles, tmp_path, monkeypatch):
    """kbc delta applies what it made before writing it: a compressor that emitted a wrong frame (here
    one byte of the new bundle flipped before compressing) fails with exit 3 and leaves no file."""
    real = D._compress_against

    def faulty(old: bytes, new: bytes, level: int) -> bytes:
        return real(old, new[:100] + bytes([new[100] ^ 1]) + new[101:], level)

    monkeypatch.setattr(D, "_compress_against", faulty)
    out = tmp_path / "bad.kbdelta"
    with pytest.raises(BundleError, match="does not rebuild .*nothing written") as e:
        D.make_delta(bundles["base"], bundles["added"], out)
    assert e.value.exit_code == 3 and e.value.section == "result"
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(D, "_compress_against", real)
    D.make_delta(bundles["base"], bundles["added"], out)  # the real compressor's delta is written
    assert D.rebuild(bundles["base"].read_bytes(), out.read_bytes()) == bundles["added"].read_bytes()


def test_identical_bundles_give_a_header_only_delta(bundles, tmp_path):
    delta, out = tmp_path / "same.kbdelta", tmp_path / "same.kbpack"
    proc = kbc_cli("delta", str(bundles["base"]), str(bundles["rebuilt"]), "-o", str(delta), "--json", check=True)
    assert delta.stat().st_size == D.HEADER_SIZE == 192
    assert '"size": 192' in proc.stdout
    kbc_cli("apply", str(bundles["base"]), str(delta), "-o", str(out), check=True)
    assert out.read_bytes() == bundles["base"].read_bytes()


def test_apply_may_replace_the_old_bundle_itself(bundles, tmp_path):
    device = tmp_path / "kb.kbpack"
    device.write_bytes(bundles["base"].read_bytes())
    delta = tmp_path / "u.kbdelta"
    delta.write_bytes(D.build_delta(bundles["base"].read_bytes(), bundles["changed"].read_bytes()))
    kbc_cli("apply", str(device), str(delta), "-o", str(device), check=True)
    assert device.read_bytes() == bundles["changed"].read_bytes()
    proc = kbc_cli("apply", str(device), str(delta), "-o", str(device))  # applied twice: now the wrong base
    assert proc.returncode == 3 and "base:" in proc.stderr
    assert device.read_bytes() == bundles["changed"].read_bytes()


@pytest.fixture(scope="module")
def crafted(bundles, tmp_path_factory) -> dict[str, tuple[Path, Path, str]]:
    """The hostile set as files: name -> (delta, base, expected part)."""
    folder = tmp_path_factory.mktemp("crafted-deltas")
    old, new, other = (bundles[n].read_bytes() for n in ("base", "changed", "added"))
    cases = hostile_deltas(old, new, other)
    same_size = folder / "same-size-base.kbpack"
    same_size.write_bytes(same_size_other_base(old))
    out = {}
    for i, (name, (data, base, part)) in enumerate(cases.items()):
        path = folder / f"case{i}.kbdelta"
        path.write_bytes(data)
        out[name] = (path, bundles["base"] if base == "old" else bundles["added"], part)
    good = folder / "good.kbdelta"
    good.write_bytes(D.build_delta(old, new))
    out["wrong base (same size, one byte changed)"] = (good, same_size, "base")
    return out


def test_every_hostile_delta_is_refused_in_one_line_naming_its_part(crafted, tmp_path):
    assert len(crafted) >= 20
    for name, (delta, base, part) in crafted.items():
        out = tmp_path / "new.kbpack"
        with pytest.raises(BundleError) as e:
            D.rebuild(base.read_bytes(), delta.read_bytes())
        assert e.value.section == part, (name, str(e.value))
        proc = kbc_cli("apply", str(base), str(delta), "-o", str(out))
        assert proc.returncode == 3, (name, proc.returncode, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and f" {part}: " in lines[0] and "Traceback" not in proc.stderr, (name, proc.stderr)
        assert not out.exists() and not list(tmp_path.glob(".new.kbpack.*")), name


def test_a_bomb_is_stopped_at_the_declared_size_in_bounded_memory(crafted, tmp_path):
    """The 8 MiB-of-zeros frame that says 1000 bytes: the decoder may not produce more than 1000."""
    delta, base, _ = crafted["bomb: frame and header declare 1000 bytes, it decodes to 8 MiB"]
    code = ("import resource, sys; from kbc.tools.delta import rebuild; from kbc.errors import BundleError\n"
            "try: rebuild(open(sys.argv[1], 'rb').read(), open(sys.argv[2], 'rb').read())\n"
            "except BundleError as e: print(e.section)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    before = subprocess.run([sys.executable, "-c", "import resource, kbc.tools.delta; "
                             "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
                            capture_output=True, text=True, cwd=ROOT, check=True)
    proc = subprocess.run([sys.executable, "-c", code, str(base), str(delta)], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    part, rss = proc.stdout.split()
    assert part == "payload"
    assert int(rss) - int(before.stdout) < 6 * 1024, "the decoder produced more than the declared size"


def test_refusals_of_files_and_paths(bundles, tmp_path):
    missing = run_kbc("delta", str(tmp_path / "nope.kbpack"), str(bundles["base"]), "-o", str(tmp_path / "d"))
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1 and "not found" in missing.stderr
    delta = tmp_path / "d.kbdelta"
    kbc_cli("delta", str(bundles["base"]), str(bundles["added"]), "-o", str(delta), check=True)
    proc = kbc_cli("apply", str(bundles["base"]), str(delta), "-o", str(tmp_path / "no-such-folder" / "x.kbpack"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = kbc_cli("apply", str(bundles["base"]), str(tmp_path), "-o", str(tmp_path / "x.kbpack"))
    assert proc.returncode == 2 and "not a regular file" in proc.stderr
    proc = kbc_cli("delta", str(bundles["base"]), str(bundles["added"]), "-o", str(bundles["base"]))
    assert proc.returncode == 2 and "is one of the inputs" in proc.stderr
    proc = kbc_cli("apply", str(tmp_path / "missing.kbpack"), str(tmp_path / "d.kbdelta"), "-o", str(tmp_path / "y"))
    assert proc.returncode == 2 and "old bundle not found" in proc.stderr
    damaged = tmp_path / "damaged.kbdelta"
    damaged.write_bytes(b"KBDELTA\0" + bytes(300))
    proc = kbc_cli("apply", str(tmp_path / "missing.kbpack"), str(damaged), "-o", str(tmp_path / "y"))
    assert proc.returncode == 3 and "header:" in proc.stderr, "the delta is checked before the base is looked for"


def test_diff_reports_the_delta_size(bundles):
    import json

    proc = kbc_cli("diff", str(bundles["base"]), str(bundles["changed"]), "--json")
    assert proc.returncode == 7
    d = json.loads(proc.stdout)["delta"]
    assert d["bytes"] == len(D.build_delta(bundles["base"].read_bytes(), bundles["changed"].read_bytes()))
    assert d["new_bundle_bytes"] == bundles["changed"].stat().st_size
    text = kbc_cli("diff", str(bundles["base"]), str(bundles["rebuilt"])).stdout
    assert "delta: 192 B (" in text


def big_pair(folder: Path, size: int) -> tuple[Path, Path, Path]:
    """Two files of about `size` random bytes that share most of them, and the delta between them: what
    the kill and memory tests apply (a delta is bytes to bytes; no bundle of this size is built here)."""
    old = os.urandom(size)
    new = old[: size // 2] + os.urandom(size // 100) + old[size // 2 + size // 50:]
    paths = folder / "old.kbpack", folder / "new.kbpack", folder / "update.kbdelta"
    for p, data in zip(paths, (old, new, D.build_delta(old, new, level=3))):  # level 19 takes a minute here
        p.write_bytes(data)
    return paths


def kill_during(argv: list[str], folder: Path, delays: list[float], final: Path, old: Path, old_bytes: bytes,
                new_bytes: bytes) -> int:
    """Run argv and SIGKILL it after each delay: the old bundle must be intact and the final name absent or
    the complete new bundle. Returns how many runs were killed before they finished."""
    killed = 0
    for delay in delays:
        final.unlink(missing_ok=True)
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
        assert old.read_bytes() == old_bytes, f"old bundle changed (killed after {delay} s)"
        assert not final.exists() or final.read_bytes() == new_bytes, f"partial file under the final name ({delay} s)"
        for leftover in folder.glob(f".{final.name}.*"):  # what a kill leaves: a temporary name, never the final one
            leftover.unlink()
    return killed


def test_a_kill_during_kbc_apply_leaves_the_old_bundle_and_no_partial_file(tmp_path):
    old, new, delta = big_pair(tmp_path, 48 << 20)
    final = tmp_path / "out.kbpack"
    argv = [sys.executable, "-m", "kbc", "apply", str(old), str(delta), "-o", str(final)]
    killed = kill_during(argv, tmp_path, [0.3, 0.8, 1.2, 1.6, 2.0], final, old, old.read_bytes(), new.read_bytes())
    assert killed >= 1, "every run finished before the kill: nothing was tested"
