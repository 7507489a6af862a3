"""`kbc delta` and `kbc apply`: the small file a device downloads to turn the bundle it has into the one CI
just built (schemas/FORMAT.md §8, the .kbdelta format).

The payload is one zstd frame of the new bundle compressed with the old bundle as its prefix, with
long-distance matching: every byte the two bundles share (unchanged chunk blocks, vector rows, lexical
postings, the encoder) becomes a back-reference into the old file. Measured against a section-aware
delta (unchanged blocks and rows referenced, the rest carried) on the issue's cases it was as small or
smaller (bench/delta_sizes.py, docs/updates.md) and needs nothing on the device but the zstd decoder
libkbpack already links, so it is the one method.

The header names both bundles by whole-file SHA-256 and size. Applying checks, in this order, and
refuses at the first failure (libkbpack's kbp_apply_delta checks the same things in the same order, so
both readers give the same verdict): the header (magic, version, its own SHA-256, the method, sizes
within MAX_BUNDLE_BYTES), the payload's length against the file, the payload's SHA-256, the base's size,
the zstd frame (one frame, its declared content size equal to the header's), decompression with the
output capped at the declared size (a decompression bomb stops there), and the result's SHA-256; when that
fails, the base's SHA-256 says whether the base or the delta is wrong.
Only then is anything written: a temporary file in the target folder, fsynced, renamed over the target.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import zstandard

from ..errors import BundleError, InputError
from ..format.writer import _fsync_dir  # the rename made durable: a power cut must not bring the old name back

MAGIC = b"KBDELTA\0"
MAJOR, MINOR = 1, 0
METHOD_ZSTD_PREFIX = 1  # payload: zstd frame, the old bundle as its raw-content prefix
HEADER_SIZE = 192
# the fields before the two checksums: magic, major, minor, method, old_size, new_size, old_sha256,
# new_sha256, payload_length, then reserved zero bytes up to offset 128
_FIELDS = struct.Struct("<8sHHI QQ 32s32s Q")
_RESERVED = slice(_FIELDS.size, 128)
# Neither bundle may be larger: a device update beyond 4 GiB is not what this is for, and the cap bounds
# what a hostile header can make a reader allocate (Python) or map (libkbpack) before anything is checked.
MAX_BUNDLE_BYTES = 1 << 32
# zstd's compress bound of the largest bundle, with the header: no genuine delta is larger
MAX_DELTA_BYTES = HEADER_SIZE + MAX_BUNDLE_BYTES + (MAX_BUNDLE_BYTES >> 7)
# zstd's largest window on 64-bit hosts; the writer asks for less when old + new fit in less
MAX_WINDOW_LOG = 31
# zstd level. Levels 16 and above (the optimal parsers) stopped finding the long-distance matches into the
# prefix on large inputs: a 40 MB file with a 100 KB insertion came out at 8.5 MB (levels 3-15: 105-163 KB),
# a 100 MB one at 100 MB. Level 9 is the best of the rest for its time: 170,249 B for the FinanceBench
# subset's one-page change (level 3: 184,286 B; 12 and 15 no smaller), 0.7 s for 10.6 MB on the 2-core
# AMD EPYC. The delta is made once in CI and downloaded by every device.
DEFAULT_LEVEL = 9
MAX_LEVEL = 15


@dataclass(frozen=True)
class DeltaHeader:
    old_size: int
    new_size: int
    old_sha256: bytes
    new_sha256: bytes
    payload_length: int
    payload_sha256: bytes
    minor: int = MINOR

    def to_dict(self) -> dict:
        return {"format": f"{MAJOR}.{self.minor}", "method": "zstd-prefix",
                "old": {"size": self.old_size, "sha256": self.old_sha256.hex()},
                "new": {"size": self.new_size, "sha256": self.new_sha256.hex()},
                "payload": {"size": self.payload_length, "sha256": self.payload_sha256.hex()},
                "size": HEADER_SIZE + self.payload_length}


def pack_header(h: DeltaHeader) -> bytes:
    head = _FIELDS.pack(MAGIC, MAJOR, h.minor, METHOD_ZSTD_PREFIX, h.old_size, h.new_size, h.old_sha256, h.new_sha256,
                        h.payload_length)
    head += bytes(128 - len(head)) + h.payload_sha256
    return head + hashlib.sha256(head).digest()


def parse_header(raw: bytes, path: str | None = None) -> DeltaHeader:
    """The header's fields, checked alone (nothing else of the file): BundleError part "header"."""
    def bad(msg: str) -> BundleError:
        return BundleError(msg, section="header", path=path)

    if len(raw) < HEADER_SIZE:
        raise bad(f"truncated: {len(raw)} bytes, shorter than the {HEADER_SIZE}-byte header")
    magic, major, minor, method, old_size, new_size, old_sha, new_sha, payload_length = _FIELDS.unpack_from(raw)
    if magic != MAGIC:
        raise bad("not a .kbdelta file (wrong magic)")
    if major != MAJOR:
        raise bad(f"format {major}.{minor} is not supported (this reader reads {MAJOR}.x)")
    if hashlib.sha256(raw[:160]).digest() != raw[160:HEADER_SIZE]:
        raise bad("header checksum mismatch")
    if method != METHOD_ZSTD_PREFIX:
        raise bad(f"unknown method {method}")
    if any(raw[_RESERVED]):
        raise bad("reserved bytes are not zero")
    for name, size in (("old", old_size), ("new", new_size)):
        if size > MAX_BUNDLE_BYTES:
            raise bad(f"declares a {name} bundle of {size} bytes, over the {MAX_BUNDLE_BYTES}-byte limit")
    if payload_length == 0 and (old_size != new_size or old_sha != new_sha):
        raise bad("an empty payload says the bundles are identical, but the sizes or SHA-256s differ")
    return DeltaHeader(old_size, new_size, old_sha, new_sha, payload_length, raw[128:160], minor)


