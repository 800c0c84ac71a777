"""The adapter's forward pass in numpy: what ``transform`` needs of a trained MLP branch.

Torch trains the residual MLP branch (:mod:`era_sklearn._torch.models`), but a
fitted or loaded adapter applies it with these numpy functions, so loading and
transforming a saved MLP adapter needs no torch. The parameter layout is the one
:func:`era_sklearn._torch.models.module_to_numpy` writes: ``coef`` (d_in, d_out),
``intercept`` (d_out,), and for the branch ``mlp_coef_{i}`` / ``mlp_intercept_{i}``,
layer ``i`` computing ``h @ mlp_coef_{i} + mlp_intercept_{i}``, with an exact (erf)
GELU after every layer but the last.
"""

import numpy as np
from scipy.special import erf

__all__ = ["mlp_layers", "numpy_forward", "numpy_residual"]

# Same floor as torch.nn.functional.normalize, so numpy and torch agree on zero rows.
NORM_EPS = 1e-12


def mlp_layers(params):
    """``[(coef, intercept), ...]`` of the MLP branch stored in ``params`` (empty: linear)."""
    layers = []
    while f"mlp_coef_{len(layers)}" in params:
        i = len(layers)
        layers.append((params[f"mlp_coef_{i}"], params[f"mlp_intercept_{i}"]))
    return layers


def _gelu(x):
    # Exact (erf) GELU, torch's nn.GELU() default.
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def numpy_forward(params, X):
    """Apply the adapter with numpy only (no torch), as in eval mode.

    Parameters
    ----------
    params : dict of str to ndarray
        Adapter weights (layout in the module docstring).
    X : array-like of shape (n_samples, d_in)
        Query embeddings.

    Returns
    -------
    Z : ndarray of shape (n_samples, d_out), float32
        Unit-norm adapted embeddings.
    """
    X = np.asarray(X, dtype=np.float32)
    Z = X @ params["coef"] + params["intercept"]
    if mlp_layers(params):
        Z = Z + numpy_residual(params, X)
    norms = np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), NORM_EPS)
    return (Z / norms).astype(np.float32, copy=False)


def numpy_residual(params, X):
    """The residual MLP branch alone, ``mlp(x)``, with numpy (eval mode).

    ``ERAAdapter.transform`` adds it to its own linear part, so only the MLP
    layers (``mlp_coef_i`` / ``mlp_intercept_i``) of ``params`` are read.
    """
    layers = mlp_layers(params)
    h = X
    for coef, intercept in layers[:-1]:
        h = _gelu(h @ coef.astype(X.dtype) + intercept.astype(X.dtype)).astype(X.dtype, copy=False)
    return h @ layers[-1][0].astype(X.dtype) + layers[-1][1].astype(X.dtype)
