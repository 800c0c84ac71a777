"""scikit-learn's own estimator checks over ERAAdapter's configurations (no xfail)."""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from era_sklearn import ERAAdapter
from era_sklearn.adapt import Contrastive, Ridge, Softmax
from era_sklearn.align import LeastSquares

TINY_TORCH = {"max_epochs": 2, "batch_size": 8, "min_valid_queries": 2, "device": "cpu"}


@parametrize_with_checks([
    ERAAdapter(adapt="ridge", random_state=0),  # the closed-form path
    ERAAdapter(align=LeastSquares(alpha=1.0), adapt=Ridge(alpha=1.0), normalize_input=False,
               normalize_output=False, query_weighting="rows"),
    ERAAdapter(hybrid=True, random_state=0),
    ERAAdapter(adapt=Softmax(), random_state=0),  # the default stage 2
    ERAAdapter(adapt=Contrastive(**TINY_TORCH), random_state=0),
    ERAAdapter(adapt=Contrastive(model="mlp", hidden_size=8, **TINY_TORCH), random_state=0),
])
# The checks fit on random data: all-zero rows are left out with a warning, and fits without
# fit_align learn from a few random labels alone, which fit warns about. Both are expected here.
@pytest.mark.filterwarnings("ignore:.*labelled pair\\(s\\) with an all-zero embedding")
@pytest.mark.filterwarnings("ignore:fit without a stage-1 map")
@pytest.mark.filterwarnings("ignore:Only .* candidate documents")  # Contrastive on tiny data
def test_sklearn_compatible(estimator, check):
    if isinstance(estimator.adapt, Contrastive):
        pytest.importorskip("torch")  # the torch extra's solver
    check(estimator)
