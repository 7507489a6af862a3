"""Find the input files: walk paths, filter by type and globs, name each by a stable relative path."""

from __future__ import annotations

import fnmatch
import os
import stat
from pathlib import Path
from typing import Sequence

from .errors import InputError
from .readers import kind_for, supported_suffixes
from .records import SourceFile
# Bigger files are skipped with a reason before a byte is read: the walk hashes every file for the
# cache in the build process, so a 1 TB sparse file must not be read at all.
DEFAULT_MAX_FILE_BYTES = 1 << 30


def _matches(rel: str, patterns: Sequence[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


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
             skipped: list[tuple[str, str]] | None = None) -> list[SourceFile]:
    """Files to build from, sorted by relative path. Hidden files and folders are skipped.

    With one directory argument, paths are relative to it; with several arguments, each
    directory's files are prefixed by the directory's name so that names stay unique. Only
    regular files are read; links that leave their input folder (unless `follow_symlinks`),
    broken links, FIFOs, devices, files over `max_file_bytes` and linked directories are listed in `skipped` as (name, reason).
    """
    if not paths:
        raise InputError("no input paths given")
    skipped = skipped if skipped is not None else []
    found: dict[str, SourceFile] = {}
    for arg in paths:
        root = Path(arg)
        if not root.exists():
            raise InputError(f"{arg}: no such file or directory")
        if not root.is_dir():
            why = _why_not_regular(root, None, True, max_file_bytes)
            if why:
                raise InputError(f"{arg}: {why}")
            if kind_for(root.suffix) is None:
                raise InputError(f"{arg}: unsupported file type {root.suffix or '(none)'}; "
                                 f"supported: {', '.join(supported_suffixes())}")
            candidates = [(root, display_name(root.name))]
        else:
            prefix = "" if len(paths) == 1 else (root.resolve().name + "/")
            real_root = root.resolve()
            candidates = []
            for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
                for d in sorted(dirnames):
                    if not d.startswith(".") and (Path(dirpath) / d).is_symlink():
                        rel = display_name(prefix + (Path(dirpath) / d).relative_to(root).as_posix())
                        skipped.append((rel, "symbolic link to a folder: not followed"))
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for fname in sorted(filenames):
                    if fname.startswith("."):
                        continue
                    p = Path(dirpath) / fname
                    rel = display_name(prefix + p.relative_to(root).as_posix())
                    if kind_for(p.suffix) is None:
                        continue
                    why = _why_not_regular(p, real_root, follow_symlinks, max_file_bytes)
                    if why:
                        skipped.append((rel, why))
                        continue
                    candidates.append((p, rel))
        for p, rel in candidates:
            kind = kind_for(p.suffix)
            if kind is None or (include and not _matches(rel, include)) or _matches(rel, exclude):
                continue
            if rel in found and found[rel].path.resolve() != p.resolve():
                raise InputError(f"{p}: two inputs share the name {rel!r}; pass their common parent instead")
            found[rel] = SourceFile(p, rel, kind)
    if not found:
        where = ", ".join(str(p) for p in paths)
        raise InputError(f"{where}: no supported files ({', '.join(supported_suffixes())})"
                         + (" match the include/exclude patterns" if include or exclude else ""))
    return [found[k] for k in sorted(found)]


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
