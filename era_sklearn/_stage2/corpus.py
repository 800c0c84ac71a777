"""The indexed documents as a fit parameter that cross-validation cannot slice.

scikit-learn's cross-validation slices every fit parameter that looks like an
array and has as many rows as ``X`` (``_check_method_params``), routed or not.
A corpus of 120 documents next to 120 labelled pairs would silently arrive as
the training fold's 80 rows. :class:`Corpus` hides the array behind an object
with no ``len``, ``shape`` or ``__array__``, so it always arrives whole; a raw
array that could have been sliced is refused with a message naming the fix.
"""

import numpy as np

from .._index.base import _BaseIndex, stored_vectors
from .._utils.validation import _as_float, as_float_matrix, l2_normalize

#: A training target counts as a corpus document when their cosine is at
#: least this: the same text embedded by the same encoder gives 1 up to
#: float32 rounding (~1e-6; a copy stored in float16 still gives 1 - ~1e-7),
#: while distinct texts of the shared sets stay below 0.99. 0.999 lies between
#: with a wide margin on both sides, so a target re-embedded with small
#: numerical differences (another batch size, another BLAS) still matches
#: and a different document never does. The package's only matcher.
TARGET_MIN_COSINE = 0.999


class Corpus:
    """Document embeddings of the index, passed whole to ``ERAAdapter.fit``.

    Parameters
    ----------
    embeddings : array-like of shape (n_docs, n_doc_features)
        The documents as the index's (cheap) encoder embedded them.

    Examples
    --------
    >>> import numpy as np
    >>> from era_sklearn import Corpus
    >>> corpus = Corpus(np.eye(3))
    >>> corpus.n_docs
    3
    """

    def __init__(self, embeddings):
        self.embeddings = embeddings

    @property
    def n_docs(self):
        return int(np.shape(self.embeddings)[0])

    def __repr__(self):
        return f"Corpus(<{self.n_docs} x {np.shape(self.embeddings)[1]} embeddings>)"


def corpus_matrix(corpus, n_pairs, dtype):
    """The corpus of a ``fit`` call as a float matrix, or None.

    Accepts a :class:`Corpus`, a fitted ``ExactIndex`` / ``HNSWIndex`` (its
    stored vectors) or a raw array whose row count differs from ``X``'s.
    """
    if corpus is None:
        return None
    if isinstance(corpus, Corpus):
        data = corpus.embeddings
    elif isinstance(corpus, _BaseIndex):  # ExactIndex, HNSWIndex
        data = stored_vectors(corpus)
    else:
        if np.shape(corpus)[0] == n_pairs:
            raise ValueError(
                f"corpus has as many rows as X ({n_pairs}): cross-validation (GridSearchCV, "
                "cross_val_score) slices such fit parameters row by row, so it may have arrived "
                "cut to the training fold. Pass era_sklearn.Corpus(embeddings) (or a fitted "
                "ExactIndex / HNSWIndex), which is never sliced."
            )
        data = corpus
    return as_float_matrix(data, "corpus", dtype=dtype)


def match_targets(Y, candidates, *, min_cosine=TARGET_MIN_COSINE, chunk_size=4096):
    """Index of the candidate row that each target row *is*.

    Raises a ValueError naming how many targets have no candidate with cosine
    >= ``min_cosine``: a corpus that does not contain the labelled documents
    (another corpus, or one cut by cross-validation) would otherwise be matched
    to nearest rows and score nonsense.
    """
    # Unit rows before float32: finite float64 rows beyond float32's range stay finite.
    C = l2_normalize(_as_float(candidates), zero_rows="ignore").astype(np.float32)
    Yn = l2_normalize(_as_float(Y), zero_rows="ignore").astype(np.float32)
    index = np.empty(len(Yn), dtype=np.intp)
    best = np.empty(len(Yn), dtype=np.float32)
    for start in range(0, len(Yn), chunk_size):
        S = Yn[start:start + chunk_size] @ C.T
        index[start:start + chunk_size] = np.argmax(S, axis=1)
        best[start:start + chunk_size] = S[np.arange(len(S)), index[start:start + chunk_size]]
    missing = np.flatnonzero(best < min_cosine)
    if missing.size:
        raise ValueError(
            f"{missing.size} of {len(Yn)} target rows are not in the corpus (first: row "
            f"{missing[0]}, best cosine {best[missing[0]]:.4f} < {min_cosine}). The corpus must "
            "hold the labelled documents as embedded by the same document encoder."
        )
    return index
