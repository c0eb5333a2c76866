"""The resumable, shardable benchmark runner behind `videomolmo eval`.

A run directory holds::

    config.json                     the settings the run was started with (a rerun must match)
    rows.jsonl | rows.shard-I-of-N.jsonl   per-expression metric rows, append-only
    predictions/<video>/<exp_id>/<frame>.png   the official submission layout
    anno_<a>/<video>/<frame>.png    Ref-DAVIS17 only: ReferFormer's per-annotator id maps
    summary.json, summary.md        written once every unit of every shard has its rows
    worst/                          optional renders of the worst expressions

Work is split into *units* (one expression; for Ref-DAVIS17 all objects of one annotator variant
of one video, because its masks are scored as one multi-object map). A unit's rows are written
with one `write` + `flush` + `fsync` after its predictions are on disk, so a row is the commit
mark of its unit: after a crash or `kill -9` a rerun skips every unit whose rows are all present,
redoes the rest (overwriting any half-written PNGs) and never duplicates a row (reading dedups by
key, last wins, and a torn last line is cut off before appending).

Shards (`--shard i/n`, or RANK / WORLD_SIZE under torchrun) take every n-th unit of the sorted
unit list and write their own rows file, so no two processes ever append to the same file.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from videomolmo.errors import ConfigError, DatasetError, VideoMolmoError

ROWS_GLOB = "rows*.jsonl"


# --------------------------------------------------------------------------- append-only rows


class RowLog:
    """An append-only JSONL file whose rows are written atomically.

    Each `append` is one `os.write` of complete lines followed by `fsync`, so a crash leaves at
    worst a torn *last* line; `open` cuts that off before anything new is appended.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def repair(self) -> int:
        """Truncate a torn last line (no trailing newline, or not JSON); return bytes removed."""
        if not self.path.exists():
            return 0
        data = self.path.read_bytes()
        keep = len(data)
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
        else:
            # A complete-looking last line can still be garbage (e.g. zero-filled blocks after
            # a power cut on some filesystems): drop trailing lines that do not parse.
            while keep:
                start = data.rfind(b"\n", 0, keep - 1) + 1
                try:
                    json.loads(data[start:keep])
                    break
                except ValueError:
                    keep = start
        if keep != len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())
        return len(data) - keep

    def read(self) -> list[dict]:
        """Every parsable row, in file order; unparsable lines (a torn tail) are skipped."""
        if not self.path.exists():
            return []
        rows = []
        with open(self.path, "rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    break
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
        return rows

    def append(self, rows: Sequence[dict]) -> None:
        """Append rows in one write + fsync (all lines of a unit land together or not at all)."""
        if not rows:
            return
        payload = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            data = payload.encode("utf-8")
            written = os.write(fd, data)
            if written != len(data):  # a short write on a full disk: do not leave it as a row
                raise OSError(f"{self.path}: short write ({written} of {len(data)} bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)


def read_all_rows(run_dir: str | os.PathLike) -> dict[str, dict]:
    """All rows of every shard's file, deduplicated by `key` (the last written wins)."""
    out: dict[str, dict] = {}
    for path in sorted(Path(run_dir).glob(ROWS_GLOB)):
        for row in RowLog(path).read():
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


# --------------------------------------------------------------------------- config


@dataclass
class RunConfig:
    """The settings that decide a run's results; a rerun into the same directory must match."""

    bench: str
    data: str
    split: str | None = None
    model: str | None = None
    pointer: str = "model"
    k: int = 5
    tau: float = 0.7
    l: int = 4
    mask_backend: str = "cpu"
    fusion: str = "bidirectional"
    baseline: bool = False
    limit: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` via a temp file in the same folder, fsync, then rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def prepare_run_dir(run_dir: str | os.PathLike, config: RunConfig) -> Path:
    """Create the run dir (or reopen it), checking it is writable and its settings match."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{run_dir}: output directory is not writable ({exc.strerror or exc})") from None
    cfg_path = run_dir / "config.json"
    want = config.to_json()
    if cfg_path.exists():
        try:
            have = json.loads(cfg_path.read_text(encoding="utf-8"))
        except ValueError:
            raise DatasetError(f"{cfg_path}: not valid JSON; is this a videomolmo eval run directory?") from None
        diff = [f"{k}: {have.get(k)!r} -> {v!r}" for k, v in want.items() if have.get(k) != v]
        if diff:
            raise ConfigError(
                f"{run_dir} was started with other settings ({'; '.join(diff)}); "
                "rerun with the same options to resume, or use a new --out"
            )
    else:
        atomic_write_text(cfg_path, json.dumps(want, indent=2, sort_keys=True) + "\n")
    return run_dir


# --------------------------------------------------------------------------- units


@dataclass
class Unit:
    """One piece of work: the samples scored together, and the row keys it produces."""

    key: str
    samples: list

    @property
    def row_keys(self) -> list[str]:
        return [sample_key(s) for s in self.samples]


def sample_key(sample) -> str:
    return f"{sample.video_id}/{sample.exp_id}"


def davis_annotator(exp_id) -> int:
    """Ref-DAVIS17 orders each object's expressions as annotator-1 first-frame, annotator-1
    full-video, annotator-2 first-frame, annotator-2 full-video (ReferFormer's conversion);
    the variant is the expression index modulo 4."""
    try:
        return int(exp_id) % 4
    except (TypeError, ValueError):
        raise DatasetError(f"Ref-DAVIS17 expression id {exp_id!r} is not an integer") from None


def make_units(bench: str, samples: Iterable) -> list[Unit]:
    """Group samples into units, sorted by key so every shard sees the same order."""
    samples = list(samples)
    units: dict[str, Unit] = {}
    for s in samples:
        if bench == "ref-davis17":
            key = f"{s.video_id}/anno_{davis_annotator(s.exp_id)}"
        else:
            key = sample_key(s)
        units.setdefault(key, Unit(key, [])).samples.append(s)
    seen: set[str] = set()
    for s in samples:
        k = sample_key(s)
        if k in seen:
            raise DatasetError(f"duplicate expression {k} in the benchmark")
        seen.add(k)
    return [units[k] for k in sorted(units)]


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
    log = RowLog(run_dir / shard.rows_name)
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


def iter_samples_limited(samples: Iterable, limit: int | None) -> Iterator:
    for i, s in enumerate(samples):
        if limit is not None and i >= limit:
            return
        yield s
