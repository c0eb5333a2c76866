"""Every extension point is a registry: an entry registered at runtime reaches the CLI untouched."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from conftest import write_frames
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


# --------------------------------------------------------------------------- mask backends


class _DiskPredictor:
    """A throwaway backend: a fixed disk around each positive point, the same on every frame."""

    name = "disk-test"

    def __init__(self, radius: int = 3):
        from videomolmo.segmentation.predictor import PredictorState

        self.radius = radius
        self.calls = 0
        self._state = PredictorState

    def _disk(self, shape, pts):
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        m = np.zeros(shape, bool)
        for x, y in np.asarray(pts).reshape(-1, 2):
            m |= (xx - x) ** 2 + (yy - y) ** 2 <= self.radius**2
        return m

    def init_state(self, video):
        from videomolmo.video import open_video

        return self._state(open_video(video))

    def add_points(self, state, frame_idx, obj_id, points, labels=None):
        self.calls += 1
        frame = state.video[frame_idx]
        m = self._disk(frame.shape[:2], points)
        state.masks.setdefault(frame_idx, {})[obj_id] = m
        state.prompts.setdefault(frame_idx, {})[obj_id] = (np.asarray(points), labels)
        return m

    def propagate(self, state, start_frame, end_frame, reverse=False):
        (f0, objs), = [(f, o) for f, o in state.masks.items()]
        step = -1 if reverse else 1
        for i in range(start_frame, end_frame + step, step):
            yield i, {o: m.copy() for o, m in objs.items()}

    def predict_image(self, frame, points, labels=None):
        return self._disk(frame.shape[:2], points)

    def reset_state(self, state):
        state.prompts.clear()
        state.masks.clear()


@pytest.fixture
def disk_backend(monkeypatch):
    from videomolmo.segmentation import registry

    made = []

    def factory(checkpoint=None, device="cpu", **options):
        made.append(_DiskPredictor())
        return made[-1]

    monkeypatch.setitem(registry.BACKENDS, "disk-test",
                        registry.Backend("disk-test", factory, "a fixed disk around each point"))
    return made


def _clip(tmp_path, n=6, h=24, w=32):
    frames = np.zeros((n, h, w, 3), np.uint8)
    frames[:, 8:16, 10:20] = 200
    return write_frames(tmp_path / "frames", frames)


def test_backend_registered_at_runtime_runs_exactly_in_segment_and_track(tmp_path, disk_backend):
    clip = _clip(tmp_path)
    pts = tmp_path / "pts.json"
    pts.write_text('{"0": [[15, 12]], "3": [[15, 12]]}')
    out = tmp_path / "masks"
    r = runner.invoke(app, ["segment", str(clip), "--points", str(pts), "--out", str(out), "--k", "3",
                            "--mask-backend", "disk-test"])
    assert r.exit_code == 0, r.output
    assert len(disk_backend) == 1 and disk_backend[0].calls >= 2  # the named backend, nothing else
    assert "disk-test backend" in r.output
    from videomolmo.masks import read_mask

    m = read_mask(out / "00001.png") > 0
    assert m.sum() == 29 and m[12, 15]  # a radius-3 disk is 29 pixels: the disk, not a GrabCut blob
    r = runner.invoke(app, ["track", str(clip), "-q", "x", "--points", str(pts), "--k", "3",
                            "--mask-backend", "disk-test", "--out", str(tmp_path / "t"), "--no-overlay"])
    assert r.exit_code == 0, r.output
    assert len(disk_backend) == 2
    assert (read_mask(tmp_path / "t" / "masks" / "00004.png") > 0).sum() == 29


def test_unknown_backend_is_refused_listing_the_registry(tmp_path):
    from videomolmo.segmentation.registry import backend_names

    clip = _clip(tmp_path)
    pts = tmp_path / "pts.json"
    pts.write_text('{"0": [[15, 12]]}')
    for cmd in (["segment", str(clip), "--points", str(pts), "--out", str(tmp_path / "m")],
                ["track", str(clip), "-q", "x", "--out", str(tmp_path / "t")],
                ["annotate", str(tmp_path), "--out", str(tmp_path / "a.jsonl")]):
        r = runner.invoke(app, cmd + ["--mask-backend", "nope"])
        assert r.exit_code == 2, (cmd, r.output)
        assert "unknown mask backend 'nope'" in r.output and all(n in r.output for n in backend_names())


@pytest.mark.parametrize("name", sorted(__import__("videomolmo.segmentation.registry",
                                                   fromlist=["BACKENDS"]).BACKENDS))
def test_every_registered_backend_is_offered_by_every_command(name):
    for cmd in ("track", "segment", "annotate", "eval", "serve"):
        r = runner.invoke(app, [cmd, "--help"], terminal_width=400)
        assert "--mask-backend" in r.output and name in r.output, (cmd, name)


# --------------------------------------------------------------------------- pointers


def test_pointer_registered_at_runtime_runs_through_point_and_track(tmp_path, monkeypatch):
    from videomolmo import pointers

    class CenterPointer(pointers.Pointer):
        """Always the frame centre."""

        def point(self, video, query, frames, l=None, progress=None):
            return {i: np.array([[video.width / 2, video.height / 2]]) for i in frames}

    monkeypatch.setitem(pointers.POINTERS, "center-test", CenterPointer)
    clip = _clip(tmp_path)
    r = runner.invoke(app, ["point", str(clip), "-q", "anything", "--pointer", "center-test", "--k", "2"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"0": [[16.0, 12.0]], "2": [[16.0, 12.0]], "4": [[16.0, 12.0]]}
    r = runner.invoke(app, ["track", str(clip), "-q", "anything", "--pointer", "center-test", "--k", "3",
                            "--out", str(tmp_path / "t"), "--no-overlay"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "t" / "points.jsonl").read_text()) == {"0": [[16.0, 12.0]], "3": [[16.0, 12.0]]}
    r = runner.invoke(app, ["count", str(clip), "-q", "anything", "--pointer", "nope"])
    assert r.exit_code == 2 and "unknown pointer 'nope'" in r.output and "center-test" in r.output


# --------------------------------------------------------------------------- fusion strategies


def test_fusion_strategy_registered_at_runtime_runs_through_segment(tmp_path, monkeypatch):
    from videomolmo import fusion

    seen = []

    def empty(f, b, ctx):
        seen.append(ctx.tau)
        return np.zeros_like(f)

    monkeypatch.setitem(fusion.STRATEGIES, "empty-test", empty)
    clip = _clip(tmp_path)
    pts = tmp_path / "pts.json"
    pts.write_text('{"0": [[15, 12]], "3": [[15, 12]]}')
    r = runner.invoke(app, ["segment", str(clip), "--points", str(pts), "--out", str(tmp_path / "m"), "--k", "3",
                            "--fusion", "empty-test", "--tau", "0.4"])
    assert r.exit_code == 0, r.output
    from videomolmo.masks import read_mask

    assert seen and set(seen) == {0.4}
    assert not read_mask(tmp_path / "m" / "00001.png").any() and read_mask(tmp_path / "m" / "00000.png").any()


# --------------------------------------------------------------------------- one source of defaults


def _literal_defaults(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for every constant given as the default of a k / tau / l: function arguments,
    dataclass fields and typer options named --k / --tau / --l."""
    names = {"k", "tau", "l"}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            args = node.args
            pos = args.posonlyargs + args.args
            for arg, default in zip(pos[len(pos) - len(args.defaults):], args.defaults):
                if arg.arg in names and isinstance(default, ast.Constant) and default.value is not None:
                    found.append((default.lineno, f"{arg.arg}={default.value!r}"))
            for arg, default in zip(args.kwonlyargs, args.kw_defaults):
                if arg.arg in names and isinstance(default, ast.Constant) and default.value is not None:
                    found.append((default.lineno, f"{arg.arg}={default.value!r}"))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id in names:
            if isinstance(node.value, ast.Constant) and node.value.value is not None:
                found.append((node.lineno, f"{node.target.id}: ... = {node.value.value!r}"))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Option" and node.args:
            flags = {a.value for a in node.args[1:] if isinstance(a, ast.Constant)}
            if flags & {"--k", "--tau", "--l"} and isinstance(node.args[0], ast.Constant):
                found.append((node.lineno, f"typer.Option({node.args[0].value!r}, {sorted(flags)})"))
    return found


