"""Ranking kernels of :mod:`era_sklearn.metrics`: top-k selection and the metrics of gains.

A ranking reaches the metric kernels as the grades of its documents in rank
order (``gains``, one row per query) beside the grades the query's judged
relevant documents have (for the ideal DCG and recall's denominator). The dense
path (a score for every document, ranked here by :func:`top_k_block`) and the
ranked-results path (:mod:`era_sklearn._metrics.ranked_results`: ids of a search
engine's top k) both reduce to that form, so both compute nDCG, recall and
reciprocal rank with the same code.
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


# Dense score blocks: a score for every (query, document) cell.


def top_k_block(scores, k):
    """Indices of the k best columns of each row, best first, ties by index."""
    n_cols = scores.shape[1]
    if k >= n_cols:
        return np.argsort(-scores, axis=1, kind="stable")
    # Fast path: argpartition finds the top k in one pass. It picks arbitrarily
    # among values tied with the k-th, so rows with such a tie across the cut
    # (rare with float scores) take the exact, slower path below.
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(scores, part, axis=1)
    kth = values.min(axis=1, keepdims=True)
    tied = (scores == kth).sum(axis=1) > (values == kth).sum(axis=1)
    if tied.any():
        part[tied] = _top_k_with_ties(scores[tied], k)
        values[tied] = np.take_along_axis(scores[tied], part[tied], axis=1)
    order = np.lexsort((part, -values), axis=1)  # by score, then lower index
    return np.take_along_axis(part, order, axis=1)


def _top_k_with_ties(scores, k):
    """Exact top-k set when values tie at the cut: lower column indices win."""
    n_cols = scores.shape[1]
    # k-th largest value per row; everything strictly above it is kept, and
    # among values equal to it only the lowest column indices.
    kth = np.partition(scores, n_cols - k, axis=1)[:, n_cols - k, None]
    above = scores > kth
    n_missing = k - above.sum(axis=1, keepdims=True)
    at_kth = scores == kth
    keep = above | (at_kth & (np.cumsum(at_kth, axis=1) <= n_missing))
    # nonzero walks row-major, so each row's indices come out ascending.
    return np.nonzero(keep)[1].reshape(scores.shape[0], k)


def _ranked_gains(scores, grades, k):
    """Grades of the top-``k`` documents of each query, in rank order."""
    return np.take_along_axis(grades, top_k_block(scores, k), axis=1)


def _ideal_dcg(grades, k):
    """DCG of the ideal ranking: the k largest grades of each row, in order."""
    rows, cols = np.nonzero(grades > 0)
    return ideal_dcg(rows, grades[rows, cols], grades.shape[0], k)


def _ndcg_block(scores, grades, k):
    return ndcg(_ranked_gains(scores, grades, k), _ideal_dcg(grades, k))


def _recall_block(scores, grades, k):
    return recall(_ranked_gains(scores, grades, k), (grades > 0).sum(axis=1))


def _rr_block(scores, grades, k):
    # Only the rank of the best-ranked relevant document matters, which is
    # 1 + the number of documents ranked before it: a linear count instead of
    # sorting every row when k is large or None.
    relevant = grades > 0
    best_score = np.where(relevant, scores, -np.inf).max(axis=1, keepdims=True)
    # lowest-index relevant document among those tied at the best score
    best = (relevant & (scores == best_score)).argmax(axis=1)
    before = (scores > best_score) | (
        (scores == best_score) & (np.arange(scores.shape[1]) < best[:, None])
    )
    rank = before.sum(axis=1) + 1.0
    found = relevant.any(axis=1) & (rank <= k)
    return np.where(found, 1.0 / rank, 0.0)


_KERNELS = {"ndcg": _ndcg_block, "recall": _recall_block, "mrr": _rr_block}


def metric_block(metric, scores, grades, k):
    """Per-query ``metric`` of a block; NaN for queries without relevant docs."""
    k = scores.shape[1] if k is None else min(k, scores.shape[1])
    values = _KERNELS[metric](scores, grades, k)
    return np.where((grades > 0).any(axis=1), values, np.nan)
