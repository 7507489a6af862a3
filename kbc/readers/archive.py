"""Zip-based documents (DOCX, EPUB) as untrusted archives: the bounds a file must keep before its
parts reach python-docx or EbookLib, and the copy of the archive those libraries read.

Both libraries decompress every part with `zipfile.ZipFile.read`, which inflates an entry in one
call whatever it expands to, and trust the sizes the archive's directory declares. So a few-MB
file could make a worker allocate gigabytes (a zip bomb), and a directory of millions of entries
could exhaust memory before the first part is read. `open_archive` checks, in this order and
before anything is decompressed:

- the central directory's size (`MAX_DIRECTORY_BYTES`) and its entry count (`MAX_ENTRIES`);
- each entry's declared size (`MAX_PART_BYTES`), their sum (`MAX_ARCHIVE_BYTES`, or the build's
  per-file limit when that is smaller: decompressed bytes count against `--max-file-mb`), and each
  entry's compression ratio (`MAX_RATIO`, for entries over `RATIO_FLOOR_BYTES`);
- no encrypted and no duplicate entries (two parts of one name: readers disagree on which is read),
  and only the compression methods the formats allow (stored, deflate).

Then it inflates each entry in small steps with a counting cap, so a directory that lies about a
size is caught by the bytes themselves, and hands back a copy of the archive with every entry
stored uncompressed: the libraries read exactly the bytes counted here, never the original
streams. Media (images, fonts, embedded binaries) is kept as empty entries: no reader needs its
bytes, so a book's photographs neither count against the limits nor cost memory.

The markup inside is checked too: `declares_dtd` and `declares_entities` find a document type
declaration or entity declarations, in any encoding the XML parsers accept, so that entity
expansion ("billion laughs") and external entities (a `file://` or relative path that names a
local file) are refused as a skipped file before any parser sees them. The parsers are set up
not to expand entities either (python-docx and EbookLib pass `resolve_entities=False` to lxml);
this check is the second guard, and names the reason.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from dataclasses import dataclass

MAX_ENTRIES = 10_000  # a long EPUB with every image its own entry has a few thousand
MAX_DIRECTORY_BYTES = 4 << 20  # the central directory zipfile parses into objects before anything else
MAX_PART_BYTES = 128 << 20  # one decompressed part (a DOCX's document.xml, an EPUB chapter)
MAX_ARCHIVE_BYTES = 256 << 20  # all decompressed parts a reader reads, media excluded
MAX_RATIO = 100  # decompressed / compressed size of one entry; real XML deflates 5-20x, zeros ~1000x
RATIO_FLOOR_BYTES = 1 << 20  # smaller entries may be as compressible as they like
_STEP = 1 << 16  # bytes inflated per read: zipfile's read() without a size inflates a whole entry at once

# entries whose bytes no text reader looks at: kept, empty, so the package's references still resolve
MEDIA_SUFFIXES = frozenset((
    ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ico", ".emf", ".wmf", ".svg", ".svgz",
    ".ttf", ".otf", ".woff", ".woff2", ".odttf", ".fntdata", ".bin", ".mp3", ".mp4", ".m4a", ".m4v", ".wav",
    ".ogg", ".oga", ".webm", ".mov", ".avi", ".mpg", ".mpeg", ".pdf", ".zip", ".xlsx", ".xlsm", ".xls",
    ".pptx", ".ppt", ".docx", ".doc", ".odt", ".ods", ".odp", ".wdp", ".jxr", ".heic", ".avif",
))


class ArchiveRefused(Exception):
    """The archive breaks one of the bounds; the message is the skipped file's reason."""


@dataclass(frozen=True)
class ArchiveLimits:
    entries: int = MAX_ENTRIES
    directory_bytes: int = MAX_DIRECTORY_BYTES
    part_bytes: int = MAX_PART_BYTES
    total_bytes: int = MAX_ARCHIVE_BYTES
    ratio: int = MAX_RATIO
    ratio_floor: int = RATIO_FLOOR_BYTES


