"""Stage 1, alignment (layer 2): pair statistics, the align problem and result that every
stage-1 solver takes and returns, closed-form maps, the document reservoir, the Dask pass.
Imports only era_sklearn._utils.
"""
