"""The estimator (layer 5) and its presets (layer 6): ERAAdapter's validation,
orchestration and fitted state.
"""
