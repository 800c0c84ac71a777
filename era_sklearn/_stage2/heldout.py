"""Choosing stage 2's regularisation (and hybrid blend) from held-out queries.

Ridge's own leave-one-out score measures squared error in document space,
which is not what a retrieval user wants: on NFCorpus-like data (dozens of
relevant documents per query) the squared-error optimum ranks worse than the
stage-1 map alone. So each candidate (alpha, prior) is scored by nDCG@10 of
held-out *queries* ranked against the candidate documents, with folds that
never split a query. ``alpha = inf`` (keep the prior) is always a candidate
when there is a prior, which is what keeps stage 2 from undoing stage 1.
"""

import numpy as np
from scipy import sparse

from .._metrics.dense import ranking_metric
from .._stage1.closed_form import ShiftedGram

#: Default relative grid: alpha = factor * (mean eigenvalue of X^T X).
RELATIVE_ALPHAS = np.logspace(-2.5, 2.5, 11)


def relative_alpha_grid(stats, factors=RELATIVE_ALPHAS):
    """Scale-free alphas: the trace of X^T X over d sets the natural scale."""
    scale = float(np.trace(stats.xtx)) / stats.xtx.shape[0]
    return [f * max(scale, np.finfo(np.float64).tiny) for f in factors]


def query_folds(qids, n_splits, random_state):
    """Shuffle the distinct queries and split them into ``n_splits`` folds."""
    queries = np.unique(qids)
    rng = np.random.default_rng(random_state)
    return np.array_split(rng.permutation(queries), n_splits)


class HeldOutQueries:
    """The queries of one fold and their relevant candidates (graded).

    nDCG@10 comes from :func:`era_sklearn._metrics.dense.ranking_metric`, the
    package's one implementation of the metric (``metrics.ndcg_at_k`` calls it too).
    """

    K = 10

    def __init__(self, X, qids, doc_idx, grades, fold_queries, n_candidates):
        rows = np.flatnonzero(np.isin(qids, fold_queries))
        _, first, local = np.unique(qids[rows], return_index=True, return_inverse=True)
        self.X = X[rows[first]]
        # One grade per (query, document): the largest, if a pair is repeated.
        rel = sparse.coo_matrix(
            (grades[rows], (local.ravel(), doc_idx[rows])), shape=(len(first), n_candidates)
        )
        self.rel = _max_duplicates(rel)

    def __len__(self):
        return len(self.X)

    def ndcg(self, S):
        """Per-query nDCG@10 of scores ``S`` (n_queries, n_candidates)."""
        return ranking_metric("ndcg", S, self.rel, self.K, average=False)


def _max_duplicates(coo):
    """CSR matrix keeping the largest value of repeated (row, col) entries."""
    order = np.lexsort((-coo.data, coo.col, coo.row))
    r, c, v = coo.row[order], coo.col[order], coo.data[order]
    first = np.ones(len(r), dtype=bool)
    first[1:] = (r[1:] != r[:-1]) | (c[1:] != c[:-1])
    return sparse.csr_matrix((v[first], (r[first], c[first])), shape=coo.shape)


