"""A resumable, shardable journal of work units: the generic half of `videomolmo eval`.

Work is a sorted list of *units*; each unit, once done, appends its rows to the shard's
append-only rows file in one `write` + `fsync` (`files.JsonlLog`), so a row is the commit mark of
its unit. A rerun skips every unit whose rows are all present and redoes the rest; reading dedups
rows by key (the last written wins), so nothing is ever counted twice.

Shards (`--shard i/n`, or RANK / WORLD_SIZE under torchrun) take every n-th unit of the sorted
list and write their own rows file, so no two processes ever append to the same file. What a
unit *is* and how it is scored is the benchmark protocol's business (`evaluation/runner.py`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from videomolmo.errors import ConfigError, VideoMolmoError
from videomolmo.files import JsonlLog

ROWS_GLOB = "rows*.jsonl"


# --------------------------------------------------------------------------- append-only rows


def read_all_rows(run_dir: str | os.PathLike) -> dict[str, dict]:
    """All rows of every shard's file, deduplicated by `key` (the last written wins)."""
    out: dict[str, dict] = {}
    for path in sorted(Path(run_dir).glob(ROWS_GLOB)):
        for row in JsonlLog(path).read():
            if "key" in row:
                out[row["key"]] = row
    return out


def complete_units(rows: dict[str, dict]) -> set[str]:
    """Units all of whose rows (`unit_size` of them) are present."""
    seen: dict[str, set[str]] = {}
    size: dict[str, int] = {}
    for key, row in rows.items():
        unit = row.get("unit", key)
        seen.setdefault(unit, set()).add(key)
        size[unit] = int(row.get("unit_size", 1))
    return {u for u, keys in seen.items() if len(keys) >= size[u]}


# --------------------------------------------------------------------------- shards


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0-based)."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> "Shard":
        """`"i/n"` (0 <= i < n), or None/"" for the whole run; falls back to torchrun's env."""
        if not text:
            return cls.from_env()
        try:
            i, n = (int(p) for p in text.split("/"))
        except ValueError:
            raise ConfigError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
        if n < 1 or not 0 <= i < n:
            raise ConfigError(f"--shard {text!r}: need 0 <= i < n")
        return cls(i, n)

    @classmethod
    def from_env(cls) -> "Shard":
        """RANK / WORLD_SIZE as set by torchrun (data parallel = one shard per process)."""
        try:
            n = int(os.environ.get("WORLD_SIZE", "1"))
            i = int(os.environ.get("RANK", "0"))
        except ValueError:
            return cls()
        return cls(i, n) if n > 1 and 0 <= i < n else cls()

    @property
    def rows_name(self) -> str:
        return "rows.jsonl" if self.count == 1 else f"rows.shard-{self.index}-of-{self.count}.jsonl"

    def take(self, items: Sequence) -> list:
        return list(items[self.index :: self.count])


# --------------------------------------------------------------------------- units


def sample_key(sample) -> str:
    """A row's key: one row per expression of a video."""
    return f"{sample.video_id}/{sample.exp_id}"


@dataclass
class Unit:
    """One piece of work: the samples scored together, and the row keys it produces."""

    key: str
    samples: list

    @property
    def row_keys(self) -> list[str]:
        return [sample_key(s) for s in self.samples]


# --------------------------------------------------------------------------- the run


@dataclass
class RunStatus:
    total_units: int
    shard_units: int
    done_before: int
    done_now: int
    failed: list[str]
    complete: bool  # every unit of every shard has its rows


ProcessUnit = Callable[[Unit], list[dict]]


def run_units(
    run_dir: str | os.PathLike,
    units: Sequence[Unit],
    process: ProcessUnit,
    shard: Shard = Shard(),
    progress: Callable[[int, int, str], None] | None = None,
    on_error: Callable[[Unit, VideoMolmoError], None] | None = None,
) -> RunStatus:
    """Process this shard's units that have no rows yet, appending each unit's rows atomically.

    `process(unit)` returns one row per sample of the unit (each with at least `key`); the
    runner adds `unit`, `unit_size`, `shard` and `time`. A unit whose input is bad
    (`VideoMolmoError`) is reported through `on_error` and skipped, not recorded, so a rerun
    after fixing the data retries it. Anything else propagates (our bug: stop the run).
    """
    run_dir = Path(run_dir)
    log = JsonlLog(run_dir / shard.rows_name)
    log.repair()
    done = complete_units(read_all_rows(run_dir))
    mine = shard.take(units)
    todo = [u for u in mine if u.key not in done]
    done_before = len(mine) - len(todo)
    failed: list[str] = []
    n_done = 0
    for i, unit in enumerate(todo):
        if progress:
            progress(done_before + i, len(mine), unit.key)
        t0 = time.perf_counter()
        try:
            rows = process(unit)
        except VideoMolmoError as exc:
            failed.append(unit.key)
            if on_error:
                on_error(unit, exc)
            continue
        keys = unit.row_keys
        got = [r.get("key") for r in rows]
        if sorted(got) != sorted(keys):
            raise RuntimeError(f"unit {unit.key}: rows for {got}, expected {keys}")
        dt = time.perf_counter() - t0
        for r in rows:
            r.update(unit=unit.key, unit_size=len(keys), shard=f"{shard.index}/{shard.count}", seconds=round(dt, 3))
        log.append(rows)
        n_done += 1
    if progress:
        progress(len(mine), len(mine), "")
    all_done = complete_units(read_all_rows(run_dir))
    return RunStatus(
        total_units=len(units),
        shard_units=len(mine),
        done_before=done_before,
        done_now=n_done,
        failed=failed,
        complete=all(u.key in all_done for u in units),
    )


def missing_units(run_dir: str | os.PathLike, units: Sequence[Unit]) -> list[str]:
    """Keys of units that no shard has finished yet."""
    done = complete_units(read_all_rows(run_dir))
    return [u.key for u in units if u.key not in done]


def collect_rows(run_dir: str | os.PathLike, units: Sequence[Unit]) -> list[dict]:
    """The rows of the given units (deduplicated), in unit order: what the summary is built on."""
    rows = read_all_rows(run_dir)
    out = []
    for u in units:
        for k in u.row_keys:
            if k in rows:
                out.append(rows[k])
    return out