def limits_for(opts) -> ArchiveLimits:
    """The bounds for one build: the per-file limit (`--max-file-mb`, when the build passes it to
    readers as `max_file_bytes`) also bounds what a file may decompress to."""
    cap = getattr(opts, "max_file_bytes", None)
    if isinstance(cap, int) and not isinstance(cap, bool) and 0 < cap < MAX_ARCHIVE_BYTES:
        return ArchiveLimits(part_bytes=min(MAX_PART_BYTES, cap), total_bytes=cap)
    return ArchiveLimits()


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if n < 10 * 2**20 else f"{n / 2**20:,.0f} MiB"


def _is_media(name: str) -> bool:
    dot = name.rfind(".")
    return dot > name.rfind("/") and name[dot:].lower() in MEDIA_SUFFIXES


def _directory_size(data: bytes) -> int | None:
    """The central directory's size as zipfile will read it (None when there is no end record:
    then ZipFile itself refuses the bytes). zipfile parses the directory by this size, whatever
    entry count the end record states, so the size is what bounds its work."""
    try:
        end = zipfile._EndRecData(io.BytesIO(data))  # the same record ZipFile reads, zip64 included
    except (OSError, ValueError, AttributeError, zipfile.BadZipFile):
        return None
    return int(end[zipfile._ECD_SIZE]) if end else None


def _check_directory(infos: list[zipfile.ZipInfo], limits: ArchiveLimits) -> None:
    if len(infos) > limits.entries:
        raise ArchiveRefused(f"{len(infos):,} entries in the archive (limit {limits.entries:,})")
    seen: set[str] = set()
    total = 0
    for info in infos:
        if info.filename in seen:
            raise ArchiveRefused(f"two entries named {info.filename!r}")
        seen.add(info.filename)
        if info.flag_bits & 0x1:
            raise ArchiveRefused(f"entry {info.filename!r} is encrypted")
        if info.is_dir() or _is_media(info.filename):
            continue
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            # OPC (DOCX) and OCF (EPUB) allow only these; zipfile inflates bzip2 and LZMA input
            # without an output bound, so one step could expand without limit
            raise ArchiveRefused(f"entry {info.filename!r} uses compression method {info.compress_type} "
                                 f"(DOCX and EPUB allow only stored and deflate)")
        _check_size(info, info.file_size, limits)
        total += info.file_size
        if total > limits.total_bytes:
            raise ArchiveRefused(f"its parts would expand to more than {_mib(limits.total_bytes)} "
                                 f"(the limit for one file's decompressed text)")


def _check_size(info: zipfile.ZipInfo, size: int, limits: ArchiveLimits) -> None:
    if size > limits.part_bytes:
        raise ArchiveRefused(f"entry {info.filename!r} expands to more than {_mib(limits.part_bytes)} "
                             f"(declared {_mib(info.file_size)}, {_mib(info.compress_size)} compressed)")
    if size > limits.ratio_floor and size > limits.ratio * max(info.compress_size, 1):
        raise ArchiveRefused(f"entry {info.filename!r} expands {size / max(info.compress_size, 1):,.0f} times "
                             f"(limit {limits.ratio}x): a zip bomb")


def _inflate(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limits: ArchiveLimits, budget: int) -> bytes:
    """The entry's bytes, inflated a step at a time and refused as soon as they pass a bound
    (`budget`: what the archive's earlier parts left of the total)."""
    parts: list[bytes] = []
    got = 0
    with zf.open(info) as f:
        while step := f.read(_STEP):
            got += len(step)
            _check_size(info, got, limits)
            if got > budget:
                raise ArchiveRefused(f"its parts expand to more than {_mib(limits.total_bytes)} "
                                     f"(the limit for one file's decompressed text)")
            parts.append(step)
    return b"".join(parts)


