"""Patch-selection pointing (`model/point_head.py`): decoding, the frame mapping, the model
option, training and shipping the head, and reading points out both ways."""

import numpy as np
import pytest
import torch

from videomolmo.errors import ConfigError
from videomolmo.model import ModelConfig, Processor, VideoMolmo, build_tokenizer
from videomolmo.model.checkpoint import from_pretrained
from videomolmo.model.point_head import check_point_decode, patch_points, select_points
from videomolmo.model.pointing import point_video
from videomolmo.model.preprocess import content_fraction, padded_to_frame, resize_and_pad
from videomolmo.training.trainer import TrainConfig, train

from conftest import FLAT

torch.set_num_threads(1)


def test_select_points_takes_groups_strongest_first_at_their_weighted_centre():
    cov = np.zeros((8, 8))
    cov[1, 1] = cov[1, 2] = 0.9           # a two-patch group, centre between the patches
    cov[5:7, 5:7] = [[1.0, 1.0], [1.0, 0.6]]  # the stronger group, pulled up-left
    cov[0, 7] = 0.3                         # below the threshold: never selected
    pts = select_points(cov, 3, patch_size=14)
    assert pts.shape == (2, 2)  # only two groups exist
    w = np.array([1.0, 1.0, 1.0, 0.6])
    cx = ((np.array([5, 6, 5, 6]) + 0.5) * w).sum() / w.sum() * 14
    cy = ((np.array([5, 5, 6, 6]) + 0.5) * w).sum() / w.sum() * 14
    np.testing.assert_allclose(pts[0], [cx, cy])
    np.testing.assert_allclose(pts[1], [2.0 * 14, 1.5 * 14])
    assert len(select_points(cov, 1, 14)) == 1 and len(select_points(cov, 0, 14)) == 0
    assert len(select_points(np.zeros((8, 8)), 2, 14)) == 0
    with pytest.raises(ConfigError, match="grid"):
        select_points(np.zeros(64), 1, 14)


@pytest.mark.parametrize("hw", [(480, 854), (854, 480), (112, 112), (37, 200)])
def test_padded_to_frame_inverts_the_letterbox(hw):
    h, w = hw
    y, x = int(h * 0.3), int(w * 0.7)
    frame = np.zeros((h, w, 1), dtype=np.uint8)
    frame[max(0, y - 2):y + 3, max(0, x - 2):x + 3] = 255
    img, _ = resize_and_pad(frame, (112, 112))
    ys, xs = np.nonzero(img[..., 0] > 0.2)
    back = padded_to_frame(np.array([[xs.mean() + 0.5, ys.mean() + 0.5]]), (h, w), 112)[0]
    # Within a resized pixel of where the mark was.
    assert abs(back[0] - (x + 0.5)) <= max(3.0, w / 112 * 1.5)
    assert abs(back[1] - (y + 0.5)) <= max(3.0, h / 112 * 1.5)


def test_patch_points_keep_the_texts_count_and_fill_from_the_text():
    cov = np.zeros((8, 8))
    cov[2, 2] = 1.0
    text = np.array([[10.0, 10.0], [100.0, 100.0], [33.0, 40.0]])
    out = patch_points(cov.reshape(1, 64), text, (112, 112), 112, 14)
    assert out.shape == (3, 2)
    np.testing.assert_allclose(out[0], [35.0, 35.0])
    # The selected group stands for the text point nearest to it ((33, 40)); the others stay.
    assert {tuple(p) for p in out[1:]} == {(10.0, 10.0), (100.0, 100.0)}
    assert patch_points(cov, np.zeros((0, 2)), (112, 112), 112, 14).shape == (0, 2)  # "none" stays none
    # patch-count: the selection decides how many too.
    cov[6, 6] = 0.8
    counted = patch_points(cov, np.zeros((0, 2)), (112, 112), 112, 14, count_from_selection=True)
    np.testing.assert_allclose(counted, [[35.0, 35.0], [91.0, 91.0]])
    assert patch_points(np.zeros((8, 8)), text, (112, 112), 112, 14, count_from_selection=True).shape == (0, 2)


