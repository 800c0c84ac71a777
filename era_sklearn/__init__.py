"""era-sklearn: ERA query adapters (align, then train) as scikit-learn estimators.

Public names:

- :class:`ERAAdapter`: the two-stage query adapter.
- :mod:`era_sklearn.align` (stage-1 solvers: :class:`~era_sklearn.align.Procrustes`,
  :class:`~era_sklearn.align.LeastSquares`, :class:`~era_sklearn.align.TorchAlign`) and
  :mod:`era_sklearn.adapt` (stage-2 solvers: :class:`~era_sklearn.adapt.Softmax`,
  :class:`~era_sklearn.adapt.Ridge`, :class:`~era_sklearn.adapt.Contrastive`).
- :func:`paper_recipe`: the paper's exact configuration.
- :func:`register_solver`: lets ``save`` / ``load`` handle a solver class of your own.
- :class:`Corpus`: the indexed documents as a fit parameter that is never sliced.
- :class:`HNSWIndex`, :class:`ExactIndex`: document indexes with the
  ``NearestNeighbors`` surface; :func:`search` / :class:`AdaptedSearch` run
  adapted queries against them.
- :mod:`era_sklearn.metrics`, :mod:`era_sklearn.datasets`.
"""

from . import adapt, align, datasets, encoders, metrics
from ._estimator.adapter import ERAAdapter
from ._estimator.legacy_convert import convert_legacy_adapter
from ._estimator.presets import paper_recipe
from ._estimator.state_schema import register_solver
from ._index.exact import ExactIndex
from ._index.hnsw import HNSWIndex
from ._index.search import AdaptedSearch, search
from ._stage2.corpus import Corpus
from ._utils.version import __version__

__all__ = [
    "AdaptedSearch",
    "Corpus",
    "ERAAdapter",
    "ExactIndex",
    "HNSWIndex",
    "__version__",
    "adapt",
    "align",
    "convert_legacy_adapter",
    "datasets",
    "encoders",
    "metrics",
    "paper_recipe",
    "register_solver",
    "search",
]