def _compress_against(old: bytes, new: bytes, level: int) -> bytes:
    """`new` as one zstd frame that refers back into `old` (ZSTD_CCtx_refPrefix with long-distance
    matching). python-zstandard's dictionary API cannot do this: a raw-content dictionary is loaded
    without the long-distance matcher and cut to what the hash tables index, so a 40 MB file with a
    100 KB insertion came out at 40 MB; the prefix, through the cffi binding the same wheel ships,
    gives 163 KB."""
    try:
        from zstandard.backend_cffi import ffi, lib
    except ImportError as e:  # the wheel's cffi binding needs the cffi package, which CPython installs don't pull in
        raise InputError(f"kbc delta needs the cffi package (pip install cffi): {e}") from None
    cctx = lib.ZSTD_createCCtx()
    if cctx == ffi.NULL:
        raise MemoryError("zstd: cannot create a compression context")
    try:
        window_log = min(MAX_WINDOW_LOG, max(10, (len(old) + len(new)).bit_length()))
        for param, value in ((lib.ZSTD_c_compressionLevel, level), (lib.ZSTD_c_windowLog, window_log),
                             (lib.ZSTD_c_enableLongDistanceMatching, 1), (lib.ZSTD_c_contentSizeFlag, 1),
                             (lib.ZSTD_c_checksumFlag, 0), (lib.ZSTD_c_dictIDFlag, 0)):
            _zstd_check(lib, ffi, lib.ZSTD_CCtx_setParameter(cctx, param, value))
        old_buf = ffi.from_buffer(old)  # kept referenced until compress2 returns: the prefix is not copied
        _zstd_check(lib, ffi, lib.ZSTD_CCtx_refPrefix(cctx, old_buf, len(old)))
        capacity = lib.ZSTD_compressBound(len(new))
        out = ffi.new("char[]", capacity)
        n = _zstd_check(lib, ffi, lib.ZSTD_compress2(cctx, out, capacity, ffi.from_buffer(new), len(new)))
        return ffi.buffer(out, n)[:]
    finally:
        lib.ZSTD_freeCCtx(cctx)


def _zstd_check(lib, ffi, code: int) -> int:
    if lib.ZSTD_isError(code):
        raise RuntimeError("zstd: " + ffi.string(lib.ZSTD_getErrorName(code)).decode())
    return code


