"""The local build cache: file hashes, extracted text and chunk vectors, content-addressed.

One SQLite database (WAL mode, so concurrent builds can share it safely) under $KBC_CACHE_DIR,
else $XDG_CACHE_HOME/kbc, else ~/.cache/kbc. Nothing in it is trusted blindly: keys are content
hashes, values are plain bytes/JSON (never pickles), and a damaged entry is ignored and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..errors import InputError

# How long a cache call waits for another kbc's write to finish before giving up (a build then
# carries on without the cache; `kbc cache prune` says so).
BUSY_TIMEOUT_S = 60.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS file_hash (path TEXT PRIMARY KEY, stat TEXT NOT NULL, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS extracted (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, value BLOB NOT NULL);
"""
TABLES = ("file_hash", "extracted", "vectors")
# `used`: when an entry was last written or read (Unix seconds), for `kbc cache prune`. Added to
# caches made before it with 0: entries of unknown age count as the oldest.
_USED = "used INTEGER NOT NULL DEFAULT 0"
TOUCH_EVERY_S = 3600  # a read refreshes `used` at most this often: lookups stay reads, mostly


def sha256_file(path: Path) -> str:
    """The file's SHA-256, read a MiB at a time: the key of everything cached for it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _migrate(db: sqlite3.Connection) -> bool:
    """Add `used` where a cache from before it lacks it; True when every table has it. A read-only
    or locked cache is left as it is (and read without `used`); another build adding the column at
    the same moment is no error."""
    for table in TABLES:
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if "used" not in columns:
            try:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {_USED}")
            except sqlite3.OperationalError as e:
                if "duplicate column" not in str(e):
                    return False
    return True


def cache_dir() -> Path:
    env = os.environ.get("KBC_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "kbc"


class Cache:
    def __init__(self, directory: str | os.PathLike | None = None):
        self._has_used = False  # the `used` column exists (kbc cache prune)
        self.open_error: sqlite3.Error | None = None  # locked or read-only when opened
        self.dir = Path(directory) if directory else cache_dir()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(self.dir / "cache.sqlite3", timeout=BUSY_TIMEOUT_S, check_same_thread=False,
                                  isolation_level=None)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            self._has_used = _migrate(self.db)
        except sqlite3.OperationalError as e:
            self.open_error = e  # locked or read-only: used as far as it can be, warned about on first failure
        except sqlite3.DatabaseError:
            # A damaged cache is only a cache: start a fresh one beside it.
            self.db.close()
            for suffix in ("", "-wal", "-shm"):
                part = self.dir / f"cache.sqlite3{suffix}"
                if part.exists():
                    part.rename(self.dir / f"cache.sqlite3.damaged{suffix}")
            self.db = sqlite3.connect(self.dir / "cache.sqlite3", timeout=BUSY_TIMEOUT_S, check_same_thread=False,
                                      isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA)
            self._has_used = _migrate(self.db)

    # A cache is only a cache: a page damaged while a build runs, a full disk or a directory made
    # read-only costs one warning and the rest of the build runs without it, never a failed build.
    broken = False

    def _query(self, sql: str, args=(), *, many: bool = False, fetch: str | None = None):
        with self._lock:
            if self.broken:
                return None
            try:
                if many:
                    self.db.execute("BEGIN")
                    self.db.executemany(sql, args)
                    self.db.execute("COMMIT")
                    return None
                cur = self.db.execute(sql, args)
                return cur.fetchone() if fetch == "one" else cur.fetchall() if fetch == "all" else None
            except sqlite3.Error as e:
                self._give_up(e)
                return None

    def _give_up(self, e: sqlite3.Error) -> None:
        """Stop using the cache (the caller holds the lock). Only a file SQLite calls damaged
        ("malformed", "not a database") is moved aside, with its WAL files, once the connection
        is closed; a locked, read-only or full cache is left as it is."""
        self.broken = True
        try:
            self.db.rollback()
        except sqlite3.Error:
            pass
        healed = ""
        if type(e) is sqlite3.DatabaseError:
            try:
                self.db.close()
                for suffix in ("", "-wal", "-shm"):
                    part = self.dir / f"cache.sqlite3{suffix}"
                    if part.exists():
                        part.rename(self.dir / f"cache.sqlite3.damaged{suffix}")
                healed = "; moved aside, the next build starts a fresh cache"
            except (OSError, sqlite3.Error):
                pass
        print(f"kbc: warning: build cache {self.dir} failed ({e}); continuing without it{healed}", file=sys.stderr)

    @property
    def _used(self) -> str:
        """The `used` column to select, or a constant where an old read-only cache lacks it."""
        return "used" if self._has_used else "0"

    def _touch(self, table: str, key_column: str, rows: Sequence[tuple]) -> None:
        """Mark the (key, used) rows read as used now, for `kbc cache prune`: only those not marked
        within the hour, so a rebuild's reads stay reads. Best effort: a read-only cache, or one
        another build holds, stays usable for reading."""
        now = _now()
        keys = [k for k, used in rows if used < now - TOUCH_EVERY_S]
        if not keys or self.broken or not self._has_used:
            return
        with self._lock:
            try:
                self.db.execute(f"UPDATE {table} SET used=? WHERE {key_column} IN ({','.join('?' * len(keys))})",
                                [now, *keys])
            except sqlite3.Error:
                pass

    # -- file hashes keyed by stat, so unchanged multi-GB weights are not re-read every query

    def file_sha256(self, path: Path) -> str:
        real = str(Path(path).resolve())
        key = os.fsencode(real)  # the name's bytes as a BLOB: names need not be UTF-8
        st = os.stat(real)
        stamp = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_ctime_ns}"
        row = self._query(f"SELECT stat, sha256, {self._used} FROM file_hash WHERE path=?", (key,), fetch="one")
        if row and row[0] == stamp:
            self._touch("file_hash", "path", [(key, row[2])])
            return row[1]
        digest = sha256_file(Path(real))
        self._query("INSERT OR REPLACE INTO file_hash (path, stat, sha256, used) VALUES (?,?,?,?)",
                    (key, stamp, digest, _now()))
        return digest

    # -- extracted documents

    def get_extracted(self, key: str) -> dict | None:
        row = self._query(f"SELECT value, {self._used} FROM extracted WHERE key=?", (key,), fetch="one")
        if not row:
            return None
        self._touch("extracted", "key", [(key, row[1])])
        try:
            import zstandard

            return json.loads(zstandard.ZstdDecompressor().decompress(row[0], max_output_size=1 << 30))
        except Exception:
            return None

    def put_extracted(self, key: str, value: dict) -> None:
        import zstandard

        blob = zstandard.ZstdCompressor(level=3).compress(json.dumps(value, ensure_ascii=False).encode())
        self._query("INSERT OR REPLACE INTO extracted (key, value, used) VALUES (?,?,?)", (key, blob, _now()))

    # -- chunk vectors keyed by (embedder identity, prompt, text)

    def get_vectors(self, keys: Sequence[bytes], dim: int) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = [None] * len(keys)
        want = {k: i for i, k in enumerate(keys)}
        items = list(want)
        for start in range(0, len(items), 500):
            part = items[start:start + 500]
            rows = self._query(f"SELECT key, value, {self._used} FROM vectors WHERE key IN "
                               f"({','.join('?' * len(part))})", part, fetch="all") or []
            self._touch("vectors", "key", [(k, used) for k, _, used in rows])
            for k, v, _ in rows:
                vec = np.frombuffer(v, dtype="<f4") if len(v) == dim * 4 else None
                if vec is not None and np.isfinite(vec).all():  # anything else is a miss: embed again
                    out[want[bytes(k)]] = vec
        return [out[want[k]] for k in keys]

    def put_vectors(self, items: Iterable[tuple[bytes, np.ndarray]]) -> None:
        now = _now()
        rows = [(k, np.ascontiguousarray(v, dtype="<f4").tobytes(), now) for k, v in items]
        if rows:
            self._query("INSERT OR REPLACE INTO vectors (key, value, used) VALUES (?,?,?)", rows, many=True)

    def close(self) -> None:
        self.db.close()


def _now() -> int:
    return int(time.time())


def cache_info(directory: str | os.PathLike | None = None) -> dict:
    """Where the cache is, how big, and how many entries of each kind (`kbc cache info`)."""
    d = Path(directory) if directory else cache_dir()
    files = [p for p in d.rglob("*") if p.is_file()] if d.is_dir() else []
    info = {"path": str(d), "exists": d.is_dir(), "bytes": sum(p.stat().st_size for p in files),
            "onnx_exports": sorted({p.parent.name for p in files if p.suffix == ".onnx"}), "entries": {}}
    db = d / "cache.sqlite3"
    if db.is_file():
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                for table in TABLES:
                    info["entries"][table] = con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            finally:
                con.close()
        except sqlite3.Error as e:
            info["error"] = f"cannot read {db}: {e}"
    return info


def clear_cache(directory: str | os.PathLike | None = None) -> int:
    """Delete the cache's own files (database, WAL, ONNX exports); returns the bytes freed. Only
    names kbc writes are removed, so a cache directory pointed at the wrong place loses nothing else."""
    import shutil

    d = Path(directory) if directory else cache_dir()
    freed = 0
    for name in ("cache.sqlite3", "cache.sqlite3-wal", "cache.sqlite3-shm", "cache.sqlite3.damaged",
                 "cache.sqlite3.damaged-wal", "cache.sqlite3.damaged-shm"):
        p = d / name
        if p.is_file() and not p.is_symlink():
            freed += p.stat().st_size
            p.unlink()
    onnx = d / "onnx"
    if onnx.is_dir() and not onnx.is_symlink():
        freed += sum(p.stat().st_size for p in onnx.rglob("*") if p.is_file())
        shutil.rmtree(onnx)
    return freed


def prune_cache(directory: str | os.PathLike | None = None, *, older_than_s: float | None = None,
                max_bytes: int | None = None) -> dict:
    """Delete entries not used for `older_than_s` seconds, then the least recently used ones until
    the cache holds at most `max_bytes` (or nothing: an empty database still takes a few pages);
    ONNX exports count by their graph file's last use. Returns
    what went: {"entries": {table: n}, "onnx_exports": [...], "bytes_before", "bytes_after"}."""
    d = Path(directory) if directory else cache_dir()
    try:
        return _prune(d, older_than_s=older_than_s, max_bytes=max_bytes)
    except sqlite3.Error as e:  # locked by a long build, read-only, or the disk is full: say so, in one line
        raise InputError(f"{d / 'cache.sqlite3'}: cannot prune the build cache ({e}); if another kbc is "
                         f"using it, try again when it is done") from None
    except OSError as e:
        raise InputError(f"{e.filename or d}: cannot prune the build cache ({e.strerror or e})") from None


def _prune(d: Path, *, older_than_s: float | None, max_bytes: int | None) -> dict:
    import shutil

    before = _owned_bytes(d)
    removed: dict = {"entries": {}, "onnx_exports": []}
    cutoff = _now() - older_than_s if older_than_s is not None else None
    onnx = d / "onnx"  # only what kbc writes there: never through a link, never a stranger's folder
    exports = sorted(((_export_used(p), p) for p in onnx.iterdir()
                      if p.is_dir() and not p.is_symlink() and any(p.glob("*.onnx")))
                     if onnx.is_dir() and not onnx.is_symlink() else [], key=lambda t: t[0])
    db_path = d / "cache.sqlite3"
    cache = Cache(d) if db_path.is_file() else None
    if cache is not None and cache.open_error is not None:  # before anything is removed, and without waiting twice
        cache.close()
        raise cache.open_error
    try:
        if cutoff is not None:
            for used, p in [e for e in exports if e[0] < cutoff]:
                shutil.rmtree(p)
                removed["onnx_exports"].append(p.name)
            exports = [e for e in exports if e[0] >= cutoff]
            if cache is not None:
                for table in TABLES:
                    n = cache.db.execute(f"DELETE FROM {table} WHERE used < ?", (cutoff,)).rowcount
                    removed["entries"][table] = removed["entries"].get(table, 0) + n
        if max_bytes is not None:
            # the oldest first, across the tables and the exports, until the rest fits
            sizes = []
            if cache is not None:
                for table, size in (("file_hash", "length(path) + length(stat) + 64"), ("extracted", "length(value)"),
                                    ("vectors", "length(value)")):
                    sizes += [(used, size_, table, rowid) for rowid, used, size_ in
                              cache.db.execute(f"SELECT rowid, used, {size} + 48 FROM {table}")]
            sizes += [(used, sum(f.stat().st_size for f in p.rglob("*") if f.is_file()), "onnx", p) for used, p in exports]
            total = before  # the files' real size; each entry frees about its own bytes
            doomed: dict[str, list] = {}
            for used, size_, table, ref in sorted(sizes, key=lambda s: s[0]):
                if total <= max_bytes:
                    break
                doomed.setdefault(table, []).append(ref)
                total -= size_
            for p in doomed.pop("onnx", []):
                shutil.rmtree(p)
                removed["onnx_exports"].append(p.name)
            for table, rowids in doomed.items():
                for start in range(0, len(rowids), 500):
                    part = rowids[start:start + 500]
                    cache.db.execute(f"DELETE FROM {table} WHERE rowid IN ({','.join('?' * len(part))})", part)
                removed["entries"][table] = removed["entries"].get(table, 0) + len(rowids)
        if cache is not None and any(removed["entries"].values()):
            cache.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            cache.db.execute("VACUUM")  # give the space back to the file system
    finally:
        if cache is not None:
            cache.close()
    removed["bytes_before"], removed["bytes_after"] = before, _owned_bytes(d)
    return removed


def _owned_bytes(d: Path) -> int:
    """Bytes of what prune may remove: the live database and its WAL, and the ONNX exports."""
    total = sum((d / n).stat().st_size for n in ("cache.sqlite3", "cache.sqlite3-wal", "cache.sqlite3-shm")
                if (d / n).is_file())
    onnx = d / "onnx"
    if onnx.is_dir() and not onnx.is_symlink():
        total += sum(p.stat().st_size for p in onnx.rglob("*") if p.is_file() and not p.is_symlink())
    return total


def _export_used(export: Path) -> float:
    """An export's last use: its newest graph's mtime (ensure_export refreshes it; prune only
    lists folders holding a graph)."""
    return max(p.stat().st_mtime for p in export.glob("*.onnx"))


def vector_key(embedder_identity: str, prompt: str, text: str) -> bytes:
    h = hashlib.sha256()
    for part in (embedder_identity, prompt, text):
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.digest()


def cached_file_hasher() -> Callable[[Path], str]:
    """sha256 of a file, remembered by (size, mtime, inode); plain hashing if the cache is unusable."""
    try:
        cache = Cache()
    except (OSError, sqlite3.Error):
        return sha256_file
    return cache.file_sha256
