"""The count-decision loss weight: which answer tokens decide the point count, the weighted loss
against the plain one, and the trainer option."""

import json

import numpy as np
import pytest
import torch

from videomolmo.errors import ConfigError
from videomolmo.model import IGNORE_INDEX, ModelConfig, Processor, VideoMolmo, build_tokenizer, collate
from videomolmo.points import NO_POINTS_TEXT, format_points_percent
from videomolmo.training.count_decisions import decision_offsets, decision_weights, weighted_answer_loss
from videomolmo.training.trainer import TrainConfig, train

torch.set_num_threads(1)


def _chars(text):
    return [text[o] for o in decision_offsets(text)]


def test_decisions_are_the_first_char_the_plural_s_and_each_continue_or_close():
    three = format_points_percent([[10, 20], [30, 40], [50, 60]], label="circles")
    assert _chars(three) == ["<", "s", "x", "x", "a"]
    two = format_points_percent([[10, 20], [30, 40]], label="circles")
    assert _chars(two) == ["<", "s", "x", "a"]
    one = format_points_percent([[10, 20]], label="circle")
    assert _chars(one) == ["<", " "]  # '<point ' rather than '<points': one point, decided
    assert _chars(NO_POINTS_TEXT) == [NO_POINTS_TEXT[0]]
    assert decision_offsets("") == [] and _chars(" " + one) == ["<", " "]


def _batch(answers):
    cfg = ModelConfig.from_name("test-tiny")
    tok = build_tokenizer(cfg)
    proc = Processor(cfg, tok)
    img = np.zeros((cfg.vision.image_size, cfg.vision.image_size, 3), np.uint8)
    ctx = [img] * cfg.context_frames
    exs = [proc(img, ctx, "how many circles are there?", a) for a in answers]
    return cfg, tok, collate(exs, tok.pad_token_id, padding_side="right")


def test_weights_mark_exactly_the_decision_tokens_of_each_row():
    answers = [format_points_percent([[10, 20], [30, 40], [50, 60]], label="circles"), NO_POINTS_TEXT]
    _, tok, batch = _batch(answers)
    w = decision_weights(batch["labels"], tok, 5.0)
    labelled = batch["labels"] != IGNORE_INDEX
    assert (w[~labelled] == 0).all()
    for b, text in enumerate(answers):
        ids = batch["labels"][b][labelled[b]].tolist()
        heavy = [tok.decode([i]) for i, x in zip(ids, w[b][labelled[b]].tolist()) if x == 5.0]
        assert heavy == _chars(text)
        assert (w[b][labelled[b]] != 5.0).sum() == labelled[b].sum() - len(heavy)
    with pytest.raises(ConfigError):
        decision_weights(batch["labels"], tok, -1.0)


class _PairTokenizer:
    """Two characters a token, as a BPE vocabulary merges them: decisions fall inside tokens."""

    eos_token_id = 10**6

    def __init__(self, text):
        self.pieces = [text[i:i + 2] for i in range(0, len(text), 2)]

    def decode(self, ids):
        return "".join(self.pieces[i] for i in ids)


def test_a_multi_character_token_holding_a_decision_is_a_decision_token():
    text = " " + format_points_percent([[10, 20], [30, 40]], label="circles")
    tok = _PairTokenizer(text)
    labels = torch.tensor([[IGNORE_INDEX, *range(len(tok.pieces))]])
    w = decision_weights(labels, tok, 4.0)[0, 1:]
    marked = [tok.pieces[i] for i in range(len(tok.pieces)) if w[i] == 4.0]
    expected = sorted({o // 2 for o in decision_offsets(text)})
    assert marked == [tok.pieces[i] for i in expected]
    assert len(marked) == 4 and all(c in "".join(marked) for c in "<sxa")


def test_weighted_loss_is_the_plain_loss_at_weight_one_and_grows_with_the_decisions():
    cfg, tok, batch = _batch([format_points_percent([[10, 20], [30, 40], [50, 60]], label="circles")])
    torch.manual_seed(0)
    model = VideoMolmo(cfg).eval()
    with torch.no_grad():
        out = model(**batch)
    ones = decision_weights(batch["labels"], tok, 1.0)
    plain = weighted_answer_loss(out.logits, batch["labels"], ones)
    assert torch.allclose(plain, out.loss, atol=1e-6)
    # Weight w adds (w - 1) x the decision tokens' summed CE over the labelled-token count.
    heavy = weighted_answer_loss(out.logits, batch["labels"], decision_weights(batch["labels"], tok, 3.0))
    only = decision_weights(batch["labels"], tok, 0.0)
    non_decision = weighted_answer_loss(out.logits, batch["labels"], only)
    decision_part = plain - non_decision
    assert float(decision_part) > 0
    assert torch.allclose(heavy, non_decision + 3.0 * decision_part, atol=1e-5)


def test_train_with_a_count_weight_records_it_and_changes_the_update(tmp_path):
    a = train(TrainConfig.from_name("test", steps=2, checkpoint_every=2), tmp_path / "a", progress=False)
    b = train(TrainConfig.from_name("test", steps=2, checkpoint_every=2, count_weight=10.0), tmp_path / "b",
              progress=False)
    assert json.loads((tmp_path / "b" / "train_config.json").read_text())["count_weight"] == 10.0
    diff = max(float((p - q).detach().abs().max()) for p, q in zip(a.model.parameters(), b.model.parameters()))
    assert diff > 0
    with pytest.raises(ConfigError):
        TrainConfig.from_name("test", count_weight=-1.0)
