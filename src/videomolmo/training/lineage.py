"""Which data a saved model was trained on, so that chained runs can tell fresh data from a replay.

A synthetic stream is fixed by its seed and curriculum: two runs with the same pair draw the same
examples in the same order, whatever their step counts. Chaining `--init` runs without changing
`--seed` therefore trains on the examples the model has already seen (Stages 7-12 of the bundled
model replayed one 12,000-example stream six times before anyone noticed; assets/TRAINING.md).
Each saved model records its streams under `trained_on` in `config.json` (its init's streams
first), and `train --init` warns when its own stream is one of them.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["DataReplayWarning", "stream_record", "streams_of", "replay_note"]


class DataReplayWarning(UserWarning):
    """A training run starts from a model that was already trained on the run's own data stream."""


def _record(data: str, seed: int, curriculum: str | None, split: str | None, examples: int) -> dict:
    rec = {"data": data, "seed": int(seed), "examples": int(examples)}
    if data == "synth":
        rec["curriculum"] = curriculum
    else:
        rec["split"] = split
    return rec


def stream_record(cfg, examples: int) -> dict:
    """What identifies the run's data (and how much of it was drawn)."""
    return _record(cfg.data, cfg.seed, cfg.curriculum, cfg.data_split, examples)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def streams_of(init: str | Path | None) -> list[dict]:
    """The streams a saved model was trained on, oldest first; [] when unknown. A folder saved
    before `trained_on` existed is read from the run that wrote it (`<run>/final` next to
    `<run>/train_config.json`), which gives its last stream only."""
    if init is None:
        return []
    init = Path(init)
    folder = init.parent if init.is_file() else init
    config = _read_json(folder / "config.json") or {}
    if isinstance(config.get("trained_on"), list):
        return [s for s in config["trained_on"] if isinstance(s, dict)]
    run = _read_json(folder.parent / "train_config.json") if folder.name == "final" else None
    if not run or "seed" not in run:
        return []
    examples = int(run.get("steps", 0)) * int(run.get("batch_size", 0)) * int(run.get("grad_accum", 1))
    return [_record(run.get("data", "synth"), run["seed"], run.get("curriculum"), run.get("data_split"), examples)]


def replay_note(cfg) -> str | None:
    """A one-line warning when `cfg.init` was trained on the synthetic stream this run would draw."""
    if cfg.data != "synth" or cfg.init is None:
        return None
    seen = [s for s in streams_of(cfg.init)
            if s.get("data") == "synth" and s.get("seed") == cfg.seed and s.get("curriculum") == cfg.curriculum]
    if not seen:
        return None
    n = max(int(s.get("examples") or 0) for s in seen)
    times = f" ({len(seen)} times)" if len(seen) > 1 else ""
    return (f"--init {cfg.init} was already trained on this run's synthetic stream (seed {cfg.seed}, curriculum "
            f"{cfg.curriculum!r}; up to {n:,} examples{times}): its first examples are a replay; pass another "
            "--seed for fresh data")
