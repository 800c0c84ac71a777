"""Stage 1 (``fit_align``) on Dask arrays: alignment sets past one machine's memory.

The closed-form solvers need only sufficient statistics that add up over row
blocks (see ``_statistics``). Each block is validated, normalised and reduced
to its ``PairStatistics`` by the very code the in-memory path runs, the block
statistics are summed pairwise in a tree, and one ``dask.compute`` returns
the total; the estimator then solves the small d x d problem locally.
"""

import operator

import numpy as np

from ._adapter import CLOSED_FORM_ALIGN
from ._statistics import PairStatistics
from ._validation import check_sample_weight_and_groups


def fit_align_dask(est, X, y, sample_weight=None):
    """``est.fit_align`` for Dask inputs; returns the fitted ``est``.

    Parameters
    ----------
    est : ERAAdapter
        With a closed-form ``align`` (``"procrustes"`` or ``"lstsq"``).
    X : dask.array.Array or array-like of shape (n_texts, d_q)
    y : dask.array.Array or array-like of shape (n_texts, d_d)
    sample_weight : dask.array.Array or array-like of shape (n_texts,), default=None

    Returns
    -------
    est : ERAAdapter
    """
    import dask

    if est.align not in CLOSED_FORM_ALIGN:
        raise ValueError(
            f"fit_align on dask arrays needs a closed-form align ('procrustes' or 'lstsq'); "
            f"align={est.align!r} trains with torch on the data itself: pass numpy arrays."
        )
    X, Y, w = _aligned_blocks(X, y, sample_weight)
    d_d = Y.shape[1]
    # The estimator's own checks on a stand-in with the real width and dtype
    # set n_features_in_ / _fit_dtype and raise the in-memory path's errors
    # (hybrid layout, stage-1 width) before any block is read.
    proxy = est._check_X(np.ones((2, X.shape[1]), dtype=X.dtype), reset=True, min_samples=2)
    est._check_Y(np.ones((2, d_d), dtype=proxy.dtype), proxy)
    blocks = zip(X.to_delayed()[:, 0], Y.to_delayed()[:, 0], _weight_blocks(w, X))
    parts = [dask.delayed(_block_statistics)(est, xb, yb, wb) for xb, yb, wb in blocks]
    (stats,) = dask.compute(_tree_sum(parts))
    W, b = est._solve_align(stats)
    est._set_align(None, d_d, W, b)  # as fit_align: a later partial_fit_align starts afresh
    return est


def _aligned_blocks(X, y, sample_weight):
    """X, Y (and weights) as Dask arrays with whole rows and the same row blocks."""
    import dask.array as da

    X, Y = _as_dask(X, "X"), _as_dask(y, "y")
    if Y.ndim == 1:  # one output column, as the in-memory path allows
        Y = Y[:, None]
    if X.ndim != 2 or Y.ndim != 2:
        raise ValueError(
            f"Expected 2D arrays, got X with shape {X.shape} and y with shape {Y.shape}: X and Y "
            "are embedding matrices of shape (n_texts, n_features)."
        )
    if any(np.isnan(n) for n in X.shape[:1] + Y.shape[:1]):
        raise ValueError("X or y has unknown chunk sizes; call .compute_chunk_sizes() first.")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"X and Y must have the same number of rows (one pair of embeddings per row); "
            f"got X with {X.shape[0]} rows and Y with {Y.shape[0]} rows."
        )
    if X.shape[0] < 2:
        raise ValueError(f"Found array with {X.shape[0]} sample(s) while a minimum of 2 is "
                         "required by ERAAdapter.fit_align.")
    rows = X.chunks[0]
    X, Y = X.rechunk({1: -1}), Y.rechunk({0: rows, 1: -1})
    if sample_weight is None:
        return X, Y, None
    w = da.asarray(sample_weight)
    if w.shape != (X.shape[0],):
        raise ValueError(f"sample_weight must have shape ({X.shape[0]},); got {w.shape}.")
    return X, Y, w.rechunk({0: rows})


def _as_dask(A, name):
    import dask.array as da

    if not isinstance(A, da.Array) and type(A).__module__.startswith("dask."):
        raise TypeError(f"{name} is a {type(A).__name__}; ERAAdapter.fit_align takes dask "
                        "arrays (e.g. ddf.to_dask_array(lengths=True)).")
    return da.asarray(A)


def _weight_blocks(w, X):
    return [None] * X.numblocks[0] if w is None else list(w.to_delayed())


def _block_statistics(est, X, Y, sample_weight):
    """One row block, validated, normalised and reduced exactly as ``fit_align`` does."""
    X = est._check_X(X, reset=False, min_samples=0)  # min 2 rows is checked on the whole
    Y = est._check_Y(Y, X)
    X = est._normalize_X(X, Y.shape[1])
    sample_weight, _ = check_sample_weight_and_groups(sample_weight, None, len(X), X.dtype)
    Xq = X[:, : X.shape[1] - Y.shape[1]] if est.hybrid else X
    return PairStatistics.from_arrays(Xq, Y, sample_weight, gram=est.align == "lstsq")


def _tree_sum(parts):
    """Pairwise sum of delayed statistics: depth log2(n), never all blocks in one task."""
    import dask

    while len(parts) > 1:
        pairs = [dask.delayed(operator.add)(a, b) for a, b in zip(parts[::2], parts[1::2])]
        parts = pairs + parts[2 * len(pairs):]
    return parts[0]
