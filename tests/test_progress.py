"""kbc build's progress for logs (issue 44): done/total, rate and time left with a fake clock, the
embed total that is a lower bound until extraction ends, the plain lines' spacing and heartbeat,
and one real build whose stderr is not a terminal printing lines throughout."""

from __future__ import annotations

import io
import re
import time

import pytest

from kbc.cli import progress as P

CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_rate_and_time_left_from_the_clock():
    clock = FakeClock()
    e = P.Estimate(clock)
    e.update("extract", 1, 101)
    assert e.describe("extract") == "extract 1/101 files, rate not known yet"
    for _ in range(50):
        clock.advance(2)
        e.update("extract", 1, 101)
    # 50 files in the last 100 s; the window keeps the last minute: 30 files in 60 s
    assert e.rate("extract") == pytest.approx(0.5)
    assert e.seconds_left("extract") == pytest.approx(100)
    assert e.describe("extract") == "extract 51/101 files, 0.5/s, ~2 min left"


def test_rate_follows_the_last_minute_not_the_whole_stage():
    clock = FakeClock()
    e = P.Estimate(clock)
    e.update("embed", 0, 10_000)
    e.stages["embed"].reported_after_wait = True  # (no extract stage here: treat the total as final)
    e.update("extract", 1, 1)
    for _ in range(10):  # slow while extraction ran: 10 a second for 100 s
        clock.advance(10)
        e.update("embed", 100, 10_000)
    for _ in range(12):  # then 100 a second
        clock.advance(5)
        e.update("embed", 500, 10_000)
    assert e.rate("embed") == pytest.approx(100)
    assert e.seconds_left("embed") == pytest.approx((10_000 - 7_000) / 100)


def test_embed_total_is_a_lower_bound_until_extraction_has_ended():
    clock = FakeClock()
    e = P.Estimate(clock)
    e.update("extract", 1, 3)
    clock.advance(10)
    e.update("embed", 256, 900)
    clock.advance(10)
    e.update("extract", 1, 3)
    e.update("embed", 256, 1_800)
    line = e.describe("embed")
    assert "512 of at least 1,800 chunks (total not known until extract ends)" in line
    assert "left" not in line and e.seconds_left("embed") is None
    assert e.left_text("embed") == "total not known until extract ends"
    clock.advance(10)
    e.update("extract", 1, 3)  # the last file: its chunks are booked after this report
    assert e.stages["extract"].finished is not None
    assert e.seconds_left("embed") is None and "at least" in e.describe("embed")
    clock.advance(10)
    e.update("embed", 256, 2_000)  # the first report after extraction: its total is final
    assert e.final("embed")
    assert e.describe("embed") == "embed 768/2,000 chunks, 17/s, ~1 min left"
    clock.advance(47)
    e.update("embed", 1_232, 2_000)
    assert e.describe("embed").startswith("embed done: 2,000 chunks in")


def test_embed_is_not_done_on_a_total_counted_before_the_last_file():
    """The ledger reports a file before booking its chunks: all chunks known so far embedded when
    the last file is reported is not the end of the embed stage."""
    clock = FakeClock()
    e = P.Estimate(clock)
    e.update("extract", 1, 2)
    clock.advance(5)
    e.update("embed", 300, 300)
    clock.advance(5)
    e.update("extract", 1, 2)
    assert e.active() == ["embed"] and "300 of at least 300 chunks (the last files' not counted yet)" in e.describe("embed")
    clock.advance(5)
    e.update("embed", 200, 500)
    assert e.active() == [] and e.describe("embed").startswith("embed done: 500 chunks in 10 s")


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_plain_lines_come_on_stage_changes_and_every_so_often_not_more():
    clock = FakeClock()
    out = io.StringIO()
    p = P.PlainProgress(out, clock=clock, heartbeat=False)
    times = []
    real_print = p._print
    p._print = lambda now, ended_stage=None: (times.append(now), real_print(now, ended_stage))
    for _ in range(300):  # one file a second for 5 minutes
        clock.advance(1)
        p("extract", 1, 300)
    lines = _lines(out)
    assert lines[0] == "kbc: extract 1/300 files, rate not known yet"
    assert lines[-1] == "kbc: extract done: 300 files in 5 min"
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) <= 30
    assert min(gaps[:-1]) >= P.EVERY_S  # the stage's end may come sooner; nothing else does
    assert any(re.fullmatch(r"kbc: extract \d+/300 files, 1\.0/s, ~\d+ min left", line) for line in lines)
    assert not any(CONTROL.search(line) for line in lines)


def test_heartbeat_speaks_when_nothing_reports_for_long():
    clock = FakeClock()
    out = io.StringIO()
    p = P.PlainProgress(out, clock=clock, heartbeat=False)
    for _ in range(100):  # before anything is extracted: the model loads, the files are walked
        clock.advance(1)
        p.tick()
    p("extract", 1, 2)
    for _ in range(100):  # the second file takes 100 s
        clock.advance(1)
        p.tick()
    lines = _lines(out)
    assert lines[0] == "kbc: starting (finding files, loading the model), 25 s so far"
    assert len([l for l in lines if l.startswith("kbc: starting")]) == 4
    stalled = [l for l in lines if "nothing done for" in l]
    assert stalled and stalled[-1] == "kbc: extract 1/2 files, nothing done for 2 min"
    assert len(lines) == 4 + 1 + 4