def _read_bundle(path: Path, role: str) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {role} bundle not found" if not path.exists() else f"{path}: not a regular file")
    size = path.stat().st_size
    if size > MAX_BUNDLE_BYTES:
        raise InputError(f"{path}: {size} bytes, over the {MAX_BUNDLE_BYTES}-byte limit of a delta's bundles")
    return path.read_bytes()


def build_delta(old: bytes, new: bytes, *, level: int = DEFAULT_LEVEL) -> bytes:
    """The .kbdelta that turns the bytes `old` into the bytes `new`. Identical bundles get an empty payload:
    a zstd frame copying the whole base still spends about 110 bytes per 128 KiB block (35 KB for 40 MB),
    and "nothing changed" is the commonest update CI publishes."""
    if not 1 <= level <= MAX_LEVEL:
        raise InputError(f"level must be from 1 to {MAX_LEVEL}, not {level} (higher levels lose the matches into "
                         "the old bundle)")
    payload = b"" if old == new else _compress_against(old, new, level)
    header = DeltaHeader(len(old), len(new), hashlib.sha256(old).digest(), hashlib.sha256(new).digest(), len(payload),
                         hashlib.sha256(payload).digest())
    return pack_header(header) + payload


def make_delta(old_path, new_path, out_path, *, level: int = DEFAULT_LEVEL) -> DeltaHeader:
    """Write the delta from the bundle at `old_path` to the one at `new_path` to `out_path` (atomically).
    The bundles are taken as bytes: a delta can be made between any two files, but kbc's commands are
    for bundles, and applying one rebuilds exactly `new_path`'s bytes whatever they are."""
    from ..exporters import atomic
    from ..stages.sources import check_output_path

    old, new = _read_bundle(old_path, "old"), _read_bundle(new_path, "new")
    check_output_path(Path(out_path), inputs=[Path(old_path), Path(new_path)])
    data = build_delta(old, new, level=level)
    # applied once before it is written, as a device will apply it: a delta that does not rebuild
    # `new` byte for byte (a compressor fault) is never published
    try:
        rebuilt = rebuild(old, data, delta_name=str(out_path), old_name=str(old_path))
    except BundleError as e:
        rebuilt, why = None, f" ({e.detail})"
    else:
        why = ""
    if rebuilt != new:
        raise BundleError(f"the delta made does not rebuild {new_path}{why}; nothing written", section="result",
                          path=str(out_path))
    with atomic(Path(out_path), "wb") as f:
        f.write(data)
    _fsync_dir(Path(out_path).parent)
    return parse_header(data[:HEADER_SIZE])


def delta_size(old_path, new_path, *, level: int = DEFAULT_LEVEL) -> int:
    """How many bytes `kbc delta OLD NEW` writes (for `kbc diff`), without writing it."""
    return len(build_delta(_read_bundle(old_path, "old"), _read_bundle(new_path, "new"), level=level))


def rebuild(old: bytes, delta: bytes, *, delta_name: str | None = None, old_name: str | None = None) -> bytes:
    """The new bundle's bytes from the old bundle's and the delta's, every check of the module docstring made;
    BundleError (exit 3) naming the part that failed: header, payload, base or result."""
    h = parse_header(delta, delta_name)
    payload = _check_payload(h, delta, delta_name)
    if len(old) != h.old_size:
        raise _wrong_base(h, old_name)
    new = old if h.payload_length == 0 else _decode(old, payload, h, delta_name)  # empty: identical bundles
    if hashlib.sha256(new).digest() != h.new_sha256:
        # A base of the right size but other bytes decodes to garbage that fails here; its own SHA-256, taken
        # only now (libkbpack's order, where hashing it up front would double a good apply's time), tells
        # that apart from a damaged delta.
        if hashlib.sha256(old).digest() != h.old_sha256:
            raise _wrong_base(h, old_name)
        raise BundleError("the rebuilt bundle fails the SHA-256 the delta names; nothing was written",
                          section="result", path=delta_name)
    return new


