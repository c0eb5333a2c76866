"""Where does the motion cue get lost? A linear probe of per-patch motion at every stage of the model.

`--target shape` asks the same of the owning sprite's shape (circle / square / triangle / star /
diamond) on `mix`-curriculum clips: the cue that counting and shape-only absent queries need.

The temporal module's training-only motion head reads a sprite's direction from the module's
output (~0.65-0.69 training accuracy), yet motion-only queries are answered no better than
picking a look-alike at random. This probes, on the same patches of fresh motion-preset clips,
how linearly readable the owning sprite's motion (left / right / up / down / still; background
patches skipped) is at each stage the answer is built from:

* `vision`: the frame's ViT features (the temporal module's input: no context);
* `temporal`: the temporal module's output (current frame + the l previous frames);
* `llm 0..L`: the decoder's hidden states at the image tokens (0 = the projected embeddings the
  connector hands the decoder; the patch head reads the middle layer).

One logistic-regression probe per stage, fitted on `--train-clips` clips and scored on
`--test-clips` other clips (different seeds), with the majority class as the floor. If the cue is
readable at `temporal` and gone by `llm 0`, the connector drops it; if it survives the decoder,
the answer and the head do not use what is there.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/diag_motion_layers.py --model runs/stage7-st/final
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def motion_batches(model, proc, seed: int, clips: int, batch: int, curriculum: str = "motion"):
    """Fresh `motion`-curriculum examples in the model's layout, `batch` at a time, each batch
    with its collated inputs (also `diag_query_head.py`'s data)."""
    from videomolmo.model.preprocess import collate
    from videomolmo.training.examples import Curriculum, SynthStream

    cfg = model.config
    stream = SynthStream(seed, 1, Curriculum.from_name(curriculum), context=cfg.context_frames,
                         size=cfg.clip_size, decimals=cfg.point_decimals)
    for step in range(max(1, clips // batch)):
        exs = stream.batch(batch, step)
        yield exs, collate([proc(e.frame, e.context, e.query, e.answer) for e in exs], proc.tokenizer.pad_token_id,
                           padding_side="right")


def features(model, proc, batches, target: str = "motion") -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-stage token features (N, C) and `target` labels (N,) of the owned patches."""
    from videomolmo.model.point_head import gather_image_tokens
    from videomolmo.model.temporal import from_windows
    from videomolmo.training.motion import motion_targets, stack_motion_targets

    grabbed: dict[str, torch.Tensor] = {}
    hook = model.temporal.register_forward_hook(
        lambda m, inp, out: grabbed.update(vision=inp[0].detach(), temporal=out.detach()))
    G = model.config.vision.grid
    feats: dict[str, list[torch.Tensor]] = {}
    labels: list[torch.Tensor] = []
    try:
        for exs, b in batches:
            idx = b["image_input_idx"]
            B, n, T = idx.shape
            tgt = stack_motion_targets([motion_targets(proc, e.motion_masks if target == "motion" else e.shape_masks)
                                        for e in exs], n, T).reshape(B, -1)
            with torch.no_grad():
                embeds = model.build_inputs_embeds(b["input_ids"], b.get("images"), b.get("image_masks"), idx,
                                                   b.get("context_images"), b.get("context_input_idx"))
                mask = b["attention_mask"]
                out = model.llm(inputs_embeds=embeds, attention_mask=mask,
                                position_ids=(mask.long().cumsum(-1) - 1).clamp(min=0), output_hidden_states=True)
            _, valid = gather_image_tokens(out.hidden_states[0], idx)
            sel = tgt[valid] >= 0
            labels.append(tgt[valid][sel])
            for name in ("vision", "temporal"):
                x = from_windows(grabbed[name], B, n, G).reshape(B, n * G * G, -1)
                feats.setdefault(name, []).append(x[valid][sel].float())
            for k, h in enumerate(out.hidden_states):
                x, _ = gather_image_tokens(h, idx)
                feats.setdefault(f"llm {k}", []).append(x[sel].float())
    finally:
        hook.remove()
    return {k: torch.cat(v) for k, v in feats.items()}, torch.cat(labels)


def probe(xtr: torch.Tensor, ytr: torch.Tensor, xte: torch.Tensor, yte: torch.Tensor, classes: int,
          steps: int = 300) -> float:
    """Test accuracy of an L2-regularised logistic regression on standardised features."""
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    torch.manual_seed(0)
    lin = torch.nn.Linear(xtr.shape[1], classes)
    opt = torch.optim.Adam(lin.parameters(), lr=0.01, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(lin(xtr), ytr).backward()
        opt.step()
    with torch.no_grad():
        return float((lin(xte).argmax(-1) == yte).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bundled", help="model folder, or 'bundled'")
    ap.add_argument("--train-clips", type=int, default=400)
    ap.add_argument("--test-clips", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--target", default="motion", choices=["motion", "shape"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from eval_synth import load

    from videomolmo.synth import MOTIONS, SHAPES

    classes = MOTIONS if a.target == "motion" else SHAPES
    curriculum = "motion" if a.target == "motion" else "mix"
    model, proc = load(a.model)  # in eval mode
    ftr, ytr = features(model, proc, motion_batches(model, proc, 7001, a.train_clips, a.batch, curriculum), a.target)
    fte, yte = features(model, proc, motion_batches(model, proc, 7002, a.test_clips, a.batch, curriculum), a.target)
    counts = torch.bincount(ytr, minlength=len(classes))
    floor = float((yte == counts.argmax()).float().mean())
    print(f"{a.model}: {len(ytr)} train / {len(yte)} test owned patches; classes {list(classes)}; "
          f"test share per class {[round(float((yte == c).float().mean()), 3) for c in range(len(classes))]}")
    print("| stage | dim | probe accuracy (test) |\n|---|---|---|")
    print(f"| majority class | - | {floor:.3f} |")
    for name in ftr:
        acc = probe(ftr[name], ytr, fte[name], yte, len(classes))
        print(f"| {name} | {ftr[name].shape[1]} | {acc:.3f} |", flush=True)


if __name__ == "__main__":
    main()
