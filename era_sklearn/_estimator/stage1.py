"""Stage 1 as the estimator runs it: the align problem from in-memory or Dask pairs, the
solver's declared needs, and the fingerprint of the settings that produced a map."""

import json

import numpy as np

from .._stage1.dask import as_row_blocks, dask_pair_statistics
from .._stage1.problem import AlignProblem
from .._stage1.reservoir import Reservoir
from .._stage1.statistics import PairStatistics
from .._utils.optional import require_torch
from .hybrid import check_layout, check_tail_is_y, check_tail_is_y_dask, query_block
from .params import resolve_align
from .rows import alignment_weights, nonzero_rows, normalize_rows, warn_dropped

#: Document-side alignment rows kept (``align_docs_``) as the candidate
#: documents of stage 2 when ``fit`` gets no corpus.
ALIGN_DOCS_CAPACITY = 4096


def requires_rows(solver):
    """The solver needs the rows, not only the statistics (AlignSolver's default: no)."""
    return bool(getattr(solver, "requires_rows", False))


def requires_gram(solver):
    """The solver reads ``X^T X`` (AlignSolver's default: yes, the safe side)."""
    return bool(getattr(solver, "requires_gram", True))


def require_torch_for(solver):
    """Fail before any work when the solver needs torch and it is not installed."""
    if getattr(solver, "needs_torch", False):
        require_torch(f"The {type(solver).__name__} solver")


def own_aligner(align, method, lent):
    """The stage-1 solver of ``align=``, refusing what ``method`` cannot run with it."""
    if lent:
        raise ValueError(
            f"align is a fitted ERAAdapter whose stage-1 map fit() reuses; {method} has "
            "nothing to do. Set align to a solver (e.g. 'procrustes') to align here."
        )
    solver = resolve_align(align)
    if method == "partial_fit_align":
        check_statistics_suffice(solver, method)
    return solver


def dask_blocks(solver, X, y, sample_weight):
    """Dask pairs as row blocks, for a solver that works from the statistics alone."""
    check_statistics_suffice(solver, "fit_align on dask arrays", ": pass numpy arrays")
    return as_row_blocks(X, y, sample_weight)


def check_statistics_suffice(solver, method, hint=""):
    """``method`` sees the data only as statistics: refuse a solver that needs the rows."""
    if requires_rows(solver):
        raise ValueError(
            f"{method} needs a closed-form align (Procrustes, LeastSquares, or a solver that "
            f"works from the pair statistics alone); {type(solver).__name__} sets "
            f"requires_rows: it trains on the data itself{hint}."
        )


def solver_settings(solver):
    """The solver's class and parameters as JSON (``device`` aside: it does not change the
    map), comparable also for a user's solver without ``get_params``."""
    return json.dumps(_settings(solver), sort_keys=True, default=str)


def align_fingerprint(align, normalize_input, hybrid):
    """What produced a stage-1 map: the solver of ``align=``, its settings, the input layout."""
    return json.dumps(
        {**_settings(resolve_align(align)), "normalize_input": normalize_input, "hybrid": hybrid},
        sort_keys=True, default=str,
    )


def _settings(solver):
    params = solver.get_params() if hasattr(solver, "get_params") else {}
    return {"solver": type(solver).__name__,
            "params": {k: v for k, v in params.items() if k != "device"}}


def new_reservoir(normalize, random_state):
    return Reservoir(ALIGN_DOCS_CAPACITY, random_state, normalize=normalize)


def pair_statistics(solver, Xq, Y, w, normalize):
    """One chunk's statistics, refusing a chunk with no usable pair."""
    stats = PairStatistics.from_arrays(Xq, Y, w, gram=requires_gram(solver), normalize=normalize)
    warn_dropped(stats.n_dropped, "alignment")
    if stats.weight_sum <= 0:
        raise ValueError(
            "No alignment pair is left: every pair has an all-zero embedding or a zero "
            "sample_weight."
        )
    return stats


def is_dask(A):
    """A dask array, recognised without importing dask."""
    return type(A).__module__.startswith("dask.")