def _check_payload(h: DeltaHeader, delta: bytes, delta_name: str | None) -> bytes:
    """The payload, its length against the file and its SHA-256 checked."""
    held = len(delta) - HEADER_SIZE
    if held < h.payload_length:
        raise BundleError(f"truncated: the header declares {h.payload_length} payload bytes, the file holds {held}",
                          section="payload", path=delta_name)
    if held > h.payload_length:
        raise BundleError(f"{held - h.payload_length} bytes after the declared {h.payload_length}-byte payload",
                          section="payload", path=delta_name)
    payload = delta[HEADER_SIZE:]
    if hashlib.sha256(payload).digest() != h.payload_sha256:
        raise BundleError("checksum mismatch (damaged in transit?)", section="payload", path=delta_name)
    return payload


def _wrong_base(h: DeltaHeader, old_name: str | None) -> BundleError:
    return BundleError(f"not the bundle this delta updates (it updates {h.old_size} bytes with SHA-256 "
                       f"{h.old_sha256.hex()[:16]}...)", section="base", path=old_name)


def _decode(old: bytes, payload: bytes, h: DeltaHeader, delta_name: str | None) -> bytes:
    _check_frame(payload, h, delta_name)
    try:
        # A raw-content dictionary decodes exactly what a prefix encoded (neither has a dictionary id).
        # max_output_size is the declared size, itself capped: a frame that would grow past it fails.
        dictionary = zstandard.ZstdCompressionDict(old, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        dctx = zstandard.ZstdDecompressor(dict_data=dictionary, max_window_size=1 << MAX_WINDOW_LOG)
        new = dctx.decompress(payload, max_output_size=h.new_size, allow_extra_data=False)
    except zstandard.ZstdError as e:
        raise BundleError(f"does not decompress: {e}", section="payload", path=delta_name) from None
    if len(new) != h.new_size:
        raise BundleError(f"decompresses to {len(new)} bytes, the header declares {h.new_size}", section="payload",
                          path=delta_name)
    return new


def _check_frame(payload: bytes, h: DeltaHeader, delta_name: str | None) -> None:
    """One zstd frame whose header declares exactly the new size and no dictionary, before any decoding."""
    def bad(msg: str) -> BundleError:
        return BundleError(msg, section="payload", path=delta_name)

    try:
        params = zstandard.get_frame_parameters(payload)
    except zstandard.ZstdError as e:
        raise bad(f"not a zstd frame: {e}") from None
    if params.content_size != h.new_size:  # CONTENTSIZE_UNKNOWN included
        raise bad(f"the frame declares {params.content_size} bytes, the header {h.new_size}")
    if params.dict_id != 0:
        raise bad(f"the frame names dictionary {params.dict_id}; a delta's only dictionary is its base")


def read_delta(delta_path) -> bytes:
    """The delta file's bytes, refused before reading when its size cannot be a delta's."""
    path = Path(delta_path)
    if not path.is_file():
        raise InputError(f"{path}: delta not found" if not path.exists() else f"{path}: not a regular file")
    size = path.stat().st_size
    if size > MAX_DELTA_BYTES:
        raise BundleError(f"{size} bytes: larger than any delta of bundles within the limit", section="header",
                          path=str(path))
    return path.read_bytes()


def apply_delta(old_path, delta_path, out_path) -> DeltaHeader:
    """Rebuild the new bundle from `old_path` and `delta_path` into `out_path`. Everything is checked before
    anything is written; the result goes to a temporary file in `out_path`'s folder, fsynced, then renamed
    over `out_path` (which may be `old_path` itself: the old bundle is replaced only by a verified new one)."""
    from ..exporters import atomic
    from ..stages.sources import check_output_path

    delta = read_delta(delta_path)
    check_output_path(Path(out_path), inputs=[Path(delta_path)])
    _check_payload(parse_header(delta, str(delta_path)), delta, str(delta_path))  # before the base: libkbpack's order
    old = _read_bundle(old_path, "old")
    new = rebuild(old, delta, delta_name=str(delta_path), old_name=str(old_path))
    out = Path(out_path)
    with atomic(out, "wb") as f:
        f.write(new)
    _fsync_dir(out.parent)
    return parse_header(delta)