def test_heartbeat_thread_runs_tick():
    clock = FakeClock()
    out = io.StringIO()
    waits = []

    def wait(event, seconds):  # the thread's sleep: the fake clock advances instead
        waits.append(seconds)
        clock.advance(30)
        return len(waits) > 3

    with P.PlainProgress(out, clock=clock, wait=wait):
        pass
    deadline = time.monotonic() + 30
    while len(waits) <= 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(_lines(out)) == 3 and waits[0] == P.HEARTBEAT_POLL_S


@pytest.mark.parametrize("seconds, text", [(0.2, "1 s"), (44.6, "45 s"), (89, "1 min"), (90, "2 min"),
                                           (599, "10 min"), (3_900, "1 h 05 min")])
def test_durations(seconds, text):
    assert P.duration(seconds) == text


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_auto_chooses_by_what_stderr_is(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    assert P.choose("auto", stream=_Stream(True), quiet=False) == "bar"
    assert P.choose("auto", stream=_Stream(False), quiet=False) == "plain"
    assert P.choose("auto", stream=_Stream(True), quiet=True) == "none"
    assert P.choose("plain", stream=_Stream(True), quiet=True) == "plain"
    monkeypatch.setenv("TERM", "dumb")
    assert P.choose("auto", stream=_Stream(True), quiet=False) == "plain"


def test_bars_show_the_same_estimate():
    clock = FakeClock()
    bars = P.BarProgress(clock=clock)
    bars.bar.disable = True
    bars("extract", 1, 2)
    clock.advance(4)
    bars("embed", 64, 64)
    fields = lambda stage: bars.bar.tasks[bars.tasks[stage]].fields["left"]  # noqa: E731
    assert fields("embed") == "total not known until extract ends"
    clock.advance(4)
    bars("extract", 1, 2)
    clock.advance(4)
    bars("embed", 64, 200)  # 64 more in the 8 s since its first report: 8/s, 72 left
    assert fields("extract") == "done" and fields("embed") == "~9 s left"


def test_build_with_stderr_to_a_file_prints_lines_throughout(tmp_path, monkeypatch, tiny_model):
    """A real build (in this process, stderr captured: not a terminal) whose embedding is slowed:
    the intervals are scaled down tenfold (30 s -> 3 s) so that the test takes seconds, and every
    gap between two lines, from the start to the end, stays under the scaled 30 s."""
    from conftest import SAMPLE_DOCS, kbc_cli

    from kbc.engines.local import LocalEngine

    # a first build loads and exports the model (a C library that holds the interpreter for seconds,
    # which the scaled-down heartbeat cannot outlast; the real one has 5 s to spare)
    kbc_cli("build", str(SAMPLE_DOCS), "-o", str(tmp_path / "warm.kbpack"), "--model", str(tiny_model), "-q",
            check=True)
    monkeypatch.delenv("KBC_PROGRESS", raising=False)  # auto: stderr is not a terminal here
    scale = 0.1
    monkeypatch.setattr(P, "EVERY_S", P.EVERY_S * scale)
    monkeypatch.setattr(P, "SILENCE_S", P.SILENCE_S * scale)
    monkeypatch.setattr(P, "HEARTBEAT_POLL_S", 0.05)
    stamps: list[float] = []
    real_print = P.PlainProgress._print
    monkeypatch.setattr(P.PlainProgress, "_print",
                        lambda self, now, ended_stage=None: (stamps.append(time.monotonic()),
                                                             real_print(self, now, ended_stage)))
    span: list[float] = []  # when the build's progress began and ended (the command's imports come before)
    real_enter, real_exit = P.PlainProgress.__enter__, P.PlainProgress.__exit__
    monkeypatch.setattr(P.PlainProgress, "__enter__", lambda self: (span.append(time.monotonic()), real_enter(self))[1])
    monkeypatch.setattr(P.PlainProgress, "__exit__", lambda self, *exc: (span.append(time.monotonic()),
                                                                         real_exit(self, *exc))[1])
    real_embed = LocalEngine.embed

    def slow_embed(self, embedder, items, **kw):
        for tag, vectors in real_embed(self, embedder, items, **kw):
            time.sleep(2.0)  # a window of an embedder 10x slower than the build's own stages
            yield tag, vectors

    monkeypatch.setattr(LocalEngine, "embed", slow_embed)
    proc = kbc_cli("build", str(SAMPLE_DOCS), "-o", str(tmp_path / "kb.kbpack"), "--model", str(tiny_model),
                   "--no-cache", check=True)
    start, end = span
    lines = [line for line in proc.stderr.splitlines() if line.startswith("kbc: ")]
    assert len(lines) == len(stamps) >= 5, proc.stderr
    assert any(l.startswith("kbc: extract done: 6 files") for l in lines)
    assert lines[-1].startswith("kbc: embed done: 330 chunks") or "indexing and writing" in lines[-1]
    assert not any(CONTROL.search(line) for line in proc.stderr.splitlines())
    gaps = [b - a for a, b in zip([start, *stamps], [*stamps, end])]
    assert max(gaps) <= 30 * scale, (gaps, lines)
    assert "built " in proc.stdout  # the summary stays on stdout
