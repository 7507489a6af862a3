"""Forging bundles as an attacker would: edit any bytes, then recompute every checksum."""

from __future__ import annotations

from kbc.format import bundle as B


def resign(data: bytes) -> bytes:
    """Recompute every checksum of a bundle, as an attacker who edits one would."""
    import hashlib

    (magic, major, minor, count, table_offset, length, _, _, _) = B._HEADER.unpack(data[:128])
    data = bytearray(data)
    for i in range(count):
        at = table_offset + i * B.ENTRY_SIZE
        name, enc, offset, size, _, reserved = B._ENTRY.unpack(bytes(data[at:at + B.ENTRY_SIZE]))
        digest = hashlib.sha256(bytes(data[offset:offset + size])).digest()
        data[at:at + B.ENTRY_SIZE] = B._ENTRY.pack(name, enc, offset, size, digest, reserved)
    table = bytes(data[table_offset:table_offset + count * B.ENTRY_SIZE])
    head = B._HEADER.pack(magic, major, minor, count, table_offset, length, hashlib.sha256(table).digest(),
                          hashlib.sha256(bytes(data[128:])).digest(), b"\x00" * 32)
    data[:128] = head[:96] + hashlib.sha256(head[:96]).digest()
    return bytes(data)


def sections(data: bytes) -> dict[str, tuple[str, bytes]]:
    """{name: (encoding, bytes)} of a bundle, in file order."""
    (_, _, _, count, table_offset, _, _, _, _) = B._HEADER.unpack(data[:128])
    out = {}
    for i in range(count):
        at = table_offset + i * B.ENTRY_SIZE
        name, enc, offset, size, _, _ = B._ENTRY.unpack(data[at:at + B.ENTRY_SIZE])
        out[name.rstrip(b"\0").decode()] = (enc.rstrip(b"\0").decode(), data[offset:offset + size])
    return out


def rebuild(data: bytes, replace: dict[str, bytes] | None = None, *, encodings: dict[str, str] | None = None,
            drop: tuple[str, ...] = (), add: dict[str, tuple[str, bytes]] | None = None) -> bytes:
    """The bundle laid out again with some sections' bytes (or encodings) replaced or dropped, others
    added at the end (`add`: name -> (encoding, bytes)), and every checksum recomputed: what an
    attacker who edits a bundle with the format spec in hand makes."""
    (magic, major, minor, _, _, _, _, _, _) = B._HEADER.unpack(data[:128])
    body, entries = bytearray(), []
    for name, (enc, raw) in [*sections(data).items(), *(add or {}).items()]:
        if name in drop:
            continue
        raw = (replace or {}).get(name, raw)
        enc = (encodings or {}).get(name, enc)
        body += b"\0" * (-(128 + len(body)) % B.ALIGN)
        entries.append(B._ENTRY.pack(name.encode().ljust(32, b"\0"), enc.encode().ljust(16, b"\0"),
                                     128 + len(body), len(raw), b"\0" * 32, b"\0" * 32))
        body += raw
    body += b"\0" * (-(128 + len(body)) % B.ALIGN)
    table_offset = 128 + len(body)
    body += b"".join(entries)
    head = B._HEADER.pack(magic, major, minor, len(entries), table_offset, 128 + len(body),
                          b"\0" * 32, b"\0" * 32, b"\0" * 32)
    return resign(head + bytes(body))


def manifest_of(data: bytes) -> dict:
    import json

    return json.loads(sections(data)["manifest"][1])


def with_json_section(data: bytes, name: str, edit) -> bytes:
    """The bundle with JSON section `name` (the manifest, probes, ...) passed through `edit`, re-signed."""
    import json

    meta = json.loads(sections(data)[name][1])
    edit(meta)
    return rebuild(data, {name: json.dumps(meta).encode()})


def with_manifest(data: bytes, edit) -> bytes:
    return with_json_section(data, "manifest", edit)


def set_path(path: str, value):
    """An edit that sets `a.b.0.c` (list items by number) to `value`."""
    def edit(obj):
        *parents, last = path.split(".")
        for p in parents:
            obj = obj[int(p)] if isinstance(obj, list) else obj[p]
        if isinstance(obj, list):
            obj[int(last)] = value
        else:
            obj[last] = value
    return edit

