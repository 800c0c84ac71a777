"""Held-out queries: the one module for fold splits and standard-error rules.

Every choice made on held-out labelled queries lives here, so the rules can be
read side by side; they differ per solver on purpose and are named, not merged:

* folds: :func:`query_folds` (ridge), :func:`heldout_folds` (softmax: repeated
  k-fold, or one split with many labels), :func:`group_split` (the torch fits'
  validation split);
* rules: :func:`ridge_beats_fallback` (ridge leaves stage 1 only on a gain of
  more than :data:`RIDGE_SE` standard errors), :func:`choose_penalty` and
  :func:`choose_blend` (softmax shrinks toward a default penalty and keeps
  stage 1 only on :data:`GUARD_SE` standard errors of evidence), both built on
  :func:`standard_error` / :func:`exceeds_se`.

Why ridge is scored this way: its own leave-one-out score measures squared
error in document space, which is not what a retrieval user wants: on
NFCorpus-like data (dozens of relevant documents per query) the squared-error
optimum ranks worse than the stage-1 map alone. So each candidate (alpha,
prior) is scored by nDCG@10 of held-out *queries* ranked against the candidate
documents, with folds that never split a query. ``alpha = inf`` (keep the
prior) is always a candidate when there is a prior, which is what keeps stage 2
from undoing stage 1.
"""

import numpy as np
from scipy import sparse

from .._metrics.dense import ranking_metric
from .._stage1.closed_form import ShiftedGram
from .._utils.validation import l2_normalize, row_norms

#: Default relative grid: alpha = factor * (mean eigenvalue of X^T X).
RELATIVE_ALPHAS = np.logspace(-2.5, 2.5, 11)


def relative_alpha_grid(stats, factors=RELATIVE_ALPHAS):
    """Scale-free alphas: the trace of X^T X over d sets the natural scale."""
    scale = float(np.trace(stats.xtx)) / stats.xtx.shape[0]
    return [f * max(scale, np.finfo(np.float64).tiny) for f in factors]


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
    cand = l2_normalize(candidates, zero_rows="ignore")
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
    if fallback is not None and not ridge_beats_fallback(per_query[best], per_query[fallback]):
        best = fallback
    ai, pi = np.meshgrid(np.arange(len(alphas)), np.arange(len(coefs)), indexing="ij")
    results = {"alpha_index": ai.ravel(), "prior_index": pi.ravel(),
               "mean_ndcg@10": scores.ravel()}
    return best, results


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
        S /= np.maximum(row_norms(Q), 1e-12).astype(np.float32)[:, None]
        out[pi] = heldout.ndcg(S)
    return out


def _best_index(scores, alphas):
    """Highest score; ties go to the stronger regularisation (closer to the prior)."""
    cells = np.ndindex(*scores.shape)
    return min(cells, key=lambda c: (-round(scores[c], 12), -alphas[c[0]]))


# -- folds ------------------------------------------------------------------------------


def query_folds(qids, n_splits, random_state):
    """Ridge's folds: the distinct queries shuffled and split into ``n_splits`` folds."""
    queries = np.unique(qids)
    rng = np.random.default_rng(random_state)
    return np.array_split(rng.permutation(queries), n_splits)


#: Cross-validation repeats its k folds with fresh splits until each query has
#: been held out this many times in all (at most ``MAX_REPEATS`` times each):
#: with 8 to 32 queries one split's scores depend on which few queries share a
#: fold.
HELDOUT_EVALUATIONS = 64
MAX_REPEATS = 2


def heldout_folds(n, rng, fraction, n_folds):
    """Held-out query rows: one ``fraction`` split (``fraction`` given), or ``n_folds``-fold
    cross-validation repeated with fresh splits until each query has been held out
    :data:`HELDOUT_EVALUATIONS` times in all (at most :data:`MAX_REPEATS` times)."""
    if n < 2:
        return []
    if fraction is not None:
        return [np.sort(rng.permutation(n)[: max(1, round(fraction * n))])]
    repeats = int(np.clip(np.ceil(HELDOUT_EVALUATIONS / n), 1, MAX_REPEATS))
    return [np.sort(fold) for _ in range(repeats)
            for fold in np.array_split(rng.permutation(n), min(n_folds, n))]


def n_held_out(n_groups, validation_fraction):
    """Groups held out by :func:`group_split`: the rounded fraction, at least one
    on each side when the fraction is > 0 (0 with fewer than two groups)."""
    if validation_fraction <= 0 or n_groups < 2:
        return 0
    return min(max(round(n_groups * validation_fraction), 1), n_groups - 1)


def group_split(groups, validation_fraction, rng):
    """The torch fits' one validation split: all rows of a group fall on one side.

    Returns
    -------
    train_rows, valid_rows : ndarray of int64
        ``valid_rows`` is empty when ``validation_fraction`` is 0 or there are
        fewer than two groups.
    """
    uniq, inverse = np.unique(np.asarray(groups), return_inverse=True)
    n_valid = n_held_out(len(uniq), validation_fraction)
    is_valid = np.zeros(len(uniq), dtype=bool)
    is_valid[rng.permutation(len(uniq))[:n_valid]] = True
    rows = np.arange(len(inverse))
    return rows[~is_valid[inverse]], rows[is_valid[inverse]]


# -- standard errors and the rules built on them ----------------------------------------


