"""Fuzz ERAAdapter over shapes, dtypes and magnitudes (issue 13, item 2).

``fit_align``, ``fit`` (Softmax and Ridge), ``transform`` and ``save``/``load``
get small matrices of float16, float32, float64 or int64 whose rows are ordinary,
huge but finite (1e30 in float32, 1e300 in float64), denormal, all zeros, or a
mix of these. Every outcome must be a finite result (unit or zero output rows
when ``normalize_output=True``) or a ValueError / TypeError whose message names
the problem: never another exception, never NaN or inf, never a numpy overflow
warning standing in for an error.
"""

import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from _bounds import gamma
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from era_sklearn import Corpus, ERAAdapter
from era_sklearn.adapt import Ridge, Softmax

FUZZ = settings(
    # ERA_FUZZ_EXAMPLES=2000 ERA_FUZZ_RANDOM=1 for a long run exploring new examples.
    max_examples=int(os.environ.get("ERA_FUZZ_EXAMPLES", "60")),
    deadline=None,
    derandomize=os.environ.get("ERA_FUZZ_RANDOM") != "1",  # same examples every run: CI
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: Magnitude of a row, per dtype: ordinary, huge but finite, denormal (subnormal in that dtype).
MAGNITUDES = {
    "float16": {"huge": 3e4, "denormal": 1e-7},
    "float32": {"huge": 1e30, "denormal": 1e-40},
    "float64": {"huge": 1e300, "denormal": 5e-320},
    "int64": {"huge": 1e17, "denormal": 1.0},  # denormal has no int meaning: ones
}
KINDS = ["ordinary", "huge", "denormal", "zeros", "zero_rows", "mixed"]
#: A refusal must say what is wrong.
NAMES_PROBLEM = re.compile(
    r"NaN|infinity|too large|overflow|norm|zero|features|sample|rows|pair|dimension|shape|"
    r"dtype|fit|query|queries|corpus|labelled|candidate",
    re.IGNORECASE,
)
#: Fast solver settings: the fuzz is about numerics, not about search quality.
ADAPTS = {
    "softmax": Softmax(alpha=1.0, max_iter=5),
    "softmax_auto": "softmax",  # the default: alpha chosen on held-out queries
    "ridge": "ridge",
    "ridge_fixed": Ridge(alpha=1.0),
}


@st.composite
def matrices(draw, n_rows, n_cols, dtype):
    """An (n_rows, n_cols) matrix of one dtype with rows of a drawn magnitude kind."""
    kind = draw(st.sampled_from(KINDS))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    A = rng.standard_normal((n_rows, n_cols))
    mag = MAGNITUDES[dtype]
    scales = {
        "ordinary": np.ones(n_rows),
        "huge": np.full(n_rows, mag["huge"]),
        "denormal": np.full(n_rows, mag["denormal"]),
        "zeros": np.zeros(n_rows),
        "zero_rows": rng.choice([0.0, 1.0], n_rows),
        "mixed": rng.choice([0.0, 1.0, mag["huge"], mag["denormal"]], n_rows),
    }[kind]
    A *= scales[:, None]
    if dtype == "int64":
        A = np.rint(A * 3)
    else:  # stay finite in the drawn dtype (3e4 * a normal draw can pass float16's max)
        A = np.clip(A, -np.finfo(dtype).max / 2, np.finfo(dtype).max / 2)
    return A.astype(dtype)


def outcome(call):
    """``call()``, or None when it refuses with a ValueError / TypeError naming the problem.

    Any other exception fails the example, and so does a result computed while
    numpy warned of overflow or an invalid value (a silently wrong number).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = call()
        except (ValueError, TypeError) as e:
            assert NAMES_PROBLEM.search(str(e)), f"refusal does not name the problem: {e!r}"
            return None
    numeric = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert not numeric, f"result computed through numpy warnings: {numeric}"
    return result


def check_fitted(adapter, d_in, d_out):
    assert adapter.coef_.shape == (d_in, d_out)
    assert np.isfinite(adapter.coef_).all(), adapter.coef_
    assert np.isfinite(adapter.intercept_).all(), adapter.intercept_


def check_output(out, n_rows, d_out, normalize_output):
    assert out.shape == (n_rows, d_out)
    assert out.dtype in (np.float32, np.float64)
    assert np.isfinite(out).all(), out
    if normalize_output:
        norms = np.linalg.norm(out.astype(np.float64), axis=1)
        # A unit row rounded to the dtype: its sum of squares, the root, the division.
        tol = gamma(d_out + 4, out.dtype)
        assert np.all((np.abs(norms - 1) <= tol) | (norms == 0)), norms


def run_adapter(adapter, X, Y, Q, stage1, corpus):
    """fit_align (if stage1), fit, transform, save/load of one adapter; checks each outcome."""
    d_q, d_d = X.shape[1], Y.shape[1]
    if stage1:
        if outcome(lambda: adapter.fit_align(X, Y)) is None:
            return
        check_fitted(adapter, d_q, d_d)
    if outcome(lambda: adapter.fit(X, Y, corpus=corpus)) is None:
        if not stage1:
            return
    else:
        check_fitted(adapter, d_q, d_d)
    out = outcome(lambda: adapter.transform(Q))
    if out is not None:
        check_output(out, len(Q), d_d, adapter.normalize_output)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "adapter.safetensors"
        if outcome(lambda: adapter.save(path)) is None:
            return
        loaded = ERAAdapter.load(path)  # a file just written must load, and map the same
        np.testing.assert_array_equal(loaded.coef_, adapter.coef_)
        np.testing.assert_array_equal(loaded.intercept_, adapter.intercept_)
        again = outcome(lambda: loaded.transform(Q))
        assert (again is None) == (out is None)
        if out is not None:  # same weights; BLAS may round the product differently (1 ulp)
            assert again.dtype == out.dtype
            rtol = 1e-5 if out.dtype == np.float32 else 1e-12
            np.testing.assert_allclose(again, out, rtol=rtol, atol=rtol * np.abs(out).max())


@FUZZ
@given(data=st.data())
def test_adapter_fuzz(data):
    n = data.draw(st.integers(2, 10), label="n_rows")
    d_q, d_d = data.draw(st.integers(1, 5), label="d_q"), data.draw(st.integers(1, 4), label="d_d")
    dtype = data.draw(st.sampled_from(list(MAGNITUDES)), label="dtype")
    X = data.draw(matrices(n, d_q, dtype), label="X")
    Y = data.draw(matrices(n, d_d, data.draw(st.sampled_from([dtype, "float64"]))), label="Y")
    Q = data.draw(matrices(data.draw(st.integers(1, 4)), d_q, dtype), label="Q")
    corpus = None
    if data.draw(st.booleans(), label="with_corpus"):
        docs = np.vstack([Y, data.draw(matrices(3, d_d, dtype), label="extra_docs")])
        corpus = Corpus(docs)
    adapter = ERAAdapter(
        align=data.draw(st.sampled_from(["procrustes", "lstsq"]), label="align"),
        adapt=ADAPTS[data.draw(st.sampled_from(list(ADAPTS)), label="adapt")],
        normalize_input=data.draw(st.booleans(), label="normalize_input"),
        normalize_output=data.draw(st.booleans(), label="normalize_output"),
        random_state=0,
    )
    run_adapter(adapter, X, Y, Q, stage1=data.draw(st.booleans(), label="stage1"), corpus=corpus)


# --- Regression tests for what the fuzz found ----------------------------------------


@pytest.mark.filterwarnings("ignore:fit without a stage-1 map")  # a label-only fit on purpose
def test_fit_huge_float64_targets_without_normalisation():
    # Found by the fuzz: finite float64 targets near 1e299 with normalize_input=False were
    # cast to float32 to match them to the candidates, overflowed to inf, and fit failed
    # with "Input contains infinity" although the input was finite.
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((6, 3)), rng.standard_normal((6, 2)) * 1e299
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        adapter = ERAAdapter(normalize_input=False, random_state=0).fit(X, Y)
    assert np.isfinite(adapter.coef_).all()
    out = adapter.transform(X)
    assert np.allclose(np.linalg.norm(out, axis=1), 1)


def test_fit_denormal_float32_without_normalisation_is_refused():
    # Found by the fuzz: float32 rows near 1e-41 with normalize_input=False made the
    # Softmax gradient overflow (a map for them needs weights near 1e41): fit returned
    # through overflow warnings, or failed with "scores contains NaN".
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((6, 3)) * 1e-41).astype(np.float32)
    Y = rng.standard_normal((6, 2)).astype(np.float32)
    for stage1 in (False, True):
        adapter = ERAAdapter(normalize_input=False, random_state=0)
        if stage1:
            adapter.fit_align(X, Y)
        with pytest.raises(ValueError, match="too large or too small to fit without normal"):
            adapter.fit(X, Y)
