"""Input checks shared by the estimators: one place that turns bad input into clear errors."""

import warnings

import numpy as np
from sklearn.utils.validation import check_array

# float64 first: other dtypes (int, float16) convert to it; float32 stays float32.
FLOAT_DTYPES = (np.float64, np.float32)


def as_float_matrix(A, name, *, dtype=FLOAT_DTYPES, min_samples=1):
    """Validate a 2-D, finite, dense embedding matrix and return it as float.

    float32 and float64 are kept as they are (no silent upcast); integers and
    float16 become float64 (float16 has too little precision for the solvers).
    """
    return check_array(
        A,
        dtype=dtype,
        ensure_2d=True,
        ensure_min_samples=min_samples,
        ensure_all_finite=True,
        input_name=name,
        accept_sparse=False,
    )


def as_target_matrix(Y, n_rows, *, dtype, finite=True):
    """Validate the document-space target ``Y`` against ``X``'s row count.

    ``finite=False`` leaves NaN/inf to the caller (the statistics pass finds
    them as it reads the rows, without a separate pass over ``Y``).
    """
    if Y is None:
        raise ValueError(
            "ERAAdapter requires y to be passed, but the target y is None: Y must be the "
            "document-encoder embeddings of the same rows as X, shape (n_samples, n_doc_features)."
        )
    Y = check_array(
        Y, dtype=dtype, ensure_2d=False, ensure_all_finite=finite, input_name="Y",
        accept_sparse=False,
    )
    if Y.ndim == 1:  # as scikit-learn regressors do: one output column
        Y = Y.reshape(-1, 1)
    if Y.shape[0] != n_rows:
        raise ValueError(
            f"X and Y must have the same number of rows (one pair of embeddings per row); "
            f"got X with {n_rows} rows and Y with {Y.shape[0]} rows."
        )
    return Y


def row_norms(A):
    """Euclidean norm of each row, as float64, without overflow or underflow.

    The fast path sums squares in ``A``'s own dtype (no n x d temporary, no
    float64 copy); only rows whose sum of squares overflowed, fell into the
    subnormal range or is zero are recomputed after scaling by their largest
    absolute value, so any finite row gets its true norm (``inf`` only when the
    norm itself exceeds float64's range; NaN for a row with NaN or inf).
    """
    A = _as_float(A)
    sq, rows = _square_sums(A)
    norms = np.sqrt(sq, dtype=np.float64)
    if rows.size:
        norms[rows] = _rescaled_rows(A[rows])[0]
    return norms


def l2_normalize(A, *, name="X", zero_rows="raise", copy=True):
    """Scale rows to unit L2 norm; an all-zero row is an error, not a NaN.

    The package's one row normaliser. For rows whose squares fit the dtype it
    computes ``A / sqrt(sum(A**2))`` exactly as ``sklearn.preprocessing.normalize``
    does (same bits); the rows it cannot trust are rescaled first (below).

    With ``zero_rows="warn"`` such rows stay zero (they carry no direction, so
    they add nothing to the fit) and a warning names them; ``"ignore"`` keeps
    them zero silently (the caller has counted them already). ``copy=False``
    divides ``A`` in place (for arrays the caller owns). Rows too large or too
    small to square in ``A``'s dtype (e.g. float32 values near 1e20 or
    subnormal) are normalised exactly, like any other row.
    """
    A = _as_float(A)
    sq, rows = _square_sums(A)
    norms = np.sqrt(sq)
    norms[rows] = 1  # replaced below by the rescaled rows
    _, units, zero = _rescaled_rows(A[rows])
    zero = rows[zero]
    if zero.size and zero_rows == "raise":
        raise ValueError(
            f"{name} has {zero.size} all-zero row(s) (first at index {zero[0]}); they cannot be "
            "L2-normalised. Remove them or set normalize_input=False."
        )
    if zero.size and zero_rows == "warn":
        warn_zero_rows(name, zero, stacklevel=4)
    norms = norms.astype(A.dtype, copy=False)[:, None]
    if copy:
        out = A / norms
    else:
        out = A
        out /= norms
    out[rows] = units
    return out


