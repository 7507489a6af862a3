"""Progress of a long command: done/total, rate and time left, for a terminal (rich bars) or a log
(plain lines, kbc build --progress plain: what a CI job shows when stderr is a file or a pipe).

The estimate is kept apart from its display and reads an injectable clock, so that tests drive
it with a fake clock instead of sleeping. Callers report `progress(stage, advance, total)` as
kbc.pipeline does: "extract" counts files against a fixed total; "embed" counts chunks against the
chunks known so far, a total that grows while extraction runs and is final only once every file is
extracted. Until then no time left is given for it: "at least N" says the total is a lower bound."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional, TextIO

Clock = Callable[[], float]

# The unit each stage counts, for the lines ("embed 6,120/21,812 chunks").
UNITS = {"extract": "files", "embed": "chunks", "export": "chunks", "queries": "queries"}
ONE = {"files": "file", "chunks": "chunk", "queries": "query", "items": "item"}
# A stage whose total grows until another stage ends: embed's total is the chunks of the files
# extracted so far.
TOTAL_FINAL_AFTER = {"embed": "extract"}

RATE_WINDOW_S = 60.0  # the rate is measured over the last minute: embedding speeds up once extraction ends
MIN_RATE_SPAN_S = 1.0  # fewer seconds of samples than this give no rate (one window's time says nothing)
# Plain lines: one when a stage starts or ends, one on progress when EVERY_S have passed since the
# last line, and one from the heartbeat thread when nothing was printed for SILENCE_S (a stage can
# sit on one big file or one window for minutes; CI services stop a job silent for 10 minutes).
# Every line is at least a stage's worth of news or EVERY_S apart, so a log never floods; the
# heartbeat keeps the longest silence under 30 s whatever the build does.
EVERY_S = 20.0
SILENCE_S = 25.0
HEARTBEAT_POLL_S = 1.0  # how often the heartbeat thread looks (real seconds)


def duration(seconds: float) -> str:
    """45 s, 10 min, 1 h 05 min: rounded to what a person planning around it needs."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{max(1, round(seconds)):d} s"
    minutes = int(seconds // 60 + (1 if seconds % 60 >= 30 else 0))
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def rate_text(rate: float) -> str:
    return f"{rate:,.0f}/s" if rate >= 10 else f"{rate:.1f}/s" if rate >= 0.1 else f"{rate * 60:.1f}/min"


@dataclass
class StageState:
    name: str
    done: int = 0
    total: Optional[int] = None
    started: float = 0.0
    finished: Optional[float] = None
    # for a stage in TOTAL_FINAL_AFTER: a report came after the stage it waits on ended (the ledger
    # reports a file before booking its chunks: the report right at the end may miss the last file's)
    reported_after_wait: bool = False
    samples: deque = field(default_factory=deque)  # (time, done) over the last RATE_WINDOW_S, and one before


class Estimate:
    """What each stage has done, its rate and time left, from progress reports and a clock."""

    def __init__(self, clock: Clock = time.monotonic):
        self.clock = clock
        self.stages: dict[str, StageState] = {}

    def update(self, stage: str, advance: int, total: Optional[int]) -> tuple[bool, bool]:
        """Books one report; returns (the stage started now, the stage ended now)."""
        now = self.clock()
        s = self.stages.get(stage)
        new = s is None
        if new:
            s = self.stages[stage] = StageState(stage, started=now)
        if total is not None:
            s.total = total
        waits_for = self.stages.get(TOTAL_FINAL_AFTER.get(stage, ""))
        if waits_for is not None and waits_for.finished is not None:
            s.reported_after_wait = True
        s.done += advance
        s.samples.append((now, s.done))
        while len(s.samples) > 2 and s.samples[1][0] <= now - RATE_WINDOW_S:
            s.samples.popleft()
        ended = s.finished is None and self.final(stage) and s.total is not None and s.done >= s.total
        if ended:
            s.finished = now
        return new, ended

    def final(self, stage: str) -> bool:
        """Whether the stage's total can no longer grow."""
        before = TOTAL_FINAL_AFTER.get(stage)
        if before is None:
            return True
        b = self.stages.get(before)
        return b is not None and b.finished is not None and self.stages[stage].reported_after_wait

    def rate(self, stage: str) -> Optional[float]:
        """Items a second over the last minute (falling while nothing is done); None until a
        second of samples exists."""
        s = self.stages[stage]
        if not s.samples:
            return None
        now = self.clock() if s.finished is None else s.finished
        t0, d0 = s.samples[0]  # the work before the first report took an unknown time: counted from it
        if now - t0 < MIN_RATE_SPAN_S:
            return None
        return (s.done - d0) / (now - t0)

    def seconds_left(self, stage: str) -> Optional[float]:
        s = self.stages[stage]
        rate = self.rate(stage)
        if s.total is None or not self.final(stage) or not rate:
            return None
        return max(0, s.total - s.done) / rate

    def active(self) -> list[str]:
        return [name for name, s in self.stages.items() if s.finished is None]

    def describe(self, stage: str) -> str:
        """`embed 6,120/21,812 chunks, 26/s, ~10 min left`; `embed 6,120 of at least 9,000 chunks
        (total not known until extraction ends), 26/s`."""
        s = self.stages[stage]
        unit = UNITS.get(stage, "items")
        unit = ONE[unit] if (s.total if s.total is not None else s.done) == 1 else unit
        if s.finished is not None:
            took = s.finished - s.started
            return f"{stage} done: {s.done:,} {unit} in {duration(took)}"
        if s.total is None:
            counted = f"{stage} {s.done:,} {unit}"
        elif self.final(stage):
            counted = f"{stage} {s.done:,}/{s.total:,} {unit}"
        else:
            waits_for = TOTAL_FINAL_AFTER[stage]
            why = ("the last files' not counted yet" if getattr(self.stages.get(waits_for), "finished", None) is not None
                   else f"total not known until {waits_for} ends")
            counted = f"{stage} {s.done:,} of at least {s.total:,} {unit} ({why})"
        return ", ".join([counted, self.pace(stage)])

    def pace(self, stage: str) -> str:
        """`26/s, ~10 min left`, or why there is no estimate yet."""
        s = self.stages[stage]
        rate = self.rate(stage)
        if rate is None:
            return "rate not known yet"
        if rate == 0:
            last = s.samples[-1][0]
            return f"nothing done for {duration(self.clock() - last)}"
        left = self.seconds_left(stage)
        return rate_text(rate) + (f", ~{duration(left)} left" if left is not None else "")

    def left_text(self, stage: str) -> str:
        """The estimate alone, for a terminal bar's column."""
        s = self.stages[stage]
        if s.finished is not None:
            return "done"
        if not self.final(stage):
            return f"total not known until {TOTAL_FINAL_AFTER[stage]} ends"
        left = self.seconds_left(stage)
        return f"~{duration(left)} left" if left is not None else "estimating"


class PlainProgress:
    """Plain lines on a stream (stderr in a CI log): no control characters, no carriage returns.
    A heartbeat thread (started by `with`) prints the state when nothing was printed for
    SILENCE_S, so that the longest silence stays under 30 s however long one file or window takes."""

    def __init__(self, stream: TextIO, *, clock: Clock = time.monotonic, heartbeat: bool = True,
                 wait: Optional[Callable[[threading.Event, float], bool]] = None):
        self.stream = stream
        self.estimate = Estimate(clock)
        self.clock = clock
        self.started = clock()
        self.last_line = self.started
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat = heartbeat
        self._thread: Optional[threading.Thread] = None
        self._wait = wait or (lambda event, seconds: event.wait(seconds))

    def __enter__(self) -> "PlainProgress":
        if self._heartbeat:
            self._thread = threading.Thread(target=self._beat, name="kbc-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * HEARTBEAT_POLL_S)

    def __call__(self, stage: str, advance: int, total: Optional[int]) -> None:
        with self._lock:
            new, ended = self.estimate.update(stage, advance, total)
            now = self.clock()
            if new or ended or now - self.last_line >= EVERY_S:
                self._print(now, ended_stage=stage if ended else None)

    def tick(self) -> None:
        """What the heartbeat thread runs: a line when the log has been silent for SILENCE_S."""
        with self._lock:
            now = self.clock()
            if now - self.last_line >= SILENCE_S:
                self._print(now)

    def _beat(self) -> None:
        while not self._wait(self._stop, HEARTBEAT_POLL_S):
            self.tick()

    def _print(self, now: float, ended_stage: Optional[str] = None) -> None:
        parts = []
        if ended_stage is not None:
            parts.append(self.estimate.describe(ended_stage))
        parts += [self.estimate.describe(s) for s in self.estimate.active()]
        if not parts:  # before the first file is done, or after the last chunk (indexing, writing)
            stages = self.estimate.stages
            doing = ("indexing and writing the bundle" if stages else "starting (finding files, loading the model)")
            parts.append(f"{doing}, {duration(now - self.started)} so far")
        self.stream.write("kbc: " + "; ".join(parts) + "\n")
        self.stream.flush()
        self.last_line = now


class BarProgress:
    """rich progress bars on a terminal, with the same estimate in a column of their own."""

    def __init__(self, *, clock: Clock = time.monotonic):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.estimate = Estimate(clock)
        self.bar = Progress(TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("{task.fields[left]}"), transient=True)
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> "BarProgress":
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def __call__(self, stage: str, advance: int, total: Optional[int]) -> None:
        self.estimate.update(stage, advance, total)
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(stage, total=total, left="")
        elif total is not None:  # embed: the chunks known so far, final once extraction has ended
            self.bar.update(self.tasks[stage], total=total)
        self.bar.advance(self.tasks[stage], advance)
        for name, task in self.tasks.items():  # an ended extraction makes embed's estimate possible
            self.bar.update(task, left=self.estimate.left_text(name))


class NoProgress:
    def __enter__(self) -> "NoProgress":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def __call__(self, stage: str, advance: int, total: Optional[int]) -> None:
        pass


MODES = ("auto", "bar", "plain", "none")


def choose(mode: str, *, stream: TextIO, quiet: bool) -> str:
    """auto: none when quiet (-q, --json), bars on a terminal, plain lines otherwise (a CI log)."""
    import os

    if mode != "auto":
        return mode
    if quiet:
        return "none"
    is_terminal = hasattr(stream, "isatty") and stream.isatty()
    return "bar" if is_terminal and os.environ.get("TERM") != "dumb" else "plain"


def open_progress(mode: str, *, stream: TextIO, quiet: bool = False):
    kind = choose(mode, stream=stream, quiet=quiet)
    if kind == "bar":
        return BarProgress()
    if kind == "plain":
        return PlainProgress(stream)
    return NoProgress()
