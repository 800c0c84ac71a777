"""Ranking metrics' kernels (layer 2): dense and ranked-result scoring. Imports only
era_sklearn._utils.
"""
