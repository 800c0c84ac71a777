"""The documents a softmax stage 2 ranks each labelled query against.

Three cases, one function each, all deterministic:

* :func:`corpus_candidates`, corpus given: the whole corpus up to
  ``max_candidates`` documents (default :data:`MAX_CANDIDATES`); above that a
  bounded set: every positive, the best-ranked documents under the prior
  (``top_k`` per query, taken rank by rank across queries) and a fixed random
  sample. Memory: the candidate matrix holds at most
  ``max(max_candidates, n_positives + 1)`` rows. Building it takes, beyond
  the corpus itself, one normalised float32 copy of the corpus (matching the
  targets, in ``_negatives.match_rows``), score blocks of at most 2**22
  cells (16 MB) and ``n_queries * top_k`` indices. Measured with SciFact
  plus 200,000 distractors (384-d, 301 MiB): 20,000 candidates in about
  9 s (one thread), traced peak 319 MiB.
* :func:`sample_candidates`, no corpus: a bounded sample of document-side
  alignment rows (given) plus the distinct positives not already in it.
* Neither: the distinct positives alone (:func:`sample_candidates` with an
  empty sample).

Targets are matched to candidate rows by cosine: a target is a corpus
document when its best cosine is >= ``tol`` (default :data:`MATCH_TOL`). With a
corpus, a target found nowhere is a ``ValueError`` naming how many rows
failed: silently pairing it with its nearest document would train on the
wrong label. All-zero target rows (static encoders embed some texts as zeros)
carry no direction and cannot be ranked: they get index -1 and a warning, and
:meth:`SoftmaxProblem.from_pairs` leaves them out. All-zero corpus rows stay
zero candidates: they score 0 against every query, never NaN.
"""

from __future__ import annotations

import warnings

import numpy as np

from .._torch.negatives import match_rows
from .._utils.validation import row_norms
from .queries import unique_rows

#: A target is "in" the candidates when its cosine with a row is at least this.
MATCH_TOL = 0.9999

#: Corpora up to this many documents are used whole.
MAX_CANDIDATES = 20_000

#: Per-query depth of the prior's ranking mined for large corpora.
TOP_K = 100

#: Share of the non-positive budget given to a uniform random sample (the
#: rest goes to documents the prior ranks high): the final ranking is over the
#: whole corpus, so the objective must also see documents the prior ranks low.
RANDOM_SHARE = 0.25

_SCORE_CELLS = 1 << 22


