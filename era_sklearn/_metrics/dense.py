"""Dense ranking metrics: a score for every (query, document), checked, in bounded blocks.

The public metrics (:mod:`era_sklearn.metrics`) and stage 2's held-out
selection (:mod:`era_sklearn._stage2.heldout`) both score rankings here, so the
engines need not import the public module above them.
"""

import numbers
import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.utils import check_array

from . import rank_kernels as kernels

# Cap on the number of cells of a (queries x documents) block held at once:
# about 32 MB per float64 temporary, whatever the matrix size.
BLOCK_CELLS = 1 << 22


def row_slices(n_rows, n_cols):
    """Yield row slices whose blocks hold at most ``BLOCK_CELLS`` cells."""
    step = max(1, BLOCK_CELLS // max(n_cols, 1))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def check_k(k, *, allow_none=False):
    if k is None and allow_none:
        return None
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    return int(k)


def check_scores(scores):
    # Infinite scores are legitimate (e.g. -inf to mask a document); NaN has
    # no place in a ranking, so it is rejected explicitly.
    scores = check_array(
        scores, dtype=(np.float64, np.float32), ensure_all_finite=False, input_name="scores"
    )
    if np.isnan(scores).any():
        raise ValueError("scores contains NaN.")
    return scores


def check_scores_qrels(scores, qrels):
    scores = check_scores(scores)
    qrels = check_array(
        qrels, accept_sparse="csr", dtype=np.float64, input_name="qrels", ensure_min_samples=1
    )
    if qrels.shape != scores.shape:
        raise ValueError(
            f"scores and qrels must have the same shape, got scores {scores.shape} "
            f"and qrels {qrels.shape}."
        )
    return scores, qrels


def dense_grades(qrels, rows):
    """Dense, non-negative grades of a block of query rows."""
    block = qrels[rows]
    block = block.toarray() if sp.issparse(block) else np.array(block, dtype=np.float64)
    return np.maximum(block, 0.0)


def reduce_per_query(values, average):
    if not average:
        return values
    if np.isnan(values).all():
        warnings.warn(
            "No query has a relevant document; the mean is undefined (NaN).",
            UndefinedMetricWarning,
            stacklevel=3,
        )
        return float("nan")
    return float(np.nanmean(values))


def ranking_metric(metric, scores, qrels, k, average):
    scores, qrels = check_scores_qrels(scores, qrels)
    values = np.empty(scores.shape[0])
    for rows in row_slices(*scores.shape):
        values[rows] = kernels.metric_block(metric, scores[rows], dense_grades(qrels, rows), k)
    return reduce_per_query(values, average)
