"""Forging bundles as an attacker would: edit any bytes, then recompute every checksum."""

from __future__ import annotations

from kbc import bundle as B


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
