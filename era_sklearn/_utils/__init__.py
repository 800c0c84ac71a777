"""Shared utilities (layer 1): input validation, BLAS thread control, row-blocked passes,
optional imports. Imports nothing else of era_sklearn.
"""
