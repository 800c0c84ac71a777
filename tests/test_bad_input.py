"""Every bad input ERAAdapter meets, and the exception (or warning) it gets.

``CASES`` and ``ACCEPTED`` are also the source of ``docs/bad_input.md``
(``python -m benchmarks.bad_input_table``), so the table cannot drift from
what is tested.
"""

import re
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV

from era_sklearn import Corpus, ERAAdapter
from era_sklearn.adapt import Contrastive, Ridge, Softmax
from era_sklearn.align import Procrustes

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 8))
Y = X[:, :4] + 0.1 * RNG.normal(size=(40, 4))


class Case(NamedTuple):
    """One row of the table: what is passed, and what must come back."""

    id: str
    input: str
    call: Callable
    error: type
    match: str


def _with(A, row, col, value):
    A = A.copy()
    A[row, col] = value
    return A


def _fitted():
    return ERAAdapter(random_state=0).fit_align(X, Y)


def _fitted_on_frame():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X, columns=[f"q{i}" for i in range(X.shape[1])])
    return ERAAdapter().fit_align(frame, Y), frame


CASES = [
    Case("nan_X", "NaN in X", lambda: ERAAdapter().fit_align(_with(X, 3, 1, np.nan), Y),
         ValueError, "Input X contains NaN"),
    Case("nan_Y", "NaN in y", lambda: ERAAdapter().fit(X, _with(Y, 3, 1, np.nan)),
         ValueError, "Input Y contains NaN"),
    Case("inf_X", "inf in X", lambda: ERAAdapter().fit_align(_with(X, 3, 1, np.inf), Y),
         ValueError, "Input X contains infinity"),
    Case("nan_Y_align", "NaN in y of fit_align",
         lambda: ERAAdapter().fit_align(X, _with(Y, 3, 1, np.nan)),
         ValueError, "Input Y contains NaN"),
    Case("inf_Y_lstsq_raw", "inf in y, lstsq, normalize_input=False",
         lambda: ERAAdapter(align="lstsq", normalize_input=False).fit_align(
             X, _with(Y, 5, 0, -np.inf)),
         ValueError, "Input Y contains infinity"),
    Case("nan_X_stream", "NaN in X of partial_fit_align",
         lambda: ERAAdapter().partial_fit_align(_with(X, 0, 2, np.nan), Y),
         ValueError, "Input X contains NaN"),
    Case("X_1d", "1-D X", lambda: ERAAdapter().fit_align(X[:, 0], Y),
         ValueError, "Expected 2D array, got 1D array"),
    Case("X_3d", "3-D X", lambda: ERAAdapter().fit_align(X.reshape(40, 2, 4), Y),
         ValueError, "Found array with dim 3"),
    Case("y_none", "y missing (None)", lambda: ERAAdapter().fit_align(X, None),
         ValueError, "requires y to be passed"),
    Case("row_mismatch", "X and y with different row counts",
         lambda: ERAAdapter().fit_align(X[:-1], Y), ValueError, "same number of rows"),
    Case("fit_width", "fit X narrower than fit_align's", lambda: _fitted().fit(X[:, :6], Y),
         ValueError, "X has 6 features, but ERAAdapter is expecting 8"),
    Case("transform_width", "transform X narrower than the fit's",
         lambda: _fitted().transform(X[:, :6]),
         ValueError, "X has 6 features, but ERAAdapter is expecting 8"),
    Case("y_width", "fit y narrower than fit_align's", lambda: _fitted().fit(X, Y[:, :3]),
         ValueError, "Y has 3 features, but the stage-1 map of this ERAAdapter outputs 4"),
    Case("chunk_y_width", "partial_fit_align chunk y narrower than earlier chunks",
         lambda: ERAAdapter().partial_fit_align(X, Y).partial_fit_align(X, Y[:, :3]),
         ValueError, "Y has 3 features"),
    Case("one_row_fit_align", "1 row to fit_align", lambda: ERAAdapter().fit_align(X[:1], Y[:1]),
         ValueError, "1 sample(s) (shape=(1, 8)) while a minimum of 2 is required"),
    Case("one_row_fit", "1 row to fit", lambda: ERAAdapter().fit(X[:1], Y[:1]),
         ValueError, "1 sample(s) (shape=(1, 8)) while a minimum of 2 is required"),
    Case("zero_row_X", "all-zero row of X (a static model's empty text)",
         lambda: ERAAdapter().fit_align(_with(X, 5, slice(None), 0), Y),
         UserWarning, "1 alignment pair(s) with an all-zero embedding were left out"),
    Case("zero_row_Y", "all-zero row of y",
         lambda: ERAAdapter().fit_align(X, _with(Y, 5, slice(None), 0)),
         UserWarning, "1 alignment pair(s) with an all-zero embedding were left out"),
    Case("zero_query", "all-zero query row at transform",
         lambda: _fitted().transform(_with(X, 2, slice(None), 0)),
         UserWarning, "X has 1 all-zero row(s) (first at index 2); they stay zero"),
    Case("negative_weight", "negative sample_weight",
         lambda: ERAAdapter().fit_align(X, Y, sample_weight=np.r_[-1.0, np.ones(39)]),
         ValueError, "sample_weight must be non-negative"),
    Case("sparse_X", "scipy.sparse X", lambda: ERAAdapter().fit_align(sp.csr_matrix(X), Y),
         TypeError, "Sparse data was passed for X, but dense data is required"),
    Case("sparse_Y", "scipy.sparse y", lambda: ERAAdapter().fit_align(X, sp.csr_matrix(Y)),
         TypeError, "Sparse data was passed for Y, but dense data is required"),
    Case("frame_renamed", "DataFrame with other column names at transform",
         lambda: _fitted_on_frame()[0].transform(_fitted_on_frame()[1].add_prefix("z")),
         ValueError, "The feature names should match those that were passed during fit"),
    Case("frame_then_array", "ndarray at transform after a DataFrame fit",
         lambda: _fitted_on_frame()[0].transform(X),
         UserWarning, "X does not have valid feature names, but ERAAdapter was fitted with"),
    Case("not_fitted", "transform before fit", lambda: ERAAdapter().transform(X),
         NotFittedError, "This ERAAdapter instance is not fitted yet"),
    Case("hybrid_narrow", "hybrid=True, X not wider than y",
         lambda: ERAAdapter(hybrid=True).fit_align(X[:, :4], Y),
         ValueError, "hybrid=True needs X = [query-encoder embedding, document-encoder"),
    Case("hybrid_tail_not_y", "hybrid=True, X's last block not y (fit_align)",
         lambda: ERAAdapter(hybrid=True).fit_align(np.hstack([X, X[:, 4:]]), Y),
         ValueError, "hybrid=True: the last 4 columns of X should be the document encoder's"),
    Case("hybrid_tail_not_y_stream", "hybrid=True, X's last block not y (partial_fit_align)",
         lambda: ERAAdapter(hybrid=True).partial_fit_align(np.hstack([X, X[:, 4:]]), Y),
         ValueError, "hybrid=True: the last 4 columns of X should be the document encoder's"),
    Case("nested_on_solver_name", "set_params(adapt__alpha=1.0) with adapt='softmax' (default)",
         lambda: ERAAdapter().set_params(adapt__alpha=1.0),
         ValueError, "Cannot set adapt__alpha: adapt is the solver name 'softmax', which has no "
                     "parameters of its own. Pass the solver object with the setting instead: "
                     "adapt=Softmax(alpha=...)"),
    Case("nested_on_solver_name_grid",
         "GridSearchCV grid {'align__center': [True, False]} with align='procrustes' (default)",
         lambda: GridSearchCV(ERAAdapter(), {"align__center": [True, False]}, cv=2).fit(X, Y),
         ValueError, "in a GridSearchCV grid, search over the objects: "
                     "{'align': [Procrustes(center=v) for v in values]}"),
    Case("unknown_param", "unknown parameter ERAAdapter().set_params(alhpa=1)",
         lambda: ERAAdapter().set_params(alhpa=1),
         ValueError, "Invalid parameter 'alhpa' for estimator ERAAdapter()"),
    Case("bad_nested", "bad solver setting Contrastive(lr=-1)",
         lambda: ERAAdapter(adapt=Contrastive(lr=-1.0)).fit(X, Y),
         ValueError, "The 'lr' parameter of Contrastive must be a float in the range (0.0, inf)"),
    Case("blend_not_hybrid", "blend set without hybrid=True",
         lambda: ERAAdapter(blend=0.5).fit_align(X, Y),
         ValueError, "blend=0.5 only applies with hybrid=True"),
    Case("partial_fit_torch", "partial_fit_align with a torch align",
         lambda: ERAAdapter(align="torch").partial_fit_align(X, Y),
         ValueError, "partial_fit_align needs a closed-form align"),
    Case("stale_align", "align changed after fit_align",
         lambda: _fitted().set_params(align="lstsq").fit(X, Y),
         ValueError, "The stage-1 map was fitted with other settings"),
    Case("corpus_missing_targets", "corpus that does not hold the targets",
         lambda: _fitted().fit(X, Y, corpus=Corpus(RNG.normal(size=(50, 4)))),
         ValueError, "40 of 40 target rows are not in the corpus"),
    Case("corpus_sliceable", "raw corpus array with as many rows as X",
         lambda: _fitted().fit(X, Y, corpus=Y.copy()),
         ValueError, "corpus has as many rows as X (40)"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case):
    expect = pytest.warns if issubclass(case.error, Warning) else pytest.raises
    with expect(case.error, match=re.escape(case.match)):
        case.call()


#: Inputs that are accepted, with the behaviour the named test pins down.
ACCEPTED = [
    ("float32 X and y", "accepted; the fit and transform stay float32", "test_dtypes"),
    ("float64 X and y", "accepted; stays float64", "test_dtypes"),
    ("int or float16 X and y",
     "accepted; converted to float64 (float16 has too little precision for the solvers)",
     "test_dtypes"),
    ("pandas DataFrame X",
     "accepted; names in `feature_names_in_`, `get_feature_names_out()` works",
     "test_dataframe_feature_names"),
    ("rank-deficient X (d_q > n, duplicated rows)", "accepted; finite map of shape (d_q, d_d)",
     "test_rank_deficient"),
]

@pytest.mark.parametrize(
    "dtype, expected",
    [
        (np.float32, np.float32),
        (np.float64, np.float64),
        (np.int64, np.float64),
        (np.float16, np.float64),
    ],
)
def test_dtypes(dtype, expected):
    Xd, Yd = np.rint(X * 10).astype(dtype), np.rint(Y * 10).astype(dtype)
    est = ERAAdapter(adapt=Ridge(alpha=1.0)).fit_align(Xd, Yd).fit(Xd, Yd)
    assert est.coef_.dtype == expected
    assert est.transform(Xd).dtype == expected


def test_dataframe_feature_names():
    est, frame = _fitted_on_frame()
    np.testing.assert_array_equal(est.feature_names_in_, frame.columns)
    np.testing.assert_array_equal(est.get_feature_names_out(),
                                  [f"eraadapter{i}" for i in range(Y.shape[1])])
    assert est.transform(frame).shape == Y.shape


@pytest.mark.parametrize("align", ["procrustes", "lstsq"])
def test_rank_deficient(align):
    Xr, Yr = np.repeat(X[:3], 2, axis=0), np.repeat(Y[:3], 2, axis=0)  # 6 rows < 8 cols, rank 3
    est = ERAAdapter(align=align, adapt=Ridge(alpha=1.0)).fit_align(Xr, Yr).fit(Xr, Yr)
    assert est.coef_.shape == (8, 4) and np.isfinite(est.coef_).all()
    out = est.transform(Xr)
    assert out.shape == (6, 4) and np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("align", ["procrustes", "lstsq"])
def test_failed_fit_align_keeps_the_previous_map(align):
    """NaN found mid-pass: the error names it and the fitted map is untouched."""
    adapter = ERAAdapter(align=align).fit_align(X, Y)
    before = adapter.align_coef_.copy()
    with pytest.raises(ValueError, match="Input X contains NaN"):
        adapter.fit_align(_with(X * 2, len(X) - 1, 0, np.nan), Y)
    np.testing.assert_array_equal(adapter.align_coef_, before)
    np.testing.assert_array_equal(adapter.transform(X[:3]), ERAAdapter(align=align)
                                  .fit_align(X, Y).transform(X[:3]))


def test_refused_hybrid_chunk_leaves_the_stream_unchanged():
    """Issue 17: partial_fit_align took a hybrid chunk whose last block is not y; refused now,
    before it reaches the accumulated statistics."""
    Xh = np.hstack([X, Y])
    adapter = ERAAdapter(hybrid=True).partial_fit_align(Xh[:20], Y[:20])
    with pytest.raises(ValueError, match="the last 4 columns of X should be"):
        adapter.partial_fit_align(np.hstack([X[20:], X[20:, 4:]]), Y[20:])
    adapter.partial_fit_align(Xh[20:], Y[20:])
    # The same two good chunks without the refused one in between: the same operations.
    clean = ERAAdapter(hybrid=True).partial_fit_align(Xh[:20], Y[:20])
    clean.partial_fit_align(Xh[20:], Y[20:])
    np.testing.assert_array_equal(adapter.align_coef_, clean.align_coef_)


@pytest.mark.filterwarnings("ignore:fit without a stage-1 map")  # label-only on purpose
def test_nested_keys_on_solver_objects_still_work():
    """The refusal is only for solver names: objects take nested keys, in a grid too, and
    get_params still reports the names as given."""
    assert ERAAdapter().get_params()["adapt"] == "softmax"
    est = ERAAdapter(align=Procrustes(), adapt=Softmax())
    est.set_params(align__center=True, adapt__temperature=0.1)
    assert est.align.center is True and est.adapt.temperature == 0.1
    # A top-level object and its nested key in one call: the object is set first.
    assert ERAAdapter().set_params(align=Procrustes(), align__center=True).align.center is True
    search = GridSearchCV(ERAAdapter(align=Procrustes(), adapt=Ridge(alpha=1.0)),
                          {"align__center": [True, False]}, cv=2).fit(X, Y)
    assert search.best_params_["align__center"] in (True, False)
