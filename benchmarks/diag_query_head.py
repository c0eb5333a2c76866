"""Would a query-conditioned patch head use the motion the decoder already carries?

`diag_motion_layers.py` finds a sprite's direction linearly readable at the layer the patch
head reads (~0.53, chance 0.25), yet motion-only queries are answered like a random look-alike.
The shipped head is linear in each image token's hidden state: it can only follow the query as
far as the decoder has already mixed the query into that token. This fits two fresh heads on
the same frozen hidden states (the model's head layer) and asks which one picks the right
sprite on held-out motion-only queries:

* `linear`: logit = w . h_patch + b (the shipped head's form, refitted here);
* `bilinear`: linear + (U q) . (V h_patch), rank `--rank`, where q is the hidden state of the
  token just before the image (it has read the whole query: the prompt puts the query first).

`--patch-layer 0` takes the patch states from the decoder's input (the connector's output, where
the motion cue is strongest and no query has been mixed in yet): there only the bilinear term
can follow the query.

Score: the share of motion-only queries whose top-scoring patch is mostly (>= 0.5) covered by the
referred sprite, with the shipped head as a third row, and paired bootstrap intervals. Fitted on
`--train-clips` clips of the `motion` curriculum (all kinds), scored on `--test-clips` other clips.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/diag_query_head.py --model runs/stage7-st/final
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))


def collect(model, proc, batches, layer: int, patch_layer: int):
    """Per example: query state (D,), image-token states (T, D), coverage targets (T,), kind."""
    from videomolmo.model.point_head import gather_image_tokens

    qs, hs, ts, kinds = [], [], [], []
    for exs, b in batches:
        idx = b["image_input_idx"]
        inputs = {k: v for k, v in b.items() if k != "labels"}
        with torch.no_grad():
            hidden = model(**inputs, hidden_layer=layer).hidden.float()
            patches = hidden if patch_layer == layer else model(**inputs, hidden_layer=patch_layer).hidden.float()
        for i, e in enumerate(exs):
            pos = idx[i].reshape(-1)
            pos = pos[pos >= 0]
            h, _ = gather_image_tokens(patches[i:i + 1], idx[i:i + 1])
            qs.append(hidden[i, int(pos.min()) - 1])
            hs.append(h)
            ts.append(torch.from_numpy(proc.patch_targets(e.target_mask).reshape(-1)).float())
            kinds.append(e.kind)
    return torch.stack(qs), torch.stack(hs), torch.stack(ts), kinds


class Head(torch.nn.Module):
    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(dim, 1)
        self.u = torch.nn.Linear(dim, rank, bias=False) if rank else None
        self.v = torch.nn.Linear(dim, rank, bias=False) if rank else None

    def forward(self, q: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        out = self.lin(h).squeeze(-1)  # (N, T)
        if self.u is not None:
            out = out + torch.einsum("nr,ntr->nt", self.u(q), self.v(h))
        return out


def fit(q, h, t, rank: int, steps: int) -> Head:
    torch.manual_seed(0)
    head = Head(h.shape[-1], rank)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(head(q, h), t).backward()
        opt.step()
    return head


def hits(scores: torch.Tensor, t: torch.Tensor) -> np.ndarray:
    top = scores.argmax(-1)
    return (t[torch.arange(len(t)), top] >= 0.5).float().numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--train-clips", type=int, default=1200)
    ap.add_argument("--test-clips", type=int, default=400)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--patch-layer", type=int, default=None,
                    help="decoder layer of the patch states (0 = the connector's output; default: the head's layer)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from diag_motion_layers import motion_batches
    from eval_synth import load

    from videomolmo.evaluation.paired import paired_bootstrap
    from videomolmo.model.point_head import resolve_layer

    model, proc = load(a.model)  # in eval mode
    cfg = model.config
    layer = resolve_layer(cfg.point_head_layer, cfg.llm.layers)
    patch_layer = layer if a.patch_layer is None else a.patch_layer
    qtr, htr, ttr, _ = collect(model, proc, motion_batches(model, proc, 8001, a.train_clips, a.batch), layer, patch_layer)
    qte, hte, tte, kte = collect(model, proc, motion_batches(model, proc, 8002, a.test_clips, a.batch), layer, patch_layer)
    keep = [i for i, k in enumerate(kte) if k == "motion"]
    qte, hte, tte = qte[keep], hte[keep], tte[keep]
    rows = {}
    with torch.no_grad():
        if getattr(model, "point_head", None) is not None and patch_layer == layer:
            rows["shipped head"] = hits(model.point_head.proj(hte).squeeze(-1), tte)
    for name, rank in (("linear (refitted)", 0), (f"bilinear, rank {a.rank}", a.rank)):
        head = fit(qtr, htr, ttr, rank, a.steps)
        with torch.no_grad():
            rows[name] = hits(head(qte, hte), tte)
    print(f"{a.model}: query state from layer {layer}, patch states from layer {patch_layer}; fitted on {len(ttr)} examples, scored on {len(keep)} motion-only queries")
    print("| head | top patch on the referred sprite |\n|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r.mean():.3f} |")
    names = list(rows)
    for other in names[1:]:
        res = paired_bootstrap(rows[names[0]], rows[other])
        print(f"{other} - {names[0]}: {res['diff']:+.3f} (95% CI {res['ci'][0]:+.3f} .. {res['ci'][1]:+.3f})")
    if len(names) == 3:
        res = paired_bootstrap(rows[names[1]], rows[names[2]])
        print(f"{names[2]} - {names[1]}: {res['diff']:+.3f} (95% CI {res['ci'][0]:+.3f} .. {res['ci'][1]:+.3f})")


if __name__ == "__main__":
    main()
