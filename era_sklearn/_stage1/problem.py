"""What a stage-1 solver receives and returns.

``ERAAdapter.fit_align`` (in memory, on Dask arrays) and ``partial_fit_align``
(chunk by chunk) all reduce the paired rows to one
:class:`~era_sklearn._stage1.statistics.PairStatistics`; they hand it, with the
rows themselves when the solver asks for them, to the solver in ``align=`` as
an :class:`AlignProblem`. The solver returns an :class:`AlignResult`; the
estimator alone turns it into fitted attributes, as stage 2 does with
``Stage2Problem`` and ``AdaptResult``.
"""

from dataclasses import dataclass

import numpy as np

from .statistics import PairStatistics


@dataclass(frozen=True)
class AlignProblem:
    """Paired embeddings of the same texts, ready for any stage-1 solver.

    Attributes
    ----------
    stats : PairStatistics
        Weighted sums over the pairs (``xty``, ``xtx`` when the solver sets
        ``requires_gram``, column sums, ``weight_sum``), of the rows
        normalised as the estimator's ``normalize_input`` says. Pairs with
        an all-zero row are already left out.
    X : ndarray of shape (n_texts, d_q) or None
        The query-encoder rows (the query block of hybrid input), normalised
        and without all-zero pairs; only for a solver that sets
        ``requires_rows`` (None otherwise: streamed and Dask data never
        exist as one array).
    Y : ndarray of shape (n_texts, d_d) or None
        The document-encoder rows of the same texts, likewise.
    weights : ndarray of shape (n_texts,) or None
        The rows' ``sample_weight`` (None: all 1), with ``X``.
    random_state : int, RandomState instance or None
    verbose : int

    Examples
    --------
    >>> import numpy as np
    >>> from era_sklearn._stage1.statistics import PairStatistics
    >>> from era_sklearn.align import AlignProblem, Procrustes
    >>> X = np.random.default_rng(0).normal(size=(50, 4))
    >>> problem = AlignProblem(stats=PairStatistics.from_arrays(X, X[:, :2]))
    >>> Procrustes().solve(problem).coef.shape
    (4, 2)
    """

    stats: PairStatistics
    X: np.ndarray | None = None
    Y: np.ndarray | None = None
    weights: np.ndarray | None = None
    random_state: object = None
    verbose: int = 0


@dataclass
class AlignResult:
    """A stage-1 solver's output: ``x -> x @ coef + intercept``, and how it was trained.

    Attributes
    ----------
    coef : ndarray of shape (d_q, d_d)
    intercept : ndarray of shape (d_d,)
    history : dict or None
        Training history of an iterative solver (``align_history_``).

    Examples
    --------
    >>> import numpy as np
    >>> from era_sklearn.align import AlignResult
    >>> AlignResult(coef=np.eye(3), intercept=np.zeros(3)).history is None
    True
    """

    coef: np.ndarray
    intercept: np.ndarray
    history: dict | None = None
