"""Worker processes for extraction: one file that makes a parser spin or balloon is stopped by a
time and an address-space limit, and reported, instead of sinking the build."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

from ..readers.guarded import ExtractOptions, guarded_extract
from ..records import Extracted, Problem, SourceFile


STARTED = "started"  # a worker's first reply to a task: it has the file and begins reading it
# A new worker process imports the readers before it can take a file (about a second when the
# machine is busy): that time is not the file's, but a worker that never starts must not hang
# the build either, so it has this long to say it began.
START_TIMEOUT_S = 120.0
# Results that wait for an earlier, slower file are bounded in number (4 a worker) and in bytes (as
# they came through the pipe, pickled: about a sixth of what they hold unpickled), so that a corpus
# of big files (10,000 records each) does not fill the driver while a small one keeps every worker busy.
AHEAD_BYTES = 8 << 20


# A worker that finds the file it reads holding more than its budget (ExtractOptions.file_memory_mb)
# exits with this code at once, so that the driver names the true reason; a MemoryError at the
# address-space limit (memory_mb) is the backstop for what grows between two looks.
OVER_MEMORY_EXIT = 86
MEMORY_POLL_S = 0.005  # how often a worker looks at its resident memory: 200 reads of /proc a second


def _resident_bytes() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


try:
    import os as _os

    _PAGE = _os.sysconf("SC_PAGE_SIZE")
except (AttributeError, ValueError, OSError):
    _PAGE = 4096


def _watch_memory(budget: int, reading: list) -> None:
    """Runs beside the reader: a file whose reading grows the process's resident memory by more
    than `budget` ends the process. A thread sees it even while a C library (pdfium, zlib, bz2)
    holds the process, since those release the interpreter while they work."""
    import os
    import time

    while True:
        time.sleep(MEMORY_POLL_S)
        start = reading[0]
        if start is not None:
            now = _resident_bytes()
            if now is not None and now - start > budget:
                os._exit(OVER_MEMORY_EXIT)


def over_memory_reason(file_memory_mb: int) -> str:
    return (f"reading it took more than {file_memory_mb:,} MiB of memory, the budget per file; "
            "it may be a decompression bomb")


# Interrupts (kbc.cli's SIGINT/SIGTERM handler calls interrupt_workers): each one bumps the generation,
# and an extract_all started before it stops at once; the worker processes alive are killed.
_interrupts = 0
_live_workers: set = set()  # the processes of every extract_all running in this process


def interrupt_workers() -> None:
    """Ctrl-C or SIGTERM: kill every extraction worker now and make each running extract_all raise
    KeyboardInterrupt, instead of waiting for the files the workers are reading (seconds, up to
    --file-timeout). Safe to call from a signal handler: it only sends signals."""
    global _interrupts
    _interrupts += 1
    for proc in list(_live_workers):
        try:
            proc.kill()
        except (OSError, ValueError, AttributeError):  # already gone, or closed
            pass


@contextmanager
def _interrupts_held():
    """Ctrl-C reaches the whole process group: a worker must not print a KeyboardInterrupt traceback
    for it (the driver stops the workers itself). It is spawned with SIGINT and SIGTERM blocked, so
    that one arriving while it imports waits until _worker_main ignores it (SIGINT) or lets it end
    the process quietly (SIGTERM). Only the starting thread's mask changes: the driver still gets them."""
    import signal

    try:  # started first: starting it unblocks SIGINT and SIGTERM in the calling thread afterwards
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
    except (ImportError, OSError, AttributeError):
        pass
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _quiet_on_interrupt() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _worker_main(conn, memory_mb: int, file_memory_mb: int | None = None) -> None:
    _quiet_on_interrupt()
    try:
        import resource

        limit = memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass
    from ..infra.memory import release_free_memory

    reading: list = [None]  # the resident bytes when the current file began; None between files
    if file_memory_mb and _resident_bytes() is not None:
        import threading

        threading.Thread(target=_watch_memory, args=(file_memory_mb << 20, reading), daemon=True).start()
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        idx, src, opts = msg
        conn.send((STARTED, idx))  # the file's clock starts now, not while this process was starting
        release_free_memory()  # what the last file freed goes back first, so it does not count against this one
        reading[0] = _resident_bytes()
        result = guarded_extract(src, opts)
        reading[0] = None
        conn.send((idx, result))


@contextmanager
def _main_module_hidden():
    """Spawned workers re-run the parent's main script (the `kbc` entry point imports the CLI,
    typer and pydantic: ~0.1 s per worker) although `_worker_main` needs none of it. Hiding
    `__main__`'s file and spec while the worker starts makes the child skip that import."""
    import sys

    main = sys.modules.get("__main__")
    saved = {k: getattr(main, k) for k in ("__file__", "__spec__") if main is not None and hasattr(main, k)}
    try:
        for k in saved:
            if k == "__file__":
                del main.__file__
            else:
                main.__spec__ = None
        yield
    finally:
        for k, v in saved.items():
            setattr(main, k, v)


