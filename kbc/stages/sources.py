"""Find the input files: walk paths, filter by type and globs, name each by a stable relative path."""

from __future__ import annotations

import fnmatch
import os
import stat
from pathlib import Path
from typing import Sequence

from ..errors import InputError
from ..readers import compressed_kind, kind_for, opt_in_kind_for, supported_suffixes
from ..readers.compressed import CODECS, CompressedSource, NotCompressed, inflate, split_kind
from ..readers.text import SNIFF_BYTES, looks_like_text
from ..records import SourceFile
# Bigger files are skipped with a reason before a byte is read: the walk hashes every file for the
# cache in the build process, so a 1 TB sparse file must not be read at all.
DEFAULT_MAX_FILE_BYTES = 1 << 30


def _matching(rel: str, patterns: Sequence[str], *, fold: bool) -> str | None:
    """The first pattern that matches the relative path, its file name or any folder above it
    (`drafts` and `drafts/*` both match `drafts/a/b.md`); case-insensitively when `fold`."""
    if not patterns:  # the common case, once per file of the walk
        return None
    if fold:
        rel = rel.lower()
    parts = rel.split("/")
    candidates = [rel, parts[-1], *("/".join(parts[:i]) for i in range(1, len(parts))), *parts[:-1]]
    for p in patterns:
        q = p.lower().rstrip("/") if fold else p.rstrip("/")
        if any(fnmatch.fnmatchcase(c, q) for c in candidates):
            return p
    return None


def case_insensitive(folder: Path) -> bool:
    """Whether the file system holding `folder` ignores case (macOS and Windows by default): the
    same folder reached with its letters' case swapped."""
    name = str(folder.resolve())
    swapped = name.swapcase()
    if swapped == name:
        return os.name == "nt" or os.uname().sysname == "Darwin"
    try:
        return os.path.samefile(name, swapped)
    except OSError:
        return False


def display_name(rel: str) -> str:
    """A relative path as stored and printed: file-name bytes that are not UTF-8 (which Python
    holds as surrogate escapes) become `\\xNN`, so the name encodes and stays unique."""
    try:
        rel.encode("utf-8")
        return rel
    except UnicodeEncodeError:
        return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _why_not_regular(p: Path, root: Path | None, follow_symlinks: bool,
                     max_bytes: int | None = None) -> str | None:
    """None for a regular file we may read; else why it is skipped. A docs tree is untrusted:
    FIFOs and devices would hang or never end, links may point anywhere."""
    try:
        st = p.lstat()
    except OSError as e:
        return f"cannot stat: {e.strerror}"
    if stat.S_ISLNK(st.st_mode):
        try:
            target = p.resolve(strict=True)
        except (OSError, RuntimeError):  # dangling, or a loop
            return "broken or looping symbolic link"
        if root is not None and not follow_symlinks and not target.is_relative_to(root):
            return "symbolic link to a file outside the input folder (use --follow-symlinks to include it)"
        try:
            st = target.stat()
        except OSError as e:
            return f"cannot stat link target: {e.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (FIFO, device or socket)"
    if max_bytes is not None and st.st_size > max_bytes:
        return (f"{st.st_size / 2**20:,.0f} MiB is over the {max_bytes / 2**20:,.0f} MiB limit per file "
                "(--max-file-mb)")
    return None


