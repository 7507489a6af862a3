"""Text without a name or a byte-order mark (issue 43, item 6): extensionless UTF-16 text without a
BOM was indexed as "G r e e n h o u s e" when big-endian (its bytes are valid UTF-8, NULs and all)
and ignored when little-endian (charset detection missed it). Both now read as the text they are."""

from __future__ import annotations

import pytest

from kbc.readers.guarded import extract_file
from kbc.stages.sources import discover

TEXT = "Greenhouse notes: water the tomatoes at dawn, and vent the roof at noon.\n" * 40


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_extensionless_utf16_without_a_bom_is_read_as_its_text(tmp_path, codec):
    (tmp_path / "GREENHOUSE").write_bytes(TEXT.encode(codec))  # no BOM: .encode("utf-16-le/be") writes none
    ignored: list = []
    [src] = discover([tmp_path], ignored=ignored)
    assert (src.kind, ignored) == ("text", [])
    ex = extract_file(src)
    assert ex.problems == [] and ex.documents[0].text.startswith("Greenhouse notes: water the tomatoes at dawn")


def test_an_odd_last_byte_and_a_named_txt_file_read_the_same(tmp_path):
    (tmp_path / "notes.txt").write_bytes(TEXT.encode("utf-16-be") + b"\x00")
    [src] = discover([tmp_path])
    assert extract_file(src).documents[0].text.startswith("Greenhouse notes:")


def test_nuls_and_binary_are_still_not_utf16_text(tmp_path):
    (tmp_path / "zeros").write_bytes(bytes(8192))
    (tmp_path / "blob").write_bytes(bytes(range(256)) * 32)
    (tmp_path / "ok.md").write_text("# ok\n")
    ignored: list = []
    found = discover([tmp_path], ignored=ignored)
    assert [s.rel for s in found] == ["ok.md"]
    assert dict(ignored) == {"zeros": "unsupported file type (no extension): its bytes are not text",
                             "blob": "unsupported file type (no extension): its bytes are not text"}
