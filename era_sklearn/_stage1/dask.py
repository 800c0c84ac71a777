"""Stage-1 statistics of Dask arrays: alignment sets past one machine's memory.

The closed-form solvers need only sufficient statistics that add up over row
blocks (see ``_statistics``). Each Dask block is reduced to its
``PairStatistics`` by the very function the in-memory path runs (so every
setting, Gram matrix or not, normalised or not, gives the same numbers), the
block statistics are summed pairwise in a tree, and one ``dask.compute``
returns the total. Nothing here knows about the estimator: it validates the
Dask inputs, returns arrays and leaves the solve to the caller.
"""

import numpy as np

from .._utils.validation import FLOAT_DTYPES
from .statistics import PairStatistics


def dask_pair_statistics(X, Y, sample_weight=None, *, gram=True, normalize=False,
                         reservoir=None, block_rows=None):
    """``PairStatistics.from_arrays`` over Dask arrays, one task per row block.

    Parameters
    ----------
    X : dask.array.Array or array-like of shape (n, d_q)
    Y : dask.array.Array or array-like of shape (n, d_d) or (n,)
    sample_weight : dask.array.Array or array-like of shape (n,), default=None
    gram, normalize, block_rows
        As in :meth:`PairStatistics.from_arrays`.
    reservoir : Reservoir, default=None
        When given, Y's rows (normalised when the reservoir normalises) are
        offered to it, as if fed in row order after the rows it has seen:
        each block fills its own reservoir and the blocks are merged.

    Returns
    -------
    stats : PairStatistics
    reservoir : Reservoir or None
        The merged reservoir (a new object), or None when none was given.

    Raises
    ------
    ValueError
        On shapes that do not pair up, unknown chunk sizes, fewer than 2
        rows, NaN or infinity in a block, and whatever ``from_arrays``
        refuses.
    TypeError
        For a Dask DataFrame or Series (convert with ``to_dask_array``).
    """
    import dask

    X, Y, w = as_row_blocks(X, Y, sample_weight)
    starts = np.concatenate([[0], np.cumsum(X.chunks[0])[:-1]])
    offset = 0 if reservoir is None else reservoir.n_seen
    res_spec = None if reservoir is None else (reservoir.capacity, reservoir.seed,
                                               reservoir.normalize)
    weights = [None] * X.numblocks[0] if w is None else list(w.to_delayed())
    parts = [
        dask.delayed(_block_statistics)(
            xb, yb, wb, gram=gram, normalize=normalize, block_rows=block_rows,
            reservoir=None if res_spec is None else (*res_spec, offset + int(start)),
        )
        for xb, yb, wb, start in zip(X.to_delayed()[:, 0], Y.to_delayed()[:, 0], weights, starts)
    ]
    (total,) = dask.compute(_tree_sum(parts))
    stats, blocks_reservoir = total
    return stats, None if reservoir is None else reservoir.merge(blocks_reservoir)


def as_row_blocks(X, Y, sample_weight=None):
    """X, Y (and weights) as Dask arrays with whole rows and the same row blocks.

    Checks what can be checked without reading a block (2-D, matching row
    counts, known chunk sizes, at least 2 rows); cheap, so a caller may run
    it first for its own checks on the shapes.
    """
    X, Y = _as_dask(X, "X"), _as_dask(Y, "Y")
    if Y.ndim == 1:  # one output column, as the in-memory path allows
        Y = Y[:, None]
    if X.ndim != 2 or Y.ndim != 2:
        raise ValueError(
            f"Expected 2D arrays, got X with shape {X.shape} and Y with shape {Y.shape}: X and "
            "Y are embedding matrices of shape (n_texts, n_features)."
        )
    if any(np.isnan(n) for n in X.shape[:1] + Y.shape[:1]):
        raise ValueError("X or Y has unknown chunk sizes; call .compute_chunk_sizes() first.")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"X and Y must have the same number of rows (one pair of embeddings per row); "
            f"got X with {X.shape[0]} rows and Y with {Y.shape[0]} rows."
        )
    if X.shape[0] < 2:
        raise ValueError(f"Found array with {X.shape[0]} sample(s) while a minimum of 2 is "
                         "required.")
    rows = X.chunks[0]
    X, Y = X.rechunk({1: -1}), Y.rechunk({0: rows, 1: -1})
    if sample_weight is None:
        return X, Y, None
    w = _as_dask(sample_weight, "sample_weight")
    if w.shape != (X.shape[0],):
        raise ValueError(f"sample_weight must have shape ({X.shape[0]},); got {w.shape}.")
    return X, Y, w.rechunk({0: rows})


def _as_dask(A, name):
    import dask.array as da

    if not isinstance(A, da.Array) and type(A).__module__.startswith("dask."):
        raise TypeError(f"{name} is a {type(A).__name__}; pass dask arrays "
                        "(e.g. ddf.to_dask_array(lengths=True)).")
    return da.asarray(A)


def _block_statistics(X, Y, sample_weight, *, gram, normalize, block_rows, reservoir):
    """One row block: dtype rule of the in-memory path, then ``from_arrays``."""
    from .reservoir import Reservoir

    X = np.asarray(X)
    if X.dtype not in FLOAT_DTYPES:
        X = X.astype(np.float64)
    Y = np.asarray(Y, dtype=X.dtype)  # Y takes X's dtype, as in fit_align
    stats = PairStatistics.from_arrays(X, Y, sample_weight, gram=gram, normalize=normalize,
                                       block_rows=block_rows)
    if reservoir is None:
        return stats, None
    capacity, seed, res_normalize, start = reservoir
    kept = Reservoir(capacity, seed, start=start, normalize=res_normalize)
    return stats, kept.add(Y, sample_weight)


def _add_parts(a, b):
    """Sum of two (statistics, reservoir) block results."""
    reservoir = a[1] if b[1] is None else b[1] if a[1] is None else a[1].merge(b[1])
    return a[0] + b[0], reservoir


def _tree_sum(parts):
    """Pairwise sum of delayed block results: depth log2(n), never all blocks in one task."""
    import dask

    while len(parts) > 1:
        pairs = [dask.delayed(_add_parts)(a, b) for a, b in zip(parts[::2], parts[1::2])]
        parts = pairs + parts[2 * len(pairs):]
    return parts[0]
