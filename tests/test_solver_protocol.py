"""The solver protocols of docs/api.md: the page's own custom solvers, held by an
ERAAdapter, pass scikit-learn's estimator checks (issue 20, item 4)."""

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks
from test_docs import python_blocks

from era_sklearn import ERAAdapter
from era_sklearn.align import AlignResult, AlignSolver, LeastSquares

# The page's blocks define PlainLeastSquares and RidgeToPrior; run here, in this module's
# namespace, so that the checks can pickle the solvers by their module.
for _block in python_blocks("api.md"):
    exec(compile(_block, "docs/api.md", "exec"), globals())  # noqa: S102 - the docs' examples


@parametrize_with_checks([
    ERAAdapter(align=PlainLeastSquares(), random_state=0),  # noqa: F821 - from the docs
    ERAAdapter(adapt=RidgeToPrior(alpha=1.0), random_state=0),  # noqa: F821
    ERAAdapter(adapt=RidgeToPrior(), hybrid=True, random_state=0),  # noqa: F821
])
@pytest.mark.filterwarnings("ignore:.*labelled pair\\(s\\) with an all-zero embedding")
@pytest.mark.filterwarnings("ignore:fit without a stage-1 map")
def test_custom_solvers_are_sklearn_compatible(estimator, check):
    check(estimator)


class _RowsOnly(AlignSolver):
    """A solver that needs the rows: the protocol's requires_rows flag."""

    requires_rows = True
    requires_gram = False

    def solve(self, problem):
        W = np.linalg.lstsq(problem.X, problem.Y, rcond=None)[0]
        return AlignResult(coef=W, intercept=np.zeros(W.shape[1]))


def test_requires_rows_gets_rows_and_cannot_stream():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 6))
    est = ERAAdapter(align=_RowsOnly()).fit_align(X, X[:, :3])
    assert est.align_coef_.shape == (6, 3)
    with pytest.raises(ValueError, match="partial_fit_align needs a closed-form align.*"
                                         "_RowsOnly sets requires_rows"):
        ERAAdapter(align=_RowsOnly()).partial_fit_align(X, X[:, :3])


def test_a_solver_returning_the_wrong_shape_is_named():
    class Wrong(AlignSolver):
        def solve(self, problem):
            return AlignResult(coef=np.zeros((2, 2)), intercept=np.zeros(2))

    X = np.random.default_rng(0).normal(size=(50, 6))
    with pytest.raises(ValueError, match=r"Wrong.solve returned coef of shape \(2, 2\)"):
        ERAAdapter(align=Wrong()).fit_align(X, X[:, :3])


def test_any_object_with_solve_is_accepted():
    class Bare:  # no base class, no get_params: the open protocol
        def solve(self, problem):
            W = np.linalg.pinv(problem.stats.xtx) @ problem.stats.xty
            return AlignResult(coef=W, intercept=np.zeros(W.shape[1]))

    X = np.random.default_rng(0).normal(size=(50, 6))
    est = ERAAdapter(align=Bare()).fit_align(X, X[:, :3])
    near = ERAAdapter(align=LeastSquares(alpha=1e-9)).fit_align(X, X[:, :3])
    np.testing.assert_allclose(est.align_coef_, near.align_coef_, atol=1e-6)
