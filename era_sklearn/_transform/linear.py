"""The linear map of ``ERAAdapter.transform`` in one blocked pass, at the speed of its GEMM.

Normalising an input row scales it, and scaling commutes with a linear map:
``(x / |x|) W = (x W) / |x|``. So the pass multiplies X as it is (no
normalised copy of X) and scales the *output* rows instead, a block at a time
while the block is in cache; with ``normalize_output`` and no intercept the
input's scale cancels, and X's norms are not even computed.

The output's sums of squares, needed to normalise it, also tell which rows
the product cannot be trusted with: NaN and inf in X propagate through the
product into them, and a row so large that the product or its squares
overflow, or so small that they underflow, leaves them outside the range
``_square_sums`` trusts (as do all-zero rows). Those rows are returned by
index: the caller maps them by the definition and reports bad input there,
so the finiteness of X costs no pass of its own either.
"""

import numpy as np

from .._utils.blocks import block_rows_for, n_threads_for, run_blocks, threads_used
from .._utils.validation import _square_sums


def map_rows(X, coef, intercept=None, *, normalize_input=True, normalize_output=True,
             block_rows=None, n_threads=None):
    """``normalise(normalise(X) @ coef + intercept)``, and the rows left to the caller.

    Parameters
    ----------
    X : ndarray of shape (n, d_in)
        float32 or float64; may hold NaN or inf (those rows are returned).
    coef : ndarray of shape (d_in, d_out)
        In X's dtype.
    intercept : ndarray of shape (d_out,) or None
        In X's dtype; None for none.
    normalize_input, normalize_output : bool
        L2-normalise the rows of X, of the result.
    block_rows, n_threads : int, default=None
        Rows per block (default: about 24 MiB of X over all threads) and
        threads (default: as many as BLAS has).

    Returns
    -------
    out : ndarray of shape (n, d_out)
        In X's dtype. Rows listed in ``suspect`` are not computed.
    suspect : ndarray of int
        Sorted indices of the rows the pass could not trust: non-finite,
        all-zero, or too large or small in X or in the result to square.
    """
    n_threads = n_threads_for(n_threads)
    block_rows = block_rows_for(block_rows, X.shape[1], X.dtype, n_threads)
    n_threads = threads_used(len(X), block_rows, n_threads)
    out = np.empty((len(X), coef.shape[1]), dtype=X.dtype)
    # The input's scale matters only through an intercept or an unnormalised output.
    scale_input = normalize_input and (intercept is not None or not normalize_output)
    found = [[] for _ in range(n_threads)]

    def map_block(t, start, stop):
        rows = _map_block(X[start:stop], coef, intercept, out[start:stop], scale_input,
                          normalize_output)
        if rows.size:
            found[t].append(rows + start)

    run_blocks(len(X), block_rows, n_threads, map_block)
    found = [rows for per_thread in found for rows in per_thread]
    suspect = np.unique(np.concatenate(found)) if found else np.empty(0, dtype=np.intp)
    return out, suspect


def _map_block(X, coef, intercept, out, scale_input, normalize_output):
    """One block into ``out``; returns the block's suspect rows (block indices)."""
    suspect = []
    # Overflow and NaN in suspect rows are expected (they are found below);
    # numpy's error state is per thread, so it is set here, in the worker.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        np.matmul(X, coef, out=out)
        if scale_input:
            sq, rows = _square_sums(X)
            _divide_by_norms(out, sq, rows)
            suspect.append(rows)
        if intercept is not None:
            out += intercept
        sq, rows = _square_sums(out)
        if normalize_output:
            _divide_by_norms(out, sq, rows)
        suspect.append(rows)
    return np.concatenate(suspect) if len(suspect) > 1 else suspect[0]


def _divide_by_norms(A, sq, skip):
    """Divide each row of ``A`` by ``sqrt(sq)``, leaving rows ``skip`` (suspect) as they are."""
    norms = np.sqrt(sq)
    norms[skip] = 1
    A *= np.reciprocal(norms)[:, None]  # one division per row, not per entry
