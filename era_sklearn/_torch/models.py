"""Torch modules for the query-side adapter and their numpy round trip.

Private module: :class:`era_sklearn.ERAAdapter` builds, trains and stores the
adapter through these helpers.

Parameter layout
----------------
:func:`module_to_numpy` returns a flat ``dict[str, numpy.ndarray]`` of C-contiguous
float32 arrays (safe for ``numpy.savez``, no pickling needed):

``coef`` : (d_in, d_out)
    Linear base map, ``x @ coef + intercept`` (the transpose of ``nn.Linear.weight``).
``intercept`` : (d_out,)
    Bias of the linear base map.
``mlp_coef_{i}``, ``mlp_intercept_{i}`` for ``i = 0 .. n_layers``
    Only for ``model="mlp"``: the residual branch, layer ``i`` maps with
    ``h @ mlp_coef_{i} + mlp_intercept_{i}``; GELU (exact, erf form) follows every
    layer but the last.

Both models output ``normalize(x @ coef + intercept [+ mlp(x)])`` with unit L2 rows.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import torch
from torch import nn

from .._transform.mlp import mlp_layers, numpy_forward  # numpy_forward: re-exported

__all__ = ["build_module", "module_from_numpy", "module_to_numpy", "numpy_forward", "random_linear"]

_MODELS = ("linear", "mlp")


class LinearAdapter(nn.Module):
    """One linear layer with bias followed by L2 normalisation.

    The attribute is named ``proj`` so that ``state_dict()`` has ERA's checkpoint
    keys (``proj.weight``, ``proj.bias``).
    """

    def __init__(self, d_in, d_out):
        super().__init__()
        self.proj = nn.Linear(d_in, d_out, bias=True)

    def forward(self, x):
        return nn.functional.normalize(self.proj(x), p=2, dim=-1)


class ResidualMLPAdapter(nn.Module):
    """Linear base map plus a residual MLP branch, then L2 normalisation.

    The last layer of the branch is zero-initialised so that, before training,
    the module equals its linear base exactly.
    """

    def __init__(self, d_in, d_out, hidden_size, n_layers, dropout):
        super().__init__()
        self.proj = nn.Linear(d_in, d_out, bias=True)
        self.mlp = residual_branch([d_in, *[hidden_size] * n_layers, d_out], dropout=dropout)
        last = branch_linears(self.mlp)[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x):
        return nn.functional.normalize(self.proj(x) + self.mlp(x), p=2, dim=-1)


def residual_branch(widths, *, dropout=None):
    """The residual MLP branch: ``Linear -> GELU [-> Dropout]`` per hidden layer, then a last
    ``Linear``; ``widths`` runs from the input width through the hidden ones to the output.

    The one torch definition of the branch, for training (with dropout) and for the
    sentence-transformers head (``dropout=None``: no Dropout modules, so a saved head's
    parameter names, ``mlp.0``, ``mlp.2``, ..., stay what they were). GELU is the
    exact (erf) form, as the numpy forward (:mod:`era_sklearn._transform.mlp`) computes.
    """
    layers = []
    for width, next_width in pairwise(widths[:-1]):
        layers += [nn.Linear(width, next_width), nn.GELU()]
        if dropout is not None:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(widths[-2], widths[-1]))


def branch_linears(branch):
    """The ``nn.Linear`` layers of a branch, in order: layer ``i`` holds ``mlp_coef_{i}``."""
    return [m for m in branch if isinstance(m, nn.Linear)]


def copy_linear_(layer, coef, intercept):
    """Load ``coef`` (d_in, d_out) and ``intercept`` into an ``nn.Linear`` in place."""
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(np.asarray(coef, dtype=np.float32).T))
        layer.bias.copy_(torch.as_tensor(np.asarray(intercept, dtype=np.float32)))


def load_branch_(branch, params):
    """Copy the numpy branch of ``params`` (``mlp_coef_{i}`` / ``mlp_intercept_{i}``) into
    ``branch`` in place: the one place the numpy layout meets the torch modules' layers."""
    for layer, (coef, intercept) in zip(branch_linears(branch), mlp_layers(params), strict=True):
        copy_linear_(layer, coef, intercept)