def extract_all(sources: Sequence[SourceFile], opts: ExtractOptions = ExtractOptions()):
    """Yield one Extracted per source, in input order, extracting in parallel worker processes.

    A worker that runs past `timeout_s` on one file, or dies, is killed and replaced; that file
    is reported as skipped. Output is identical to a serial run: each file is extracted by the
    same pure function, and results are re-ordered before they are yielded.
    """
    import os

    if opts.workers == 0 or not sources:
        for src in sources:
            yield guarded_extract(src, opts)
        return
    import multiprocessing as mp
    import pickle
    import time
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")  # safe even after torch or other threaded libraries are loaded
    n_workers = max(1, min(opts.workers or os.cpu_count() or 1, len(sources)))
    todo = list(enumerate(sources))
    todo.reverse()
    done: dict[int, Extracted] = {}
    next_out = 0
    workers: list[dict] = []
    interrupts_at_start = _interrupts

    def start_worker() -> dict:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(child, opts.memory_mb, opts.file_memory_mb), daemon=True)
        if _interrupts != interrupts_at_start:
            raise KeyboardInterrupt
        with _main_module_hidden(), _interrupts_held():
            proc.start()
        _live_workers.add(proc)
        child.close()
        return {"proc": proc, "conn": parent, "task": None, "since": 0.0, "started": False}

    ahead = 4 * n_workers  # results waiting for an earlier, slower file: bounded, whatever the corpus
    sizes: dict[int, int] = {}  # pickled bytes of each result in `done`

    def assign(w: dict) -> None:
        if todo and len(done) < ahead and sum(sizes.values()) < AHEAD_BYTES:
            idx, src = todo.pop()
            w["task"], w["since"], w["started"] = (idx, src), time.monotonic(), False
            w["conn"].send((idx, src, opts))

    def fail(w: dict, reason: str) -> None:
        idx, src = w["task"]
        out = Extracted(src, "", 0, 0)
        out.problems.append(Problem(src.rel, "skipped", reason))
        done[idx] = out
        w["proc"].kill()
        w["proc"].join()
        w["conn"].close()
        workers.remove(w)
        _live_workers.discard(w["proc"])

    def limit(w: dict) -> float:
        """How long the worker's task may take from `since`: the file's limit once it began."""
        return opts.timeout_s if w["started"] else max(START_TIMEOUT_S, opts.timeout_s)

    try:
        for _ in range(n_workers):
            w = start_worker()
            workers.append(w)
            assign(w)
        while next_out < len(sources):
            while next_out in done:
                sizes.pop(next_out, None)
                yield done.pop(next_out)
                next_out += 1
            if next_out >= len(sources):
                break
            for w in workers:
                if w["task"] is None:
                    assign(w)
            busy = [w for w in workers if w["task"] is not None]
            now = time.monotonic()
            wait_for = min((w["since"] + limit(w) - now for w in busy), default=0.1)
            ready = wait([w["conn"] for w in busy], timeout=min(max(0.0, wait_for), 60.0))
            if _interrupts != interrupts_at_start:  # the workers were killed: no file of theirs failed
                raise KeyboardInterrupt
            for w in list(busy):
                if w["conn"] in ready:
                    try:
                        message = w["conn"].recv_bytes()
                        idx, result = pickle.loads(message)
                        if idx == STARTED:
                            w["since"], w["started"] = time.monotonic(), True
                            continue
                        done[idx], sizes[idx] = result, len(message)
                        del message
                        w["task"] = None
                        assign(w)
                        continue
                    except (EOFError, OSError):
                        w["proc"].join(timeout=5)  # its exit code says whether it ended itself over its memory budget
                        code = w["proc"].exitcode
                        fail(w, over_memory_reason(opts.file_memory_mb) if code == OVER_MEMORY_EXIT else
                             f"extractor process died (exit code {code}); file may be malformed")
                elif time.monotonic() - w["since"] > limit(w):
                    fail(w, f"extraction took longer than {opts.timeout_s:g} s; stopped" if w["started"] else
                         f"the extractor process did not start within {limit(w):g} s")
                else:
                    continue
                if todo:
                    nw = start_worker()
                    workers.append(nw)
                    assign(nw)
    finally:
        for w in workers:
            try:
                w["conn"].send(None)
            except (OSError, ValueError):
                pass
        for w in workers:
            w["proc"].join(timeout=0 if _interrupts != interrupts_at_start else 1)
            if w["proc"].is_alive():
                w["proc"].kill()
                w["proc"].join()
            _live_workers.discard(w["proc"])

