"""Errors that the CLI turns into a one-line message and exit code 2.

Anything raised as a `VideoMolmoError` is the user's input being wrong (a corrupt video, a
mismatched mask, a missing checkpoint); anything else is our bug and keeps its traceback.
"""


class VideoMolmoError(Exception):
    """Base class: bad input, reported without a traceback."""


class VideoError(VideoMolmoError):
    """A video, frame folder or frame list that cannot be read."""


class MaskError(VideoMolmoError):
    """A mask file that cannot be read, or whose size does not match."""


class DatasetError(VideoMolmoError):
    """A dataset folder whose layout is unknown or broken."""


class CheckpointError(VideoMolmoError):
    """A checkpoint directory that is missing, incomplete or does not match the config."""


class ConfigError(VideoMolmoError):
    """An option value outside its allowed range."""
