"""The weight-free `cpu` mask backend: OpenCV + SciPy, no model weights.

Point -> mask (`add_points`, `predict_image`)
    A vote over GrabCut runs seeded with boxes of several sizes around the positive points
    (GrabCut does not know the object's scale, a vote over scales is much steadier than any one
    box). Positive points are hard foreground, negative points hard background. Inside a video
    (`add_points`) one more voter (weight `motion_weight`, 2.5 against 1 per box) is added: the
    *independent-motion* mask,
    the pixels whose DIS optical flow to frames t +- `motion_gap` departs from the camera's
    motion (a RANSAC homography fitted to the flow field), connected to the point. Objects people
    point at usually move relative to the scene; on the four davis16-mini sequences it was tuned
    on, this voter lifts the anchor-frame IoU from 0.53 to 0.63. "Moving" is relative to the
    residual at the point, and no one cut-off fits every video (0.5 of it leaks into splashes,
    shadows and reflections that move less than the object; higher cuts off parts that move
    less than the point), so the voter is soft: the mean of the masks at the fractions in
    `motion_thresholds`. If the point itself does not move the motion voter is empty and the
    colour vote decides alone.
    Two passes follow the vote. A colour pass (`anchor_colour_weight`): a colour table of the
    voted mask against a ring of its surroundings re-decides each pixel, so parts made of the
    mask's colours are kept and ring colours dropped. Inside a video, a motion-layer pass
    (`layer_weight`): an affine motion model fitted to the flow over the mask, against the
    camera's homography, scores how much each pixel moves like the object; this adds parts of
    another colour that move with it (a car's wheels). It is skipped when the clicked pixels do
    not move like the model. Anchor IoU on the four tuned sequences: 0.639 (vote) -> 0.672
    (colour pass) -> 0.708 (motion layer); on the two held out 0.576 -> 0.580 (BENCHMARKS.md).
    Only the connected components that hold a positive point are kept, holes are filled.
    `predict_frame` is the video point -> mask without recording a prompt (the annotation
    pipeline's candidate clicks); the last frame's motion fields are kept for it.

Propagation (`propagate`)
    Each frame is re-decided, not just warped. The previous mask is warped into the new frame with
    dense DIS optical flow (backward warping), and a forward-backward flow check marks the pixels
    whose flow does not return to them: pixels hidden in the previous frame (the background a
    moving object uncovers, things entering). Plain warping drags the mask over exactly those
    pixels, so two flow-warped sides trail the object in opposite directions and the paper's union
    adds both errors. Here every pixel near the warped mask is scored
    `a * warped + (1 - a) * P(object | colour)`, with `a = warp_weight` where the flow is reliable
    and `occluded_warp_weight` where it is not; P comes from colour histograms of the object and
    a ring of its surroundings learnt at the anchor (kept fixed: an anchor is at most k frames
    away, and updating the model from propagated masks lets errors teach it). A pixel is kept at
    `keep_threshold` (0.6: colour must back a warped pixel a little), only in components that
    touch the reliably warped core. When the warped mask as a whole stops looking like the
    object (its mean P below `lost_ratio` of the anchor's: occluded, gone), the object is lost:
    empty mask, score 0. What no longer matches is dropped rather than dragged along,
    so each side errs by losing parts of the object (as SAM2's memory tracker does) and the
    paper's union of two disagreeing sides recovers them (BENCHMARKS.md, "Mask stage": k = 5,
    peak points, bidirectional - forward +0.048 J&F on the four tuned sequences, but -0.055 on
    the two held out: on dog the sides agree and the paper's intersection keeps both sides'
    misses, on kite-surf the sides spill into the spray and the union adds both).
    `propagation="warp"` is the previous behaviour (warp only, optional banded GrabCut
    clean-up with `refine="grabcut"`).

Confidence (`object_score`)
    At the anchor: the mean vote share inside the mask (1.0 when every box scale and the motion
    voter agree on every pixel; stability across scales). Each propagated frame multiplies the
    previous score by IoU(warped mask, re-decided mask): a mask that keeps needing correction is
    one to doubt. The `confidence` fusion strategy uses it; `bidirectional` ignores it.

Everything runs at `work_height` pixels and masks are upsampled bilinearly to the frame size.

State holds only the previous frame's small grey image, each object's previous mask and colour
table, so memory is flat in video length; `state.masks` keeps only prompted frames and
`state.scores` only prompted frames and the frame yielded last.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np
from scipy import ndimage as ndi

from videomolmo.errors import ConfigError
from videomolmo.fusion import mask_iou
from videomolmo.segmentation.predictor import MaskPredictor, PredictorState, check_rgb_frame, clean_points
from videomolmo.segmentation.registry import register_backend

__all__ = ["CpuConfig", "CPU_PRESETS", "CpuPredictor"]

_FLOW_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


@dataclass(frozen=True)
class CpuConfig:
    """Knobs of the CPU backend (see `CPU_PRESETS`).

    work_height: frames are processed resized to this height (aspect kept); masks come back at
        full size. Smaller is faster and coarser.
    box_scales: half-sizes of the GrabCut seed boxes, as fractions of the short side.
    size_boxes / size_gate: when `size_boxes` is not empty and the voted mask's equivalent radius
        R = sqrt(area / pi) is below `size_gate` x the short side, the boxes are voted again with
        half-sizes f x R (f in `size_boxes`): fixed fractions of the frame give a small object
        boxes that are mostly background (kite-surf), and a fixed small box votes against large
        objects. Off by default: on the four tuned sequences (0.75, 1.25, 2, 3) scored anchor IoU
        0.701 at gate 0.12 and 0.665 at 0.30 against 0.708 (BENCHMARKS.md, "What was tried").
    vote_fraction: a pixel is foreground when its weighted votes reach this fraction of the
        total weight.
    motion_weight: weight of the independent-motion voter (0 disables it; it needs a video).
    motion_gap: the motion voter compares frame t with t - gap and t + gap.
    motion_thresholds: a pixel moves independently at threshold f when its residual flow
        exceeds f times the residual at the point (and at least `motion_min_px` work-resolution
        pixels); the motion voter is the mean of the masks over these fractions. Measured on
        davis16-mini's four tuned sequences (k=5, bidirectional, annotation-pipeline points;
        BENCHMARKS.md): (0.5,) 0.555 J&F, (0.75,) 0.602, (0.5, 0.65, 0.8) 0.605; on the two
        held-out sequences 0.459, 0.452 and 0.484 (anchor IoU on the four: 0.666, 0.676, 0.690).
    grabcut_iters: GrabCut iterations for point -> mask.
    flow_preset: DIS optical flow preset for propagation and motion ("ultrafast"/"fast"/"medium").
    refine: "grabcut" cleans each propagated mask with a banded GrabCut, "none" trusts the warp.
    refine_band: width of the band around the warped mask that GrabCut may change, as a
        fraction of the mask's equivalent diameter (at least 3 pixels).
    refine_iters: GrabCut iterations of the clean-up.
    point_radius: radius (work pixels) of the hard foreground / background disk at each point.
    bg_ring: 0 learns GrabCut's background colours from the whole frame; > 0 only from a ring
        this many box half-sizes wide around each box (faster on large frames, but measured
        worse on davis16-mini: anchor IoU 0.43 vs 0.60 on blackswan/car-shadow/motocross-jump).
    propagation: "appearance" (re-decide each frame from warp, flow check and colour model) or
        "warp" (the previous backend: warp only, `refine` applies).
    colour_bins: quantisation of each RGB channel for the anchor's colour model.
    ring_width: the colour model's background ring, as a fraction of the mask's equivalent
        diameter.
    warp_weight / occluded_warp_weight: weight of the warped mask against the colour model where
        the forward-backward flow check passes / fails.
    fb_tolerance: forward-backward error (work pixels, plus 10 % of the flow) still "reliable".
    keep_threshold: a pixel is kept when its score reaches this; above 0.5 colour must back the
        warp, which biases each side towards losing parts rather than trailing. Tuned on the four
        tuned sequences (BENCHMARKS.md): 0.6.
    lost_ratio: the object is declared lost (empty mask, score 0) when the mean P(object |
        colour) over its warped mask falls below this fraction of that mean at the anchor
        (occluded, or gone from the frame, while the flow over the background looks fine).
    colour_trust_separation: s0 > 0 scales the colour model's weight in propagation by
        min(1, d / s0), d = the model's own separation at the anchor (mean P(object | colour)
        over the anchor mask minus over its ring). A model that cannot tell the object from its
        surroundings would otherwise drop the same parts on both sides of the fusion; 0 = off.
        Measured no effect (BENCHMARKS.md): d at davis16-mini's anchors is 0.24-0.78, the
        colour model separates at the anchor even where propagation loses parts.
    anchor_colour_weight: point -> mask ends with one colour-model pass: a colour table of the
        voted mask against a ring of its surroundings (`anchor_colour_bins` per channel, ring
        `anchor_ring_width` mask diameters wide) re-decides every pixel as
        `(1 - w) * vote share + w * P(object | colour)`. It adds parts the box votes split on
        that share the object's colours and drops look-alike-free spill (the swan's reflection
        where it differs from the swan); 0 disables it. Anchor IoU on the four tuned sequences
        (BENCHMARKS.md): 0.640 -> 0.673 at w = 0.5, 16 bins, ring 0.3.
    layer_weight: inside a video, the last pass re-decides each pixel as
        `(1 - w) * score + w * P(moves like the mask, not like the camera)` (an affine motion
        model fitted to the flow over the mask against the camera's homography; see
        `CpuPredictor._layer_score`); 0 disables it, and so does `motion_weight` 0 (the pass
        reuses the motion voter's flow). Anchor IoU on the four tuned sequences:
        0.673 -> 0.695 at w = 0.3 (0.15: 0.681, 0.2: 0.688, 0.35: 0.690), 0.710 with the check
        that the clicked pixels themselves move like the fitted model (else the pass is skipped).
    """

    work_height: int = 240
    box_scales: tuple[float, ...] = (0.12, 0.2, 0.3, 0.45)
    size_boxes: tuple[float, ...] = ()
    size_gate: float = 0.12
    vote_fraction: float = 0.5
    motion_weight: float = 2.5
    motion_gap: int = 1
    motion_thresholds: tuple[float, ...] = (0.5, 0.65, 0.8)
    motion_min_px: float = 0.5
    grabcut_iters: int = 3
    flow_preset: str = "medium"
    refine: str = "none"
    refine_band: float = 0.15
    refine_iters: int = 2
    point_radius: int = 3
    bg_ring: float = 0.0
    propagation: str = "appearance"
    colour_bins: int = 8
    ring_width: float = 0.5
    warp_weight: float = 0.7
    occluded_warp_weight: float = 0.3
    fb_tolerance: float = 1.0
    keep_threshold: float = 0.6
    lost_ratio: float = 0.5
    colour_trust_separation: float = 0.0
    anchor_colour_weight: float = 0.5
    anchor_colour_bins: int = 16
    anchor_ring_width: float = 0.3
    layer_weight: float = 0.3

    def __post_init__(self) -> None:
        if self.work_height < 16:
            raise ConfigError(f"cpu backend: work_height must be >= 16, got {self.work_height}")
        if not self.box_scales or any(not (0 < s <= 2) for s in self.box_scales):
            raise ConfigError(f"cpu backend: box_scales must be in (0, 2], got {self.box_scales}")
        if any(not (0 < f <= 20) for f in self.size_boxes) or not (0 < self.size_gate <= 2):
            raise ConfigError(f"cpu backend: size_boxes must be in (0, 20] and size_gate in (0, 2], "
                              f"got {self.size_boxes}, {self.size_gate}")
        if self.flow_preset not in _FLOW_PRESETS:
            raise ConfigError(
                f"cpu backend: flow_preset must be one of {sorted(_FLOW_PRESETS)}, got {self.flow_preset!r}"
            )
        if not self.motion_thresholds or any(not (0 < f <= 2) for f in self.motion_thresholds):
            raise ConfigError(f"cpu backend: motion_thresholds must be in (0, 2], got {self.motion_thresholds}")
        if self.refine not in ("grabcut", "none"):
            raise ConfigError(f"cpu backend: refine must be 'grabcut' or 'none', got {self.refine!r}")
        if not 0 <= self.colour_trust_separation <= 1:
            raise ConfigError(f"cpu backend: colour_trust_separation must be in [0, 1], "
                              f"got {self.colour_trust_separation}")
        if self.propagation not in ("appearance", "warp"):
            raise ConfigError(
                f"cpu backend: propagation must be 'appearance' or 'warp', got {self.propagation!r}"
            )
        if not (2 <= self.colour_bins <= 64):
            raise ConfigError(f"cpu backend: colour_bins must be in [2, 64], got {self.colour_bins}")
        if not (0 <= self.occluded_warp_weight <= 1 and 0 <= self.warp_weight <= 1):
            raise ConfigError("cpu backend: warp_weight and occluded_warp_weight must be in [0, 1]")
        if not (0 <= self.anchor_colour_weight <= 1):
            raise ConfigError(f"cpu backend: anchor_colour_weight must be in [0, 1], got {self.anchor_colour_weight}")
        if not (2 <= self.anchor_colour_bins <= 64):
            raise ConfigError(f"cpu backend: anchor_colour_bins must be in [2, 64], got {self.anchor_colour_bins}")
        if not (0 <= self.layer_weight <= 1):
            raise ConfigError(f"cpu backend: layer_weight must be in [0, 1], got {self.layer_weight}")
        if self.anchor_ring_width <= 0:
            raise ConfigError(f"cpu backend: anchor_ring_width must be > 0, got {self.anchor_ring_width}")
        if not (0 < self.vote_fraction <= 1):
            raise ConfigError(f"cpu backend: vote_fraction must be in (0, 1], got {self.vote_fraction}")


CPU_PRESETS: dict[str, CpuConfig] = {
    # Measured on davis16-mini (BENCHMARKS.md, "Mask stage").
    "default": CpuConfig(),
    # Fewer GrabCut boxes and cheaper flow.
    "fast": CpuConfig(box_scales=(0.12, 0.3, 0.45), flow_preset="fast"),
    # The single-frame colour vote only (no motion voter), e.g. for still images.
    "still": CpuConfig(motion_weight=0.0),
}


# ----------------------------------------------------------------------------- helpers


def _keep_components(mask: np.ndarray, seeds: np.ndarray, adopt_nearest: bool = True) -> np.ndarray:
    """The connected components of `mask` that hold a seed pixel (x, y).

    A seed outside the mask adopts the nearest component when `adopt_nearest`, else adds nothing.
    """
    if not mask.any() or len(seeds) == 0:
        return np.zeros_like(mask)
    lab, n = ndi.label(mask)
    h, w = mask.shape
    xs = np.clip(seeds[:, 0].astype(int), 0, w - 1)
    ys = np.clip(seeds[:, 1].astype(int), 0, h - 1)
    ids = set(int(v) for v in lab[ys, xs] if v > 0)
    missing = [(x, y) for x, y, v in zip(xs, ys, lab[ys, xs]) if v == 0]
    if missing and adopt_nearest:
        # A seed that fell just outside the mask (thin structures, quantisation) adopts the
        # component nearest to it rather than losing the object.
        _, (iy, ix) = ndi.distance_transform_edt(lab == 0, return_indices=True)
        for x, y in missing:
            ids.add(int(lab[iy[y, x], ix[y, x]]))
    if not ids:
        return np.zeros_like(mask)
    keep = np.zeros(n + 1, dtype=bool)
    keep[list(ids)] = True
    keep[0] = False
    return ndi.binary_fill_holes(keep[lab])


def _grabcut(img: np.ndarray, init: np.ndarray, iters: int, roi: tuple[int, int, int, int]) -> np.ndarray:
    """GrabCut in mask mode inside `roi` (x0, y0, x1, y1); pixels outside are background."""
    x0, y0, x1, y1 = roi
    sub = np.ascontiguousarray(init[y0:y1, x0:x1])
    out = np.zeros(init.shape, dtype=bool)
    if sub.size == 0:
        return out
    fg = np.isin(sub, (cv2.GC_FGD, cv2.GC_PR_FGD))
    if fg.all() or not fg.any() or np.isin(sub, (cv2.GC_BGD, cv2.GC_PR_BGD)).sum() < 2 or fg.sum() < 2:
        # GrabCut needs samples of both classes to fit its colour models.
        out[y0:y1, x0:x1] = fg
        return out
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    # GrabCut seeds its colour models with k-means on OpenCV's global RNG: reseed so that the
    # same input always gives the same mask.
    cv2.setRNGSeed(0)
    cv2.grabCut(np.ascontiguousarray(img[y0:y1, x0:x1]), sub, None, bgd, fgd, iters, cv2.GC_INIT_WITH_MASK)
    out[y0:y1, x0:x1] = (sub == cv2.GC_FGD) | (sub == cv2.GC_PR_FGD)
    return out


def _roi(box: tuple[float, float, float, float], margin: float, w: int, h: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return (
        max(0, int(x0 - margin)),
        max(0, int(y0 - margin)),
        min(w, int(np.ceil(x1 + margin)) + 1),
        min(h, int(np.ceil(y1 + margin)) + 1),
    )


def _keep_overlapping(mask: np.ndarray, core: np.ndarray) -> np.ndarray:
    """The connected components of `mask` that touch `core`."""
    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    keep = np.zeros(n + 1, bool)
    keep[np.unique(lab[core])] = True
    keep[0] = False
    return keep[lab]


def _upsample(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    if mask.shape == (h, w):
        return mask.copy()
    up = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return up >= 0.5


# ----------------------------------------------------------------------------- predictor


class CpuPredictor(MaskPredictor):
    """Weight-free point-prompted video segmentation (see the module docstring)."""

    name = "cpu"
    uses_video_cue = True

    def __init__(self, config: CpuConfig | str | None = None, **overrides: Any) -> None:
        if config is None:
            config = CPU_PRESETS["default"]
        elif isinstance(config, str):
            if config not in CPU_PRESETS:
                raise ConfigError(
                    f"cpu backend: unknown preset {config!r}; choose one of {', '.join(CPU_PRESETS)}"
                )
            config = CPU_PRESETS[config]
        if overrides:
            config = replace(config, **overrides)
        self.config = config
        self._dis = cv2.DISOpticalFlow_create(_FLOW_PRESETS[config.flow_preset])

    # -- geometry ---------------------------------------------------------------------

    def _work_size(self, w: int, h: int) -> tuple[int, int, float]:
        """(work width, work height, scale work/full)."""
        if h <= self.config.work_height:
            return w, h, 1.0
        s = self.config.work_height / h
        return max(1, int(round(w * s))), self.config.work_height, s

    def _small(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        h, w = frame.shape[:2]
        ww, wh, s = self._work_size(w, h)
        if s == 1.0:
            return frame, 1.0
        return cv2.resize(frame, (ww, wh), interpolation=cv2.INTER_AREA), s

    @staticmethod
    def _grey(img: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)

    # -- point -> mask ------------------------------------------------------------------

    def _colour_votes(self, img: np.ndarray, pos: np.ndarray, neg: np.ndarray,
                      halves: list[float] | None = None) -> tuple[np.ndarray, float]:
        """Sum of the multi-scale GrabCut masks and the total weight (box half-sizes in work
        pixels; the configured fractions of the short side by default)."""
        cfg = self.config
        h, w = img.shape[:2]
        if halves is None:
            halves = [s * min(h, w) for s in cfg.box_scales]
        votes = np.zeros((h, w), np.float32)
        px0, py0 = pos.min(axis=0)
        px1, py1 = pos.max(axis=0)
        for half in halves:
            box = (px0 - half, py0 - half, px1 + half, py1 + half)
            bx = _roi(box, 0, w, h)
            init = np.full((h, w), cv2.GC_BGD, np.uint8)
            init[bx[1]:bx[3], bx[0]:bx[2]] = cv2.GC_PR_FGD
            self._stamp(init, pos, neg)
            # Background colours are learnt from a ring around the box: a full-frame model costs
            # time and mostly describes scenery far from the object.
            roi = _roi(box, max(8.0, cfg.bg_ring * half), w, h) if cfg.bg_ring > 0 else (0, 0, w, h)
            m = _grabcut(img, init, cfg.grabcut_iters, roi)
            votes += _keep_components(m, pos)
        return votes, float(len(halves))

    def _stamp(self, init: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> None:
        r = self.config.point_radius
        for x, y in neg:
            cv2.circle(init, (int(x), int(y)), r, int(cv2.GC_BGD), -1)
        for x, y in pos:
            cv2.circle(init, (int(x), int(y)), r, int(cv2.GC_FGD), -1)

    def _flow(self, a_grey: np.ndarray, b_grey: np.ndarray) -> np.ndarray:
        """Dense flow: for each pixel of `a`, where it is in `b`."""
        return self._dis.calc(a_grey, b_grey, None)

    def _camera_motion(self, grey: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(flow, camera flow) of `grey` towards `other`; the camera flow is a RANSAC homography
        fitted to the flow field."""
        flow = self._flow(grey, other)
        h, w = grey.shape
        step = max(4, min(h, w) // 40)
        ys, xs = np.mgrid[step // 2 : h : step, step // 2 : w : step]
        src = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
        dst = src + flow[ys.ravel(), xs.ravel()]
        if len(src) < 8:
            return None
        hom, _ = cv2.findHomography(src, dst, cv2.RANSAC, 1.0)
        if hom is None:
            return None
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        grid = np.stack([xx, yy], -1)
        cam = cv2.perspectiveTransform(grid.reshape(-1, 1, 2), hom).reshape(h, w, 2) - grid
        return flow, cam

    def _residual_motion(self, grey: np.ndarray, other: np.ndarray) -> np.ndarray | None:
        """|flow - camera flow|."""
        fc = self._camera_motion(grey, other)
        return None if fc is None else np.linalg.norm(fc[0] - fc[1], axis=2)

    @staticmethod
    def _residual_of(fields: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray | None:
        """Mean independent-motion magnitude over (flow, camera flow) pairs, smoothed."""
        if not fields:
            return None
        res = np.mean([np.linalg.norm(f - c, axis=2) for f, c in fields], axis=0)
        return cv2.GaussianBlur(res.astype(np.float32), (0, 0), 2)

    def _residual_field(self, greys: list[np.ndarray]) -> np.ndarray | None:
        """Mean independent-motion magnitude of frame t (greys[0]) against its neighbours."""
        return self._residual_of([fc for fc in (self._camera_motion(greys[0], g) for g in greys[1:]) if fc])

    @staticmethod
    def _layer_score(mask: np.ndarray, fields: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray | None:
        """P(moves like the object rather than like the camera) per pixel, in [0, 1].

        The object's motion is an affine model fitted to the flow over the mask's core (the mask
        itself when it is thin), so it follows rotation and scaling, and a part of another
        colour that moves with the object (the car's silver front and wheels) scores high while
        a still look-alike next to it scores low. With a camera that tracks the object the two
        models swap roles and the rule still holds. The score is e_cam / (e_obj + e_cam) of the
        summed flow errors: 0.5 where the two models cannot be told apart (no relative motion).
        """
        core = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        if core.sum() < 20:
            core = mask
        ys, xs = np.nonzero(core)
        if len(ys) < 6:
            return None
        # A fixed stride, not a random sample: the same input gives the same mask.
        take = np.linspace(0, len(ys) - 1, min(len(ys), 3000)).astype(int)
        ys, xs = ys[take], xs[take]
        design = np.stack([xs, ys, np.ones_like(xs)], 1).astype(np.float64)
        h, w = mask.shape
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        e_obj = np.zeros((h, w), np.float32)
        e_cam = np.zeros((h, w), np.float32)
        for flow, cam in fields:
            target = design[:, :2] + flow[ys, xs]
            aff, *_ = np.linalg.lstsq(design, target, rcond=None)
            pred_x = aff[0, 0] * xx + aff[1, 0] * yy + aff[2, 0] - xx
            pred_y = aff[0, 1] * xx + aff[1, 1] * yy + aff[2, 1] - yy
            e_obj += np.hypot(flow[..., 0] - pred_x, flow[..., 1] - pred_y)
            e_cam += np.linalg.norm(flow - cam, axis=2)
        return e_cam / (e_obj + e_cam + 1e-6)

    def _motion_vote(self, greys: list[np.ndarray], pos: np.ndarray) -> np.ndarray | None:
        """The soft independent-motion mask (float in [0, 1]) connected to the positive points
        (greys[0] is frame t)."""
        r = self._residual_field(greys)
        return None if r is None else self._motion_vote_from(r, pos)

    def _motion_vote_from(self, r: np.ndarray, pos: np.ndarray) -> np.ndarray:
        cfg = self.config
        at = []
        for x, y in pos:
            xi, yi = int(x), int(y)
            at.append(r[max(0, yi - 3) : yi + 4, max(0, xi - 3) : xi + 4].mean())
        ref = float(np.mean(at))
        # A point on a still region gets no motion vote (not the nearest thing that moves).
        masks = [
            _keep_components(r > max(cfg.motion_min_px, f * ref), pos, adopt_nearest=False)
            for f in cfg.motion_thresholds
        ]
        return np.mean(masks, axis=0, dtype=np.float32)

    def _point_mask_small(
        self,
        img: np.ndarray,
        pos: np.ndarray,
        neg: np.ndarray,
        motion: np.ndarray | None,
        fields: list[tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> tuple[np.ndarray, float]:
        """(mask, stability): stability is the mean vote share inside the mask, 1.0 when every
        voter (box scale, motion) agrees on every pixel and ~vote_fraction on a split vote."""
        if len(pos) == 0:
            return np.zeros(img.shape[:2], bool), 0.0
        cfg = self.config

        def vote(halves: list[float] | None) -> tuple[np.ndarray, float, np.ndarray]:
            votes, total = self._colour_votes(img, pos, neg, halves)
            if motion is not None and cfg.motion_weight > 0:
                votes += cfg.motion_weight * motion
                total += cfg.motion_weight
            return votes, total, _keep_components(votes >= cfg.vote_fraction * total - 1e-6, pos)

        votes, total, mask = vote(None)
        radius = float(np.sqrt(mask.sum() / np.pi))
        if cfg.size_boxes and 0 < radius < cfg.size_gate * min(img.shape[:2]):
            votes, total, mask = vote([max(4.0, f * radius) for f in cfg.size_boxes])
        stability = float(votes[mask].mean() / total) if mask.any() else 0.0
        share = votes / total
        score = share
        wc = self.config.anchor_colour_weight
        if wc > 0 and mask.any():
            # The box votes decide pixel by pixel and split on parts whose colour differs from
            # the click's surroundings; a colour table of the voted mask against its own
            # surroundings then re-decides each pixel, so colours the mask is mostly made of
            # are kept wherever they touch it, and colours of the ring are dropped.
            lut, *_ = self._appearance(img, mask, self.config.anchor_colour_bins, self.config.anchor_ring_width)
            colour = lut[self._colour_index(img, self.config.anchor_colour_bins)]
            score = (1 - wc) * share + wc * colour
            refined = _keep_components(score >= self.config.vote_fraction, pos)
            if refined.any():
                mask = refined
                stability = float(share[mask].mean())
        wl = self.config.layer_weight
        if wl > 0 and fields and mask.any():
            layer = self._layer_score(mask, fields)
            at_click = None if layer is None else float(np.mean([
                layer[max(0, int(y) - 3) : int(y) + 4, max(0, int(x) - 3) : int(x) + 4].mean() for x, y in pos]))
            # The clicked pixels are the object by definition: when they move more like the
            # camera than like the fitted model, the model describes something else (a camera
            # that tracks the object while the mask holds background: motocross-jump 15 went
            # from 0.29 to 0.01 IoU without this check) and the pass is skipped.
            if at_click is not None and at_click >= 0.5:
                refined = _keep_components((1 - wl) * score + wl * layer >= self.config.vote_fraction, pos)
                if refined.any():
                    mask = refined
                    stability = float(share[mask].mean())
        return mask, min(1.0, stability)

    def predict_image(
        self, frame: np.ndarray, points: np.ndarray, labels: np.ndarray | None = None
    ) -> np.ndarray:
        """Single-frame point -> mask (colour vote only). Out-of-frame / NaN points are ignored;
        no positive point gives an empty mask."""
        frame = check_rgb_frame(frame)
        h, w = frame.shape[:2]
        pts, lab = clean_points(points, labels, (w, h), where="cpu backend: ")
        small, s = self._small(frame)
        mask, _ = self._point_mask_small(small, pts[lab == 1] * s, pts[lab == 0] * s, None)
        return _upsample(mask, (w, h))

    # -- video API ----------------------------------------------------------------------

    def _small_frame(self, state: PredictorState, idx: int) -> tuple[np.ndarray, float]:
        return self._small(self.frame(state, idx))

    def _video_point_mask(
        self, state: PredictorState, frame_idx: int, points: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, float, np.ndarray]:
        """(small mask, stability, small frame) of a click on a frame of an open video."""
        small, s = self._small_frame(state, frame_idx)
        pos, neg = points[labels == 1] * s, points[labels == 0] * s
        motion = None
        if self.config.motion_weight > 0 and len(pos):
            # The motion field does not depend on the click: the annotation pipeline tries k
            # clicks per frame, so the last frame's field is kept (one frame: memory stays flat).
            cached = state.extra.get("motion_fields")
            if cached is not None and cached[0] == frame_idx:
                _, fields, r = cached
            else:
                grey = self._grey(small)
                n = state.extra["num_frames"]
                fields = []
                for j in (frame_idx - self.config.motion_gap, frame_idx + self.config.motion_gap):
                    if 0 <= j < n and j != frame_idx:
                        fc = self._camera_motion(grey, self._grey(self._small_frame(state, j)[0]))
                        if fc is not None:
                            fields.append(fc)
                r = self._residual_of(fields)
                state.extra["motion_fields"] = (frame_idx, fields, r)
            if r is not None:
                motion = self._motion_vote_from(r, pos)
        else:
            fields = None
        small_mask, stability = self._point_mask_small(small, pos, neg, motion, fields)
        return small_mask, stability, small

    def predict_frame(self, state: PredictorState, frame_idx: int, points: np.ndarray,
                      labels: np.ndarray | None = None) -> np.ndarray:
        """Point -> mask on a frame of an open video with the motion cue of its neighbours (what
        `add_points` gives), without recording a prompt. Out-of-frame / NaN points are ignored;
        no positive point gives an empty mask."""
        idx = self.frame_index(state, frame_idx)
        h, w = state.extra["size"]
        pts, lab = clean_points(points, labels, (w, h), where="cpu backend: ")
        if not (lab == 1).any():
            return np.zeros((h, w), bool)
        small_mask, _, _ = self._video_point_mask(state, idx, pts, lab)
        return _upsample(small_mask, (w, h))

    def _mask_from_prompt(self, state, frame_idx, obj_id, points, labels):
        small_mask, stability, small = self._video_point_mask(state, frame_idx, points, labels)
        # Tracking runs at the working size: keep the prompted mask there too.
        state.extra.setdefault("small_masks", {}).setdefault(frame_idx, {})[obj_id] = small_mask
        state.extra.setdefault("appearance", {})[obj_id] = self._appearance(small, small_mask)
        h, w = state.extra["size"]
        return _upsample(small_mask, (w, h)), stability

    def _refine(self, img: np.ndarray, warped: np.ndarray) -> np.ndarray:
        cfg = self.config
        area = int(warped.sum())
        if area == 0:
            return warped
        h, w = warped.shape
        diam = 2.0 * np.sqrt(area / np.pi)
        band = max(3, int(round(cfg.refine_band * diam)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
        u8 = warped.astype(np.uint8)
        inner = cv2.erode(u8, kernel) > 0
        outer = cv2.dilate(u8, kernel) > 0
        init = np.full((h, w), cv2.GC_BGD, np.uint8)
        init[outer] = cv2.GC_PR_BGD
        init[warped] = cv2.GC_PR_FGD
        init[inner] = cv2.GC_FGD
        ys, xs = np.nonzero(outer)
        roi = _roi((xs.min(), ys.min(), xs.max(), ys.max()), band, w, h)
        m = _grabcut(img, init, cfg.refine_iters, roi)
        # Keep only what overlaps the warp: GrabCut may grab look-alike background regions.
        return ndi.binary_fill_holes(_keep_overlapping(m, warped & m))

    # -- propagation --------------------------------------------------------------------

    def _colour_index(self, img: np.ndarray, bins: int | None = None) -> np.ndarray:
        b = bins or self.config.colour_bins
        q = (img.astype(np.int32) * b) >> 8
        return (q[..., 0] * b + q[..., 1]) * b + q[..., 2]

    def _appearance(
        self, img: np.ndarray, mask: np.ndarray, bins: int | None = None, ring_width: float | None = None
    ) -> tuple[np.ndarray, float, float] | None:
        """P(object | colour) as a lookup table over quantised RGB, learnt at the anchor from the
        mask against a ring of its surroundings (the colours it must be told apart from), the
        table's mean over the anchor mask (how much the object looks like itself there) and that
        mean minus the table's mean over the ring (how well colour separates the two)."""
        if not mask.any():
            return None
        diam = 2.0 * np.sqrt(mask.sum() / np.pi)
        r = max(3, int(round((ring_width or self.config.ring_width) * diam)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        ring = (cv2.dilate(mask.astype(np.uint8), kernel) > 0) & ~mask
        bins = bins or self.config.colour_bins
        idx = self._colour_index(img, bins)
        nb = bins ** 3
        fg = np.bincount(idx[mask], minlength=nb).astype(np.float64)
        bg = np.bincount(idx[ring], minlength=nb).astype(np.float64)
        # One pseudo-count per bin: a colour seen on neither side is undecided (0.5).
        pf = (fg + 1) / (fg.sum() + nb)
        pb = (bg + 1) / (bg.sum() + nb)
        lut = (pf / (pf + pb)).astype(np.float32)
        inside = float(lut[idx[mask]].mean())
        return lut, inside, inside - (float(lut[idx[ring]].mean()) if ring.any() else 0.5)

    def _step(
        self,
        state: PredictorState,
        prev_grey: np.ndarray,
        prev_masks: dict[int, np.ndarray],
        prev_scores: dict[int, float],
        img: np.ndarray,
        grey: np.ndarray,
    ) -> tuple[dict[int, np.ndarray], dict[int, float]]:
        cfg = self.config
        flow = self._flow(grey, prev_grey)
        h, w = grey.shape
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        mx, my = xx + flow[..., 0], yy + flow[..., 1]
        out: dict[int, np.ndarray] = {}
        scores: dict[int, float] = {}
        appearance = state.extra.get("appearance", {})
        reliable = colour_idx = None
        for oid, m in prev_masks.items():
            prev_score = prev_scores.get(oid, 1.0)
            if not m.any():
                out[oid], scores[oid] = m, 0.0
                continue
            soft = cv2.remap(m.astype(np.float32), mx, my, cv2.INTER_LINEAR, borderValue=0)
            warped = soft >= 0.5
            if not warped.any():
                # The flow carried the whole (small) mask out of the frame or thinned it away.
                out[oid], scores[oid] = warped, 0.0
                continue
            model = appearance.get(oid)
            if cfg.propagation == "warp" or model is None:
                new = self._refine(img, warped) if cfg.refine == "grabcut" else warped
                out[oid], scores[oid] = new, prev_score * (1.0 if new.any() else 0.0)
                continue
            if reliable is None:
                # Forward-backward check: where the flow into the previous frame and back does not
                # return to the pixel, the pixel was hidden there (disoccluded background behind
                # a moving object, or something entering). Warping drags the mask over exactly
                # those pixels, so there the colour model decides instead.
                back = self._flow(prev_grey, grey)
                ret = cv2.remap(back, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                err = np.linalg.norm(flow + ret, axis=2)
                outside = (mx < 0) | (mx > w - 1) | (my < 0) | (my > h - 1)
                reliable = (err <= cfg.fb_tolerance + 0.1 * np.linalg.norm(flow, axis=2)) & ~outside
                colour_idx = self._colour_index(img)
            lut, anchor_match, separation = model
            colour = lut[colour_idx]
            if colour[warped].mean() < cfg.lost_ratio * anchor_match:
                # Whatever the flow carried here does not look like the object any more
                # (occluded, or gone): stop rather than drag a wrong mask along.
                out[oid], scores[oid] = np.zeros_like(warped), 0.0
                continue
            a = np.where(reliable, cfg.warp_weight, cfg.occluded_warp_weight).astype(np.float32)
            if cfg.colour_trust_separation > 0:
                a = 1 - (1 - a) * min(1.0, max(0.0, separation) / cfg.colour_trust_separation)
            score = a * soft + (1 - a) * colour
            # Only near the warped mask: the colour model alone would find every look-alike.
            diam = 2.0 * np.sqrt(warped.sum() / np.pi)
            r = max(2, int(round(0.1 * diam)))
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
            band = cv2.dilate(warped.astype(np.uint8), kernel) > 0
            new = (score >= cfg.keep_threshold) & band
            core = new & warped & reliable
            new = _keep_overlapping(new, core if core.any() else new & warped)
            new = cv2.morphologyEx(new.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0
            # Confidence: how much of the carried mask survived this frame's checks, compounded
            # from the anchor (a mask that keeps being corrected is a mask to doubt).
            out[oid], scores[oid] = new, prev_score * mask_iou(new, warped)
        return out, scores

    def _start_walk(self, state: PredictorState, start_frame: int, reverse: bool) -> None:
        # Only the previous frame is carried: its small grey image, masks and scores.
        state.extra["walk"] = (None, {}, {})

    def _track_step(self, state, frame_idx, reverse):
        """Warp the previous frame's masks here (see `_step`); a prompted frame's own masks
        replace them (prompts are ground truth), and objects prompted later join from there."""
        prev_grey, prev, prev_scores = state.extra["walk"]
        small, _ = self._small_frame(state, frame_idx)
        grey = self._grey(small)
        cur, scores = {}, {}
        if prev and prev_grey is not None:
            cur, scores = self._step(state, prev_grey, prev, prev_scores, small, grey)
        for oid, m in state.extra.get("small_masks", {}).get(frame_idx, {}).items():
            cur[oid] = m
            scores[oid] = state.scores.get(frame_idx, {}).get(oid, 1.0)
        state.extra["walk"] = (grey, cur, scores)
        h, w = state.extra["size"]
        return {oid: (_upsample(m, (w, h)), scores[oid]) for oid, m in cur.items()}


register_backend(
    "cpu",
    lambda checkpoint=None, device="cpu", config=None, **overrides: CpuPredictor(config, **overrides),
    description="weight-free OpenCV backend (GrabCut vote + DIS optical flow); no downloads",
)
