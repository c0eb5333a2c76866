"""`benchmarks/gpu_check.py --tiny` runs in CI (so the GPU check cannot rot), and the full-size
layouts it builds on a GPU have the released models' parameter counts (built on the meta device,
no memory)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_tiny_run_prints_the_table_and_writes_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "| pointing fp32, batch 1, cache" in proc.stdout and "paper: 0.74 s/frame" in proc.stdout
    r = json.loads(out.read_text())
    assert r["tiny"] is True and r["device"] == "cpu"
    assert r["paper"] == {"pointing_s_per_frame": 0.74, "total_s_per_frame": 0.81, "setting": "A100, 4-bit"}
    p = r["pointing"]
    assert p["layout"] == "test-tiny"
    for key in ("batch1", "batch8"):
        assert p[key]["s_per_frame"] > 0 and p[key]["peak_gib"] is None  # no GPU memory on CPU
    assert p["4bit"] == {"skipped": "needs a CUDA GPU"}
    for key in ("sam2", "sam3"):
        assert r[key]["s_per_frame"] > 0 and r[key]["frame_px"] == 64
    assert r["total_s_per_frame"]["with_sam2"] == pytest.approx(p["batch1"]["s_per_frame"] + r["sam2"]["s_per_frame"])


def test_refuses_to_run_full_size_without_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "x.json")],
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "no CUDA GPU here" in proc.stderr


def test_full_size_layouts_match_the_released_models():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from gpu_check import sam2_large_config, sam3_tracker_config
    finally:
        sys.path.remove(str(SCRIPT.parent))
    from transformers import Sam2VideoModel, Sam3TrackerVideoModel

    from videomolmo.model import ModelConfig, VideoMolmo

    def params(make):
        with torch.device("meta"):
            return sum(p.numel() for p in make().parameters())

    assert params(lambda: Sam2VideoModel(sam2_large_config())) == pytest.approx(224.4e6, rel=1e-3)  # sam2.1-hiera-large
    assert params(lambda: VideoMolmo(ModelConfig.from_name("videomolmo-7b"))) == pytest.approx(8.03e9, rel=2e-3)
    assert params(lambda: Sam3TrackerVideoModel(sam3_tracker_config())) > 4e8  # SAM3's ViT-L tracker
