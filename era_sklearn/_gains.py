"""Ranking metrics of rank-ordered gains, shared by every scoring path.

A ranking reaches these kernels as the grades of its documents in rank order
(``gains``, one row per query) beside the grades the query's judged relevant
documents have (for the ideal DCG and recall's denominator). The dense path of
:mod:`era_sklearn.metrics` (a score for every document) and the ranked-results
path (:mod:`era_sklearn._ranked_results`: ids of a search engine's top k) both
reduce to that form, so both compute nDCG, recall and reciprocal rank with the
same code.
"""

import numpy as np


def discount(n_ranks):
    """``1 / log2(rank + 1)`` of the 1-based ranks ``1 .. n_ranks``."""
    return 1.0 / np.log2(np.arange(2, n_ranks + 2))


def ideal_dcg(rows, values, n_rows, k):
    """DCG at ``k`` of each row's ideal ranking, from its judged positive grades.

    ``rows[i]`` is the query row of the positive grade ``values[i]``. Working
    on these few entries avoids sorting rows that are mostly zeros (slow: many
    ties), and never allocates more discounts than there are grades.
    """
    order = np.lexsort((-values, rows))
    rows, values = rows[order], values[order]
    rank = np.arange(rows.shape[0]) - np.searchsorted(rows, rows)  # 0-based, per row
    keep = rank < k
    weights = values[keep] * (1.0 / np.log2(rank[keep] + 2))
    return np.bincount(rows[keep], weights=weights, minlength=n_rows)


def ndcg(gains, ideal):
    """nDCG of rank-ordered ``gains`` (already cut at k) given each row's ideal DCG."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (gains @ discount(gains.shape[1])) / ideal


def recall(gains, n_relevant):
    """Fraction of each row's ``n_relevant`` judged documents among its ranked ``gains``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (gains > 0).sum(axis=1) / n_relevant


def reciprocal_rank(gains):
    """``1 / rank`` of the first relevant document in ``gains``, 0 when there is none."""
    hit = gains > 0
    first = hit.argmax(axis=1)
    return np.where(hit.any(axis=1), 1.0 / (first + 1.0), 0.0)