def warn_zero_rows(name, zero, stacklevel=2):
    """The warning for all-zero rows, which stay zero: ``zero`` holds their indices."""
    warnings.warn(
        f"{name} has {zero.size} all-zero row(s) (first at index {zero[0]}); they stay zero "
        "and add nothing to the fit.",
        UserWarning,
        stacklevel=stacklevel,
    )


def check_squares_representable(A, name):
    """Refuse non-zero rows whose squared norm over- or underflows ``A``'s dtype.

    Fitting without row normalisation (``normalize_input=False``) needs them:
    a map for rows near 1e-41 in float32 needs weights near 1e41, and its
    gradients overflow. All-zero rows are the caller's to handle.
    """
    _, suspect = _square_sums(A)
    rows = np.flatnonzero(suspect)
    if not rows.size:
        return
    norms = _rescaled_rows(A[rows])[0]
    bad = rows[norms > 0]
    if bad.size:
        info = np.finfo(A.dtype)
        raise ValueError(
            f"{name} has {bad.size} row(s) whose norm is too large or too small to fit without "
            f"normalisation in {A.dtype.name} (first: row {bad[0]}, norm "
            f"{norms[norms > 0][0]:.3g}; squared norms must lie in "
            f"[{info.tiny / info.eps:.3g}, {info.max:.3g}]). Set normalize_input=True or "
            "rescale the rows."
        )


def _as_float(A):
    A = np.asarray(A)
    return A if A.dtype in FLOAT_DTYPES else A.astype(np.float64)


def _square_sums(A):
    """Row sums of squares in ``A``'s dtype, and the rows where they cannot be trusted.

    A sum is trusted when it lies in ``[tiny / eps, max]``: above, it
    overflowed (or the row holds NaN/inf); below, squares of the row's largest
    entries were subnormal or zero and lost precision. Returns the indices
    of the distrusted rows (usually none: two reductions tell).
    """
    sq = np.einsum("ij,ij->i", A, A)
    info = np.finfo(A.dtype)
    low = info.tiny / info.eps
    if not sq.size or (sq.min() >= low and sq.max() <= info.max):  # False for NaN
        return sq, np.empty(0, dtype=np.intp)
    return sq, np.flatnonzero(~((sq >= low) & (sq <= info.max)))


def _rescaled_rows(B):
    """Norms, unit rows and all-zero flags of the (few) rows ``_square_sums`` distrusts.

    Each row is divided by its largest absolute value before squaring, in
    float64, so no finite row overflows or underflows. Zero rows get norm 0
    and stay zero; rows with NaN or inf get a NaN or inf norm and NaN units.
    """
    B = B.astype(np.float64)
    peak = np.max(np.abs(B), axis=1, initial=0.0)
    zero = peak == 0
    with np.errstate(invalid="ignore", over="ignore"):
        units = B / np.where(zero, 1.0, peak)[:, None]
        scaled = np.sqrt(np.einsum("ij,ij->i", units, units))
        units /= np.where(zero, 1.0, scaled)[:, None]
        norms = peak * scaled
    norms[np.isinf(peak)] = np.inf
    return norms, units, zero


def check_sample_weight_and_groups(sample_weight, groups, n_rows, dtype):
    """Validate per-row weights (non-negative) and query ids (one per row)."""
    from sklearn.utils.validation import _check_sample_weight

    sample_weight = _check_sample_weight(sample_weight, np.empty((n_rows, 1)), dtype=dtype)
    if np.any(sample_weight < 0):
        raise ValueError("sample_weight must be non-negative.")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.ndim != 1 or groups.shape[0] != n_rows:
            raise ValueError(
                f"groups must be 1-D with one query id per row of X ({n_rows}); "
                f"got shape {groups.shape}."
            )
    return sample_weight, groups
