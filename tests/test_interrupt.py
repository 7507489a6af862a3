"""Ctrl-C and SIGTERM during a build (issue 44): exit 130 with one line, no traceback from the
driver or its extraction workers, no bundle or temporary file left, no worker left running; mid-
extraction and mid-embedding. How fast it returns is measured by bench/interrupt.py, not asserted
here (the machine's load decides the seconds)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, SAMPLE_DOCS


def children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (the build's extraction workers)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _sigint_default() -> None:
    """A test run started in the background (`make test &`) ignores SIGINT, and its children would
    inherit that, as kbc rightly keeps (nohup): the build under test gets Ctrl-C's usual meaning."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_build(docs: Path, out: Path, *, when: str, sig: int, group: bool, extra=()):
    """Starts `kbc build` with plain progress on a pipe, waits for the progress line that says the
    build is at `when` ("extract": files still to extract; "embed": extraction done, chunks still to
    embed), sends `sig` (to the whole process group as a terminal's Ctrl-C does, or to kbc alone as
    a CI runner does) and returns (exit code, stderr, seconds from the signal to the exit, workers)."""
    proc = subprocess.Popen([sys.executable, "-m", "kbc", "build", str(docs), "-o", str(out), "--no-cache",
                             "--progress", "plain", *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_sigint_default)
    seen = []
    workers: set[int] = set()
    try:
        for line in proc.stderr:
            seen.append(line)
            workers |= children(proc.pid)
            if when == "extract" and line.startswith("kbc: extract ") and "extract done" not in line:
                if len(seen) >= 2:  # the workers have started and returned files
                    break
            if when == "embed" and "extract done" in line and "embed done" not in line:
                break
        else:
            pytest.fail(f"the build ended before reaching {when}: {''.join(seen)}")
        workers |= children(proc.pid)
        sent = time.monotonic()
        os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
        rest = proc.stderr.read()
        proc.wait(timeout=120)
        return proc.returncode, "".join(seen) + rest, time.monotonic() - sent, workers
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def many_docs(tmp_path_factory) -> Path:
    docs = tmp_path_factory.mktemp("many")
    for i in range(20):  # 120 files: extraction takes seconds even on a fast machine
        shutil.copytree(SAMPLE_DOCS, docs / f"copy{i}")
    return docs


@pytest.mark.parametrize("when, sig, group", [("extract", signal.SIGINT, True), ("extract", signal.SIGTERM, False),
                                              ("embed", signal.SIGINT, True), ("embed", signal.SIGTERM, False)],
                         ids=["extract-ctrl-c", "extract-sigterm", "embed-ctrl-c", "embed-sigterm"])
def test_interrupt_is_quiet_and_leaves_nothing(tmp_path, many_docs, when, sig, group):
    out = tmp_path / "out" / "kb.kbpack"
    out.parent.mkdir()
    # mid-embedding: the default model (tens of chunks a second on 2 cores) over 2 copies of sample_docs
    docs = many_docs
    if when == "embed":
        docs = tmp_path / "docs"
        for i in range(2):
            shutil.copytree(SAMPLE_DOCS, docs / f"copy{i}")
    code, err, seconds, workers = interrupt_build(docs, out, when=when, sig=sig, group=group)
    print(f"{when} {signal.Signals(sig).name}: exit {code} {seconds:.2f} s after the signal")
    assert code == 130, err
    assert err.rstrip().endswith("kbc: interrupted"), err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert list(out.parent.iterdir()) == []  # neither a bundle nor a temporary file
    if when == "extract":
        assert workers, "the build had started no extraction worker"
    deadline = time.monotonic() + 10  # a killed process is gone once the kernel has reaped it
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in workers)


def test_the_local_engine_embeds_a_window_in_slices_only_for_one_text_per_run_embedders():
    """Slices bound how long an interrupt waits for the embedding threads; the vectors are the
    window's whole, in order, and a padded-batch embedder still gets the window in one call."""
    import numpy as np

    from kbc.engines.local import EMBED_SLICE, LocalEngine

    class Fake:
        def __init__(self, batching: str):
            self.spec = type("Spec", (), {"dim": 2, "runtime": {"batching": batching}})()
            self.calls: list[int] = []

        def embed_documents(self, texts, *, batch_size):
            self.calls.append(len(texts))
            return np.array([[float(t), 1.0] for t in texts], dtype=np.float32)

    texts = [str(i) for i in range(2 * EMBED_SLICE + 5)]
    for batching, calls in (("one text per run, unpadded", [EMBED_SLICE, EMBED_SLICE, 5]),
                            ("padded batches", [len(texts)])):
        fake = Fake(batching)
        [(tag, vectors)] = list(LocalEngine().embed(fake, iter([("w", texts)])))
        assert tag == "w" and fake.calls == calls
        assert vectors[:, 0].tolist() == [float(t) for t in texts]


def test_no_worker_ever_catches_ctrl_c(tmp_path, many_docs):
    """Ctrl-C reaches every process of the group: a worker that caught SIGINT (Python's handler)
    would print its own KeyboardInterrupt traceback. From its start (spawned with SIGINT blocked:
    multiprocessing's resource tracker, started on the first spawn, used to unblock it in the
    starting thread before the first worker) to its reading files (SIGINT ignored), none does."""
    proc = subprocess.Popen([sys.executable, "-m", "kbc", "build", str(many_docs), "-o", str(tmp_path / "kb.kbpack"),
                             "--no-cache", "--progress", "none"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=_sigint_default)
    looked: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and sum(looked.values()) < 200:
            for pid in children(proc.pid):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                masks = {line.split(":")[0]: int(line.split()[1], 16) for line in status.splitlines()
                         if line.startswith(("SigBlk", "SigIgn", "SigCgt"))}
                sigint = 1 << (signal.SIGINT - 1)
                if masks["SigCgt"] & sigint:
                    assert masks["SigBlk"] & sigint, f"worker {pid} catches SIGINT unblocked"
                looked[pid] = looked.get(pid, 0) + 1
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
    assert len(looked) >= 2, looked  # the workers (and the resource tracker) were seen
