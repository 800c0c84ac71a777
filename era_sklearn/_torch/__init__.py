"""The torch engine (layer 3): models, training, hard negatives, the paper's fit,
sentence-transformers export. Imports layers 1-2 and era_sklearn._stage2.
"""
