"""Stage 2 of VideoMolmo: points -> temporally consistent masks.

`predictor.MaskPredictor` is the one interface (in the spirit of SAM2's video predictor) that the
`cpu` and `sam2` backends implement; `get_predictor(name, ...)` builds one by name.
"""
