"""Sufficient statistics of a paired embedding set, in one blocked pass.

The closed-form stage-1 solvers only need ``X^T X``, ``X^T Y`` and column
sums, all of which add up over chunks. Keeping them in one object lets
``fit_align``, ``partial_fit_align`` and the Dask path share a single solver.

:meth:`PairStatistics.from_arrays` reads the rows once, a block at a time:
each block is normalised (or weighted) into a reused buffer in the input's
dtype, then BLAS adds the block's ``X_b^T X_b`` (a symmetric rank-k update:
half the flops of a GEMM) and ``X_b^T Y_b`` to accumulators. So the
normalisation costs no extra pass over the data and no copy of it, and a
float32 fit runs its GEMMs in float32 while the totals are kept in float64.
"""

from dataclasses import dataclass

import numpy as np

from .._utils.blocks import block_rows_for, n_threads_for, run_blocks, threads_used
from .._utils.validation import _rescaled_rows, _square_sums

#: float32 block results are summed in float32 by BLAS for this many rows,
#: then added to the float64 totals: the float64 additions stay negligible,
#: and no float32 sum spans more rows than this.
FLUSH_ROWS = 32_768


@dataclass
class PairStatistics:
    """Weighted sums over rows of paired embeddings ``(x_i, y_i)``.

    ``xtx`` is ``None`` when the solver does not need the Gram matrix
    (Procrustes without scale), which halves the work of a fit.
    ``n_dropped`` counts pairs left out because a row was all zeros (only
    when the rows were L2-normalised: a zero row has no direction).
    """

    weight_sum: float
    x_sum: np.ndarray
    y_sum: np.ndarray
    x_sqnorm: float
    xty: np.ndarray
    xtx: np.ndarray | None
    n_dropped: int = 0

    @classmethod
    def from_arrays(cls, X, Y, sample_weight=None, *, gram=True, normalize=False,
                    block_rows=None, n_threads=None):
        """Statistics of one chunk of pairs, in a single blocked pass.

        Parameters
        ----------
        X : ndarray of shape (n, d_q)
            Finite float32 or float64 (other dtypes become float64).
        Y : ndarray of shape (n, d_d)
        sample_weight : ndarray of shape (n,), default=None
            Non-negative, finite.
        gram : bool, default=True
            Accumulate ``X^T X`` (least squares, Procrustes with scale).
        normalize : bool, default=False
            L2-normalise each row of X and of Y first (overflow-safe: any
            finite row works, huge or subnormal). Pairs where either row is
            all zeros are left out and counted in ``n_dropped``.
        block_rows : int, default=None
            Rows per block; by default about 24 MiB of X over all threads
            (``_utils.blocks.BLOCK_BYTES``).
        n_threads : int, default=None
            Threads that each take every ``n_threads``-th block, with BLAS
            single-threaded meanwhile; default: as many as BLAS has. The
            result does not depend on thread timing (each thread's blocks
            are fixed and the threads' sums are added in order).

        Returns
        -------
        stats : PairStatistics
            All sums in float64.

        Raises
        ------
        ValueError
            If X or Y contains NaN or infinity, or, with ``normalize=False``,
            if their values are too large to square in their dtype.
        """
        X, Y, w = _check_pairs(X, Y, sample_weight)
        n_threads = n_threads_for(n_threads)
        block_rows = block_rows_for(block_rows, X.shape[1], X.dtype, n_threads)
        n_threads = threads_used(len(X), block_rows, n_threads)
        accs = [_Accumulator(X.shape[1], Y.shape[1], X.dtype, gram, normalize,
                             min(block_rows, max(len(X), 1))) for _ in range(n_threads)]

        def add_block(t, start, stop):
            accs[t].add(X[start:stop], Y[start:stop], None if w is None else w[start:stop], start)

        run_blocks(len(X), block_rows, n_threads, add_block)
        results = [acc.result() for acc in accs]
        return sum(results[1:], results[0])

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
            n_dropped=self.n_dropped,
        )


#: Fixed memory of the multi-threaded pass (the thread pool's Python objects).
POOL_OVERHEAD_BYTES = 128 * 1024


def working_bytes(d_q, d_d, dtype=np.float32, *, gram=True, block_rows=None, n_threads=None):
    """Memory ``from_arrays`` allocates besides its inputs: block buffers and sums.

    It does not grow with the number of rows; tests/test_statistics.py checks
    it with tracemalloc and benchmarks/speed.py against the peak RSS of a fit.
    """
    dtype = np.dtype(dtype)
    n_threads = n_threads_for(n_threads)
    rows = block_rows_for(block_rows, d_q, dtype, n_threads)
    # Row buffers of X (when it must be copied) and of Y, and per block about
    # a dozen vectors (norms, weights).
    buffers = rows * ((d_q + d_d + 1) * dtype.itemsize + 128)
    sums = d_q * ((d_d + 1) + (d_q if gram else 0))
    # Per thread: a block's products and the partial sums, in the input dtype,
    # and float64 totals (the partial sums themselves for float64 input);
    # then the result's copies of X^T Y and, summing the threads' results, of X^T X.
    per_entry = 2 * dtype.itemsize + (8 if dtype == np.float32 else 0)
    result = d_q * d_d * 8 * (2 if n_threads > 1 else 1)
    if gram and n_threads > 1:
        result += d_q * d_q * 8
    if n_threads > 1:
        # The thread pool's Python objects, whatever the sizes (the 2-thread memory test
        # measured up to 46 KB above the arrays' own bytes).
        result += POOL_OVERHEAD_BYTES
    return n_threads * (buffers + sums * per_entry) + result


