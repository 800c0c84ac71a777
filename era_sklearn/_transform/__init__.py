"""A fitted map applied to queries (layer 2): the blocked linear pass and the numpy
residual-MLP forward. Imports only era_sklearn._utils.
"""
