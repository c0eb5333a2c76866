"""The per-frame fusion rule and the ablation strategies (videomolmo.fusion)."""

from __future__ import annotations

import numpy as np
import pytest

from videomolmo.errors import ConfigError, MaskError, VideoMolmoError
from videomolmo.fusion import (
    STRATEGIES,
    FusionContext,
    fuse,
    get_strategy,
    mask_iou,
    needs_backward,
    strategy_names,
)


def rect(x0: int, x1: int, shape=(4, 10)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[:, x0:x1] = True
    return m


# forward covers columns 0..5 (24 px), backward 2..7 (24 px): overlap 4 cols, union 8 -> IoU 0.5
F = rect(0, 6)
B = rect(2, 8)
EMPTY = np.zeros((4, 10), bool)


def test_iou_of_the_fixture():
    assert mask_iou(F, B) == pytest.approx(0.5)
    assert mask_iou(EMPTY, EMPTY) == 1.0


@pytest.mark.parametrize(
    "tau, expected",
    [
        (0.0, F & B),  # tau 0 always intersects
        (0.49, F & B),
        (0.5, F & B),  # boundary: IoU >= tau intersects
        (0.51, F | B),
        (0.7, F | B),
        (1.0, F | B),
    ],
)
def test_fuse_threshold(tau, expected):
    out = fuse(F, B, tau)
    assert out.dtype == bool and out.shape == F.shape
    np.testing.assert_array_equal(out, expected)


def test_fuse_identical_masks_are_kept_at_tau_one():
    np.testing.assert_array_equal(fuse(F, F.copy(), 1.0), F)


@pytest.mark.parametrize(
    "fwd, bwd, expected",
    [
        (F, None, F),
        (None, B, B),
        (F, EMPTY, F),
        (EMPTY, B, B),
        (EMPTY, EMPTY, EMPTY),
        (EMPTY, None, EMPTY),
    ],
)
def test_fuse_one_sided(fwd, bwd, expected):
    out = fuse(fwd, bwd, 0.7)
    np.testing.assert_array_equal(out, expected)
    # a fresh array: never an alias of an input
    assert out is not fwd and out is not bwd


def test_fuse_both_none_is_none():
    assert fuse(None, None, 0.7) is None


def test_fuse_does_not_modify_inputs():
    f, b = F.copy(), B.copy()
    fuse(f, b, 0.3)
    fuse(f, b, 0.9)
    np.testing.assert_array_equal(f, F)
    np.testing.assert_array_equal(b, B)


def test_fuse_accepts_uint8_masks():
    out = fuse(F.astype(np.uint8) * 255, B.astype(np.uint8), 0.9)
    assert out.dtype == bool
    np.testing.assert_array_equal(out, F | B)


def test_fuse_bad_input():
    with pytest.raises(MaskError, match="does not match"):
        fuse(F, np.zeros((5, 10), bool), 0.7)
    with pytest.raises(MaskError, match="2-D"):
        fuse(np.zeros((2, 2, 2), bool), None, 0.7)
    for tau in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="tau"):
            fuse(F, B, tau)


def ctx(df=1, db=4, tau=0.7):
    return FusionContext(tau=tau, dist_forward=df, dist_backward=db)


SMALL = rect(0, 3)  # 12 px, inside F
BIG = rect(0, 9)  # 36 px


@pytest.mark.parametrize(
    "name, fwd, bwd, c, expected",
    [
        ("bidirectional", F, B, ctx(tau=0.5), F & B),
        ("bidirectional", F, B, ctx(tau=0.6), F | B),
        ("forward", F, B, ctx(), F),
        ("forward", EMPTY, B, ctx(), EMPTY),  # forward-only never looks back
        ("prefer-left", F, B, ctx(), F),
        ("prefer-left", EMPTY, B, ctx(), B),
        ("prefer-left", None, B, ctx(), B),
        ("prefer-right", F, B, ctx(), B),
        ("prefer-right", F, EMPTY, ctx(), F),
        ("prefer-right", F, None, ctx(), F),
        ("intersection", F, B, ctx(), F & B),
        ("intersection", F, EMPTY, ctx(), F),
        ("union", F, B, ctx(), F | B),
        ("larger", SMALL, BIG, ctx(), BIG),
        ("larger", BIG, SMALL, ctx(), BIG),
        ("larger", F, B, ctx(), F),  # equal area: forward
        ("smaller", SMALL, BIG, ctx(), SMALL),
        ("smaller", BIG, SMALL, ctx(), SMALL),
        ("smaller", EMPTY, BIG, ctx(), BIG),  # an empty side is "lost", not "smallest"
        ("nearest", F, B, ctx(df=1, db=4), F),
        ("nearest", F, B, ctx(df=4, db=1), B),
        ("nearest", F, B, ctx(df=2, db=2), F),  # halfway: forward
        ("nearest", EMPTY, B, ctx(df=1, db=4), B),
        ("nearest", F, None, ctx(df=3, db=None), F),
        # confidence: the paper's intersection when the sides agree ...
        ("confidence", F, B, FusionContext(tau=0.5, dist_forward=1, dist_backward=4,
                                           score_forward=0.1, score_backward=0.9), F & B),
        # ... the union when they disagree and are trusted alike ...
        ("confidence", F, B, FusionContext(tau=0.7, dist_forward=2, dist_backward=3,
                                           score_forward=0.5, score_backward=0.9), F | B),
        # ... the far more trusted side (score per frame of distance) otherwise
        ("confidence", F, B, FusionContext(tau=0.7, dist_forward=2, dist_backward=2,
                                           score_forward=0.05, score_backward=0.9), B),
        ("confidence", F, B, FusionContext(tau=0.7, dist_forward=1, dist_backward=4,
                                           score_forward=0.9, score_backward=0.5), F),
        # no scores: distance alone (1 vs 9 frames: the near side; 1 vs 4: both)
        ("confidence", F, B, ctx(df=1, db=9), F),
        ("confidence", F, B, ctx(df=9, db=1), B),
        ("confidence", F, B, ctx(df=1, db=4), F | B),
        ("confidence", F, EMPTY, FusionContext(tau=0.7, dist_forward=1, dist_backward=1,
                                               score_forward=0.0, score_backward=1.0), F),
    ],
)
def test_strategies(name, fwd, bwd, c, expected):
    out = get_strategy(name)(fwd, bwd, c)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_handles_missing_sides(name):
    s = get_strategy(name)
    assert s(None, None, ctx()) is None
    out = s(EMPTY, EMPTY, ctx())
    assert out.shape == EMPTY.shape and not out.any()
    np.testing.assert_array_equal(s(F, None, FusionContext(tau=0.7, dist_forward=2)), F)


def test_registry():
    names = strategy_names()
    assert names[0] == "bidirectional"
    assert set(names) >= {
        "bidirectional", "forward", "prefer-left", "prefer-right", "intersection",
        "union", "larger", "smaller", "nearest", "confidence",
    }
    assert not needs_backward("forward") and needs_backward("nearest")
    with pytest.raises(VideoMolmoError, match="unknown fusion strategy 'avg'.*bidirectional"):
        get_strategy("avg")