def _check_pairs(X, Y, sample_weight):
    """Shapes and dtypes only: values are checked in the pass itself, for free."""
    X, Y = np.asarray(X), np.asarray(Y)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"X and Y must be 2-D with the same number of rows; got shapes {X.shape} and "
            f"{Y.shape}."
        )
    if X.dtype not in (np.float32, np.float64):  # as check_array: float32 stays float32
        X = X.astype(np.float64)
    # Y is cast to X's dtype a block at a time, in the pass.
    if sample_weight is None:
        return X, Y, None
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (X.shape[0],):
        raise ValueError(f"sample_weight must have shape ({X.shape[0]},); got {w.shape}.")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("sample_weight must be finite and non-negative.")
    return X, Y, w


class _Accumulator:
    """Running sums of one pass; ``add`` takes one block of rows.

    Row ``i`` of a block enters as ``x~_i, y~_i`` (unit rows when
    normalising, else the rows themselves) with weight ``w_i`` (0 for a
    dropped pair). Y's block is written, scaled, into a buffer with one
    extra column, so that one GEMM yields ``X^T Y`` and X's column sums
    together. X's block is used in place when it can be (Procrustes needs no
    Gram matrix, and row scales can all go to Y's side), else scaled into a
    buffer of its own:

    - X copied: ``X_s = sqrt(w)/|x| X``, ``Y_s = [sqrt(w)/|y| Y, sqrt(w)]``;
    - X in place: ``X_s = X``, ``Y_s = [w/(|x||y|) Y, w/|x|]``;

    and ``X_s^T Y_s = [sum w x~ y~^T, sum w x~]`` either way, with the Gram
    matrix ``X_s^T X_s`` from a symmetric rank-k update of the copy.
    """

    def __init__(self, d_q, d_d, dtype, gram, normalize, block_rows):
        self.d_q, self.d_d, self.dtype = d_q, d_d, dtype
        self.gram, self.normalize = gram, normalize
        self.block_rows = block_rows
        self.x_buf = None  # allocated on first need: Procrustes never copies X
        self.y_buf = np.empty((block_rows, d_d + 1), dtype=dtype)
        # Each block's products land in the scratch arrays, then are added to
        # the partial sums; float64 input accumulates straight into the totals.
        self.xty_block = np.empty((d_q, d_d + 1), dtype=dtype)
        self.xtx_block = np.empty((d_q, d_q), dtype=dtype) if gram else None
        self.xty_part = np.zeros((d_q, d_d + 1), dtype=dtype)
        self.xtx_part = np.zeros((d_q, d_q), dtype=dtype) if gram else None
        self.xty = np.zeros((d_q, d_d + 1)) if dtype == np.float32 else self.xty_part
        self.xtx = (np.zeros((d_q, d_q)) if dtype == np.float32 else self.xtx_part
                    ) if gram else None
        self.y_sum = np.zeros(d_d)
        self.part_rows = 0  # rows in the float32 partial sums not yet flushed
        self.part_bound = 0.0  # bound on any entry of the partial sums
        self.weight_sum = self.x_sqnorm = 0.0
        self.n_dropped = 0

    def add(self, X, Y, w, offset=0):
        """Add one block of rows (``w``: its weights or None; ``offset``: its first row)."""
        n = len(X)
        if n == 0:
            return
        X, Y = X.astype(self.dtype, copy=False), Y.astype(self.dtype, copy=False)
        w = np.ones(n) if w is None else np.array(w, dtype=np.float64)
        if self.normalize:
            ux, x_units = self._unit_scales(X, "X")
            uy, y_units = self._unit_scales(Y, "Y")
            dropped = (ux == 0) | (uy == 0)
            self.n_dropped += int(np.count_nonzero(dropped))
            w[dropped] = 0
            bound = float(w.sum())  # every entry of the block's sums is at most sum(w)
        else:
            sqx = self._raw_square_sums(X, "X", offset)
            sqy = self._raw_square_sums(Y, "Y", offset)
            self.x_sqnorm += float(w @ sqx)
            bound = max(float(w @ sqx), float(w @ sqy)) + float(w.sum())
            ux = uy = np.ones(n)
            x_units = y_units = None
        self.weight_sum += float(w.sum())
        self._check_range(bound)
        weighted_gram = self.gram and (self.normalize or not np.all(w == 1))
        if weighted_gram or x_units is not None or not X.flags.c_contiguous:
            a = np.sqrt(w)
            xs = self._fill(self._x_block(n), X, a * ux, x_units, a)
            ys = self._fill(self.y_buf[:n, :-1], Y, a * uy, y_units, a)
            self.y_buf[:n, -1] = a
            y_weights = a
        else:  # X in place: every row factor moves to Y's side
            xs, p = X, w * ux
            ys = self._fill(self.y_buf[:n, :-1], Y, p * uy, y_units, p)
            self.y_buf[:n, -1] = p
            with np.errstate(divide="ignore"):
                y_weights = np.where(p > 0, 1.0 / ux, 0.0)  # |x|: rows of Y_s are w y~ / |x|
        self._update(xs, self.y_buf[:n])
        self.y_sum += y_weights.astype(self.dtype) @ ys

    def _x_block(self, n):
        if self.x_buf is None:
            self.x_buf = np.empty((self.block_rows, self.d_q), dtype=self.dtype)
        return self.x_buf[:n]

    def _fill(self, out, A, scale, units, unit_scale):
        """``scale * A`` into ``out``; distrusted rows from their exact units instead."""
        # einsum rather than a broadcast multiply: the same products, written faster into
        # the strided rows of Y's buffer (100,000 x 384 float32: 12 ms against 21 ms).
        np.einsum("ij,i->ij", A, scale.astype(self.dtype), out=out)
        if units is not None:
            rows, unit_rows = units
            out[rows] = unit_rows * unit_scale[rows, None]
        return out

    def _unit_scales(self, A, name):
        """Per-row 1/norm (0 for a zero row), and exact unit rows where squares can't be trusted."""
        sq, rows = _square_sums(A)
        with np.errstate(divide="ignore"):
            scale = 1.0 / np.sqrt(sq, dtype=np.float64)
        if not rows.size:
            return scale, None
        _check_finite(A[rows], name)
        _, units, zero = _rescaled_rows(A[rows])
        scale[rows] = np.where(zero, 0.0, 1.0)  # nonzero rows are replaced by their units
        return scale, (rows, units)

    def _raw_square_sums(self, A, name, offset):
        """Squared row norms (float64); the rows must be finite and their squares representable."""
        sq, rows = _square_sums(A)
        if rows.size:
            _check_finite(A[rows], name)
            norms = _rescaled_rows(A[rows])[0]
            big = ~(norms <= np.sqrt(np.finfo(self.dtype).max))
            if big.any():
                raise ValueError(
                    f"{name} has values too large for unnormalised fitting: row "
                    f"{offset + rows[big][0]} has norm {norms[big][0]:.3g}, whose square "
                    f"overflows {self.dtype.name} "
                    f"(max {np.finfo(self.dtype).max:.3g}). Normalise the rows "
                    "(normalize_input=True) or rescale the data."
                )
        return sq.astype(np.float64)

    def _check_range(self, bound):
        """Flush the float32 partial sums before they could overflow or grow imprecise."""
        limit = np.finfo(self.dtype).max / 4
        if bound > limit:
            what = ("sample_weight values are too large" if self.normalize else
                    "X or Y has values too large for unnormalised fitting")
            raise ValueError(
                f"{what}: the block's sums of squares reach {bound:.3g}, beyond what "
                f"{self.dtype.name} can accumulate (max {np.finfo(self.dtype).max:.3g}). "
                "Rescale them."
            )
        if self.dtype == np.float32 and (
            self.part_rows >= FLUSH_ROWS or self.part_bound + bound > limit
        ):
            self._flush()
        self.part_bound += bound

    def _update(self, xs, ys):
        # numpy's matmul rather than scipy.linalg.blas: scipy's wrappers hold
        # the GIL, so the pass threads took turns (2 threads: 0.92 s against
        # 0.46 s for X^T Y at 1e5 x 768 x 384), and numpy runs ``xs.T @ xs``
        # (one buffer, transposed) as a symmetric rank-k update by itself.
        np.matmul(xs.T, ys, out=self.xty_block)
        self.xty_part += self.xty_block
        if self.gram:
            np.matmul(xs.T, xs, out=self.xtx_block)
            self.xtx_part += self.xtx_block
        self.part_rows += len(xs)

    def _flush(self):
        if self.dtype == np.float32 and self.part_rows:
            self.xty += self.xty_part
            self.xty_part.fill(0)
            if self.gram:
                self.xtx += self.xtx_part
                self.xtx_part.fill(0)
        self.part_rows, self.part_bound = 0, 0.0

    def result(self):
        self._flush()
        d_d = self.d_d
        xtx = None
        if self.gram:
            xtx = self.xtx
        return PairStatistics(
            weight_sum=self.weight_sum,
            x_sum=self.xty[:, d_d].copy(),
            y_sum=self.y_sum,
            x_sqnorm=self.weight_sum if self.normalize else self.x_sqnorm,
            xty=np.ascontiguousarray(self.xty[:, :d_d]),
            xtx=xtx,
            n_dropped=self.n_dropped,
        )


def _check_finite(rows, name):
    """The error scikit-learn's ``check_array`` gives, for the few rows flagged by their squares."""
    if np.isnan(rows).any():
        raise ValueError(f"Input {name} contains NaN.")
    if np.isinf(rows).any():
        raise ValueError(f"Input {name} contains infinity or a value too large for "
                         f"{rows.dtype!r}.")
