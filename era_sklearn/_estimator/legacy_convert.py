"""Rewrite an era-sklearn 0.1 ``.npz`` adapter file in the current format.

It builds an :class:`ERAAdapter` from what :mod:`era_sklearn._io.legacy` reads,
so it sits above the estimator (the top layer, with the presets and ``__init__``).
"""

import dataclasses
import warnings
from pathlib import Path

import numpy as np

from .._io.legacy import read_legacy
from .._io.persistence import save_adapter
from .._io.safetensors_file import CONTENT_ERRORS, Invalid, short
from .._io.schema import check_state, schema_of
from .._io.state_codec import check_attribute_name
from .._stage1.statistics import PairStatistics
from .adapter import ERAAdapter


def convert_legacy_adapter(src, dst, cls=None):
    """Rewrite an era-sklearn 0.1 ``.npz`` adapter file in the current format.

    The archive is read with the same bounds as ``ERAAdapter.load`` (only
    uncompressed members, every size checked before reading, no pickle) and
    its checksums verified. The fitted maps are carried over unchanged, so
    ``transform`` gives the same output; parameters that no longer exist or
    whose value is no longer valid take their default, with a warning naming
    them (they only matter for refitting).

    Parameters
    ----------
    src : str or path-like
        File written by ``ERAAdapter.save`` of era-sklearn 0.1.
    dst : str or path-like
        Where to write the converted file (e.g. ``"adapter.safetensors"``).
    cls : class, default=None
        Estimator class; ``era_sklearn.ERAAdapter`` when None.

    Returns
    -------
    dst : pathlib.Path

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import era_sklearn
    >>> from era_sklearn import ERAAdapter, convert_legacy_adapter
    >>> old = Path(era_sklearn.__file__).parents[1] / "tests" / "data" / "adapter_0.1.0.npz"
    >>> new = convert_legacy_adapter(old, Path(tempfile.mkdtemp()) / "adapter.safetensors")
    >>> ERAAdapter.load(new).coef_.shape
    (12, 6)
    """
    cls = ERAAdapter if cls is None else cls
    schema_of(cls)  # a class without a schema is the caller's error, not the file's
    src = Path(src)
    try:
        est, dropped = _legacy_estimator(cls, *read_legacy(src))
    except CONTENT_ERRORS as exc:
        problem = exc if isinstance(exc, Invalid) else f"{type(exc).__name__}: {exc}"
        raise ValueError(f"{src}: not a valid era-sklearn 0.1 adapter file: "
                         f"{short(problem)}.") from None
    try:  # the converted state must be enough for this version's transform
        est.transform(np.ones((2, est.n_features_in_), dtype=est.coef_.dtype))
    except Exception as exc:
        raise ValueError(f"{src}: converted, but this era-sklearn's {cls.__name__} cannot "
                         f"transform with it ({exc}); refit the adapter instead.") from exc
    if dropped:
        warnings.warn(f"{src}: parameters {sorted(dropped)} of the 0.1 file are not valid for "
                      f"this {cls.__name__} and take their defaults (fitted maps unchanged).",
                      UserWarning, stacklevel=2)
    return save_adapter(est, dst)


def _legacy_estimator(cls, class_name, params, attributes, statistics):
    """A fitted ``cls`` from 0.1 content, and the names of parameters left at default.

    0.1's private ``_n_features_out`` is a derived attribute now (the output width is
    ``coef_``'s): it is checked against the maps, never stored, so a later refit to
    another width cannot leave it stale.
    """
    if class_name != cls.__name__:
        raise Invalid(f"it holds a {class_name!r}, not a {cls.__name__}")
    est, dropped = _legacy_parameters(cls, params)
    attributes = dict(attributes)
    for name, parts in statistics.items():
        attributes[name] = PairStatistics(**{f.name: parts.get(f.name)
                                             for f in dataclasses.fields(PairStatistics)})
    schema, derived = schema_of(cls), {}
    params = est.get_params(deep=False)
    for name, value in attributes.items():
        if name in schema.derived():
            derived[name] = value
        elif not name.startswith("_") or name in schema.private:
            check_attribute_name(cls, schema, name, params, name)
            setattr(est, name, value)
        # else: 0.1's private bookkeeping this version does not use
    check_state(est, schema, "", derived)
    return est, dropped


def _legacy_parameters(cls, params):
    """``cls`` with each 0.1 parameter it still accepts; the names of those it does not."""
    est, dropped = cls(), []
    for name, value in params.items():
        try:
            trial = cls(**{**est.get_params(deep=False), name: value})
            trial._validate_params()
        except (TypeError, ValueError):
            dropped.append(name)
            continue
        est = trial
    return est, dropped
