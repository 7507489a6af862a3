"""Plain text: one page, cleaned. Its encoding is detected (UTF-8 first, then a byte-order mark,
then charset-normalizer's detection), or forced with --encoding."""

from __future__ import annotations

import codecs

from ..records import Extracted, Problem, SourceFile
from .textclean import clean_text, join_pages
from . import ReadOptions, register_reader

# Among detections that fit equally well (a short French text reads the same in cp1250 and cp1252
# to a detector), the encoding more documents are written in wins: a prior, not a guess.
_PREFERRED = ["cp1252", "latin_1", "iso8859_15", "utf_16", "cp1251", "koi8_r", "shift_jis", "euc_jp",
              "gb18030", "big5", "euc_kr", "cp1250", "iso8859_2"]


def _detect(data: bytes):
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data))
    if not matches:
        return None
    chaos = min(m.chaos for m in matches)
    close = [m for m in matches if m.chaos <= chaos + 0.01]
    coherence = max(m.coherence for m in close)
    close = [m for m in close if m.coherence >= coherence - 0.01]
    rank = {name: i for i, name in enumerate(_PREFERRED)}
    return min(close, key=lambda m: (rank.get(m.encoding, len(rank)), close.index(m)))


_BOMS = [(codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")]


SNIFF_BYTES = 8192  # what the source walk reads of a file whose name says nothing of its type
# C0 control characters that text uses: tab, line and page breaks, backspace (man pages' bold), escape
_TEXT_CONTROLS = frozenset(b"\t\n\r\f\v\b\x1b")


def utf16_without_bom(head: bytes) -> str | None:
    """"utf-16-le" or "utf-16-be" for text in UTF-16 without a byte-order mark whose characters are
    mostly below U+0100 (Latin scripts: every other byte a NUL, on one side of each pair), else None.
    Read as UTF-8 instead, big-endian text is valid, NULs and all ("G r e e n h o u s e"), and
    charset detection misses little-endian text: both happened (issue 43)."""
    pairs = len(head) // 2
    if pairs < 4:
        return None
    even, odd = head[0:2 * pairs:2].count(0), head[1:2 * pairs:2].count(0)
    for nuls, other, codec in ((even, odd, "utf-16-be"), (odd, even, "utf-16-le")):
        if nuls * 10 >= pairs * 7 and other * 20 <= pairs:  # 70% of pairs NUL on one side, under 5% on the other
            try:
                text = head[:2 * pairs].decode(codec)
            except UnicodeDecodeError as e:  # a surrogate pair cut at the end is still text
                if e.start < 2 * pairs - 4:
                    return None
                text = head[:e.start].decode(codec)
            controls = sum(1 for ch in text if ord(ch) < 0x20 and ch not in "\t\n\r\f\v\b\x1b")
            return codec if controls * 20 <= len(text) else None
    return None


def looks_like_text(head: bytes) -> bool:
    """Whether a file's first bytes (SNIFF_BYTES or fewer, cut anywhere) are text: decoded as a .txt
    file is (UTF-8, else a byte-order mark, else charset-normalizer's detection) and not mostly
    control characters. A file named `copyright` or `README.abs-guide` has no other evidence."""
    if any(head.startswith(bom) for bom, _ in _BOMS):
        return True
    if b"\x00" in head:  # only UTF-16/32 text holds NULs, and without a BOM detection must say so
        if utf16_without_bom(head):
            return True
        best = _detect(head)
        return best is not None and best.encoding.startswith(("utf_16", "utf_32"))
    if sum(1 for b in head if b < 0x20 and b not in _TEXT_CONTROLS) * 20 > len(head):
        return False
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as e:
        if e.reason == "unexpected end of data" and e.start >= len(head) - 3:  # a character cut by the sniff
            return True
    return _detect(head) is not None


# Kinds whose reader makes one document of the whole text: a document keeps at most
# MAX_DOCUMENT_CHARS (20,000,000) characters (kbc.readers.guarded), so no more than this many bytes
# of such a file are read or decompressed: two bytes a character kept, all of it for text in one-
# and two-byte encodings (Latin, Cyrillic, UTF-16), two thirds of it for UTF-8 CJK. The rest is
# reported, never silently dropped. Without this, 1,000 MiB of text took a worker past 3 GB.
CUT_KINDS = frozenset({"text", "markdown", "rst", "org", "asciidoc", "code"})
TEXT_BYTES_KEPT = 40_000_000
# and of the decoded text, what is cleaned: a quarter more than a document keeps, for what cleaning
# removes (runs of spaces, control characters)
CHARS_CLEANED = 25_000_000


def cut_at_character(data: bytes) -> bytes:
    """`data` cut at an arbitrary byte, without the last character's first bytes when it was cut
    through (UTF-8), or its odd bytes (text that starts with a UTF-16 or UTF-32 byte-order mark):
    the kept part decodes as the whole did."""
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return data[:len(data) - len(data) % 4]
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data[:len(data) - len(data) % 2]
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # not a continuation byte: the last character's first byte
            length = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4 if byte & 0xF8 == 0xF0 else 1
            return data[:-back] if length > back else data
    return data


def cut_reason(kept: int, size: int) -> str:
    return (f"only its first {kept / 1e6:,.0f} MB of {size / 2**20:,.0f} MiB of text read: a document keeps "
            "20,000,000 characters at most; split the file to keep the rest")


def decode_text(src: SourceFile, data: bytes, out: Extracted, opts: ReadOptions) -> str | None:
    """The file's text; None, with the reason recorded, when it is not text in any encoding."""
    if opts.encoding:
        try:
            return data.decode(opts.encoding)
        except LookupError:
            out.problems.append(Problem(src.rel, "skipped", f"--encoding {opts.encoding}: unknown encoding"))
        except UnicodeDecodeError as e:
            out.problems.append(Problem(src.rel, "skipped", f"not {opts.encoding} text (byte {e.start})"))
        return None
    if b"\x00" in data[:SNIFF_BYTES] and (codec := utf16_without_bom(data[:SNIFF_BYTES])):
        try:
            return data[:len(data) - len(data) % 2].decode(codec)  # an odd last byte is a cut, not text
        except UnicodeDecodeError:
            pass  # not UTF-16 after all: on to the other readings
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        first_bad = e.start
    for bom, name in _BOMS:  # UTF-32 LE starts like UTF-16 LE: longest first
        if data.startswith(bom):
            try:
                return data.decode(name)
            except UnicodeDecodeError:
                break
    best = _detect(data)
    if best is None or b"\x00" in data and not best.encoding.startswith("utf_16"):
        out.problems.append(Problem(src.rel, "skipped", f"not text: not UTF-8 (byte {first_bad}) and no other "
                                    "encoding fits; pass --encoding if it is text"))
        return None
    return str(best)


def read_plain(src: SourceFile, data: bytes, out: Extracted, opts: ReadOptions):
    """The document of a text file (None, with the problem recorded, when there is none)."""
    text = decode_text(src, data, out, opts)
    if text is None:
        return None
    out.page_count = 1
    if len(text) > CHARS_CLEANED:  # cleaned copies of what the document cannot keep cost memory for nothing
        text = text[:CHARS_CLEANED]
    text = clean_text(text) if opts.clean else text.strip()
    if not text:
        # 1,000 MiB of NULs is not an empty file: say what it holds
        empty = not data or data.isspace() or data.startswith(codecs.BOM_UTF8) and data[3:].isspace() or data in (
            codecs.BOM_UTF8, *(bom for bom, _ in _BOMS))
        out.problems.append(Problem(src.rel, "skipped", "file is empty" if empty else
                                    "no text in it: its characters are all NULs, control characters or spaces"))
        return None
    doc = join_pages(src.rel, [text], [None])
    out.documents.append(doc)
    return doc


@register_reader("text", suffixes=(".txt", ".text"), description="plain text, any encoding (detected or --encoding)")
def read_text(src: SourceFile, data: bytes, out: Extracted, opts: ReadOptions) -> None:
    read_plain(src, data, out, opts)
