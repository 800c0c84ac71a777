"""Negatives for ERA's stage 2: its ``topk_percpos`` and ``random`` strategies.

Private module. Both follow ``create_training_pairs`` in ERA's
``src/adapter/label_training.py`` (megagonlabs/ERA 9a7b4d6, lines 679-820): a
row's negatives never include any document relevant to its query.

``random`` (:func:`sample_random_negatives`): ``n_negatives`` distinct documents
drawn uniformly from the non-relevant ones.

``topk_percpos`` (:func:`mine_hard_negatives`): for each training row (one query,
one positive document), a teacher (the stage-1 adapter) scores every corpus
document; following ``_sample_topk_percpos_negatives``:

1. drop every document relevant to the row's query;
2. keep the teacher's ``top_k`` documents, best first;
3. drop those scoring ``>= threshold * s_pos`` (``s_pos``: the teacher's score of the
   row's own positive) -- they are likely unlabelled positives -- and keep the first
   ``2 * n_negatives`` survivors;
4. always take the hardest survivor, sample the rest without replacement from the
   other survivors, and backfill at random from all non-relevant documents.
"""

from __future__ import annotations

import numpy as np

from .._utils.validation import l2_normalize

__all__ = ["mine_hard_negatives", "sample_random_negatives"]


def _normalize(A):
    """float32 rows scaled to unit length; all-zero rows stay zero."""
    return l2_normalize(np.asarray(A, dtype=np.float32), zero_rows="ignore")


def _teacher_scorer(teacher, corpus):
    """Return ``f(rows) -> (len(rows), n_docs)`` float32 teacher scores."""
    if callable(teacher):
        return lambda rows: np.asarray(teacher(rows), dtype=np.float32)
    Q = _normalize(teacher)
    C = _normalize(corpus)
    return lambda rows: Q[rows] @ C.T


def _as_positive_sets(positives, n_rows):
    sets = [np.unique(np.asarray(list(p), dtype=np.int64)) for p in positives]
    if len(sets) != n_rows:
        raise ValueError(f"positives has {len(sets)} rows, expected {n_rows}.")
    if any(len(p) == 0 for p in sets):
        raise ValueError("Every row needs at least one positive.")
    return sets


def _check_pool(pos_sets, n_docs, n_negatives):
    """Every row must have ``n_negatives`` non-relevant documents to draw from."""
    if n_negatives < 1:
        raise ValueError(f"n_negatives must be >= 1, got {n_negatives}.")
    biggest = max((len(p) for p in pos_sets), default=0)
    if n_docs - biggest < n_negatives:
        raise ValueError(
            f"A query has {biggest} positives among {n_docs} documents: fewer than "
            f"n_negatives={n_negatives} documents are left to sample from."
        )


