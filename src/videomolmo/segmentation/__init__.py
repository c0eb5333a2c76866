"""Stage 2 of VideoMolmo: points -> temporally consistent masks.

`predictor.MaskPredictor` is the one interface (in the spirit of SAM2's video predictor) that every
backend implements; `registry` holds the backends by name (`get_predictor(name, ...)`).
"""
