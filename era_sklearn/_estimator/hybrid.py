"""The layout of hybrid input: ``X = [query_encoder(t), document_encoder(t)]``, whose
trailing block must be the document encoder's own embedding (``Y`` in alignment data)."""

import numpy as np

from .._utils.validation import l2_normalize

#: Mean cosine between X's trailing block and Y below which hybrid alignment data is refused.
MIN_TAIL_COSINE = 0.99


def check_layout(X, Y, hybrid):
    if hybrid and X.shape[1] <= Y.shape[1]:
        raise ValueError(
            "hybrid=True needs X = [query-encoder embedding, document-encoder embedding]: "
            f"X has {X.shape[1]} feature(s), not more than the {Y.shape[1]} of the document "
            "space (Y), so its trailing block cannot be the document encoder's."
        )


def query_block(X, d_d, hybrid):
    """The query-encoder columns of X: stage 1 aligns only those."""
    return X[:, : X.shape[1] - d_d] if hybrid else X


def check_tail_is_y(X, Y):
    """In hybrid alignment data, X's last block must be Y itself (same texts, same encoder)."""
    tail = l2_normalize(X[:, -Y.shape[1]:], zero_rows="ignore")
    _require_tail_is_y(np.einsum("ij,ij->i", tail, l2_normalize(Y, zero_rows="ignore")),
                       Y.shape[1])


def check_tail_is_y_dask(X, Y):
    """The same check on Dask arrays: one reduction to per-row cosines."""
    import dask.array as da  # dask is optional: only Dask input gets here

    tail = X[:, -Y.shape[1]:]
    num = da.einsum("ij,ij->i", tail, Y)
    den = da.sqrt(da.einsum("ij,ij->i", tail, tail) * da.einsum("ij,ij->i", Y, Y))
    num, den = da.compute(num, den)
    _require_tail_is_y(np.divide(num, den, out=np.zeros_like(num), where=den > 0), Y.shape[1])


def _require_tail_is_y(cosines, width):
    valid = cosines != 0  # all-zero rows (left out of the fit) say nothing about the layout
    cosine = float(np.mean(cosines[valid])) if valid.any() else 1.0
    if cosine < MIN_TAIL_COSINE:
        raise ValueError(
            f"hybrid=True: the last {width} columns of X should be the document encoder's "
            f"embedding of the same texts as y, but their mean cosine with y is {cosine:.3f} "
            f"(< {MIN_TAIL_COSINE}). Build X as np.hstack([query_encoder(texts), "
            "document_encoder(texts)])."
        )
