"""Append-only JSONL training logs that stay consistent across crashes and resumes."""

from __future__ import annotations

from pathlib import Path

from videomolmo.files import JsonlLog


class JsonlLogger:
    """One JSON object per line, each written with one write + fsync (`videomolmo.files.JsonlLog`).

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
        self._log = JsonlLog(self.path)
        if self.path.exists():
            self._log.rewrite([r for r in self._log.read() if int(r.get("step", 0)) <= resume_step])

    def write(self, row: dict) -> None:
        if self.enabled:
            self._log.append([row])
