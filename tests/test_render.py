"""Overlay rendering: tints, stars, outlines, captions, mp4 and contact sheets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from videomolmo import render
from videomolmo.errors import VideoMolmoError


def _frame(h=96, w=128, value=100):
    return np.full((h, w, 3), value, dtype=np.uint8)


def test_mask_is_tinted_in_its_object_colour_and_background_untouched():
    f = _frame()
    m = np.zeros((96, 128), bool)
    m[30:60, 40:80] = True
    out = render.overlay_frame(f, {2: m}, style=render.OverlayStyle(caption=False, contour_px=1))
    inside = out[45, 60].astype(int)
    expected = (1 - 0.45) * 100 + 0.45 * np.array(render.color_for(2))
    assert np.abs(inside - expected).max() <= 1
    assert (out[5, 5] == 100).all() and (out[90, 120] == 100).all()
    assert f[45, 60, 0] == 100  # input not modified


def test_object_id_map_gets_one_colour_per_object():
    ids = np.zeros((96, 128), np.uint8)
    ids[10:40, 10:40] = 1
    ids[50:90, 70:120] = 3
    out = render.overlay_frame(_frame(), ids, style=render.OverlayStyle(caption=False))
    assert not np.array_equal(out[25, 25], out[70, 95])


def test_star_drawn_at_point_and_gt_outline_on_boundary():
    f = _frame(value=0)
    gt = np.zeros((96, 128), bool)
    gt[20:70, 20:100] = True
    out = render.overlay_frame(
        f, None, np.array([[64.0, 45.0]]), gt_mask=gt, style=render.OverlayStyle(caption=False, star_radius=8)
    )
    assert tuple(out[45, 64]) == render.STAR_COLOR
    assert (out[20, 60] > 200).all()  # white outline on the top edge
    assert (out[45, 45] == 0).all()  # interior of gt untouched


def test_caption_changes_top_band_only_and_handles_unicode_and_long_text():
    f = _frame()
    out = render.overlay_frame(f, frame_idx=7, query="die Katze 🐈 " + "x" * 10_000)
    assert out.shape == f.shape
    assert not np.array_equal(out[:8], f[:8])
    assert np.array_equal(out[60:], f[60:])


def test_bad_shapes_raise():
    with pytest.raises(VideoMolmoError):
        render.overlay_frame(_frame(), np.zeros((10, 10), bool))
    with pytest.raises(VideoMolmoError):
        render.overlay_frame(np.zeros((4, 4), np.uint8))


def test_sample_indices():
    assert render.sample_indices(10, 4) == [0, 3, 6, 9]
    assert render.sample_indices(3, 8) == [0, 1, 2]
    assert render.sample_indices(0, 8) == []


def test_render_writes_mp4_and_sheet_streaming(tmp_path: Path):
    import av

    def items():
        for i in range(12):
            m = np.zeros((61, 81), bool)  # odd size: cropped to even for yuv420p
            m[10:30, i : i + 20] = True
            yield render.OverlayFrame(_frame(61, 81, 50 + i), i, m, np.array([[i + 10.0, 20.0]]))

    res = render.render(items(), tmp_path / "o.mp4", tmp_path / "s.png", query="a box", num_frames=12, fps=10)
    assert res["frames"] == 12
    with av.open(str(tmp_path / "o.mp4")) as c:
        decoded = [fr.to_ndarray(format="rgb24") for fr in c.decode(video=0)]
    assert len(decoded) == 12 and decoded[0].shape[:2] in ((360, 480), (366, 486))
    from PIL import Image

    sheet = np.asarray(Image.open(tmp_path / "s.png"))
    assert sheet.ndim == 3 and sheet.shape[1] > 80
    assert not list(tmp_path.glob(".*partial*"))


def test_empty_stream_leaves_no_video(tmp_path: Path):
    with pytest.raises(VideoMolmoError):
        render.write_overlay_video(tmp_path / "o.mp4", iter([]))
    assert list(tmp_path.iterdir()) == []


def test_mask_colour_contrasts_with_the_scene():
    """A blue sprite on a blue clip is not tinted blue (the demo's mask was invisible)."""
    from videomolmo.render import CONTRAST_COLORS, STAR_COLOR, contrast_color

    frame = np.zeros((60, 80, 3), np.uint8)
    frame[:] = (40, 60, 200)
    mask = np.zeros((60, 80), bool)
    mask[20:40, 30:50] = True
    c = np.array(contrast_color(frame, mask))
    assert np.linalg.norm(c - np.array([40, 60, 200])) > 200
    assert tuple(c) != STAR_COLOR and STAR_COLOR not in CONTRAST_COLORS
    # A second object gets a different colour.
    assert contrast_color(frame, mask, avoid=[tuple(c)]) != tuple(c)


def test_short_clips_play_at_a_watchable_rate():
    from videomolmo.render import watchable_fps

    assert watchable_fps(12, 30) * 3 <= 12 + 1e-9  # 12 frames last at least 3 s
    assert watchable_fps(300, 25) == 25  # long videos keep their own rate
    assert watchable_fps(2, 30) == 2


def test_render_sheet_has_a_legend_and_ground_truth(tmp_path):
    from PIL import Image

    from videomolmo import render

    frames = [np.full((120, 160, 3), (30, 60, 200), np.uint8) for _ in range(4)]
    mask = np.zeros((120, 160), bool)
    mask[30:80, 40:100] = True
    gt = np.zeros((120, 160), bool)
    gt[20:90, 30:110] = True
    items = [render.OverlayFrame(f, i, mask, np.array([[70.0, 55.0]]), gt) for i, f in enumerate(frames)]
    res = render.render(items, video_path=tmp_path / "o.mp4", sheet_path=tmp_path / "o.png", query="q",
                        fps=30, num_frames=4, min_short_side=120)
    sheet = np.asarray(Image.open(res["sheet"]).convert("RGB"))
    plain = render.contact_sheet([render.overlay_frame(f) for f in frames[:4]], cols=4,
                                 tile_width=min(320, 160))
    assert sheet.shape[0] > plain.shape[0]  # the legend band below the tiles
    band = sheet[plain.shape[0]:]
    # The legend's swatch shows the chosen mask colour, its outline the ground truth's white.
    tint = render.contrast_color(frames[0], mask)
    assert (np.abs(band.astype(int) - np.array(tint)).sum(axis=2) < 30).any()
    assert (band == 255).all(axis=2).any()
    import av

    with av.open(str(res["video"])) as c:
        assert float(c.streams.video[0].average_rate) <= 4 / 3 + 1e-6 or c.streams.video[0].average_rate == 2
