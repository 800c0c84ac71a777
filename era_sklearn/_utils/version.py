"""era-sklearn's version, here at the bottom so that every writer of files can record it.

The files it goes into (saved adapters, HNSW indexes) are written by modules that the
package's ``__init__`` imports, so they cannot read ``era_sklearn.__version__``. pyproject.toml
holds the same string; tests/test_import_layers.py checks the two agree.
"""

__version__ = "0.2.0"