def needs_finite_check(solver, hybrid):
    """Whether X and Y need their own finiteness pass before stage 1.

    The statistics pass finds NaN/inf rows from their sums of squares as it
    reads them and raises scikit-learn's error, so a separate pass (a full
    read of both) is skipped; but it reads only the query block of hybrid
    input, and a solver that reads the rows trains on them.
    """
    return hybrid or requires_rows(solver)


def alignment_pairs(X, Y, sample_weight, hybrid):
    """The query block of validated X and the pairs' weights, the hybrid layout checked."""
    check_layout(X, Y, hybrid)
    if hybrid:
        check_tail_is_y(X, Y)
    return query_block(X, Y.shape[1], hybrid), alignment_weights(sample_weight, len(X), X.dtype)


def in_memory_problem(solver, X, Y, sample_weight, *, hybrid, normalize, random_state,
                      verbose):
    """The align problem of validated in-memory pairs (with the normalised rows if the
    solver asks for them) and the document sample."""
    Xq, w = alignment_pairs(X, Y, sample_weight, hybrid)
    stats = pair_statistics(solver, Xq, Y, w, normalize)
    docs = new_reservoir(normalize, random_state).add(Y, w).sample()
    rows = {}
    if requires_rows(solver):
        keep = nonzero_rows(Xq, Y)
        rows = {"X": normalize_rows(Xq[keep], "X", normalize),
                "Y": normalize_rows(Y[keep], "Y", normalize),
                "weights": None if w is None else w[keep]}
    return AlignProblem(stats=stats, random_state=random_state, verbose=verbose, **rows), docs


def dask_problem(solver, X, Y, w, *, hybrid, normalize, random_state, verbose):
    """The align problem of Dask pairs (one pass, block by block) and the document sample."""
    check_layout(X, Y, hybrid)
    if hybrid:
        check_tail_is_y_dask(X, Y)
    stats, docs = dask_pair_statistics(
        query_block(X, Y.shape[1], hybrid), Y, w, gram=requires_gram(solver),
        normalize=normalize, reservoir=new_reservoir(normalize, random_state),
    )
    warn_dropped(stats.n_dropped, "alignment")
    return AlignProblem(stats=stats, random_state=random_state, verbose=verbose), docs.sample()


def solve(solver, problem, dtype):
    """The solver's result as ``(coef, intercept, history)`` in ``dtype``, its shapes checked
    (a user's solver that returns the wrong map fails here, not at transform)."""
    d_q, d_d = problem.stats.xty.shape
    result = solver.solve(problem)
    W = np.asarray(result.coef, dtype=dtype)
    b = np.asarray(result.intercept, dtype=dtype)
    if W.shape != (d_q, d_d) or b.shape != (d_d,):
        raise ValueError(
            f"{type(solver).__name__}.solve returned coef of shape {W.shape} and intercept of "
            f"shape {b.shape}; expected {(d_q, d_d)} and {(d_d,)}."
        )
    return W, b, result.history


def lent_stage1(source, *, hybrid, normalize_input):
    """The stage-1 state ``(W, b, docs, fingerprint, history)`` of the fitted adapter
    ``source`` given as ``align``."""
    if getattr(source, "align_coef_", None) is None:
        raise ValueError(
            "align is an ERAAdapter without a stage-1 map: call its fit_align first. "
            "(clone(), as GridSearchCV runs it, unfits an adapter: wrap a fitted one in "
            "sklearn.frozen.FrozenEstimator to keep it.)"
        )
    for name, value in (("hybrid", hybrid), ("normalize_input", normalize_input)):
        if getattr(source, name) != value:
            raise ValueError(
                f"align is an ERAAdapter with {name}={getattr(source, name)!r}, but this "
                f"adapter has {name}={value!r}: their inputs differ."
            )
    return (source.align_coef_, source.align_intercept_, source.align_docs_,
            source.align_fingerprint_, None)


def check_fingerprint(fitted, current):
    """Refuse to reuse a stage-1 map fitted with other settings than the current ones."""
    if fitted != current:
        raise ValueError(
            "The stage-1 map was fitted with other settings (align, normalize_input or "
            f"hybrid) than the current ones:\n  fitted:  {fitted}\n  current: {current}\n"
            "Call fit_align again, or set those parameters back."
        )
