"""Benchmark readers: Ref-DAVIS17, Ref-YouTube-VOS, MeViS, ReVOS and ReasonVOS as one `Sample` type.

    >>> from videomolmo.data import load_dataset
    >>> ds = load_dataset("../shared/data/davis16-mini")        # format auto-detected
    >>> s = ds["dog", "0"]; s.expression, s.gt_mask(0).shape
    ('the dog', (480, 854))

Each format lives in its own module whose docstring gives the exact layout it expects;
`detect_format` explains the detection order.
"""

from videomolmo.data.detect import FORMAT_NAMES, FORMATS, detect_format, load_dataset, normalize_format
from videomolmo.data.sample import Dataset, Sample

__all__ = ["Dataset", "FORMATS", "FORMAT_NAMES", "Sample", "detect_format", "load_dataset", "normalize_format"]