def test_patch_extra_adds_the_groups_the_text_missed_and_keeps_none():
    cov = np.zeros((8, 8))
    cov[2, 2] = 1.0   # the group the text's one point lands on
    cov[2, 3] = 0.6   # same group (adjacent): never a second point
    cov[6, 6] = 0.8   # a second look-alike the text did not count
    cov[0, 7] = 0.55  # a third, weaker
    one = np.array([[40.0, 35.0]])
    plain = patch_points(cov, one, (112, 112), 112, 14)
    assert plain.shape == (1, 2)
    extra = patch_points(cov, one, (112, 112), 112, 14, extra_threshold=0.5)
    assert extra.shape == (3, 2)
    np.testing.assert_allclose(extra[0], plain[0])
    np.testing.assert_allclose(extra[1:], [[91.0, 91.0], [105.0, 7.0]])
    # A stricter threshold keeps only the surer look-alike.
    assert patch_points(cov, one, (112, 112), 112, 14, extra_threshold=0.7).shape == (2, 2)
    # "none" stays "none": the text decides whether there is anything at all.
    assert patch_points(cov, np.zeros((0, 2)), (112, 112), 112, 14, extra_threshold=0.5).shape == (0, 2)
    # A text point already standing on a group is not doubled by it.
    two = np.array([[40.0, 35.0], [91.0, 91.0]])
    assert patch_points(cov, two, (112, 112), 112, 14, extra_threshold=0.5).shape == (3, 2)


def test_a_head_model_reads_patch_extra_by_default_a_text_model_its_digits():
    from videomolmo.model.point_head import resolve_point_decode

    assert resolve_point_decode(None, ModelConfig.from_name("test-tiny", **FLAT, point_head="patch")) == "patch-extra"
    assert resolve_point_decode(None, ModelConfig.from_name("test-tiny", **FLAT)) == "text"
    with pytest.raises(ConfigError, match="no patch pointing head"):
        resolve_point_decode("patch-extra", ModelConfig.from_name("test-tiny", **FLAT))


def test_patch_points_never_select_letterbox_padding():
    # A 2:1 frame fills rows 28..83 of the 112 px square: patch rows 0-1 and 6-7 are padding.
    assert content_fraction((240, 480), 112, 14)[:, 0].tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
    cov = np.zeros((8, 8))
    cov[0, 3] = 0.95  # the head's strongest patch lies in the padding
    cov[4, 5] = 0.7
    out = patch_points(cov, np.array([[1.0, 1.0]]), (240, 480), 112, 14)
    # The point comes from the real patch, mapped into the frame (x 5.5 * 14 px, y 4.5 * 14 px).
    np.testing.assert_allclose(out, padded_to_frame(np.array([[77.0, 63.0]]), (240, 480), 112))
    assert patch_points(cov, np.zeros((0, 2)), (240, 480), 112, 14, count_from_selection=True).shape == (1, 2)


def test_the_option_needs_one_token_per_patch_and_the_decode_needs_the_head():
    with pytest.raises(ConfigError, match="one token per patch"):
        ModelConfig.from_name("test-tiny", point_head="patch")
    with pytest.raises(ConfigError, match="point_head"):
        ModelConfig.from_name("test-tiny", **FLAT, point_head="digits")
    text_cfg = ModelConfig.from_name("test-tiny", **FLAT)
    with pytest.raises(ConfigError, match="no patch pointing head"):
        check_point_decode("patch", text_cfg)
    with pytest.raises(ConfigError, match="point decode"):
        check_point_decode("both", text_cfg)
    assert VideoMolmo(text_cfg).point_head is None


def _head_model(bias: float) -> tuple[VideoMolmo, Processor]:
    cfg = ModelConfig.from_name("test-tiny", **FLAT, point_head="patch")
    torch.manual_seed(0)
    model = VideoMolmo(cfg).eval()
    with torch.no_grad():
        model.point_head.proj.weight.zero_()
        model.point_head.proj.bias.fill_(bias)
    return model, Processor(cfg, build_tokenizer(cfg))


def test_generate_returns_the_heads_coverage_from_the_prompt_pass():
    from videomolmo.model import collate

    model, proc = _head_model(8.0)
    tok = proc.tokenizer
    ex = proc(np.zeros((56, 56, 3), dtype=np.uint8), [np.zeros((56, 56, 3), dtype=np.uint8)] * 4, "the dot")
    batch = collate([ex, ex], tok.pad_token_id, padding_side="left")
    ids, cov = model.generate(batch, max_new_tokens=3, eos_token_id=tok.eos_token_id, return_coverage=True)
    assert cov.shape == batch["image_input_idx"].shape and len(ids) == 2
    assert bool((cov > 0.99).all())  # bias +8: every patch selected
    assert model.generate(batch, max_new_tokens=3, eos_token_id=tok.eos_token_id) == ids
    text_model = VideoMolmo(ModelConfig.from_name("test-tiny", **FLAT))
    with pytest.raises(ConfigError, match="no patch pointing head"):
        text_model.generate(batch, max_new_tokens=1, return_coverage=True)