def discover(paths: Sequence[str | os.PathLike], *, include: Sequence[str] = (),
             exclude: Sequence[str] = (), follow_symlinks: bool = False,
             max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
             skipped: list[tuple[str, str]] | None = None,
             ignored: list[tuple[str, str]] | None = None, opted_in: Sequence[str] = ()) -> list[SourceFile]:
    """Files to build from, sorted by relative path. `opted_in`: opt-in reader kinds to use too
    (`("code",)` for --code).

    With one directory argument, paths are relative to it; with several arguments, each
    directory's files are prefixed by the directory's name so that names stay unique.

    Nothing under the inputs is left out without a word. `ignored` gets (name, reason) for what
    is not built by choice: hidden files and folders, files of a type no reader takes, files and
    folders excluded by a pattern. `skipped` gets (name, reason) for what cannot be read safely:
    links that leave their input folder (unless `follow_symlinks`), broken or looping links,
    FIFOs, devices, files over `max_file_bytes`, linked folders.

    Patterns match the relative path, the file name, or any folder above the file; they ignore
    case where the file system does.
    """
    if not paths:
        raise InputError("no input paths given")
    skipped = skipped if skipped is not None else []
    ignored = ignored if ignored is not None else []
    found: dict[str, SourceFile] = {}
    for arg in paths:
        root = Path(arg)
        if not root.exists():
            raise InputError(f"{arg}: no such file or directory")
        if not root.is_dir():
            why = _why_not_regular(root, None, True, max_file_bytes)
            if why:
                raise InputError(f"{arg}: {why}")
            kind, why_not, why = _kind_of(root, opted_in, max_file_bytes)
            if why:
                raise InputError(f"{arg}: {why}")
            if why_not:
                raise InputError(f"{arg}: {why_not}; supported: {', '.join(supported_suffixes(opted_in=opted_in))}"
                                 f"{_ALSO_READ}")
            rel = display_name(root.name)
            fold = case_insensitive(root.parent)
            if (pattern := _matching(rel, exclude, fold=fold)) is not None:
                ignored.append((rel, f"excluded by --exclude {pattern}"))
            elif include and _matching(rel, include, fold=fold) is None:
                ignored.append((rel, "not matched by any --include"))
            else:
                _add(found, root, rel, kind, max_file_bytes)
            continue
        prefix = "" if len(paths) == 1 else (root.resolve().name + "/")
        real_root = root.resolve()
        fold = case_insensitive(root)
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            here = Path(dirpath)
            keep = []
            for d in sorted(dirnames):
                rel = display_name(prefix + (here / d).relative_to(root).as_posix())
                if d.startswith("."):
                    ignored.append((rel + "/", "hidden folder (name starts with '.')"))
                elif (pattern := _matching(rel, exclude, fold=fold)) is not None:
                    ignored.append((rel + "/", f"excluded by --exclude {pattern}"))
                elif (here / d).is_symlink():
                    skipped.append((rel, "symbolic link to a folder: not followed"))
                else:
                    keep.append(d)
            dirnames[:] = keep
            for fname in sorted(filenames):
                p = here / fname
                rel = display_name(prefix + p.relative_to(root).as_posix())
                kind = kind_for(p.suffix, opted_in=opted_in)
                if fname.startswith("."):
                    why_not = "hidden file (name starts with '.')"
                elif (pattern := _matching(rel, exclude, fold=fold)) is not None:
                    why_not = f"excluded by --exclude {pattern}"
                elif include and _matching(rel, include, fold=fold) is None:
                    why_not = "not matched by any --include"
                elif kind is None:
                    why_not = _unsupported_by_name(p.suffix)
                else:
                    why_not = None
                if why_not:
                    ignored.append((rel, why_not))
                    continue
                why = _why_not_regular(p, real_root, follow_symlinks, max_file_bytes)
                if why:
                    skipped.append((rel, why))
                    continue
                if kind is None:  # the name says nothing a reader takes: the bytes may
                    kind, why_not, why = _kind_of(p, opted_in, max_file_bytes)
                    if why_not:
                        ignored.append((rel, why_not))
                        continue
                    if why:
                        skipped.append((rel, why))
                        continue
                _add(found, p, rel, kind, max_file_bytes)
    if not found:
        where = ", ".join(str(p) for p in paths)
        reasons = _summarise(ignored + skipped)
        raise InputError(f"{where}: nothing to build: no supported files "
                         f"({', '.join(supported_suffixes(opted_in=opted_in))}{_ALSO_READ})"
                         + (f"; left out: {reasons}" if reasons else ""))
    return [found[k] for k in sorted(found)]


_ALSO_READ = ", their .gz/.bz2/.xz, and any other file whose bytes are text"

# Types known by their name that are not text, or are text no reader makes sense of (markup and
# data: an SVG's path coordinates are not a document's words): never sniffed, always listed.
NOT_READ = frozenset("""
    .png .jpg .jpeg .gif .bmp .tif .tiff .webp .ico .icns .heic .psd .ai .eps .ps .svg .svgz
    .mp3 .wav .ogg .oga .flac .m4a .aac .opus .mid .midi .mp4 .m4v .mov .avi .mkv .webm .wmv .flv
    .zip .tar .tgz .tbz2 .txz .7z .rar .zst .lz4 .lzma .z .cab .jar .war .whl .egg .deb .rpm .apk .dmg .iso .img
    .exe .dll .so .dylib .o .a .lib .obj .class .pyc .pyo .wasm .bin .dat .pak
    .doc .dot .xls .xlsx .xlsm .ppt .pptx .odt .ods .odp .odg .rtf .pages .numbers .key .one .msg .eml .mbox
    .ttf .otf .woff .woff2 .eot .pfb .pfm
    .db .sqlite .sqlite3 .mdb .npy .npz .pkl .pickle .parquet .arrow .feather .h5 .hdf5 .onnx .pt .pth
    .safetensors .gguf .kbpack .json .xml .map .lock .pem .der .crt .p12 .gpg .sig
""".split())


def _unsupported_by_name(suffix: str) -> str | None:
    """Why a file is left out for its name alone; None when its bytes should decide (no reader's
    suffix, but no known other type either: `copyright`, `README.abs-guide`, `notes.gz`)."""
    suffix = suffix.lower()
    kind = opt_in_kind_for(suffix)
    if kind is not None:  # a reader exists, the build did not ask for it
        return f"{kind} file {suffix}: read only with --{kind}"
    if suffix in NOT_READ:
        return f"unsupported file type {suffix}"
    return None


