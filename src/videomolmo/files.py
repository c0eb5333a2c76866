"""Crash-safe files for long jobs: atomic writes, an append-only JSONL log, a run's settings.

Every long job (eval, annotate, segment, train) writes through here, so "kill -9 then rerun gives
the uninterrupted result" has one implementation:

- `atomic_write_bytes` / `atomic_write_text` / `atomic_write_json`: temp file in the same folder,
  fsync, `os.replace`; a reader sees the old file or the new one, never half of one.
- `ensure_writable_dir`: create an output folder or say in one line why it cannot be used.
- `JsonlLog`: append-only rows, one `write` + `fsync` per batch; a torn last line (a kill
  mid-write) is cut off before anything new is appended.
- `RunSettings`: the settings a run was started with; a rerun into the same place with other
  settings is refused, since its results would not match the ones already written.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from videomolmo.errors import CheckpointError, ConfigError

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "ensure_writable_dir",
           "JsonlLog", "RunSettings"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temp path beside `path` for a writer that wants a file name (safetensors, PIL,
    an encoder); on success it is fsynced and renamed over `path`, on failure removed.
    `suffix` keeps the extension for writers that infer the format from it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` via a temp file in the same folder, fsync, then rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and check we can write there; `ConfigError` otherwise."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{p}: exists and is not a folder; choose another output folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{p}: output folder is not writable ({exc.strerror or exc})") from None
    return p


def ensure_writable_file(path: str | os.PathLike) -> Path:
    """Check, before the work that produces it, that an output file can be written at `path`
    (its folder is created if missing); `ConfigError` otherwise."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a folder; give a file name")
    ensure_writable_dir(p.parent)
    return p


def check_safetensors(path: str | os.PathLike) -> Path:
    """Check a .safetensors file is complete without reading its tensors: the header must parse
    and every tensor's byte range must lie inside the file. A file cut short by a crash or a
    partial copy fails here with `CheckpointError` instead of deep inside a load."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such safetensors file")
    size = p.stat().st_size
    try:
        with open(p, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(fh.read(n))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (struct.error, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise CheckpointError(f"{p}: truncated or corrupt safetensors file ({exc})") from None
    if 8 + n + end > size:
        raise CheckpointError(f"{p}: truncated safetensors file ({size} bytes, its header needs {8 + n + end})")
    return p


class JsonlLog:
    """An append-only JSONL file whose rows are written atomically.

    Each `append` is one `os.write` of complete lines followed by `fsync`, so a crash leaves at
    worst a torn *last* line; `repair` cuts that off, and `append` repairs before writing.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._repaired = False

    def repair(self) -> int:
        """Truncate a torn last line (no trailing newline, or not JSON); return bytes removed."""
        self._repaired = True
        if not self.path.exists():
            return 0
        data = self.path.read_bytes()
        keep = len(data)
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
        else:
            # A complete-looking last line can still be garbage (zero-filled blocks after a power
            # cut on some filesystems): drop trailing lines that do not parse.
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

    def read(self, strict: bool = False) -> list[dict]:
        """Every complete JSON-object row, in file order; a torn last line is ignored.

        A malformed complete line is skipped, or with `strict` raises `ConfigError`: the file is
        then not one of ours, and appending to it would bury someone else's data."""
        if not self.path.exists():
            return []
        rows = []
        with open(self.path, "rb") as fh:
            for n, line in enumerate(fh, 1):
                if not line.endswith(b"\n"):
                    break
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    row = None
                if isinstance(row, dict):
                    rows.append(row)
                elif strict:
                    raise ConfigError(f"{self.path}:{n}: not a JSON object row; refusing to append to this file")
        return rows

    @staticmethod
    def _lines(rows: Sequence[Mapping[str, Any]]) -> bytes:
        return "".join(json.dumps(dict(r), ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode("utf-8")

    def rewrite(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Replace the whole log with `rows` atomically (a crash leaves the old log or the new)."""
        atomic_write_bytes(self.path, self._lines(rows))
        self._repaired = True

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append rows in one write + fsync (all lines of a batch land together or not at all)."""
        if not rows:
            return
        if not self._repaired:
            self.repair()
        data = self._lines(rows)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, data)
            if written != len(data):  # a short write on a full disk must not look like a row
                raise OSError(f"{self.path}: short write ({written} of {len(data)} bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)


class RunSettings:
    """A JSON file holding the settings a run was started with.

    `check_or_write(settings)` writes them on the first run; on a rerun it refuses (one line,
    `ConfigError`) when any setting named in `keys` (default: all) differs, because the results
    already on disk were made with the old ones. Settings outside `keys` only choose *which*
    results are made (e.g. a shard or a frame stride) and are updated freely.
    """

    def __init__(self, path: str | os.PathLike, keys: Iterable[str] | None = None):
        self.path = Path(path)
        self.keys = None if keys is None else tuple(keys)

    def read(self) -> dict | None:
        if not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            raise ConfigError(f"{self.path}: not a readable settings file; is this a videomolmo run folder?") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{self.path}: not a settings file (expected a JSON object)")
        return data

    def differences(self, settings: Mapping[str, Any]) -> list[str]:
        have = self.read()
        if have is None:
            return []
        keys = self.keys if self.keys is not None else sorted(set(have) | set(settings))
        return [f"{k}: {have.get(k)!r} -> {settings.get(k)!r}" for k in keys if have.get(k) != settings.get(k)]

    def check_or_write(self, settings: Mapping[str, Any], what: str | None = None, fresh: bool = False) -> None:
        """Refuse other settings than the recorded ones, then record these. `fresh`: nothing
        from an earlier run is kept (its settings file, if any, is a leftover and is replaced)."""
        diff = [] if fresh else self.differences(settings)
        if diff:
            where = what or str(self.path.parent)
            raise ConfigError(
                f"{where} was started with other settings ({'; '.join(diff)}); "
                "rerun with the same options to resume, or choose another output"
            )
        atomic_write_json(self.path, dict(settings))
