"""Find the input files: walk paths, filter by type and globs, name each by a stable relative path."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import InputError

KINDS = {".pdf": "pdf", ".md": "markdown", ".markdown": "markdown", ".txt": "text", ".jsonl": "records"}


@dataclass(frozen=True)
class SourceFile:
    path: Path
    rel: str  # POSIX path stored in the bundle
    kind: str


def _matches(rel: str, patterns: Sequence[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def discover(paths: Sequence[str | os.PathLike], *, include: Sequence[str] = (),
             exclude: Sequence[str] = ()) -> list[SourceFile]:
    """Files to build from, sorted by relative path. Hidden files and folders are skipped.

    With one directory argument, paths are relative to it; with several arguments, each
    directory's files are prefixed by the directory's name so that names stay unique.
    """
    if not paths:
        raise InputError("no input paths given")
    found: dict[str, SourceFile] = {}
    for arg in paths:
        root = Path(arg)
        if not root.exists():
            raise InputError(f"{arg}: no such file or directory")
        if root.is_file():
            kind = KINDS.get(root.suffix.lower())
            if kind is None:
                raise InputError(f"{arg}: unsupported file type {root.suffix or '(none)'}; "
                                 f"supported: {', '.join(sorted(KINDS))}")
            candidates = [(root, root.name)]
        else:
            prefix = "" if len(paths) == 1 else (root.resolve().name + "/")
            candidates = []
            for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for fname in sorted(filenames):
                    if fname.startswith("."):
                        continue
                    p = Path(dirpath) / fname
                    candidates.append((p, prefix + p.relative_to(root).as_posix()))
        for p, rel in candidates:
            kind = KINDS.get(p.suffix.lower())
            if kind is None or (include and not _matches(rel, include)) or _matches(rel, exclude):
                continue
            if rel in found and found[rel].path.resolve() != p.resolve():
                raise InputError(f"{p}: two inputs share the name {rel!r}; pass their common parent instead")
            found[rel] = SourceFile(p, rel, kind)
    if not found:
        where = ", ".join(str(p) for p in paths)
        raise InputError(f"{where}: no supported files ({', '.join(sorted(KINDS))})"
                         + (" match the include/exclude patterns" if include or exclude else ""))
    return [found[k] for k in sorted(found)]


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
