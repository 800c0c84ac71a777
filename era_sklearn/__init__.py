"""era-sklearn: ERA query adapters (align, then train) as scikit-learn estimators.

Public names:

- :class:`ERAAdapter`: the two-stage query adapter (closed form or torch).
- :class:`HNSWIndex`, :class:`ExactIndex`: document indexes with the
  ``NearestNeighbors`` surface; :func:`search` / :class:`AdaptedSearch` run
  adapted queries against them.
- :mod:`era_sklearn.metrics`, :mod:`era_sklearn.datasets`.
"""

from . import datasets, metrics
from ._adapter import ERAAdapter
from ._hnsw import HNSWIndex
from ._search import AdaptedSearch, ExactIndex, search

__version__ = "0.1.0"

__all__ = [
    "AdaptedSearch",
    "ERAAdapter",
    "ExactIndex",
    "HNSWIndex",
    "__version__",
    "datasets",
    "metrics",
    "search",
]
