"""`videomolmo info`: meta-device parameter counts."""

from __future__ import annotations

from typer.testing import CliRunner

from videomolmo.cli import app


def test_info_molmo_7b_d_counts_8_03_billion():
    res = CliRunner().invoke(app, ["info", "--preset", "molmo-7b-d"])
    assert res.exit_code == 0, res.output
    assert "8,029,413,888" in res.output  # Molmo-7B-D (8.02 B) + temporal module (8.39 M)
    assert "8,388,608" in res.output


def test_info_tiny_and_bad_preset():
    runner = CliRunner()
    res = runner.invoke(app, ["info", "--preset", "tiny"])
    assert res.exit_code == 0 and "MB fp32" in res.output
    bad = runner.invoke(app, ["info", "--preset", "nope"])
    assert bad.exit_code == 2
    assert "unknown model preset" in bad.output


def test_info_describes_the_bundled_model_as_shipped():
    import json

    from videomolmo.bundled import CONFIG, assets_dir

    shipped = json.loads((assets_dir() / CONFIG).read_text())
    res = CliRunner().invoke(app, ["info", "--checkpoint", "bundled"])
    assert res.exit_code == 0, res.output
    head = shipped["model"]["point_head"]
    assert ("patch selection" in res.output) == (head == "patch")
    assert f"step {shipped['training']['step']}" in res.output
