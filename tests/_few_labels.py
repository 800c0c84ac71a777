"""A small stage-2 problem whose labels move stage 1 (shared by tests and fixture scripts)."""

import numpy as np


def stage2_data(seed=1, n_docs=200, n_queries=16, d_q=8, d_d=6):
    """``(X_docs, Y_docs, X, Y)``: alignment pairs, and one relevant document for each of
    ``n_queries`` labelled queries embedded by another encoder, which the labels can correct.
    """
    rng = np.random.default_rng(seed)
    X_docs = rng.normal(size=(n_docs, d_q))
    Y_docs = X_docs @ rng.normal(size=(d_q, d_d)) + 0.3 * rng.normal(size=(n_docs, d_d))
    relevant = rng.choice(n_docs, size=n_queries, replace=False)
    X = X_docs[relevant] + X_docs[relevant] @ rng.normal(size=(d_q, d_q)) / np.sqrt(d_q)
    return X_docs, Y_docs, X, Y_docs[relevant]