def test_point_video_reads_points_from_the_selection(monkeypatch):
    """With every patch selected the selection is one group centred on the image; each point the
    text wrote is replaced by it (or kept where the selection ran out of groups)."""
    import videomolmo.model.pointing as pointing

    model, proc = _head_model(8.0)
    # A text answer with one point at the top-left, whatever the random decoder writes.
    monkeypatch.setattr(pointing, "parse_points", lambda text, w, h: np.array([[1.0, 2.0]]))
    video = np.zeros((6, 40, 80, 3), dtype=np.uint8)
    by_patch = point_video(model, proc, video, "the dot", frames=[4], max_new_tokens=2)
    by_text = point_video(model, proc, video, "the dot", frames=[4], max_new_tokens=2, point_decode="text")
    np.testing.assert_allclose(by_text.get(4), [[1.0, 2.0]])
    np.testing.assert_allclose(by_patch.get(4), [[40.0, 20.0]], atol=0.5)  # the frame's centre
    assert by_patch[0].text == by_text[0].text


def test_training_a_patch_head_model_ships_the_head(tmp_path):
    from safetensors.torch import load_file

    over = {**FLAT, "point_head": "patch"}
    with pytest.raises(ConfigError, match="grounding-weight"):
        train(TrainConfig.from_name("test", steps=1, model_overrides=over), tmp_path / "no", progress=False)
    cfg = TrainConfig.from_name("test", steps=3, checkpoint_every=2, model_overrides=over, grounding_weight=1.0)
    full = train(cfg, tmp_path / "a", progress=False)
    train(TrainConfig.from_name("test", steps=2, checkpoint_every=2, model_overrides=over, grounding_weight=1.0),
          tmp_path / "b", progress=False)
    resumed = train(cfg, tmp_path / "b", resume=True, progress=False)
    for (k, v), (k2, v2) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert k == k2 and torch.allclose(v, v2, atol=1e-6), k
    shipped = load_file(str(full.final / "model.safetensors"))
    assert {"point_head.proj.weight", "point_head.proj.bias"} <= set(shipped)
    assert not any(k.startswith("_grounding_head.") for k in shipped)
    loaded = from_pretrained(full.final)
    assert loaded.config.point_head == "patch"
    torch.testing.assert_close(loaded.point_head.proj.weight, full.model.point_head.proj.weight)


def test_a_head_on_a_frozen_text_model_learns_and_leaves_the_rest_unchanged(tmp_path):
    """The `tiny-point-head` recipe at test size: start from a text-pointing model, train only the
    new head; every other weight stays bit-identical."""
    base = train(TrainConfig.from_name("test", steps=1, model_overrides=FLAT), tmp_path / "base", progress=False)
    cfg = TrainConfig.from_name("test", steps=3, checkpoint_every=3, grounding_weight=1.0, lr_llm=1e-2,
                                model_overrides={**FLAT, "point_head": "patch"}, init=str(base.final),
                                freeze=("vision", "connector", "temporal", "llm"))
    res = train(cfg, tmp_path / "head", progress=False)
    before = base.model.state_dict()
    after = res.model.state_dict()
    assert set(after) - set(before) == {"point_head.proj.weight", "point_head.proj.bias"}
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    torch.manual_seed(cfg.seed)  # the run's own start: the same seed builds the same fresh head
    fresh = VideoMolmo(res.model.config)
    assert not torch.allclose(fresh.point_head.proj.weight, res.model.point_head.proj.weight)


def test_a_text_model_starts_from_a_checkpoint_with_a_head(tmp_path):
    """E.g. a Table-6 variant or the motion stage from the bundled file: the head has nowhere to go,
    every other weight loads."""
    from videomolmo.model import save_pretrained
    from videomolmo.training.trainer import load_model_weights

    torch.manual_seed(0)
    src = VideoMolmo(ModelConfig.from_name("test-tiny", **FLAT, point_head="patch"))
    save_pretrained(src, tmp_path / "m")
    text = VideoMolmo(ModelConfig.from_name("test-tiny", **FLAT))
    load_model_weights(text, tmp_path / "m")
    assert text.point_head is None
    for k, v in text.state_dict().items():
        assert torch.equal(v, src.state_dict()[k]), k
