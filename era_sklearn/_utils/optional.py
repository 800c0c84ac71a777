"""Optional dependencies: torch is an extra, ``pip install "era-sklearn[torch]"``.

The default path (closed-form stage 1, softmax and ridge stage 2, ``transform``,
the indexes, persistence) runs on numpy and scipy. The torch-only features
(:class:`~era_sklearn.align.TorchAlign`, :class:`~era_sklearn.adapt.Contrastive`
and its MLP branch, :func:`~era_sklearn.paper_recipe`,
:meth:`~era_sklearn.ERAAdapter.from_era_checkpoint`,
:meth:`~era_sklearn.ERAAdapter.to_sentence_transformer`) call
:func:`require_torch` first, so that a missing torch is one clear error that
names the extra, raised before any work.
"""

import importlib
import importlib.util

#: What to install for the torch-only features.
TORCH_EXTRA = "era-sklearn[torch]"


def require_torch(feature):
    """Import and return torch, or raise an ImportError that says how to install it.

    Parameters
    ----------
    feature : str
        What needs torch, as the user wrote it (e.g. ``"TorchAlign"``).
    """
    try:
        return importlib.import_module("torch")
    except ModuleNotFoundError as exc:
        if exc.name != "torch":  # torch is there, but one of its own imports failed
            raise
        raise ImportError(
            f"{feature} needs torch, which is not installed. Install the extra: "
            f"pip install \"{TORCH_EXTRA}\" (for the CPU-only wheel, install torch first: "
            "pip install torch --index-url https://download.pytorch.org/whl/cpu). The default "
            "solvers (Procrustes, LeastSquares, Softmax, Ridge) need no torch.",
            name="torch",
        ) from None


def torch_available():
    """Whether torch can be imported, found without importing it (seconds of start-up)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except ImportError:  # an import hook that forbids torch answers this way
        return False