def _ranked_candidates(scores, positives, anchors, n_negatives, top_k, threshold):
    """Per row: up to 2N top-k documents under the threshold, hardest first.

    ``scores`` is modified in place (positives set to -inf).
    """
    n_docs = scores.shape[1]
    for r, pos in enumerate(positives):
        scores[r, pos] = -np.inf
    k = min(top_k, n_docs)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    # Strictly below threshold * s_pos, as ERA; also drops the -inf positives.
    top_scores[~(top_scores < (threshold * anchors)[:, None])] = -np.inf
    m = min(2 * n_negatives, k)
    best = np.argpartition(-top_scores, m - 1, axis=1)[:, :m]
    best_scores = np.take_along_axis(top_scores, best, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    ranked = np.take_along_axis(top[np.arange(len(top))[:, None], best], order, axis=1)
    valid = np.isfinite(np.take_along_axis(best_scores, order, axis=1))
    return [ranked[r][valid[r]] for r in range(len(ranked))]


def _backfill(rng, n_docs, excluded, needed):
    """``needed`` distinct random documents outside ``excluded`` (a set)."""
    if n_docs - len(excluded) <= 4 * needed:
        pool = np.setdiff1d(np.arange(n_docs), np.fromiter(excluded, np.int64))
        return rng.choice(pool, size=needed, replace=False).tolist()
    # Rejection sampling avoids building an n_docs-long pool for every row.
    picked = []
    while len(picked) < needed:
        doc = int(rng.integers(n_docs))
        if doc not in excluded:
            excluded.add(doc)
            picked.append(doc)
    return picked


def _select(rng, ranked, n_negatives, n_docs, positives):
    """ERA's selection: the hardest, a sample of the other top-2N, then random."""
    selected = [int(d) for d in ranked[:1]]
    rest = ranked[1:]
    needed = n_negatives - len(selected)
    if len(rest) <= needed:
        selected += rest.tolist()
    else:
        selected += rng.choice(rest, size=needed, replace=False).tolist()
    needed = n_negatives - len(selected)
    if needed > 0:
        excluded = set(positives.tolist()) | set(selected)
        selected += _backfill(rng, n_docs, excluded, needed)
    return selected


def mine_hard_negatives(
    teacher,
    corpus,
    positives,
    *,
    anchors=None,
    n_negatives=5,
    top_k=2000,
    threshold=0.95,
    random_state=None,
    chunk_size=1024,
):
    """Mine hard negatives with the teacher's ranking (ERA's ``topk_percpos``).

    Parameters
    ----------
    teacher : array-like of shape (n_rows, d_doc) or callable
        Either the teacher's query embeddings already in document space (for
        example the stage-1 adapter's output; cosine scoring), or a function
        ``f(rows) -> scores`` returning the (len(rows), n_docs) teacher scores of
        the rows indexed by the int array ``rows``.
    corpus : array-like of shape (n_docs, d_doc)
        Document embeddings; only used for scoring when ``teacher`` is an array.
    positives : sequence of n_rows iterables of int
        For each row, ALL corpus indices relevant to the row's query (rows of the
        same query share them). None of them is ever returned as a negative.
    anchors : array-like of shape (n_rows,), default=None
        Corpus index of each row's own positive, whose teacher score sets the
        threshold. When None, the highest-scoring of the row's positives is used.
    n_negatives : int, default=5
        Negatives per row.
    top_k : int, default=2000
        Size of the teacher's candidate list.
    threshold : float, default=0.95
        Candidates scoring ``>= threshold * score(anchor)`` are discarded.
    random_state : int, numpy Generator or None, default=None
        Seed of the sampling; the result is deterministic given an int.
    chunk_size : int, default=1024
        Rows scored at once (bounds memory to chunk_size * n_docs floats).

    Returns
    -------
    negatives : ndarray of shape (n_rows, n_negatives), int64
        Distinct corpus indices per row.
    """
    n_docs = len(corpus)
    pos_sets = _as_positive_sets(positives, len(positives))
    n_rows = len(pos_sets)
    _check_pool(pos_sets, n_docs, n_negatives)
    score_rows = _teacher_scorer(teacher, corpus)
    rng = np.random.default_rng(random_state)
    out = np.empty((n_rows, n_negatives), dtype=np.int64)
    for start in range(0, n_rows, chunk_size):
        rows = np.arange(start, min(start + chunk_size, n_rows))
        scores = np.array(score_rows(rows), dtype=np.float32)
        chunk_pos = pos_sets[start:rows[-1] + 1]
        if anchors is None:
            anchor_scores = np.array([scores[r, p].max() for r, p in enumerate(chunk_pos)])
        else:
            anchor_scores = scores[np.arange(len(rows)), np.asarray(anchors)[rows]]
        ranked = _ranked_candidates(
            scores, chunk_pos, anchor_scores, n_negatives, top_k, threshold
        )
        for r, (cand, pos) in enumerate(zip(ranked, chunk_pos)):
            out[start + r] = _select(rng, cand, n_negatives, n_docs, pos)
    return out


def sample_random_negatives(positives, n_docs, *, n_negatives=5, random_state=None):
    """ERA's ``random`` strategy: uniform negatives outside each row's positives.

    Parameters
    ----------
    positives : sequence of n_rows iterables of int
        For each row, ALL corpus indices relevant to the row's query; none of
        them is ever drawn.
    n_docs : int
        Number of corpus documents.
    n_negatives : int, default=5
        Negatives per row, distinct within a row.
    random_state : int, numpy Generator or None, default=None
        Seed of the sampling; the result is deterministic given an int.

    Returns
    -------
    negatives : ndarray of shape (n_rows, n_negatives), int64
    """
    pos_sets = _as_positive_sets(positives, len(positives))
    _check_pool(pos_sets, n_docs, n_negatives)
    rng = np.random.default_rng(random_state)
    out = np.empty((len(pos_sets), n_negatives), dtype=np.int64)
    for r, pos in enumerate(pos_sets):
        out[r] = _backfill(rng, n_docs, set(pos.tolist()), n_negatives)
    return out
