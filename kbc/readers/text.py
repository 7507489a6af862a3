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


def looks_like_text(head: bytes) -> bool:
    """Whether a file's first bytes (SNIFF_BYTES or fewer, cut anywhere) are text: decoded as a .txt
    file is (UTF-8, else a byte-order mark, else charset-normalizer's detection) and not mostly
    control characters. A file named `copyright` or `README.abs-guide` has no other evidence."""
    if any(head.startswith(bom) for bom, _ in _BOMS):
        return True
    if b"\x00" in head:  # only UTF-16/32 text holds NULs, and without a BOM detection must say so
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
    text = clean_text(text) if opts.clean else text.strip()
    if not text:
        out.problems.append(Problem(src.rel, "skipped", "file is empty"))
        return None
    doc = join_pages(src.rel, [text], [None])
    out.documents.append(doc)
    return doc


@register_reader("text", suffixes=(".txt", ".text"), description="plain text, any encoding (detected or --encoding)")
def read_text(src: SourceFile, data: bytes, out: Extracted, opts: ReadOptions) -> None:
    read_plain(src, data, out, opts)
