"""Could the cpu backend's cues be combined by a model learnt from real masks instead of by hand?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_learned_combiner.py [--features cues|all]

Leave one sequence out over davis16-mini's tuned four (the held-out two are never read): per-pixel
features of the point -> mask step at the working size (GrabCut box vote share, motion voter, the
colour pass's P(object | colour), the motion layer, the hand-combined mask and the box+motion
vote, signed distance to the hand mask's edge; `all` adds the offset from the click, Lab colour,
gradient and local texture) on every 2nd and every 5th frame, peak clicks. A logistic
regression and a small MLP (2 x 32, torch) are trained on three sequences' pixels and score the
fourth's anchors (every 5th frame): mask = P >= 0.5, components holding the click, holes filled,
region IoU at the working size, paired per anchor against the hand-combined mask
(`CpuPredictor._point_mask_small`). Features are cached in runs/learned-combiner/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mask_stage import DATA, HELD_OUT, peak_point  # noqa: E402

CACHE = Path(__file__).resolve().parents[1] / "runs" / "learned-combiner"
CUES = [0, 1, 2, 3, 4, 5, 9]  # the backend's own cues (no position, colour or texture)
N_FEATURES = 15


def features(seq: str) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{frame: (H x W x 15 float16 features, H x W ground truth, click)} at the working size."""
    import cv2

    from videomolmo.masks import foreground
    from videomolmo.segmentation.cpu import CpuPredictor, _keep_components
    from videomolmo.video import open_video

    path = CACHE / f"{seq}.npz"
    if path.exists():
        z = np.load(path)
        return {int(k[1:]): (z[k], z[f"g{k[1:]}"], z[f"p{k[1:]}"]) for k in z.files if k[0] == "f"}
    video = open_video(DATA / "JPEGImages" / seq)
    frames = [video[i] for i in range(len(video))]
    n = len(frames)
    pred = CpuPredictor()
    cfg = pred.config
    state = pred.init_state(frames)
    out = {}
    for t in (t for t in range(n) if t % 5 == 0 or t % 2 == 0):
        gt = foreground(DATA / "Annotations" / seq / f"{video.frame_names[t]}.png")
        click = peak_point(gt)
        if click is None:
            continue
        # The backend's own point -> mask (the hand combination); it leaves this frame's motion
        # fields in the state, so the cues below reuse them.
        hand, _, small = pred._video_point_mask(state, t, click, np.ones(1, np.int64))
        _, fields, r = state.extra["motion_fields"]
        h, w = small.shape[:2]
        pos, neg = click * pred._work_size(frames[t].shape[1], frames[t].shape[0])[2], np.zeros((0, 2))
        motion = pred._motion_vote_from(r, pos) if r is not None else None
        # The box vote runs again: `_point_mask_small` does not hand its vote share out.
        votes, total = pred._colour_votes(small, pos, neg, None)
        m = np.zeros((h, w), np.float32) if motion is None else motion
        voted = _keep_components(votes + cfg.motion_weight * m >= cfg.vote_fraction * (total + cfg.motion_weight) - 1e-6, pos)
        colour = (pred._appearance(small, voted, cfg.anchor_colour_bins, cfg.anchor_ring_width)[0]
                  [pred._colour_index(small, cfg.anchor_colour_bins)] if voted.any() else np.full((h, w), 0.5, np.float32))
        layer = pred._layer_score(hand, fields) if fields and hand.any() else None
        layer = np.full((h, w), 0.5, np.float32) if layer is None else layer
        radius = np.sqrt(max(hand.sum(), voted.sum(), 1) / np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        dx, dy = (xx - pos[0, 0]) / radius, (yy - pos[0, 1]) / radius
        lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32) / 255.0
        g = pred._grey(small).astype(np.float32) / 255.0
        grad = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
        mu = cv2.blur(g, (7, 7))
        tex = np.sqrt(np.maximum(cv2.blur(g * g, (7, 7)) - mu * mu, 0))
        edge = (cv2.distanceTransform(hand.astype(np.uint8), cv2.DIST_L2, 3)
                - cv2.distanceTransform((~hand).astype(np.uint8), cv2.DIST_L2, 3)) / radius
        f = np.stack([votes / total, m, colour, layer, hand, voted, dx, dy, np.hypot(dx, dy), edge,
                      lab[..., 0], lab[..., 1], lab[..., 2], grad, tex], -1).astype(np.float16)
        out[t] = (f, cv2.resize(gt.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0, pos[0])
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(tmp, **{f"{key}{t}": v[i] for t, v in out.items() for i, key in enumerate("fgp")})
    tmp.replace(path)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", choices=("cues", "all"), default="cues")
    ap.add_argument("--pixels", type=int, default=4000, help="training pixels sampled per frame")
    ap.add_argument("--steps", type=int, default=1500)
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        print(f"{DATA} not found", file=sys.stderr)
        return 1
    import cv2
    import torch
    from scipy import ndimage as ndi

    from videomolmo.evaluation.paired import paired_bootstrap
    from videomolmo.metrics import jaccard
    from videomolmo.segmentation.cpu import _keep_components

    cv2.setNumThreads(1)
    torch.manual_seed(0)
    cols = CUES if args.features == "cues" else list(range(N_FEATURES))
    seqs = sorted(p.name for p in (DATA / "JPEGImages").iterdir() if p.name not in HELD_OUT)
    data = {s: features(s) for s in seqs}
    rng = np.random.default_rng(0)
    rows = []
    for test in seqs:
        x, y = [], []
        for s in seqs:
            if s == test:
                continue
            for f, g, _ in data[s].values():
                pick = rng.choice(g.size, min(args.pixels, g.size), replace=False)
                x.append(f.reshape(-1, N_FEATURES)[pick][:, cols].astype(np.float32))
                y.append(g.ravel()[pick])
        x, y = np.concatenate(x), np.concatenate(y).astype(np.float32)
        mu, sd = x.mean(0), x.std(0) + 1e-6
        xt, yt = torch.tensor((x - mu) / sd), torch.tensor(y)
        models = {"logistic": torch.nn.Linear(len(cols), 1),
                  "mlp": torch.nn.Sequential(torch.nn.Linear(len(cols), 32), torch.nn.ReLU(),
                                             torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))}
        for model in models.values():
            opt = torch.optim.Adam(model.parameters(), 3e-3, weight_decay=1e-4)
            for _ in range(args.steps):
                b = torch.randint(0, len(xt), (4096,))
                loss = torch.nn.functional.binary_cross_entropy_with_logits(model(xt[b]).squeeze(-1), yt[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
        for t, (f, g, click) in sorted(data[test].items()):
            if t % 5:
                continue
            row = {"seq": test, "frame": t, "hand": float(jaccard(g, f[..., 4] > 0.5))}
            with torch.no_grad():
                z = torch.tensor((f.reshape(-1, N_FEATURES)[:, cols].astype(np.float32) - mu) / sd)
                for name, model in models.items():
                    p = torch.sigmoid(model(z)).numpy().reshape(g.shape)
                    row[name] = float(jaccard(g, ndi.binary_fill_holes(_keep_components(p >= 0.5, click[None]))))
            rows.append(row)
        got = [r for r in rows if r["seq"] == test]
        print(f"{test:>15}: " + ", ".join(f"{k} {np.mean([r[k] for r in got]):.3f}" for k in ("hand", "logistic", "mlp")),
              flush=True)
    print(f"tuned four, features {args.features}, {len(rows)} anchors (mean over sequences): " + ", ".join(
        f"{k} {np.mean([np.mean([r[k] for r in rows if r['seq'] == s]) for s in seqs]):.3f}"
        for k in ("hand", "logistic", "mlp")))
    for k in ("logistic", "mlp"):
        d = paired_bootstrap([r["hand"] for r in rows], [r[k] for r in rows])
        print(f"{k} - hand, per anchor: {d['diff']:+.3f} (95 % CI {d['ci'][0]:+.3f} .. {d['ci'][1]:+.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
