"""`torchrun` evaluation, proven: two real torchrun ranks each evaluate their shard of a
benchmark and the merged summary is the one a single process writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    from videomolmo import synth

    return synth.write_dataset(tmp_path_factory.mktemp("synth"), videos=2, seed=0, split="test")


def _torchrun() -> str | None:
    exe = Path(sys.executable).with_name("torchrun")
    return str(exe) if exe.is_file() else shutil.which("torchrun")


@pytest.mark.skipif(_torchrun() is None, reason="torchrun not installed")
def test_torchrun_shards_merge_into_the_single_process_summary(synth_root, tmp_path):
    from typer.testing import CliRunner

    from videomolmo.cli import app

    args = ["eval", "synthetic", "--data", str(synth_root), "--pointer", "oracle", "--k", "3"]
    one = tmp_path / "one"
    r = CliRunner().invoke(app, [*args, "--out", str(one)])
    assert r.exit_code == 0, r.output

    two = tmp_path / "two"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([_torchrun(), "--standalone", "--nproc-per-node", "2", "-m", "videomolmo", *args,
                           "--out", str(two), "--device", "cpu"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    shards = sorted(p.name for p in two.glob("rows*.jsonl"))
    assert shards == ["rows.shard-0-of-2.jsonl", "rows.shard-1-of-2.jsonl"]
    assert all((two / s).read_text().strip() for s in shards)  # both ranks did work
    if not (two / "summary.json").exists():  # both ranks finished before seeing each other's rows
        r = CliRunner().invoke(app, [*args, "--out", str(two), "--merge"])
        assert r.exit_code == 0, r.output
    assert json.loads((two / "summary.json").read_text()) == json.loads((one / "summary.json").read_text())
    assert (two / "summary.md").read_text() == (one / "summary.md").read_text()
    # The same predictions, file for file.
    preds = lambda d: sorted(str(p.relative_to(d)) for p in (d / "predictions").rglob("*.png"))  # noqa: E731
    assert preds(one) == preds(two) and preds(one)
    for rel in preds(one):
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel
