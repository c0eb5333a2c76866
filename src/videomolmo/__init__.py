"""VideoMolmo: spatio-temporal grounding in video by pointing."""

__version__ = "0.1.0"
