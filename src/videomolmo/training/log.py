"""Append-only JSONL training logs that stay consistent across crashes and resumes."""

from __future__ import annotations

import json
import os
from pathlib import Path


class JsonlLogger:
    """One JSON object per line, each flushed and fsynced.

    On resume from checkpoint step `resume_step`, rows logged after that step (work that was
    lost with the crash and will be redone) are dropped first, so the log never holds a step
    twice.
    """

    def __init__(self, path: str | Path, resume_step: int = 0, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            keep = []
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line from a crash
                if int(row.get("step", 0)) <= resume_step:
                    keep.append(line)
            tmp = self.path.with_suffix(self.path.suffix + ".tmp")
            tmp.write_text("".join(k + "\n" for k in keep))
            os.replace(tmp, self.path)

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def read_jsonl(path: str | Path) -> list[dict]:
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
