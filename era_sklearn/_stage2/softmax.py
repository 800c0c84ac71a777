"""Stage 2 that ranks: a full-batch softmax (listwise cross-entropy) objective.

For a linear map ``W`` (d_in, d_out), labelled queries ``x_q`` (one row per
query), candidate documents ``c_d`` (rows L2-normalised) and a temperature
``tau`` (default 0.05), stage 2 minimises

    sum_q w_q * ( -sum_d t_qd log softmax_d( cos(x_q W + b, c_d) / tau ) )
        + lam * ||W - W0||_F^2

where ``t_q`` is the query's graded relevance over the candidates normalised
to sum 1 (so many-positive queries such as NFCorpus's ~43 are one target
distribution), ``w`` the query weights normalised to sum 1 (default: every
query weighs the same), ``b`` an optional FIXED intercept (stage 1's; zeros
normally) and ``W0`` the prior (stage 1's map; the hybrid layout
``[b W_align ; (1 - b) I]`` is just a wider ``W0``). Unlike the squared error
of the ridge stage 2, this objective is the ranking the user sees: it pushes a
query's relevant documents above the other candidates and does not care where
the mapped query lands otherwise.

The gradient is analytic numpy (no torch): float32 GEMMs when the data are
float32 (float64 data stay float64, as in the gradient test), float64 sums.
The solver is scipy's L-BFGS-B from the prior, full batch, in whitened query
coordinates, with the gauge ``<W - W0, W0> = 0`` (see :func:`fit_softmax`:
without it weak penalties collapse). Deterministic. The penalty is chosen in
:mod:`era_sklearn._stage2.softmax_search`.

What is here, and why each piece exists: :class:`SoftmaxProblem` collapses
the labelled pairs to one row per query with its targets as a distribution (a
query's positives never act as each other's negatives); :func:`fit_softmax`
runs L-BFGS-B and, given held-out queries, stops when their nDCG@10 stops
rising; :func:`label_only_prior` gives the start and prior without stage 1 (a
penalty toward zero is degenerate under the cosine); :func:`query_whitening`
is computed once and shared by the many fits of a penalty search.

The penalty is data-scaled, ``lam = C / n_queries``: the summed data term
against ``C ||W - W0||^2``, so the prior keeps the same weight against each
labelled query and dominates when labels are few.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
from scipy import optimize, sparse

from .._metrics.dense import check_k, ranking_metric
from .._stage1.closed_form import ridge
from .._stage1.statistics import PairStatistics
from .._utils.blas import blas_controller
from .._utils.validation import l2_normalize, row_norms
from .heldout import HeldOutQueries, _max_duplicates, relative_alpha_grid

#: Default temperature of the softmax over cosine scores.
TEMPERATURE = 0.05

#: Cells of a (queries x candidates) block held at once: 32 MB per float32
#: temporary, whatever the problem size (a block needs about three of them).
_BLOCK_CELLS = 1 << 23


@dataclass
class SoftmaxProblem:
    """One labelled problem: query rows, candidates and target distributions.

    Attributes
    ----------
    X : ndarray (n_queries, d_in)
        One row per query.
    C : ndarray (n_candidates, d_out)
        Candidate documents, rows L2-normalised (all-zero rows stay zero:
        they score 0 against every query and can never be a target).
    rel : scipy.sparse.csr_matrix (n_queries, n_candidates)
        Graded relevance (the largest grade of a repeated pair), for nDCG.
    target_mean : ndarray (n_queries, d_out)
        ``T @ C`` with ``T`` = ``rel`` rows normalised to sum 1: the only
        form in which the targets enter the loss (``sum_d t_qd s_qd`` equals
        ``u_q . (T C)_q / tau``), so no sparse work happens per evaluation.
    weight : ndarray (n_queries,)
        Query weights, summing to 1.
    intercept : ndarray (d_out,) or None
    temperature : float
    candidate_weight : ndarray (n_candidates,) or None
        Each candidate counts this many times in the softmax's denominator
        (None: once). A uniform sample of ``m`` out of ``N`` documents,
        weighted ``N / m``, estimates the full corpus's denominator.
    cache : dict
        Products of ``X`` reused by the fits of one search (see ``_Objective``);
        :meth:`subset` starts a new one.
    """

    X: np.ndarray
    C: np.ndarray
    rel: sparse.csr_matrix
    target_mean: np.ndarray
    weight: np.ndarray
    intercept: np.ndarray | None
    temperature: float = TEMPERATURE
    candidate_weight: np.ndarray | None = None
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_pairs(cls, X, doc_idx, candidates, *, qids, grades=None, query_weight=None,
                   intercept=None, temperature=TEMPERATURE):
        """Collapse labelled rows (query, candidate index, grade) into one row per query.

        Parameters
        ----------
        X : ndarray (n_rows, d_in)
            Query embedding of each row (identical within a query).
        doc_idx : ndarray (n_rows,) of int
            Candidate index of each row's relevant document; rows with a
            negative index (an all-zero target, see ``_candidates``) are left out.
        candidates : ndarray (n_candidates, d_out)
            Rows are L2-normalised here (all-zero rows stay zero).
        qids : ndarray (n_rows,) of int
            Query id of each row (e.g. from ``_queries.query_ids``).
        grades : ndarray (n_rows,), default=None
            Graded relevance (1 when None). Rows with grade <= 0 carry no
            target; a query left without one is dropped.
        query_weight : ndarray (n_distinct_qids,), default=None
            Weight of each query, indexed by the sorted distinct ``qids``
            (1 each when None).
        intercept : ndarray (d_out,), default=None
            Fixed offset added to ``x W`` (stage 1's intercept).
        temperature : float, default=0.05
        """
        doc_idx = np.asarray(doc_idx, dtype=np.intp)
        grades = np.ones(len(doc_idx)) if grades is None else np.asarray(grades, np.float64)
        qids = np.asarray(qids)
        lengths = {"X": len(X), "doc_idx": len(doc_idx), "qids": len(qids), "grades": len(grades)}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"X, doc_idx, qids and grades need one entry per row; got {lengths}.")
        if doc_idx.size and doc_idx.max() >= len(candidates):
            raise ValueError(f"doc_idx points past the {len(candidates)} candidates "
                             f"(largest index {doc_idx.max()}).")
        queries, first, local = np.unique(qids, return_index=True, return_inverse=True)
        local = local.ravel()
        X = np.asarray(X)
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float64)
        # One dtype for every GEMM: the queries'.
        C = l2_normalize(np.asarray(candidates, dtype=X.dtype), zero_rows="ignore")
        keep_rows = (grades > 0) & (doc_idx >= 0)  # -1: a target that cannot be ranked
        rel = _max_duplicates(sparse.coo_matrix(
            (grades[keep_rows], (local[keep_rows], doc_idx[keep_rows])),
            shape=(len(queries), len(C)),
        ))
        totals = np.asarray(rel.sum(axis=1)).ravel()
        weight = np.ones(len(queries)) if query_weight is None else np.asarray(
            query_weight, dtype=np.float64)
        if weight.shape != (len(queries),):
            raise ValueError(f"query_weight must have one entry per query ({len(queries)}), "
                             f"got shape {weight.shape}.")
        keep = (totals > 0) & (weight > 0)
        if not keep.any():
            raise ValueError("No query has a positive grade and weight: nothing to fit.")
        rel = rel[keep]
        T = sparse.diags(1.0 / totals[keep]) @ rel
        X = X[first[keep]]
        return cls(
            X=X, C=C, rel=rel.tocsr(),
            target_mean=np.asarray(T @ C.astype(np.float64)).astype(C.dtype),
            weight=weight[keep] / weight[keep].sum(),
            intercept=None if intercept is None else np.asarray(intercept, dtype=C.dtype),
            temperature=float(temperature),
        )

    @property
    def n_queries(self):
        return len(self.X)

    def subset(self, queries):
        """The same problem restricted to the query rows ``queries`` (weights renormalised)."""
        w = self.weight[queries]
        return replace(self, X=self.X[queries], rel=self.rel[queries],
                       target_mean=self.target_mean[queries], weight=w / w.sum(), cache={})

    def candidate_sample(self, size, random_state):
        """The same queries against every target plus ``size`` other candidates.

        The others are drawn uniformly and weighted to stand for all the
        non-target candidates, so the loss estimates the full one at a
        fraction of the cost (used to choose ``lam``; the final fit uses all).
        """
        targets = np.unique(self.rel.indices)
        others = np.setdiff1d(np.arange(len(self.C)), targets)
        if size >= len(others):
            return self
        rng = np.random.default_rng(random_state)
        drawn = np.sort(rng.choice(others, size=size, replace=False))
        keep = np.concatenate([targets, drawn])
        weight = np.concatenate([np.ones(len(targets)), np.full(size, len(others) / size)])
        column = np.full(len(self.C), -1)
        column[targets] = np.arange(len(targets))
        rel = sparse.csr_matrix((self.rel.data, column[self.rel.indices], self.rel.indptr),
                                shape=(self.n_queries, len(keep)))
        return replace(self, C=self.C[keep], rel=rel, candidate_weight=weight.astype(self.C.dtype))

    def mapped(self, W):
        """Unit-length mapped queries ``normalize(X W + b)`` (zero rows stay zero)."""
        Z = self.X @ W.astype(self.X.dtype, copy=False)
        if self.intercept is not None:
            Z += self.intercept
        return l2_normalize(Z, zero_rows="ignore")

    def ndcg(self, W, k=10, *, average=True):
        """nDCG@k of the queries ranking the candidates by cosine under ``W``."""
        return ranking_metric("ndcg", self.mapped(W) @ self.C.T, self.rel, check_k(k), average)


def _loss_grad_Z(Z, problem):
    """The weighted softmax loss and its gradient w.r.t. the mapped queries ``Z = X W``.

    ``Z`` is overwritten (it is always a fresh product).
    """
    p = problem
    inv_tau = 1.0 / p.temperature
    loss = 0.0
    grad_Z = np.empty_like(Z)
    step = max(1, _BLOCK_CELLS // max(len(p.C), 1))
    for start in range(0, p.n_queries, step):
        rows = slice(start, start + step)
        block_loss, grad_Z[rows] = _block(Z[rows], p, rows, inv_tau)
        loss += block_loss
    return loss, grad_Z


def _block(Z, p, rows, inv_tau):
    """Weighted loss of one block of queries and its gradient w.r.t. ``Z = X W``."""
    if p.intercept is not None:
        Z += p.intercept
    # Not l2_normalize: the gradient below divides by these same norms.
    norms = row_norms(Z)
    # A query mapped to zero scores 0 everywhere (uniform softmax), never NaN.
    norms = np.where(norms > 0, norms, 1).astype(Z.dtype)[:, None]
    U = Z / norms
    # Scores are cosines over tau, so |s| <= 1 / tau: up to _NO_SHIFT, exp(s)
    # can neither overflow nor vanish in float32 and the usual max-shift (two
    # passes over the block) is skipped. 1/tau goes into U, not into S.
    S = (U * Z.dtype.type(inv_tau)) @ p.C.T
    shift = None
    if inv_tau > _NO_SHIFT:
        shift = S.max(axis=1, keepdims=True)
        S -= shift
    np.exp(S, out=S)
    if p.candidate_weight is not None:
        S *= p.candidate_weight
    total = S.sum(axis=1, dtype=np.float64)
    target = p.target_mean[rows]
    # -sum_d t_d log p_d = logsumexp(s) - sum_d t_d s_d, and sum_d t_d s_d = u . (T C) / tau.
    per_query = np.log(total) - inv_tau * np.einsum("ij,ij->i", U, target, dtype=np.float64)
    if shift is not None:
        per_query += shift[:, 0]
    # Softmax-weighted mean candidate: normalise after the GEMM (n x d), not before (n x n_c).
    expected = (S @ p.C) * (1.0 / total).astype(Z.dtype)[:, None]
    grad_U = (expected - target) * Z.dtype.type(inv_tau)
    # Through the normalisation u = z / ||z||: project out u, divide by ||z||.
    radial = np.einsum("ij,ij->i", grad_U, U)[:, None]
    grad_Z = (grad_U - radial * U) / norms
    w = p.weight[rows]
    grad_Z *= w.astype(Z.dtype)[:, None]
    return float(per_query @ w), grad_Z


#: Largest 1 / temperature computed without the max-shift: exp(+-40) is finite
#: and normal in float32 (and the row sums stay far below float64's range).
_NO_SHIFT = 40.0


class _HeldOutScorer:
    """nDCG@10 of held-out queries under a map, through the selection module's fast ranking."""

    def __init__(self, problem):
        coo = problem.rel.tocoo()
        self.problem = problem
        self.queries = HeldOutQueries(problem.X[coo.row], coo.row, coo.col, coo.data,
                                      np.arange(problem.n_queries), len(problem.C))

    def __call__(self, W, average=True):
        return self.of_mapped(self.problem.X @ W.astype(self.problem.X.dtype), average)

    def of_mapped(self, Z, average=True):
        """The same from the mapped queries ``Z = X W`` (before intercept and normalisation)."""
        if self.problem.intercept is not None:
            Z = Z + self.problem.intercept
        values = self.queries.ndcg(l2_normalize(Z, zero_rows="ignore") @ self.problem.C.T)
        return float(values.mean()) if average else values


class _Tracker:
    """Held-out nDCG@10 at L-BFGS iterates; stops once it has not improved for a while."""

    def __init__(self, score, patience, mapped, start_score, min_iter=0, threads=None):
        self.score, self.patience, self.mapped, self.min_iter = score, patience, mapped, min_iter
        self.threads = threads or _BlasThreads(1)
        self.best_score = start_score
        self.scores, self.best_iter = [start_score], 0

    def __call__(self, intermediate_result):
        with self.threads.wide():
            score = self.score.of_mapped(self.mapped(intermediate_result.x))
        self.scores.append(score)
        iteration = len(self.scores) - 1  # scores[0] is the start
        if score > self.best_score:
            self.best_score, self.best_iter = score, iteration
        elif (self.patience is not None and iteration >= self.min_iter
              and iteration - self.best_iter >= self.patience):
            raise StopIteration


def fit_softmax(problem, W0, *, lam, max_iter=200, start=None, heldout=None, patience=None,
                min_iter=0, precondition=True):
    """Minimise the objective with L-BFGS-B from ``start`` (default: the prior).

    The map is searched as ``W = W0 + D`` with ``<D, W0>_F = 0``: the cosine
    ignores the scale of ``W``, so over all ``W`` the minimiser could shrink
    ``W0``'s share to cheapen the penalty (``s W0 + D`` costs
    ``(1 - s)^2 ||W0||^2 + ||D||^2`` yet ranks like ``W0 + D / s``). The
    penalty then saturates at ``lam ||W0||^2`` and below some ``lam`` the
    solution jumps to a map that memorises the training queries (measured
    without this constraint, SciFact m2v: 0.706 at C=8, 0.611 at C=4; NFCorpus
    MiniLM: 0.331 at C=16, 0.249 at C=8). Fixing that gauge loses no ranking
    (any map within 90 degrees of ``W0`` has a scaled copy of this form) and
    makes the penalty ``lam ||W0||^2 tan^2(angle(W, W0))``: unbounded, and the
    scores vary smoothly with ``lam`` (SciFact m2v 0.698 / 0.702 / 0.704 at
    C = 8 / 4 / 2).

    Parameters
    ----------
    problem : SoftmaxProblem
    W0 : ndarray (d_in, d_out)
        The prior the penalty pulls toward.
    lam : float
        Penalty strength; ``inf`` returns ``W0`` itself (no iteration).
    max_iter : int, default=200
    start : ndarray (d_in, d_out), default=None
        Starting map (a warm start; its component along ``W0`` is set to
        ``W0``'s); ``W0`` when None.
    heldout : SoftmaxProblem, default=None
        Queries NOT in ``problem``, scored (nDCG@10) at every iterate (or
        their ``_HeldOutScorer``, built once when several fits share them).
    patience : int, default=None
        With ``heldout``: stop (early) once ``patience`` iterations have
        passed without a better held-out score. The last iterate is returned
        either way: the selection compares where each fit ended up, as the
        final fit will be (returning the best iterate would flatter weak
        penalties that only look good early on).
    min_iter : int, default=0
        No early stop before this many iterations: from the prior, the first
        L-BFGS steps move the held-out score up and down (NFCorpus hybrid:
        a fit stopped at iteration 3 scored below the prior, while the same
        penalty fitted on gains 0.04 nDCG@10 on test).
    precondition : bool or QueryWhitening, default=True
        Optimise in whitened query coordinates (same optimum, fewer
        iterations); a :class:`QueryWhitening` computed once (see
        :func:`query_whitening`) can be shared by several fits.

    Returns
    -------
    W : ndarray (d_in, d_out), float64
    info : dict
        ``n_iter``, ``n_eval``, ``loss``, ``stop`` (the reason), ``seconds``;
        with ``heldout`` also ``heldout_ndcg`` (per iteration, the start
        first), ``best_iter`` and ``best_ndcg``.
    """
    W0 = _check_map(W0, problem, "W0")
    t0 = time.perf_counter()
    if np.isinf(lam):
        return W0.copy(), {"n_iter": 0, "n_eval": 0, "loss": None, "stop": "lam=inf",
                           "seconds": 0.0}
    start = W0 if start is None else _check_map(start, problem, "start")
    objective = _Objective(problem, W0, lam, precondition)
    tracker = None
    if heldout is not None:
        score = heldout if isinstance(heldout, _HeldOutScorer) else _HeldOutScorer(heldout)
        tracker = _Tracker(score, patience, objective.mapper(score.problem), score(start),
                           min_iter, objective.threads)
    with objective.threads.narrow():
        res = optimize.minimize(objective, objective.x_of(start), jac=True, method="L-BFGS-B",
                                callback=tracker, options={"maxiter": max_iter})
    info = {"n_iter": int(res.nit), "n_eval": int(res.nfev), "loss": float(res.fun),
            "stop": str(res.message)}
    if tracker is not None:
        info.update(heldout_ndcg=tracker.scores, best_iter=tracker.best_iter,
                    best_ndcg=float(tracker.best_score))
        if len(tracker.scores) - 1 - tracker.best_iter >= (patience or np.inf):
            info["stop"] = f"early stop: no held-out gain in {patience} iterations"
    info["seconds"] = time.perf_counter() - t0
    return objective.W_of(res.x).astype(np.float64), info


def _check_map(W, problem, name):
    """``W`` as float64, checked against the problem's (d_in, d_out) and for finiteness."""
    W = np.asarray(W, dtype=np.float64)
    shape = (problem.X.shape[1], problem.C.shape[1])
    if W.shape != shape:
        raise ValueError(f"{name} must have shape (d_in, d_out) = {shape}, got {W.shape}.")
    if not np.isfinite(W).all():
        raise ValueError(f"{name} contains NaN or infinity.")
    return W


class _Objective:
    """The objective over ``x`` with ``W = W0 + P(A V)``, ``V = x`` as an (r, d_out) matrix.

    ``A`` (d_in, r) gives whitened coordinates of the queries' row space (see
    :func:`query_whitening`; the identity without preconditioning) and ``P`` removes the component along
    ``W0`` (the gauge, see :func:`fit_softmax`). With ``u = W0 / ||W0||`` and
    ``c = <V, A^T u>``: ``P(A V) = A V - c u`` and ``X W = X W0 + (X A) V - c X u``,
    so with ``X A``, ``X W0``, ``X u``, ``A u`` and ``A^2`` computed once an
    evaluation costs the two GEMMs of the loss plus one ``A^T A V`` (for the
    penalty ``lam ||P(A V)||^2 = lam (<V, A^T A V> - c^2)``) instead of two
    products with ``A``. All in the problem's dtype (float32 on real data).
    """

    def __init__(self, problem, W0, lam, precondition):
        self.problem, self.lam, dt = problem, lam, problem.X.dtype
        if not isinstance(precondition, QueryWhitening):
            eye = np.eye(W0.shape[0])
            precondition = query_whitening(problem) if precondition else QueryWhitening(eye, eye, eye)
        self.whitening = precondition
        self.A_inv = precondition.A_inv
        self.A, self.A2 = precondition.A.astype(dt), precondition.A2.astype(dt)
        self.W0, self.shape, self.dt = W0, (self.A.shape[1], W0.shape[1]), dt
        self.unit = W0 / max(np.linalg.norm(W0), np.finfo(float).tiny)
        self.Au = (precondition.A.T @ self.unit).astype(dt)
        self.mapped, self.XA, self.Xu = self.mapper(problem, products=True)
        self.threads = _BlasThreads()

    def mapper(self, problem, products=False):
        """``x -> X W`` for the queries of ``problem``, from three products computed once.

        The products are cached on ``problem`` (per prior and whitening): the
        fits of a held-out search reuse each fold's.
        """
        key = (id(self.W0), id(self.whitening))
        entry = problem.cache.get(key)
        # The entry keeps W0 and the whitening alive, so their ids cannot be
        # reused by other arrays while it exists; the identity check is a guard.
        if entry is None or entry[0] is not self.W0 or entry[1] is not self.whitening:
            X = problem.X
            entry = (self.W0, self.whitening,
                     tuple(X @ M.astype(X.dtype) for M in (self.W0, self.A, self.unit)))
            problem.cache[key] = entry
        XW0, XA, Xu = entry[2]

        def mapped(x):
            V = x.reshape(self.shape).astype(self.dt)
            return XW0 + XA @ V - self._c(V) * Xu

        return (mapped, XA, Xu) if products else mapped

    def _c(self, V):
        return np.einsum("ij,ij->", V, self.Au, dtype=np.float64).astype(self.dt)

    def x_of(self, W):
        D = np.asarray(W, dtype=np.float64) - self.W0
        D -= np.einsum("ij,ij->", D, self.unit) * self.unit
        return (self.A_inv @ D).ravel()

    def W_of(self, x):
        V = x.reshape(self.shape)
        return self.W0 + self.A.astype(np.float64) @ V - float(self._c(V.astype(self.dt))) * self.unit

    def __call__(self, x):
        with self.threads.wide():
            return self._evaluate(x)

    def _evaluate(self, x):
        V = x.reshape(self.shape).astype(self.dt)
        c = self._c(V)
        loss, grad_Z = _loss_grad_Z(self.mapped(x), self.problem)
        A2V = self.A2 @ V
        loss += self.lam * (float(np.einsum("ij,ij->", V, A2V, dtype=np.float64)) - float(c) ** 2)
        # dL/dx = A P (X^T grad_Z + 2 lam D) with A P X^T G = (X A)^T G - <G, X u> A u
        # and A P D = A^2 V - c A u.
        grad = self.XA.T @ grad_Z
        grad -= np.einsum("ij,ij->", grad_Z, self.Xu, dtype=np.float64).astype(self.dt) * self.Au
        grad += self.dt.type(2.0 * self.lam) * (A2V - c * self.Au)
        return loss, grad.astype(np.float64).ravel()


class _BlasThreads:
    """L-BFGS's own vector work on one BLAS thread, the loss's GEMMs on the caller's.

    L-BFGS-B's updates are BLAS-1 calls on vectors of d_in * d_out (295k)
    numbers: with two OpenBLAS threads on a busy 2-core machine they cost
    more than they save, and a whole SciFact fit took 4.45 s against 3.50 s
    on one thread, although one loss evaluation took 0.083 s against 0.134 s.
    """

    def __init__(self, outer=None):
        self.controller = blas_controller() if outer is None else None
        if outer is None:
            outer = max((lib.num_threads for lib in self.controller.lib_controllers), default=1)
        self.outer = outer

    def narrow(self):
        return self._limit(1)

    def wide(self):
        return self._limit(self.outer)

    def _limit(self, n):
        if self.outer <= 1:
            return nullcontext()
        return self.controller.limit(limits=n, user_api="blas")


class QueryWhitening(NamedTuple):
    """Coordinates ``V`` of the map's deviation ``A V`` (``A``: d_in x r), ``A``'s
    left inverse on its range (r x d_in) and ``A^T A`` (r x r)."""

    A: np.ndarray
    A_inv: np.ndarray
    A2: np.ndarray


def query_whitening(problem, ridge=0.1):
    """Whitened coordinates of the labelled queries' row space (the span of their rows).

    The deviation ``W - W0`` that minimises the objective lies in that span
    (plus ``W0``'s own direction, which the gauge removes): the data term sees
    ``W`` only through ``X W``, and off the span the penalty alone pulls to
    zero. So the fit searches ``r x d_out`` numbers for ``r <= n_queries``
    instead of ``d_in x d_out``, to the same optimum. A fixed-penalty fit on 16
    SciFact / MiniLM queries took 38.8 s in the full space (94 L-BFGS iterations,
    half of it in L-BFGS's own vector work) and 0.75 s in the span, on this
    shared machine under the same heavy load (load average about 10).

    Within the span the coordinates whiten ``X^T diag(w) X + ridge * mean_eig * I``
    (mean over all d_in eigenvalues), scaled to mean factor 1. Embedding spaces
    are anisotropic (a few directions carry most of the variance), which makes
    plain L-BFGS zig-zag: whitening cut the iterations to the same optimum from
    49 to 17 on SciFact / MiniLM.
    """
    X = problem.X.astype(np.float64) * np.sqrt(problem.weight)[:, None]
    d_in = X.shape[1]
    _, s, Vt = np.linalg.svd(X, full_matrices=False)
    keep = s > s[0] * d_in * np.finfo(np.float64).eps if s.size and s[0] > 0 else s > 0
    Q, vals = Vt[keep].T, s[keep] ** 2
    if not keep.any():  # no query direction at all: nothing to fit (W stays W0)
        return QueryWhitening(np.zeros((d_in, 1)), np.zeros((1, d_in)), np.zeros((1, 1)))
    vals = vals + ridge * max(vals.sum() / d_in, np.finfo(float).tiny)
    factor = vals ** -0.5
    factor /= factor.mean()
    return QueryWhitening(Q * factor, Q.T / factor[:, None], np.diag(factor**2))


def label_only_prior(problem, alpha=1.0):
    """Start and prior when there is no stage 1: ridge least squares onto the targets.

    The cosine makes the data term blind to the scale of ``W``, so a penalty
    toward zero is degenerate (it shrinks ``W`` toward 0, where the cosine is
    undefined). The prior is instead the ridge map of each query onto its
    target mean ``(T C)_q`` (weighted by query), with
    ``alpha * mean eigenvalue of X^T X`` as its ridge; the softmax fit starts
    from it and its penalty pulls toward it.
    """
    stats = PairStatistics.from_arrays(problem.X.astype(np.float64),
                                       problem.target_mean.astype(np.float64), problem.weight)
    return ridge(stats, relative_alpha_grid(stats, [alpha])[0])