def match_targets(Y, candidates, *, tol=MATCH_TOL, missing="raise"):
    """Candidate index of each target row (-1 for all-zero targets).

    Parameters
    ----------
    Y : ndarray (n_rows, d)
    candidates : ndarray (n_candidates, d)
    tol : float, default=MATCH_TOL
        Smallest cosine that counts as the same document.
    missing : {"raise", "ignore"}
        ``"raise"``: a target without a match is a ValueError; ``"ignore"``:
        it gets index -2 (for :func:`sample_candidates` to append).

    Returns
    -------
    index : ndarray (n_rows,) of int64
    """
    Y = np.asarray(Y)
    first, inverse = unique_rows(Y)
    Yu = Y[first]
    zero = row_norms(Yu) == 0
    index = np.full(len(Yu), -2, dtype=np.int64)
    if len(candidates) and (~zero).any():
        live = np.flatnonzero(~zero)
        # Score blocks of at most _SCORE_CELLS cells (16 MB), whatever the corpus size.
        chunk = max(1, _SCORE_CELLS // max(len(candidates), 1))
        nearest = match_rows(Yu[live], candidates, chunk_size=chunk)
        cos = _cosine(Yu[live], np.asarray(candidates)[nearest])
        index[live] = np.where(cos >= tol, nearest, -2)
    index[zero] = -1
    if zero.any():
        n_zero = int(np.isin(inverse, np.flatnonzero(zero)).sum())
        warnings.warn(f"{n_zero} target row(s) are all-zero: they cannot be ranked and are "
                      "left out of the softmax stage 2.", UserWarning, stacklevel=3)
    out = index[inverse]
    if missing == "raise" and (out == -2).any():
        n_bad = int((out == -2).sum())
        raise ValueError(
            f"{n_bad} of {len(out)} target row(s) (Y) match no corpus document (no cosine >= "
            f"{tol}); the targets must be rows of the corpus, embedded by the same encoder."
        )
    return out


def _cosine(A, B):
    """Row-wise cosine of paired rows, in float64."""
    A, B = np.asarray(A, np.float64), np.asarray(B, np.float64)
    denom = row_norms(A) * row_norms(B)
    return np.einsum("ij,ij->i", A, B) / np.where(denom > 0, denom, 1)


def sample_candidates(Y, sample=None, *, tol=MATCH_TOL):
    """Candidates without a corpus: ``sample`` rows plus the distinct positives.

    A target matching a sample row (cosine >= ``tol``) points to it; the
    others are appended once each. Returns ``(candidates, doc_idx)``.
    """
    Y = np.asarray(Y)
    sample = np.empty((0, Y.shape[1]), Y.dtype) if sample is None else np.asarray(sample)
    doc_idx = match_targets(Y, sample, tol=tol, missing="ignore")
    new = np.flatnonzero(doc_idx == -2)
    first, inverse = unique_rows(Y[new])
    doc_idx[new] = len(sample) + inverse
    return np.vstack([sample, Y[new][first].astype(sample.dtype)]), doc_idx


def corpus_candidates(Y, corpus, *, queries=None, max_candidates=MAX_CANDIDATES, top_k=TOP_K,
                      random_state=None, tol=MATCH_TOL):
    """Candidates with a corpus: whole, or bounded for a large corpus.

    Parameters
    ----------
    Y : ndarray (n_rows, d)
        Target documents; each must be a corpus row (else ValueError).
    corpus : ndarray (n_docs, d)
    queries : ndarray (n_queries, d), default=None
        The labelled queries mapped by the prior; their top ranks supply the
        hard candidates of a large corpus (only random ones when None).
    max_candidates : int, default=MAX_CANDIDATES
    top_k : int, default=TOP_K
    random_state : int, Generator or None

    Returns
    -------
    candidates : ndarray (n_candidates, d)
    doc_idx : ndarray (n_rows,) of int64
        Each target's candidate row (-1: all-zero target).
    chosen : ndarray (n_candidates,) of int64
        Each candidate's corpus row.
    """
    corpus = np.asarray(corpus)
    return bounded_candidates(corpus, match_targets(Y, corpus, tol=tol), queries=queries,
                              max_candidates=max_candidates, top_k=top_k,
                              random_state=random_state)


def bounded_candidates(corpus, doc_idx, *, queries=None, max_candidates=MAX_CANDIDATES,
                       top_k=TOP_K, random_state=None):
    """:func:`corpus_candidates` for targets already matched (``doc_idx``: corpus rows)."""
    n_docs = len(corpus)
    if n_docs <= max_candidates:
        return corpus, doc_idx, np.arange(n_docs)
    positives = np.unique(doc_idx[doc_idx >= 0])
    budget = max(max_candidates - len(positives), 1)
    n_random = round(RANDOM_SHARE * budget) if queries is not None else budget
    taken = np.zeros(n_docs, dtype=bool)
    taken[positives] = True
    hard = _top_ranked(queries, corpus, top_k, taken, budget - n_random)
    taken[hard] = True
    pool = np.flatnonzero(~taken)
    rng = np.random.default_rng(random_state)
    # The random share also fills what the top ranks left (few queries, small top_k).
    random = rng.choice(pool, size=min(budget - len(hard), len(pool)), replace=False)
    chosen = np.sort(np.concatenate([positives, hard, random]))
    position = np.full(n_docs, -1, dtype=np.int64)
    position[chosen] = np.arange(len(chosen))
    return corpus[chosen], np.where(doc_idx >= 0, position[doc_idx], -1), chosen


def _top_ranked(queries, corpus, top_k, taken, n_wanted):
    """Up to ``n_wanted`` documents not ``taken``, best ranks first across queries."""
    if queries is None or n_wanted <= 0:
        return np.empty(0, dtype=np.int64)
    k = min(top_k, len(corpus))
    step = max(1, _SCORE_CELLS // len(corpus))
    norms = row_norms(corpus)
    scale = np.where(norms > 0, 1 / np.where(norms > 0, norms, 1), 0).astype(np.float32)
    docs = corpus.astype(np.float32, copy=False)
    ranks = []
    for start in range(0, len(queries), step):
        S = np.asarray(queries[start:start + step], np.float32) @ docs.T
        S *= scale
        top = np.argpartition(-S, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(S, top, axis=1), axis=1, kind="stable")
        ranks.append(np.take_along_axis(top, order, axis=1))
    # Column-major ravel: every query's best document, then every second best, ...
    by_rank = np.concatenate(ranks).ravel(order="F")
    by_rank = by_rank[~taken[by_rank]]
    _, first = np.unique(by_rank, return_index=True)
    return by_rank[np.sort(first)][:n_wanted]
