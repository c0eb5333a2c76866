"""Every extension point is a registry: an entry registered at runtime reaches the CLI untouched."""

from __future__ import annotations

import torch
from torch import nn
from typer.testing import CliRunner

from videomolmo.cli import app
from videomolmo.model import from_pretrained
from videomolmo.model import temporal as temporal_mod

runner = CliRunner()


def test_temporal_variant_registered_at_runtime_trains_saves_and_reloads(tmp_path, monkeypatch):
    class Gated(temporal_mod.TemporalBase):
        # The minimal variant of the module docstring: __init__ and forward only.
        def __init__(self, config):
            super().__init__(config)
            self.proj = nn.Linear(config.vision.feature_dim, config.vision.feature_dim)

        def forward(self, x, ctx):
            return x + torch.sigmoid(self.proj(ctx)) * ctx

    monkeypatch.setitem(temporal_mod.TEMPORAL_MODULES, "gated-test", Gated)
    Gated.name = "gated-test"
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--preset", "test", "--temporal", "gated-test", "--steps", "1",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    model = from_pretrained(out / "final")
    assert model.config.temporal == "gated-test"
    assert isinstance(model.temporal, Gated)
    assert any(k.startswith("temporal.proj.") for k in model.state_dict())


def test_unknown_temporal_variant_is_one_line_listing_the_registry(tmp_path):
    r = runner.invoke(app, ["train", "--preset", "test", "--temporal", "nope", "--steps", "1",
                            "--out", str(tmp_path / "run")])
    assert r.exit_code == 2
    assert "unknown temporal module 'nope'" in r.output
    for name in temporal_mod.TEMPORAL_MODULES:
        assert name in r.output
    assert "Traceback" not in r.output
