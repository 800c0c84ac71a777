"""The estimator (layer 5): ERAAdapter's validation, orchestration and fitted state, its
persistence mixin and its state schema (with the solver registry); and, above it
(layer 6), the presets and the 0.1 file converter, which build an ERAAdapter.
"""