def select_ridge(pairs, candidates, doc_idx, grades, prior_bases, blend_coefs, alphas,
                 *, intercept, n_splits, random_state, fallback=None):
    """Score every (alpha, prior) on held-out queries and return the best pair.

    Parameters
    ----------
    pairs : QueryPairs
        The labelled rows (``X``, ``Y``, ``weights``, ``qids``) and their
        collapsed form for the normal equations.
    doc_idx, grades : ndarray of shape (n_rows,)
        Each row's candidate index and relevance grade.
    prior_bases : list of ndarray (d_in, d_out)
        The priors are linear combinations of these maps (none: prior 0).
    blend_coefs : list of list of float
        One coefficient vector per candidate prior.
    alphas : list of float
        Candidate strengths for the whole data set (``inf`` allowed). In each
        fold they are scaled by the fold's share of the total weight, so the
        penalty keeps the same strength relative to the data.
    fallback : tuple (alpha_index, prior_index) or None
        The conservative candidate (stage 1 kept); the best candidate must
        beat it by more than one standard error of the per-query gains.

    Returns
    -------
    best : tuple (alpha_index, prior_index)
    results : dict of arrays ``alpha_index``, ``prior_index``, ``mean_ndcg@10``.
    """
    cand = candidates / np.linalg.norm(candidates, axis=1, keepdims=True).clip(1e-12)
    coefs = np.asarray(blend_coefs, dtype=np.float64).reshape(len(blend_coefs), len(prior_bases))
    per_query = []  # (n_alphas, n_priors, n_heldout) blocks, one per fold
    total_weight = float(pairs.weights.sum())
    for fold in query_folds(pairs.qids, n_splits, random_state):
        stats = pairs.statistics(exclude=fold, intercept=intercept)
        heldout = HeldOutQueries(pairs.X, pairs.qids, doc_idx, grades, fold, len(cand))
        per_query.append(np.stack([
            _heldout_ndcg(stats, heldout, cand, prior_bases, coefs,
                          alpha * stats.weight_sum / total_weight, intercept)
            for alpha in alphas
        ]))
    per_query = np.concatenate(per_query, axis=2)
    scores = per_query.mean(axis=2)
    best = _best_index(scores, alphas)
    if fallback is not None and not _clearly_better(per_query[best], per_query[fallback]):
        best = fallback
    ai, pi = np.meshgrid(np.arange(len(alphas)), np.arange(len(coefs)), indexing="ij")
    results = {"alpha_index": ai.ravel(), "prior_index": pi.ravel(),
               "mean_ndcg@10": scores.ravel()}
    return best, results


def _clearly_better(candidate, fallback):
    """Paired one-standard-error rule over held-out queries.

    Picking the maximum of a dozen noisy means favours noise; a candidate
    replaces the conservative fallback (stage 1 kept) only when its mean gain
    exceeds the standard error of the per-query gains.
    """
    gains = candidate - fallback
    if len(gains) < 2:
        return False
    return gains.mean() > gains.std(ddof=1) / np.sqrt(len(gains))


def _heldout_ndcg(stats, heldout, cand, prior_bases, coefs, alpha, intercept):
    """Per-query nDCG@10 of the held-out queries for every candidate prior at one alpha.

    ``W = G^-1 (X^T Y + alpha * sum_j c_j B_j)`` is linear in the blend
    coefficients, so the candidate scores of every blend are combinations of
    a few score matrices computed once (the costly part is ``Q @ cand.T``).
    """
    Xv = heldout.X.astype(np.float64)
    if np.isinf(alpha):
        fit_map, scale = np.zeros((len(Xv), stats.xty.shape[1])), 1.0
        base_maps = [Xv @ B for B in prior_bases]
    else:
        # Xv G^-1 B == (G^-1 Xv^T)^T B: one solve with n_heldout right-hand
        # sides serves the fit and every prior basis.
        Z = ShiftedGram(stats.xtx, alpha).solve(Xv.T).T
        fit_map, scale = Z @ stats.xty, alpha
        base_maps = [Z @ B for B in prior_bases]
    fit_map = fit_map + intercept
    # Rankings need no float64: float32 score matrices halve the top-k cost.
    cand32 = cand.astype(np.float32)
    fit_scores = fit_map.astype(np.float32) @ cand32.T
    base_scores = [M.astype(np.float32) @ cand32.T for M in base_maps]
    out = np.empty((len(coefs), len(Xv)))
    for pi, c in enumerate(coefs):
        Q = fit_map + scale * sum((w * M for w, M in zip(c, base_maps)), 0.0)
        S = fit_scores + scale * sum((w * M for w, M in zip(c, base_scores)), 0.0)
        # Dividing the scores by ||Q|| is ranking by cosine, as transform does.
        S /= np.linalg.norm(Q, axis=1, keepdims=True).clip(1e-12).astype(np.float32)
        out[pi] = heldout.ndcg(S)
    return out


def _best_index(scores, alphas):
    """Highest score; ties go to the stronger regularisation (closer to the prior)."""
    cells = np.ndindex(*scores.shape)
    return min(cells, key=lambda c: (-round(scores[c], 12), -alphas[c[0]]))