def test_no_literal_default_for_k_tau_l_outside_settings():
    """k (anchor stride), tau and l get their defaults from `settings.PipelineConfig` only."""
    src = Path(__file__).resolve().parents[1] / "src" / "videomolmo"
    offenders = [f"{path.relative_to(src)}:{line}: {what}"
                 for path in sorted(src.rglob("*.py")) if path.name != "settings.py"
                 for line, what in _literal_defaults(ast.parse(path.read_text()))]
    assert not offenders, "\n".join(offenders)


def test_the_defaults_check_catches_a_literal():
    code = "def f(x, k=5):\n    pass\n@dataclass\nclass C:\n    tau: float = 0.7\nopt = typer.Option(4, '--l')\n"
    assert [w for _, w in _literal_defaults(ast.parse(code))] == ["k=5", "tau: ... = 0.7", "typer.Option(4, ['--l'])"]


def test_importing_the_cli_does_not_import_torch():
    code = "import sys, videomolmo.cli; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_inference_never_imports_training():
    code = ("import sys, numpy as np; from videomolmo.pipeline import Pipeline; "
            "p = Pipeline.from_pretrained(); r = p.point(np.zeros((3, 32, 32, 3), np.uint8), 'x', k=2); "
            "sys.exit(1 if any(m.startswith('videomolmo.training') for m in sys.modules) else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("mode", __import__("videomolmo.model.point_head", fromlist=["POINT_DECODES"]).POINT_DECODES)
def test_every_point_decode_is_offered_by_eval(mode):
    r = runner.invoke(app, ["eval", "--help"], terminal_width=400)
    assert "--point-decode" in r.output and f"{mode} (" in r.output, mode
