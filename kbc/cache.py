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
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS file_hash (path TEXT PRIMARY KEY, stat TEXT NOT NULL, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS extracted (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, value BLOB NOT NULL);
"""


def cache_dir() -> Path:
    env = os.environ.get("KBC_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "kbc"


class Cache:
    def __init__(self, directory: str | os.PathLike | None = None):
        self.dir = Path(directory) if directory else cache_dir()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(self.dir / "cache.sqlite3", timeout=60, check_same_thread=False,
                                  isolation_level=None)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError:
            # A damaged cache is only a cache: start a fresh one beside it.
            self.db.close()
            for suffix in ("", "-wal", "-shm"):
                part = self.dir / f"cache.sqlite3{suffix}"
                if part.exists():
                    part.rename(self.dir / f"cache.sqlite3.damaged{suffix}")
            self.db = sqlite3.connect(self.dir / "cache.sqlite3", timeout=60, check_same_thread=False,
                                      isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA)

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

    # -- file hashes keyed by stat, so unchanged multi-GB weights are not re-read every query

    def file_sha256(self, path: Path) -> str:
        from .embed import sha256_file

        real = str(Path(path).resolve())
        key = os.fsencode(real)  # the name's bytes as a BLOB: names need not be UTF-8
        st = os.stat(real)
        stamp = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_ctime_ns}"
        row = self._query("SELECT stat, sha256 FROM file_hash WHERE path=?", (key,), fetch="one")
        if row and row[0] == stamp:
            return row[1]
        digest = sha256_file(Path(real))
        self._query("INSERT OR REPLACE INTO file_hash VALUES (?,?,?)", (key, stamp, digest))
        return digest

    # -- extracted documents

    def get_extracted(self, key: str) -> dict | None:
        row = self._query("SELECT value FROM extracted WHERE key=?", (key,), fetch="one")
        if not row:
            return None
        try:
            import zstandard

            return json.loads(zstandard.ZstdDecompressor().decompress(row[0], max_output_size=1 << 30))
        except Exception:
            return None

    def put_extracted(self, key: str, value: dict) -> None:
        import zstandard

        blob = zstandard.ZstdCompressor(level=3).compress(json.dumps(value, ensure_ascii=False).encode())
        self._query("INSERT OR REPLACE INTO extracted VALUES (?,?)", (key, blob))

    # -- chunk vectors keyed by (embedder identity, prompt, text)

    def get_vectors(self, keys: Sequence[bytes], dim: int) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = [None] * len(keys)
        want = {k: i for i, k in enumerate(keys)}
        items = list(want)
        for start in range(0, len(items), 500):
            part = items[start:start + 500]
            rows = self._query(f"SELECT key, value FROM vectors WHERE key IN ({','.join('?' * len(part))})",
                               part, fetch="all") or []
            for k, v in rows:
                vec = np.frombuffer(v, dtype="<f4") if len(v) == dim * 4 else None
                if vec is not None and np.isfinite(vec).all():  # anything else is a miss: embed again
                    out[want[bytes(k)]] = vec
        return [out[want[k]] for k in keys]

    def put_vectors(self, items: Iterable[tuple[bytes, np.ndarray]]) -> None:
        rows = [(k, np.ascontiguousarray(v, dtype="<f4").tobytes()) for k, v in items]
        if rows:
            self._query("INSERT OR REPLACE INTO vectors VALUES (?,?)", rows, many=True)

    def close(self) -> None:
        self.db.close()


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
                for table in ("file_hash", "extracted", "vectors"):
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


def vector_key(embedder_identity: str, prompt: str, text: str) -> bytes:
    h = hashlib.sha256()
    for part in (embedder_identity, prompt, text):
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.digest()


def cached_file_hasher() -> Callable[[Path], str]:
    """sha256 of a file, remembered by (size, mtime, inode); plain hashing if the cache is unusable."""
    from .embed import sha256_file

    try:
        cache = Cache()
    except (OSError, sqlite3.Error):
        return sha256_file
    return cache.file_sha256