def open_archive(data: bytes, limits: ArchiveLimits = ArchiveLimits()) -> tuple[io.BytesIO, dict[str, bytes]]:
    """A bounded copy of the zip archive in `data` (every entry stored, media emptied) for a
    library to open, and the parts read, by name. ArchiveRefused when a bound is broken;
    zipfile.BadZipFile (and the other errors zipfile raises for damaged bytes) when it is no zip."""
    size = _directory_size(data)
    if size is not None and size > limits.directory_bytes:
        raise ArchiveRefused(f"its directory is {_mib(size)} (limit {_mib(limits.directory_bytes)}; "
                             f"at most {limits.entries:,} entries)")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        _check_directory(infos, limits)
        parts: dict[str, bytes] = {}
        copy = io.BytesIO()
        budget = limits.total_bytes
        with zipfile.ZipFile(copy, "w", zipfile.ZIP_STORED) as out:
            for info in infos:
                if info.is_dir():
                    out.writestr(_stored(info), b"")
                    continue
                if _is_media(info.filename):
                    out.writestr(_stored(info), b"")
                    continue
                body = _inflate(zf, info, limits, budget)
                budget -= len(body)
                parts[info.filename] = body
                out.writestr(_stored(info), body)
    copy.seek(0)
    return copy, parts


def _stored(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    copy = zipfile.ZipInfo(info.filename, date_time=info.date_time if info.date_time[0] >= 1980 else (1980, 1, 1, 0, 0, 0))
    copy.compress_type = zipfile.ZIP_STORED
    copy.external_attr = info.external_attr
    return copy


# --------------------------------------------------------------------------- markup declarations

def _spellings(marker: str) -> tuple[bytes, ...]:
    # the encodings an XML parser detects from the first bytes: UTF-8 and its supersets, UTF-16, UTF-32
    return tuple(marker.encode(e) for e in ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"))


_DOCTYPE = _spellings("<!DOCTYPE")
_ENTITY = _spellings("<!ENTITY")


def declares_dtd(body: bytes) -> bool:
    """A document type declaration anywhere in the part (XML is case-sensitive: only `<!DOCTYPE`)."""
    return any(s in body for s in _DOCTYPE)


def declares_entities(body: bytes) -> bool:
    """An entity declaration: what billion-laughs expansion and external entities both need."""
    return any(s in body for s in _ENTITY)


_HTML_SUBSET = re.compile(rb"<!doctype[^>\[]*\[", re.IGNORECASE)


def html_declares_entities(data: bytes) -> bool:
    """An HTML or XHTML file whose document type declaration has an internal subset declaring
    entities (`<!DOCTYPE html [<!ENTITY ...>]>`): no web page needs one; hostile XHTML does."""
    if any(s in data for s in _ENTITY[1:]):
        return True  # UTF-16/32: rare for a page, and the pattern below reads bytes as ASCII
    for m in _HTML_SUBSET.finditer(data):
        end = data.find(b"]>", m.end())
        if b"<!ENTITY" in data[m.end(): end if end >= 0 else len(data)]:
            return True
    return False


def archive_errors() -> tuple[type[BaseException], ...]:
    """What zipfile raises for bytes that are not a readable zip (damaged, truncated, odd methods)."""
    return (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError, ValueError,
            KeyError, OverflowError)


def open_or_skip(src, data: bytes, out, opts, *, kind: str, refuse) -> io.BytesIO | None:
    """The bounded copy of `src`'s archive that the kind's library may open (DOCX for python-docx,
    EPUB for EbookLib), or None with the skip reason recorded in `out`. `refuse(parts)` gives why
    a part may not be read (a DTD in an Office part, entities in an EPUB), or None."""
    from ..records import Problem
    from .textclean import one_line

    try:
        package, parts = open_archive(data, limits_for(opts))
    except ArchiveRefused as e:
        out.problems.append(Problem(src.rel, "skipped", f"refused {kind}: {e}"))
        return None
    except archive_errors() as e:  # not a zip, truncated, damaged streams
        out.problems.append(Problem(src.rel, "skipped", f"unreadable {kind}: {one_line(e)}"))
        return None
    why = refuse(parts)
    if why is not None:
        out.problems.append(Problem(src.rel, "skipped", f"refused {kind}: {why}"))
        return None
    return package

