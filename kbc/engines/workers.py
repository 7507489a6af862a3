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


def _worker_main(conn, memory_mb: int) -> None:
    try:
        import resource

        limit = memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        idx, src, opts = msg
        conn.send((STARTED, idx))  # the file's clock starts now, not while this process was starting
        conn.send((idx, guarded_extract(src, opts)))


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

    def start_worker() -> dict:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(child, opts.memory_mb), daemon=True)
        with _main_module_hidden():
            proc.start()
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
                        code = w["proc"].exitcode
                        fail(w, f"extractor process died (exit code {code}); file may be malformed")
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
            w["proc"].join(timeout=1)
            if w["proc"].is_alive():
                w["proc"].kill()
                w["proc"].join()

