"""What a stage-2 solver receives and returns, and the protocol it follows.

``ERAAdapter.fit`` validates and normalises the labelled pairs once, finds
each target among the candidate documents, builds the stage-1 prior, and
hands this :class:`Stage2Problem` to the solver in ``adapt=``. A solver
returns an :class:`AdaptResult`; the estimator alone turns it into fitted
attributes. :class:`AdaptSolver` is the documented base of such solvers
(public as ``era_sklearn.adapt.AdaptSolver``).
"""

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator


@dataclass
class Stage2Problem:
    """Labelled rows of stage 2, ready for any solver.

    Attributes
    ----------
    X : ndarray of shape (n_rows, d_in)
        Query embeddings (normalised as the estimator's ``transform`` does),
        one row per (query, relevant document) pair.
    Y : ndarray of shape (n_rows, d_out)
        The relevant document of each row, normalised.
    weights : ndarray of shape (n_rows,)
        Fit weight of each row (every query weighs 1 under balanced weighting).
    grades : ndarray of shape (n_rows,)
        Relevance grade of each row (``sample_weight``).
    qids : ndarray of shape (n_rows,)
        Query id of each row, 0..n_queries-1.
    candidates : ndarray of shape (n_docs, d_out)
        Documents to rank queries against: the corpus, or a sample of the
        alignment documents plus the distinct targets. Rows normalised.
    targets : ndarray of shape (n_rows,)
        Row of ``candidates`` that each row's document is.
    bases : list of ndarray of shape (d_in, d_out)
        The stage-2 prior is ``sum(c_j * bases[j])``: the stage-1 map alone
        (plain), stage-1 map and identity (hybrid), or nothing (label-only).
    blends : list of float
        Candidate hybrid blends (``[1.0]`` when not hybrid).
    default_blend : float
        The blend used where a solver does not choose one.
    intercept : ndarray of shape (d_out,)
        Fixed intercept of the stage-1 map.
    hybrid : bool
    random_state : int, RandomState or None
    verbose : int

    Examples
    --------
    A stage-2 solver reads the problem ``ERAAdapter.fit`` builds; here, the
    prior it starts from (see :class:`~era_sklearn.adapt.AdaptSolver`):

    >>> import numpy as np
    >>> from era_sklearn.adapt import Stage2Problem
    >>> rows = np.eye(2)
    >>> problem = Stage2Problem(X=rows, Y=rows, weights=np.ones(2), grades=np.ones(2),
    ...                         qids=np.arange(2), candidates=rows, targets=np.arange(2),
    ...                         bases=[np.eye(2)], blends=[1.0], intercept=np.zeros(2))
    >>> problem.n_queries, problem.prior(1.0).tolist()
    (2, [[1.0, 0.0], [0.0, 1.0]])
    """

    X: np.ndarray
    Y: np.ndarray
    weights: np.ndarray
    grades: np.ndarray
    qids: np.ndarray
    candidates: np.ndarray
    targets: np.ndarray
    bases: list
    blends: list
    intercept: np.ndarray
    default_blend: float = 1.0
    hybrid: bool = False
    random_state: object = None
    verbose: int = 0

    @property
    def has_prior(self):
        return bool(self.bases) and (self.hybrid is False or len(self.bases) == 2)

    @property
    def default_blend_index(self):
        return int(np.argmin([abs(b - self.default_blend) for b in self.blends]))

    @property
    def n_queries(self):
        return int(self.qids.max()) + 1 if len(self.qids) else 0

    def blend_coefs(self, blend):
        """Coefficients of ``bases`` for one blend."""
        return blend_coefs(self.bases, blend, self.hybrid)

    def prior(self, blend):
        """The stage-2 prior map for one blend (zeros for label-only)."""
        return blended_prior(self.bases, blend, self.hybrid, self.X.shape[1], self.Y.shape[1])


