"""The residual MLP adapter's three forwards agree on the same weights.

Torch trains the module (``_torch.models``), numpy applies it in ``transform``
(``_transform.mlp``) and the sentence-transformers head exports it
(``_torch.export``). Each is compared with the exact (float64) forward within a
float32 error bound derived below (``tests/_bounds.py``), so one that computed
another function (tanh-approximated GELU, a missing bias, layers swapped) fails.
"""

from itertools import pairwise
from types import SimpleNamespace

import numpy as np
import pytest
from _bounds import gamma, unit_roundoff
from scipy.special import erf

from era_sklearn._transform.mlp import mlp_layers, numpy_forward, numpy_residual

torch = pytest.importorskip("torch")

#: max |GELU'(x)| = Phi(sqrt 2) + sqrt 2 phi(sqrt 2) ~ 1.1289: how far GELU moves an
#: error already in its input.
GELU_SLOPE = 1.129
#: GELU evaluated in float32 (x / sqrt 2, erf, 1 + erf, the products, the float32 store):
#: a few roundings, each at most u relative to |x|; erf's own error, a few ulps, is
#: counted here too. 8 u |x| is an upper bound on their sum.
GELU_ULPS = 8


def _gelu64(x):
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def _params(d_in=24, hidden=16, n_hidden=2, d_out=8, seed=0):
    rng = np.random.default_rng(seed)
    widths = [d_in, *[hidden] * n_hidden, d_out]
    params = {"coef": rng.normal(size=(d_in, d_out)) / np.sqrt(d_in),
              "intercept": rng.normal(size=d_out) * 0.1}
    for i, (a, b) in enumerate(pairwise(widths)):
        params[f"mlp_coef_{i}"] = rng.normal(size=(a, b)) / np.sqrt(a)
        params[f"mlp_intercept_{i}"] = rng.normal(size=b) * 0.1
    return {k: v.astype(np.float32) for k, v in params.items()}


def _reference(params, X):
    """The exact forward before normalisation, and an entry-wise bound on a float32 one."""
    u, X64 = unit_roundoff(np.float32), X.astype(np.float64)
    W, b = params["coef"].astype(np.float64), params["intercept"].astype(np.float64)
    linear = X64 @ W + b
    err_linear = gamma(X.shape[1] + 2, np.float32) * (np.abs(X64) @ np.abs(W) + np.abs(b))
    h, err_h = X64, np.zeros_like(X64)
    layers = mlp_layers(params)
    for i, (c, d) in enumerate(layers):
        c, d = c.astype(np.float64), d.astype(np.float64)
        pre = h @ c + d
        # The product's rounding (on the computed h, at most |h| + err_h) plus the error
        # h already carries, carried through c.
        err_pre = (gamma(c.shape[0] + 2, np.float32) * ((np.abs(h) + err_h) @ np.abs(c) + np.abs(d))
                   + err_h @ np.abs(c))
        if i == len(layers) - 1:
            h, err_h = pre, err_pre
        else:
            h = _gelu64(pre)
            err_h = GELU_SLOPE * err_pre + GELU_ULPS * u * (np.abs(pre) + err_pre)
    Z = linear + h
    err = err_linear + err_h + u * (np.abs(linear) + np.abs(h) + err_linear + err_h)
    return Z, err


def _unit_bound(Z, err, d_out):
    """Bound on unit rows computed from rows off by ``err`` (as ``_bounds.transform_reference``)."""
    z = np.linalg.norm(Z, axis=1, keepdims=True)
    return Z / z, 2 * np.linalg.norm(err, axis=1, keepdims=True) / z + gamma(d_out + 3, np.float32)


def _within(got, expected, bound, name):
    gap = np.abs(np.asarray(got, dtype=np.float64) - expected)
    assert (gap <= bound).all(), f"{name}: worst |error| / bound = {(gap / bound).max():.3g}"


@pytest.mark.torch
def test_torch_numpy_and_export_forwards_agree_on_the_same_weights():
    from era_sklearn._torch.models import module_from_numpy

    params = _params()
    X = np.random.default_rng(1).normal(size=(64, 24)).astype(np.float32)
    Z, err = _reference(params, X)
    U, err_unit = _unit_bound(Z, err, Z.shape[1])

    # numpy (transform's path: the linear part plus the branch; and the normalised forward)
    _within(X @ params["coef"] + params["intercept"] + numpy_residual(params, X), Z, err, "numpy")
    _within(numpy_forward(params, X), U, err_unit, "numpy_forward")

    # torch: the trained module, rebuilt from the same numpy weights
    module = module_from_numpy(params)
    with torch.no_grad():
        x = torch.from_numpy(X)
        _within((module.proj(x) + module.mlp(x)).numpy(), Z, err, "torch module")
        _within(module(x).numpy(), U, err_unit, "torch module, normalised")

    # the sentence-transformers head, built as to_sentence_transformer builds it
    export = pytest.importorskip("era_sklearn._torch.export")
    est = SimpleNamespace(coef_=params["coef"], intercept_=params["intercept"],
                          module_params_=params)
    head = export._map_module(est).eval()
    assert isinstance(head, export.ResidualMLPHead)
    with torch.no_grad():
        out = head({"sentence_embedding": torch.from_numpy(X)})["sentence_embedding"]
    _within(out.numpy(), Z, err, "export head")


def test_the_bound_catches_a_tanh_gelu():
    """The bound is tight enough to tell the exact GELU from its tanh approximation
    (which differs by up to ~5e-4 per unit), so the test above can fail."""
    params = _params()
    X = np.random.default_rng(1).normal(size=(64, 24)).astype(np.float32)
    Z, err = _reference(params, X)

    def tanh_gelu(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))

    h = X
    layers = mlp_layers(params)
    for c, d in layers[:-1]:
        h = tanh_gelu(h @ c + d).astype(np.float32)
    wrong = X @ params["coef"] + params["intercept"] + h @ layers[-1][0] + layers[-1][1]
    with pytest.raises(AssertionError, match="worst"):
        _within(wrong, Z, err, "tanh GELU")
