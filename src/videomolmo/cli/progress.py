"""Progress for every long command: rich bars on a terminal, plain log lines otherwise.

Redirected to a log file, a rich bar prints nothing until the end, so a 2-minute `track` looked
hung. `Stages` takes the pipeline's `(stage, done, total)` callbacks and, when stderr is not a
terminal, prints `stage done/total (pct), elapsed, ~left` at the first and last step and at most
every `interval` seconds in between.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from videomolmo.cli.app import err_console
from videomolmo.notices import BundledModelWarning, NothingFoundWarning


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class LogLines:
    """(stage, done, total) -> throttled plain lines on stderr."""

    def __init__(self, prefix: str = "", interval: float = 5.0, console=None):
        self.prefix = f"{prefix}: " if prefix else ""
        self.interval = interval
        self.console = console or err_console
        self._start: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._done: dict[str, int] = {}
        # A stage's first callback comes after its first batch: time it from when the previous
        # stage last reported (or from the start), not from that callback.
        self._since = time.monotonic()

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if done < self._done.get(stage, -1):
            # The stage starts over (the next expression of an eval): a new round.
            for d in (self._start, self._last):
                d.pop(stage, None)
        self._done[stage] = done
        start = self._start.setdefault(stage, self._since)
        self._since = now
        last = self._last.get(stage)
        final = total is not None and done >= total
        if last is not None and not final and now - last < self.interval:
            return
        if final and last == float("inf"):
            return  # the last step is reported once
        self._last[stage] = float("inf") if final else now
        elapsed = now - start
        if total:
            text = f"{self.prefix}{stage} {done}/{total} ({100 * done / total:.0f}%), {_fmt_seconds(elapsed)} elapsed"
            if 0 < done < total:
                text += f", ~{_fmt_seconds(elapsed * (total - done) / done)} left"
        else:
            text = f"{self.prefix}{stage} {done}, {_fmt_seconds(elapsed)} elapsed"
        self.console.print(text, soft_wrap=True)


class _Bars:
    """(stage, done, total) -> one rich task per stage."""

    def __init__(self, bar):
        self.bar = bar
        self.tasks: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(stage, total=total)
        self.bar.update(self.tasks[stage], completed=done, total=total)


@contextmanager
def stages(prefix: str = "", interval: float = 5.0) -> Iterator:
    """Yield a `(stage, done, total)` callback: bars on a terminal, log lines otherwise."""
    if not err_console.is_terminal:
        yield LogLines(prefix, interval)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err_console) as bar:
        yield _Bars(bar)


def note(message: str) -> None:
    """A one-line note on stderr (plain text: paths and queries may hold square brackets)."""
    err_console.print(" ".join(str(message).splitlines()), soft_wrap=True)


@contextmanager
def notes_printed_once() -> Iterator[None]:
    """Silence the API's notice warnings: the CLI prints each note itself, once, as a line."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BundledModelWarning)
        warnings.simplefilter("ignore", NothingFoundWarning)
        yield