def prior_bases(W_align, d_in, d_out, hybrid):
    """Maps whose combinations are the candidate priors of stage 2.

    Plain: the stage-1 map (or nothing, for label-only). Hybrid: the stage-1
    map on the query block and the identity on the document block, each
    padded with zeros to the full input width, so that a blend is a sum.
    """
    if not hybrid:
        return [] if W_align is None else [np.asarray(W_align, dtype=np.float64)]
    identity = np.zeros((d_in, d_out))
    identity[d_in - d_out:] = np.eye(d_out)
    if W_align is None:
        return [identity]
    aligned = np.zeros((d_in, d_out))
    aligned[: d_in - d_out] = W_align
    return [aligned, identity]


def blend_coefs(bases, blend, hybrid):
    """Coefficients of ``bases`` for one blend: ``[b, 1 - b]`` for an aligned hybrid."""
    if not hybrid:
        return [1.0] if bases else []
    return [blend, 1.0 - blend] if len(bases) == 2 else [1.0]


def blended_prior(bases, blend, hybrid, d_in, d_out):
    """The prior map for one blend, float64: the one place a prior is built.

    ``fit_align`` stores it as ``coef_`` and every stage-2 solver starts
    from it, so the two cannot disagree.
    """
    out = np.zeros((d_in, d_out))
    for c, B in zip(blend_coefs(bases, blend, hybrid), bases):
        out += c * B
    return out


@dataclass
class AdaptResult:
    """A stage-2 solver's output: the map and how it was chosen.

    ``ERAAdapter.fit`` turns it into ``coef_``, ``intercept_``, ``blend_``,
    ``penalty_``, ``module_params_``, ``history_``, ``cv_results_`` and
    ``heldout_ndcg_``.

    Examples
    --------
    >>> import numpy as np
    >>> from era_sklearn.adapt import AdaptResult
    >>> AdaptResult(coef=np.eye(3), intercept=np.zeros(3)).blend
    1.0
    """

    coef: np.ndarray
    intercept: np.ndarray
    blend: float = 1.0
    penalty: float | None = None  # the chosen alpha (on the solver's own scale)
    module_params: dict | None = None  # MLP branch of a torch model
    history: dict | None = None
    cv_results: dict | None = field(default=None)
    heldout: dict | None = None  # held-out estimates the choice rests on (heldout_ndcg_)


class AdaptSolver(BaseEstimator):
    """Base class of stage-2 solvers: the protocol ``ERAAdapter(adapt=...)`` calls.

    A solver is a parameter object (``__init__`` stores its settings, so
    ``GridSearchCV`` reaches them as ``adapt__<name>``) with one method,
    ``solve(problem)``: it takes a :class:`Stage2Problem` (the labelled rows,
    normalised, their candidate documents and the stage-1 prior) and returns
    an :class:`AdaptResult`. Any object with a ``solve`` method is accepted.

    Attributes
    ----------
    needs_torch : bool, default=False
        The solver needs the torch extra: ``fit`` checks before any work.

    Examples
    --------
    >>> import numpy as np
    >>> from era_sklearn import ERAAdapter
    >>> from era_sklearn.adapt import AdaptResult, AdaptSolver
    >>> class KeepPrior(AdaptSolver):
    ...     def solve(self, problem):
    ...         blend = problem.blends[problem.default_blend_index]
    ...         return AdaptResult(coef=problem.prior(blend), intercept=problem.intercept,
    ...                            blend=blend)
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(100, 6))
    >>> a = ERAAdapter(adapt=KeepPrior()).fit_align(X, X[:, :3]).fit(X[:20], X[:20, :3])
    >>> bool(np.allclose(a.coef_, a.align_coef_))
    True
    """

    needs_torch = False
    #: No constraints of its own: a subclass lists its parameters' (unlisted ones are not checked).
    _parameter_constraints: ClassVar[dict] = {}

    def solve(self, problem):
        """Return the :class:`AdaptResult` of ``problem`` (a :class:`Stage2Problem`)."""
        raise NotImplementedError(f"{type(self).__name__} must define solve(problem).")