def standard_error(values):
    """Standard error of the mean of ``values`` (inf with fewer than two values)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else np.inf


def exceeds_se(gains, n_se):
    """Whether the mean of paired per-query ``gains`` exceeds ``n_se`` standard errors
    (never with fewer than two queries: one query is no evidence)."""
    gains = np.asarray(gains, dtype=np.float64)
    return len(gains) > 1 and bool(gains.mean() > n_se * standard_error(gains))


#: Ridge's rule: the best (alpha, prior) replaces the conservative fallback (stage 1
#: kept) only when its paired mean gain exceeds this many standard errors.
RIDGE_SE = 1.0

#: Softmax's evidence threshold (steps 3 and 4 of the rule in
#: :mod:`era_sklearn._stage2.softmax_search`), in standard errors of paired
#: per-query differences.
GUARD_SE = 1.0


def ridge_beats_fallback(candidate, fallback):
    """Ridge's paired one-standard-error rule over held-out queries.

    Picking the maximum of a dozen noisy means favours noise; a candidate
    replaces the conservative fallback (stage 1 kept) only when its mean gain
    exceeds :data:`RIDGE_SE` standard errors of the per-query gains. Softmax
    shrinks toward a default penalty instead (:func:`choose_penalty`): its
    fallback is that default, not stage 1, so its rule differs by design.
    """
    return exceeds_se(candidate - fallback, RIDGE_SE)


def choose_penalty(scores, prior_scores, default, random_scores=None):
    """The rule: ``C`` (or ``inf``, stage 1) from per-query held-out nDCG@10.

    Parameters
    ----------
    scores : dict of float -> ndarray (n_queries,)
        Held-out score of each query under each finite ``C`` tried.
    prior_scores : ndarray (n_queries,)
        The same under stage 1.
    default : float
        Where the one-standard-error rule lands among indistinguishable ``C``.
    random_scores : ndarray (n_queries,), default=None
        Each query's expected score under a random ranking of its candidates
        (step 4 of the module docstring); None skips that step.

    Returns
    -------
    C : float
    summary : dict
        ``candidate_C`` (step 2), ``chosen_C``, the paired ``gain`` of the
        candidate over stage 1 and ``gain_se``, ``signal`` (step 4: does
        stage 1 rank the held-out labels above chance) and ``rule`` in words.
    """
    if not scores:
        return np.inf, {"chosen_C": np.inf, "rule": "no penalty tried: prior kept"}
    means = {C: float(np.mean(v)) for C, v in scores.items()}
    top = max(means, key=lambda C: (means[C], C))
    close = [C for C in means if means[C] >= means[top] - standard_error(scores[top] - scores[C])]
    candidate = min(close, key=lambda C: (abs(np.log(C / default)), -C))
    gains = scores[candidate] - prior_scores
    gain, gain_se = float(gains.mean()), standard_error(gains)
    signal = True
    if random_scores is not None:
        above = prior_scores - random_scores
        signal = exceeds_se(above, GUARD_SE)
    if signal:
        keep_prior = exceeds_se(-gains, GUARD_SE)
        why = (f"stage 1 kept: it scored above C by more than {GUARD_SE:g} standard error(s)"
               if keep_prior else f"stage 1 did not score above C by {GUARD_SE:g} standard "
               "error(s)")
    else:
        keep_prior = not exceeds_se(gains, GUARD_SE)
        why = ("stage 1 ranks the held-out labels no better than chance; " +
               (f"kept: C did not gain {GUARD_SE:g} standard error(s)" if keep_prior
                else f"C gained more than {GUARD_SE:g} standard error(s)"))
    summary = {
        "candidate_C": candidate, "chosen_C": np.inf if keep_prior else candidate,
        "default_C": float(default), "gain": gain, "gain_se": gain_se, "signal": signal,
        "rule": (f"C within one standard error of the best held-out nDCG@10, closest to "
                 f"{default:.3g}; {why}"),
    }
    return summary["chosen_C"], summary


def choose_blend(searches, default):
    """The hybrid's blend: ``default`` unless another beats it clearly on held-out queries.

    Each blend's chosen map (see :func:`choose_penalty`) was scored on the same
    held-out queries; another blend replaces ``default`` only when its mean
    paired gain over ``default`` exceeds :data:`GUARD_SE` standard errors.
    The default is the fallback because a wrong move costs unevenly: with a
    strong cheap encoder (MiniLM), plain ERA chosen on the noise of 8 queries
    lost 0.09 nDCG@10 to the default hybrid, while with a static one (m2v) the
    default hybrid trails plain ERA by about 0.01 where it trails at all.
    """
    base = searches[default].per_query
    gains = {b: s.per_query - base for b, s in searches.items() if b != default}
    clear = {b: float(g.mean()) for b, g in gains.items() if exceeds_se(g, GUARD_SE)}
    blend = max(clear, key=clear.get) if clear else default
    summary = {"chosen": blend, "default": default,
               "heldout_ndcg": {f"{b:g}": heldout_estimate(s.per_query)
                                for b, s in searches.items()},
               "gain_over_default": {f"{b:g}": heldout_estimate(g) for b, g in gains.items()},
               "penalty_C": {f"{b:g}": s.C for b, s in searches.items()}}
    return blend, summary


def heldout_estimate(per_query):
    """``{"mean": ..., "se": ...}`` of per-query held-out scores (NaN when none)."""
    per_query = np.asarray(per_query, dtype=np.float64)
    if not per_query.size:
        return {"mean": float("nan"), "se": float("nan")}
    return {"mean": float(per_query.mean()), "se": standard_error(per_query)}
