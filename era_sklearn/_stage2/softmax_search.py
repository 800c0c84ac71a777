"""Choosing the softmax penalty on held-out labelled queries, then the final fit.

The penalty is data-scaled, ``lam = C / n_queries`` (see ``_softmax``). Which
``C`` serves best depends on the data, and with few labels the held-out
estimate of any one ``C`` is noisier than the differences between them. The
rule therefore shrinks toward a default ``C`` rather than toward stage 1:

1. Per-query held-out nDCG@10 of stage 1 (the prior, ``C = inf``) and of each
   ``C`` of a grid, by cross-validation over the labelled queries: k folds,
   repeated with fresh splits when labels are few (each query's score is its
   mean over the repeats), or one held-out split when they are many.
2. Among the ``C`` whose mean lies within one standard error (of the paired
   per-query differences) of the best ``C``'s, the one closest on a log scale
   to the default :func:`default_C` (``n_queries``): noise cannot tell these
   apart, and the default is what the training queries of the shared sets
   favour for that many labels.
3. That ``C`` replaces stage 1 unless stage 1 scores better than it by more
   than :data:`GUARD_SE` standard errors (of the paired per-query gains): the
   default is the fallback, and keeping stage 1 needs evidence. A guard the
   other way round (the gain must exceed two standard errors) rejected real
   gains of up to 0.07 nDCG@10 with 8 to 128 queries.
4. Except when the labels say nothing stage 1 can see: if stage 1 ranks the
   held-out relevant documents no better than a random ranking would (within
   :data:`GUARD_SE` standard errors), the labels are not about the queries as
   stage 1 maps them, and the ``C`` must earn its place by a gain of more than
   :data:`GUARD_SE` standard errors (random relevant documents among few
   candidates gained 0.006 held out, 0.37 standard errors, and lost 0.08 on
   clean test queries).

:func:`choose_penalty` is the rule (steps 2 to 4) as a pure function;
:func:`select_and_fit` runs the cross-validation and the final fit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .heldout import choose_penalty, heldout_folds, standard_error
from .softmax import _check_map, _HeldOutScorer, fit_softmax, query_whitening

#: ``C`` values tried when the labels are few, strongest first: each fit
#: starts from its stronger neighbour's map. On the training queries of the
#: shared sets (``benchmarks.penalty_default``), C = 1 and 2 were never the
#: best with 8 to 128 labelled queries.
C_GRID = (64.0, 32.0, 16.0, 8.0, 4.0)

#: Where the one-standard-error rule lands when the held-out scores cannot
#: tell the ``C`` apart: ``C_DEFAULT * sqrt(N_DEFAULT / n_queries)``, so 45
#: at 8 queries, 16 at 64, 6 at 500. Derived on the *training* queries of the
#: shared SciFact and NFCorpus sets only (labels drawn from one part of the
#: train split, scored on another part; ``python -m benchmarks.penalty_default``):
#: the best fixed ``C`` fell from 32-64 at 8-16 labels to 8-16 at 128.
C_DEFAULT, N_DEFAULT = 16.0, 64


def default_C(n_queries):
    """The default ``C`` for ``n_queries`` labelled queries (see :data:`C_DEFAULT`)."""
    return C_DEFAULT * np.sqrt(N_DEFAULT / max(int(n_queries), 1))

#: With many labels (``min_split_queries`` and more), one held-out split and an
#: adaptive search from here: halve ``C`` while the held-out score improves by
#: :data:`MIN_GAIN`, else double (the grid's cost grows with the labels).
C_START, C_MIN, C_MAX = 4.0, 1.0 / 64, 1024.0

#: Smallest held-out nDCG@10 gain that moves the adaptive search to the next
#: ``C``: along one fit the held-out score jitters by about this much from one
#: iterate to the next (SciFact and NFCorpus traces).
MIN_GAIN = 0.002

#: Held-out fits started from the prior run at least this many iterations
#: before early stopping may end them (see ``min_iter`` in ``fit_softmax``).
COLD_MIN_ITER = 8

@dataclass
class PenaltySearch:
    """What the held-out search found: the chosen ``C`` and the evidence for it."""

    C: float  # inf: stage 1 kept
    n_queries: int
    per_query: np.ndarray  # held-out nDCG@10 of each query under the choice
    prior_per_query: np.ndarray  # ... under stage 1
    start: np.ndarray | None  # warm start of the final fit (the held-out maps' mean)
    many: bool  # one held-out split and the adaptive search (many labels)
    history: dict
    extra: dict  # name -> held-out nDCG@10 of each query under other maps (``also_score``)

    @property
    def lam(self):
        return self.C / self.n_queries


def select_and_fit(problem, W0, *, lam="auto", lams=None, max_iter=100, final_max_iter=6,
                   random_state=None, heldout_fraction=0.2, min_split_queries=500, n_folds=5,
                   patience=2, path_candidates=1024, precondition=True):
    """Choose ``lam`` on held-out labelled queries, then fit on every query.

    Parameters
    ----------
    problem : SoftmaxProblem
        The labelled queries (training data only: never the test queries).
    W0 : ndarray (d_in, d_out)
        The prior (stage 1's map, or ``label_only_prior``).
    lam : "auto" or float, default="auto"
        A float fits that penalty directly from ``W0`` with ``max_iter``
        iterations (``inf``: ``W0`` itself, exactly).
    lams : sequence of float, default=None
        Candidate penalties (``lam``, not ``C``), all tried. None: the grid
        :data:`C_GRID` when labels are few, else the adaptive search.
    max_iter : int, default=100
        L-BFGS iterations per held-out fit.
    final_max_iter : int, default=6
        With many labels, the final fit starts from the held-out fits' mean at
        the chosen ``C``, which is close: on SciFact / MiniLM (random_state
        0..4) 6, 10 and 20 iterations gave a mean test nDCG@10 of 0.7905,
        0.7905 and 0.7914. With few labels held-out fits run to convergence
        and so does the final fit (``max_iter``): what was scored is what is fitted.
    random_state : int, Generator or None
        Seeds the folds and the candidate sample (the only randomness).
    heldout_fraction : float, default=0.2
        Share of queries held out with ``min_split_queries`` or more.
    min_split_queries : int, default=500
        Below this many queries, repeated ``n_folds``-fold cross-validation.
    n_folds : int, default=5
    patience : int, default=2
        Early stopping of the held-out fits of the adaptive search (many labels).
    path_candidates : int or None, default=1024
        Held-out fits rank against every target plus this many other
        candidates, weighted to stand for the rest; held-out scores and the
        final fit use every candidate. None: all.
    precondition : bool or QueryWhitening, default=True

    Returns
    -------
    W : ndarray (d_in, d_out), float64
    lam : float
        ``inf`` when stage 1 was kept.
    history : dict
        ``C`` and ``lams`` tried (the prior ``inf`` first), ``heldout_ndcg``
        and ``heldout_se`` (mean held-out nDCG@10 of each, and its standard
        error), ``chosen_C``, ``candidate_C``, ``gain`` and ``gain_se``
        (paired held-out gain of the candidate over the prior),
        ``n_heldout``, ``n_folds``, ``n_repeats``, ``path`` (per fit),
        ``final``, ``n_eval``, ``seconds`` and ``rule``.
    """
    t0 = time.perf_counter()
    W0 = _check_map(W0, problem, "W0")
    if lam != "auto":
        W, info = fit_softmax(problem, W0, lam=float(lam), max_iter=max_iter,
                              precondition=precondition)
        return W, float(lam), {"lams": [float(lam)], "final": info, "n_eval": info["n_eval"],
                               "seconds": time.perf_counter() - t0, "rule": "given"}
    if precondition is True:  # one whitening for every fit: the folds' differ little
        precondition = query_whitening(problem)
    search = search_penalty(problem, W0, lams=lams, max_iter=max_iter,
                            random_state=random_state, heldout_fraction=heldout_fraction,
                            min_split_queries=min_split_queries, n_folds=n_folds,
                            patience=patience, path_candidates=path_candidates,
                            precondition=precondition)
    W, history = final_fit(problem, W0, search, max_iter=max_iter,
                           final_max_iter=final_max_iter, precondition=precondition)
    history["seconds"] = time.perf_counter() - t0
    return W, search.lam, history


def search_penalty(problem, W0, *, lams=None, max_iter=100, random_state=None,
                   heldout_fraction=0.2, min_split_queries=500, n_folds=5, patience=2,
                   path_candidates=1024, precondition=True, also_score=None):
    """The held-out search of :func:`select_and_fit` and its choice, without the final fit.

    Two problems with the same queries and ``random_state`` get the same
    folds, so their per-query scores can be compared (the hybrid's blends).
    ``also_score``: name -> map, scored on the same held-out queries (no fit).
    """
    also_score = also_score or {}
    n = problem.n_queries
    rng = np.random.default_rng(random_state)
    many = n >= min_split_queries
    folds = heldout_folds(n, rng, heldout_fraction if many else None, n_folds)
    history = {"n_folds": len(folds), "n_heldout": int(sum(map(len, folds))), "path": [],
               "n_repeats": 1 if many else len(folds) // max(1, min(n_folds, n))}
    if not folds:  # a single query: nothing to hold out
        history.update(C=[np.inf], lams=[np.inf], heldout_ndcg=[], chosen_C=np.inf,
                       rule="one query: prior kept")
        return PenaltySearch(np.inf, n, np.zeros(0), np.zeros(0), None, many, history,
                             {name: np.zeros(0) for name in also_score})
    fitted = problem if path_candidates is None else problem.candidate_sample(path_candidates, rng)
    history["n_path_candidates"] = len(fitted.C)
    fit_kw = {"max_iter": max_iter, "precondition": precondition}
    search = HeldOutSearch(problem, fitted, W0, folds, patience if many else None, fit_kw,
                           history["path"])
    if lams is not None:
        search.ladder(sorted((float(v) * n for v in lams), reverse=True))
    elif many:
        search.adaptive(C_START, C_MIN, C_MAX)
    else:
        search.ladder(C_GRID)
    per_query = {C: search.per_query(C) for C in search.scores}
    best, summary = choose_penalty({C: per_query[C] for C in search.accepted}, per_query[np.inf],
                                   default_C(n), random_scores=search.random_level())
    history.update(C=list(per_query), lams=[c / n for c in per_query],
                   heldout_ndcg=[float(v.mean()) for v in per_query.values()],
                   heldout_se=[standard_error(v) for v in per_query.values()], **summary,
                   n_eval=search.n_eval)
    start = None if np.isinf(best) else np.mean(search.maps[best], axis=0)
    extra = {name: search.score_map(W) for name, W in also_score.items()}
    return PenaltySearch(best, n, per_query[best], per_query[np.inf], start, many, history,
                         extra)


def final_fit(problem, W0, search, *, max_iter=100, final_max_iter=6, precondition=True):
    """The fit on every query at the searched penalty (``W0`` itself when stage 1 was kept)."""
    history = dict(search.history)
    if np.isinf(search.C):
        W, info = W0.copy(), {"n_iter": 0, "n_eval": 0, "stop": "prior kept"}
    else:
        iters = (final_max_iter or max_iter) if search.many else max_iter
        W, info = fit_softmax(problem, W0, lam=search.lam, start=search.start,
                              max_iter=iters, precondition=precondition)
    history.update(final=info, n_eval=history.get("n_eval", 0.0) + info["n_eval"])
    return W, history


class HeldOutSearch:
    """Held-out nDCG@10 of the prior and of each ``C`` tried, fold by fold."""

    def __init__(self, problem, fitted, W0, folds, patience, fit_kw, log):
        """``fitted``: the problem the fits see (``problem`` or a candidate sample of it);
        held-out queries always rank every candidate of ``problem``."""
        n = problem.n_queries
        self.W0, self.patience, self.fit_kw, self.log = W0, patience, fit_kw, log
        self.parts = [(fitted.subset(np.setdiff1d(np.arange(n), f)), problem.subset(f))
                      for f in folds]
        self.order = np.concatenate(folds)
        self.times_held_out = np.bincount(self.order, minlength=n)
        self.cost = len(fitted.C) / len(problem.C)
        self.n = n
        self.scorers = [_HeldOutScorer(held) for _, held in self.parts]
        self.scores = {np.inf: np.concatenate([score(W0, average=False)
                                               for score in self.scorers])}
        self.maps = {np.inf: [W0] * len(folds)}
        self.accepted = []
        self.n_eval = 0.0

    def per_query(self, C):
        """Each query's held-out score under ``C``, averaged over the repeats."""
        return self._per_query(self.scores[C])

    def score_map(self, W):
        """Each query's held-out score under a fixed map ``W`` (no fit)."""
        return self._per_query(np.concatenate([score(W, average=False)
                                               for score in self.scorers]))

    def random_level(self):
        """Each query's expected held-out nDCG@10 under a uniformly random ranking."""
        return self._per_query(np.concatenate([random_ranking_ndcg(held.rel)
                                               for _, held in self.parts]))

    def _per_query(self, fold_scores):
        total = np.bincount(self.order, weights=fold_scores, minlength=self.n)
        return total / np.maximum(self.times_held_out, 1)

    def mean(self, C):
        return float(self.scores[C].mean())

    def fit(self, C, warm):
        """Fit every fold at ``C``, each warm-started from its map at ``warm``."""
        maps, scores = [], []
        for k, ((train, _), score, start) in enumerate(
                zip(self.parts, self.scorers, self.maps[warm])):
            early = {} if self.patience is None else {
                "heldout": score, "patience": self.patience,
                "min_iter": COLD_MIN_ITER if warm == np.inf else 0}
            W, info = fit_softmax(train, self.W0, lam=C / train.n_queries, start=start,
                                  **early, **self.fit_kw)
            maps.append(W)
            scores.append(score(W, average=False))
            self.n_eval += info["n_eval"] * train.n_queries / self.n * self.cost
            self.log.append({"C": C, "fold": k, "n_iter": info["n_iter"],
                             "n_eval": info["n_eval"], "best_iter": info.get("best_iter"),
                             "heldout_ndcg": float(scores[-1].mean()), "stop": info["stop"]})
        self.maps[C], self.scores[C] = maps, np.concatenate(scores)
        return self.mean(C)

    def ladder(self, Cs):
        """Every ``C`` in order, each warm-started from the one before."""
        warm = np.inf
        for C in Cs:
            self.fit(C, warm)
            warm = C
        self.accepted = list(Cs)

    def adaptive(self, start, low, high):
        """From ``start``, halve ``C`` while the held-out score improves by
        :data:`MIN_GAIN`; if the first halving does not, double instead.

        Path fits stop early, so a neighbour's score is partly that of the
        warm start it came from: a gain below the iterate-to-iterate jitter
        of held-out nDCG@10 is not taken as a reason to move. Only the ``C``
        so accepted are candidates of the rule: past the best, a rejected
        stronger penalty can look close on held-out and lose much more on
        the test (SciFact m2v, no corpus: C = 16 within one standard error of
        C = 8 on held-out, 0.647 against 0.70 on test).
        """
        best = start
        self.fit(start, np.inf)
        self.accepted = [start]
        for step in (0.5, 2.0):
            C = best * step
            while low <= C <= high and self.fit(C, self._warm(C, step)) > self.mean(best) + MIN_GAIN:
                best, C = C, C * step
                self.accepted.append(best)
            if best != start:
                break

    @staticmethod
    def _warm(C, step):
        """Warm start of the fit at ``C``: its weaker neighbour, or the prior going up.

        From a weaker penalty's map, a stronger one first shrinks the whole
        deviation, which barely changes any ranking: an early-stopped fit then
        scores like its start and the search drifts toward strong penalties
        (NFCorpus: held-out scores rising to C = 32-64 where converged fits
        peak at 8-16). Started from the prior, a stronger penalty must earn
        its score.
        """
        return C / step if step < 1 else np.inf


def random_ranking_ndcg(rel, k=10):
    """Expected nDCG@k of each row of ``rel`` (graded relevance over the candidates)
    when the candidates are ranked in a uniformly random order: every rank holds the
    mean grade, ``E[DCG@k] = mean(g) * sum_{i<=k} 1 / log2(i + 1)``."""
    n_candidates = rel.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, min(k, n_candidates) + 2))
    out = np.zeros(rel.shape[0])
    for q in range(rel.shape[0]):
        row = rel.data[rel.indptr[q]:rel.indptr[q + 1]]
        top = np.sort(row)[::-1][:k]
        ideal = float(top @ discounts[: len(top)])
        if ideal > 0:
            out[q] = row.sum() / n_candidates * discounts.sum() / ideal
    return out
