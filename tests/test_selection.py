"""Held-out selection of stage 2: its fast nDCG and its guard against noise."""

import numpy as np
import pytest

from era_sklearn._stage2.heldout import HeldOutQueries, ridge_beats_fallback
from era_sklearn.metrics import ndcg_at_k


@pytest.mark.parametrize("rels_per_query", [1, 3, 12])
def test_fast_ndcg_equals_the_metrics_module(rels_per_query):
    rng = np.random.default_rng(rels_per_query)
    n_queries, n_cand = 30, 200
    qids = np.repeat(np.arange(n_queries), rels_per_query)
    doc_idx = rng.integers(0, n_cand, size=len(qids))
    grades = rng.integers(1, 3, size=len(qids)).astype(float)
    X = rng.normal(size=(n_queries, 4))[qids]
    heldout = HeldOutQueries(X, qids, doc_idx, grades, np.arange(n_queries), n_cand)
    # Rounded scores create ties across the top-10 cut on purpose.
    S = np.round(rng.normal(size=(n_queries, n_cand)), 1).astype(np.float32)
    np.testing.assert_allclose(heldout.ndcg(S), ndcg_at_k(S, heldout.rel, k=10, average=False))


def test_repeated_pairs_keep_their_largest_grade():
    qids = np.array([0, 0, 0])
    heldout = HeldOutQueries(np.zeros((3, 2)), qids, np.array([5, 5, 7]),
                             np.array([1.0, 2.0, 1.0]), [0], 10)
    assert heldout.rel[0, 5] == 2.0 and heldout.rel[0, 7] == 1.0


def test_one_standard_error_rule():
    rng = np.random.default_rng(0)
    fallback = rng.random(200)
    assert not ridge_beats_fallback(fallback + rng.normal(0, 0.2, 200) + 0.001, fallback)
    assert ridge_beats_fallback(fallback + 0.1, fallback)
