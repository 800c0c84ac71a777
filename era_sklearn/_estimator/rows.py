"""Row rules that stage 1, stage 2 and ``transform`` share: which pairs take part, and how
input rows are normalised (each encoder's block on its own in hybrid input)."""

import warnings

import numpy as np

from .._utils.validation import check_sample_weight_and_groups, l2_normalize


def nonzero_rows(X, Y):
    """Rows where neither embedding is all zeros: a zero row has no direction to learn from."""
    return (np.abs(X).max(axis=1) > 0) & (np.abs(Y).max(axis=1) > 0) if len(X) else \
        np.zeros(0, dtype=bool)


def warn_dropped(n_dropped, what):
    if n_dropped:
        warnings.warn(
            f"{n_dropped} {what} pair(s) with an all-zero embedding were left out (a static "
            "model gives a zero vector to a text with no known token).",
            UserWarning,
            stacklevel=4,
        )


def alignment_weights(sample_weight, n_rows, dtype):
    if sample_weight is None:  # None keeps the unweighted (copy-free) statistics
        return None
    return check_sample_weight_and_groups(sample_weight, None, n_rows, dtype)[0]


def normalize_rows(A, name, normalize, warn=True):
    if not normalize:
        return A
    return l2_normalize(A, name=name, zero_rows="warn" if warn else "ignore")


def normalize_blocks(X, d_d, *, normalize, hybrid, zero_rows="ignore"):
    """L2-normalise X, each encoder's block on its own when hybrid: the two encoders' scales
    are unrelated, so a joint norm would let one drown the other."""
    if not normalize:
        return X
    if not hybrid:
        return l2_normalize(X, name="X", zero_rows=zero_rows)
    head = l2_normalize(X[:, :-d_d], name="X (query-encoder block)", zero_rows=zero_rows)
    tail = l2_normalize(X[:, -d_d:], name="X (document-encoder block)", zero_rows=zero_rows)
    return np.hstack([head, tail])
