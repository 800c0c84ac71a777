"""Stage 1, alignment (layer 2): pair statistics, closed-form maps, the document reservoir,
the Dask pass. Imports only era_sklearn._utils.
"""
