"""Evaluation: scoring prediction folders (`masks`, behind `videomolmo eval-masks`) and the
resumable benchmark runner (`runner`, `summary`, behind `videomolmo eval`)."""

from videomolmo.evaluation.masks import evaluate_predictions, first_frame_baseline, per_video

__all__ = ["evaluate_predictions", "first_frame_baseline", "per_video"]