def build_module(model, W0, b0=None, *, hidden_size=512, n_layers=1, dropout=0.1,
                 random_state=None):
    """Build the adapter module initialised at a given linear map.

    Parameters
    ----------
    model : {"linear", "mlp"}
        ``"linear"``: ``normalize(x @ W0 + b0)``. ``"mlp"``: the same base map plus
        a residual MLP branch whose last layer starts at zero.
    W0 : ndarray of shape (d_in, d_out)
        Initial linear map (closed-form or stage-1 solution).
    b0 : ndarray of shape (d_out,), default=None
        Initial bias; zeros when None.
    hidden_size : int, default=512
        Width of the MLP branch's hidden layers (``model="mlp"`` only).
    n_layers : int, default=1
        Number of hidden layers of the MLP branch (``model="mlp"`` only).
    dropout : float, default=0.1
        Dropout after each hidden layer of the MLP branch (``model="mlp"`` only).
    random_state : int or None, default=None
        Seed of the MLP branch's hidden-layer initialisation (drawn from a fork of
        the global torch RNG, which is left untouched); None draws from the global RNG.

    Returns
    -------
    module : torch.nn.Module
        On CPU, float32, mapping (batch, d_in) to unit-norm (batch, d_out).
    """
    W0 = np.asarray(W0, dtype=np.float32)
    if W0.ndim != 2:
        raise ValueError(f"W0 must be 2-D (d_in, d_out), got shape {W0.shape}.")
    d_in, d_out = W0.shape
    b0 = np.zeros(d_out, np.float32) if b0 is None else np.asarray(b0, dtype=np.float32)
    if b0.shape != (d_out,):
        raise ValueError(f"b0 must have shape ({d_out},), got {b0.shape}.")
    if model == "linear":
        module = LinearAdapter(d_in, d_out)
    elif model == "mlp":
        if n_layers < 1 or hidden_size < 1:
            raise ValueError("model='mlp' needs n_layers >= 1 and hidden_size >= 1.")
        with torch.random.fork_rng(devices=[], enabled=random_state is not None):
            if random_state is not None:
                torch.manual_seed(random_state)
            module = ResidualMLPAdapter(d_in, d_out, hidden_size, n_layers, dropout)
    else:
        raise ValueError(f"model must be one of {_MODELS}, got {model!r}.")
    copy_linear_(module.proj, W0, b0)
    return module


def random_linear(d_in, d_out, *, random_state=None):
    """A linear adapter with torch's default random initialisation (ERA's stage 1).

    ``nn.Linear``'s own initialisation (Kaiming-uniform weights, uniform bias),
    drawn from a fork of the global torch RNG seeded with ``random_state``, so the
    caller's RNG is left untouched and equal seeds give equal modules.

    Parameters
    ----------
    d_in, d_out : int
        Input and output dimensions.
    random_state : int or None, default=None
        Seed; None draws from the global torch RNG.

    Returns
    -------
    module : LinearAdapter
        On CPU, float32.
    """
    with torch.random.fork_rng(devices=[], enabled=random_state is not None):
        if random_state is not None:
            torch.manual_seed(random_state)
        return LinearAdapter(int(d_in), int(d_out))


def _to_numpy(tensor):
    # detach + cpu: works for parameters that require grad and for GPU tensors.
    return np.ascontiguousarray(tensor.detach().to("cpu", torch.float32).numpy())


def module_to_numpy(module):
    """Export an adapter's weights as CPU float32 numpy arrays.

    Parameters
    ----------
    module : LinearAdapter or ResidualMLPAdapter
        A module from :func:`build_module`, on any device.

    Returns
    -------
    params : dict of str to ndarray
        See the module docstring for the layout.
    """
    params = {
        "coef": _to_numpy(module.proj.weight.T),
        "intercept": _to_numpy(module.proj.bias),
    }
    branch = getattr(module, "mlp", None)
    for i, layer in enumerate(branch_linears(branch) if branch is not None else []):
        params[f"mlp_coef_{i}"] = _to_numpy(layer.weight.T)
        params[f"mlp_intercept_{i}"] = _to_numpy(layer.bias)
    return params


def module_from_numpy(params, *, dropout=0.0):
    """Rebuild a torch module from :func:`module_to_numpy` output.

    Parameters
    ----------
    params : dict of str to ndarray
        Adapter weights.
    dropout : float, default=0.0
        Dropout of the rebuilt MLP branch (not stored with the weights).

    Returns
    -------
    module : torch.nn.Module
        On CPU, in eval mode.
    """
    layers = mlp_layers(params)
    if not layers:
        return build_module("linear", params["coef"], params["intercept"]).eval()
    hidden_size = np.shape(layers[0][0])[1]
    module = build_module(
        "mlp", params["coef"], params["intercept"],
        hidden_size=hidden_size, n_layers=len(layers) - 1, dropout=dropout,
    )
    load_branch_(module.mlp, params)
    return module.eval()