def _kind_of(p: Path, opted_in: Sequence[str], max_bytes: int | None) -> tuple[str | None, str | None, str | None]:
    """(kind, why it is ignored, why it is skipped) for a regular file: its reader by suffix, or
    the bytes' say: a compressed file by the name inside it (or its bytes), any other as text
    when its first bytes are text."""
    suffix = p.suffix.lower()
    kind = kind_for(suffix, opted_in=opted_in)
    if kind is not None:
        return kind, None, None
    if (why_not := _unsupported_by_name(suffix)) is not None:
        return None, why_not, None
    codec = CODECS.get(suffix)
    if codec is None:
        try:
            with open(p, "rb") as f:
                head = f.read(SNIFF_BYTES)
        except OSError as e:
            return None, None, f"cannot read: {e.strerror}"
        named = suffix or "(no extension)"
        if not head:
            return None, f"empty file of no known type {named}", None
        if not looks_like_text(head):
            return None, f"unsupported file type {named}: its bytes are not text", None
        return "text", None, None
    inner = Path(p.name[:-len(p.suffix)]).suffix.lower()  # notes.md.gz -> .md; changelog.gz -> ""
    named = f"{inner}{suffix}" if inner else f"{suffix} (no extension inside)"
    kind = kind_for(inner, opted_in=opted_in)
    if kind is None and (why_not := _unsupported_by_name(inner)) is not None:
        return None, why_not.replace(inner, inner + suffix, 1), None
    head, complete = bytearray(), False
    try:  # only the first bytes: the decompressed size is measured, and bounded, by the extraction worker
        with open(p, "rb") as f:
            blocks = _first_blocks(f, SNIFF_INPUT_BYTES)
            for block in inflate(blocks, codec, DEFAULT_MAX_FILE_BYTES, step=SNIFF_BYTES):
                head += block
                if len(head) >= SNIFF_BYTES:
                    break
            else:
                complete = True
    except _SniffBudgetSpent:
        pass
    except NotCompressed as e:
        return None, None, f"not a valid {codec} file: {e}"[:200]
    except OSError as e:
        return None, None, f"cannot read: {e.strerror}"
    if kind is None and not head and not complete:
        return None, f"no decompressed bytes in its first {SNIFF_INPUT_BYTES >> 20} MiB, of no known type {named}", None
    if kind is None:
        if not head:
            return None, f"empty once decompressed, of no known type {named}", None
        if not looks_like_text(bytes(head)):
            return None, f"unsupported file type {named}: its bytes are not text once decompressed", None
        kind = "text"
    return compressed_kind(kind, suffix), None, None


# What the walk reads of a compressed file to decide its kind: its first decompressed bytes, from
# at most this much of its input (a file of empty members could otherwise be read whole).
SNIFF_INPUT_BYTES = 1 << 20


class _SniffBudgetSpent(Exception):
    """The walk read SNIFF_INPUT_BYTES of a compressed file without deciding its kind."""


def _first_blocks(f, budget: int, size: int = 64 << 10):
    while budget > 0:
        block = f.read(min(size, budget))
        if not block:
            return
        budget -= len(block)
        yield block
    if f.read(1):  # more input follows: the sniff stops here, neither the end nor a truncation
        raise _SniffBudgetSpent


def _add(found: dict[str, SourceFile], path: Path, rel: str, kind: str, max_bytes: int | None = None) -> None:
    if rel in found and found[rel].path.resolve() != path.resolve():
        raise InputError(f"{path}: two inputs share the name {rel!r}; pass their common parent instead")
    if split_kind(kind) is not None:  # compressed: the extraction worker bounds the decompressed size again
        found[rel] = CompressedSource(path, rel, kind, max_bytes or DEFAULT_MAX_FILE_BYTES)
    else:
        found[rel] = SourceFile(path, rel, kind)


def _summarise(entries: Sequence[tuple[str, str]], *, limit: int = 4) -> str:
    """'3 unsupported file type .png, 1 hidden file ...': reasons by count, most common first."""
    from collections import Counter

    counts = Counter(reason for _, reason in entries)
    parts = [f"{n} {reason}" for reason, n in counts.most_common(limit)]
    if len(counts) > limit:
        parts.append(f"{sum(counts.values()) - sum(n for _, n in counts.most_common(limit))} more")
    return ", ".join(parts)


def check_output_path(output: Path, *, inputs: Sequence[Path] = ()) -> None:
    """Refuse an output that would destroy something: one of the inputs, or an existing link,
    FIFO or device (the bundle is renamed into place, which would replace the special file)."""
    try:
        st = output.lstat()
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise InputError(f"{output}: cannot use as output ({e.strerror})") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise InputError(f"{output}: exists and is not a regular file (a link, FIFO or device); "
                         "refusing to replace it")
    target = output.resolve()
    for p in inputs:
        try:
            same = p.resolve() == target
        except OSError:
            same = False
        if same:
            raise InputError(f"{output}: is one of the inputs; refusing to overwrite it")


def read_text_file(path: Path) -> str:
    """A user-named UTF-8 file (queries, qrels, vectors); every failure is a one-line InputError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 (byte {e.start})") from None
