"""Sufficient statistics of a paired embedding set.

The closed-form stage-1 solvers only need ``X^T X``, ``X^T Y`` and column sums,
all of which add up over chunks. Keeping them in one object lets ``fit_align``,
``partial_fit_align`` and the Dask path share a single solver.
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class PairStatistics:
    """Weighted sums over rows of paired embeddings ``(x_i, y_i)``.

    ``xtx`` is ``None`` when the solver does not need the Gram matrix
    (Procrustes), which halves the work of a fit.
    """

    weight_sum: float
    x_sum: np.ndarray
    y_sum: np.ndarray
    x_sqnorm: float
    xty: np.ndarray
    xtx: np.ndarray | None
    n_dropped: int = 0

    @classmethod
    def from_arrays(cls, X, Y, sample_weight=None, *, gram=True, normalize=False):
        """Statistics of one chunk; the GEMMs run in the inputs' dtype.

        Weights are applied to the narrower side where possible: ``X^T (w Y)``
        copies Y, not X, and the Gram uses ``sqrt(w) X`` once. ``unit_rows``
        says X's rows are L2-normalised, which saves the pass for ``x_sqnorm``.
        """
        keep = (np.abs(X).max(axis=1) > 0) & (np.abs(Y).max(axis=1) > 0)
        n_dropped = int(len(X) - keep.sum())
        if n_dropped:
            X, Y = X[keep], Y[keep]
            sample_weight = None if sample_weight is None else np.asarray(sample_weight)[keep]
        if normalize:
            from ._validation import l2_normalize

            X, Y = l2_normalize(X), l2_normalize(Y)
        unit_rows = normalize
        if sample_weight is None:
            w = None
            weight_sum = float(X.shape[0])
            x_sum, y_sum = X.sum(axis=0), Y.sum(axis=0)
            Yw, Xs = Y, X
        else:
            w = np.asarray(sample_weight, dtype=X.dtype)
            weight_sum = float(w.sum(dtype=np.float64))
            x_sum, y_sum = w @ X, w @ Y
            Yw = Y * w[:, None]
            Xs = X * np.sqrt(w)[:, None] if gram else None
        # Row norms in the input dtype, summed in float64: a float64 einsum
        # over the whole matrix would cost more than the GEMMs themselves.
        if unit_rows:
            x_sqnorm = weight_sum
        else:
            row_sq = np.einsum("ij,ij->i", X, X)
            x_sqnorm = float(row_sq.sum(dtype=np.float64) if w is None else row_sq @ w)
        return cls(
            weight_sum=weight_sum,
            x_sum=x_sum.astype(np.float64),
            y_sum=y_sum.astype(np.float64),
            x_sqnorm=x_sqnorm,
            xty=(X.T @ Yw).astype(np.float64),
            xtx=(Xs.T @ Xs).astype(np.float64) if gram else None,
            n_dropped=n_dropped,
        )

    def __add__(self, other):
        """Statistics of the union of two disjoint row sets."""
        xtx = None
        if self.xtx is not None and other.xtx is not None:
            xtx = self.xtx + other.xtx
        return PairStatistics(
            weight_sum=self.weight_sum + other.weight_sum,
            x_sum=self.x_sum + other.x_sum,
            y_sum=self.y_sum + other.y_sum,
            x_sqnorm=self.x_sqnorm + other.x_sqnorm,
            xty=self.xty + other.xty,
            xtx=xtx,
            n_dropped=self.n_dropped + other.n_dropped,
        )

    @property
    def x_mean(self):
        return self.x_sum / self.weight_sum

    @property
    def y_mean(self):
        return self.y_sum / self.weight_sum

    def centered(self):
        """The same statistics after subtracting the weighted column means."""
        n = self.weight_sum
        mx, my = self.x_mean, self.y_mean
        xtx = None if self.xtx is None else self.xtx - n * np.outer(mx, mx)
        return PairStatistics(
            weight_sum=n,
            x_sum=np.zeros_like(self.x_sum),
            y_sum=np.zeros_like(self.y_sum),
            x_sqnorm=self.x_sqnorm - n * float(mx @ mx),
            xty=self.xty - n * np.outer(mx, my),
            xtx=xtx,
        )
