"""What a result cannot tell by itself: the bundled model's limits, and finding nothing.

One wording for the CLI (stderr), the Python API (`warnings` + `PipelineResult.notes`) and the
web page (a banner), so the three never disagree.
"""

from __future__ import annotations

BUNDLED_NOTICE = (
    "note: the bundled model is a 4M-parameter model trained on synthetic sprite clips and is not "
    "expected to work on real footage; load VideoMolmo weights with --model DIR "
    "(Pipeline.from_pretrained(DIR) in Python; see `videomolmo info --preset`)"
)


class BundledModelWarning(UserWarning):
    """The bundled (synthetic-only) model is running on input outside its domain."""


class NothingFoundWarning(UserWarning):
    """The pointer put no point on any sampled frame."""


def uses_bundled_model(pointer) -> bool:
    return bool(getattr(pointer, "is_bundled", False))


def nothing_found(query: str, sampled: int) -> str:
    return f"nothing found for {query!r}: no point on any of the {sampled} sampled frames (count 0, empty masks)"
