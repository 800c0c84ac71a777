"""Writes the adapters saved by era-sklearn's main before the subpackage move (issue 20).

The package was reorganised into subpackages after commit d0ce75f; files saved
before the move must load and transform the same after it. Run with that
commit's code first on the path, never with later code::

    git worktree add /tmp/era_d0ce75f d0ce75f
    PYTHONPATH=/tmp/era_d0ce75f python tests/data/make_main_files.py tests/data

It writes ``main_<kind>_d0ce75f.safetensors`` for a plain softmax adapter, a
hybrid one and one with a torch residual-MLP branch, and
``main_d0ce75f_expected.npz``: the queries (``X``, and ``X_hybrid`` with the
cheap encoder's columns appended) and each adapter's ``transform`` of them.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np

from era_sklearn import ERAAdapter
from era_sklearn.adapt import Contrastive, Softmax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for _few_labels
from _few_labels import stage2_data

COMMIT = "d0ce75f"


def adapters():
    """``{kind: (unfitted adapter, uses the hybrid layout)}``."""
    return {
        "softmax": (ERAAdapter(adapt=Softmax(max_iter=30), random_state=0), False),
        "hybrid": (ERAAdapter(adapt=Softmax(max_iter=30), hybrid=True, random_state=0), True),
        "mlp": (ERAAdapter(adapt=Contrastive(model="mlp", hidden_size=16, max_epochs=3,
                                             batch_size=8, min_valid_queries=2, start_as_candidate=False,
                                             fallback=False),
                           random_state=0), False),
    }


def hybrid_columns(X, Y):
    """The hybrid layout's input: the query encoder's columns, then the cheap encoder's."""
    return np.hstack([X, Y])


def main(out):
    import era_sklearn
    head = subprocess.run(["git", "-C", str(Path(era_sklearn.__file__).parents[1]), "rev-parse",
                           "--short", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert head == COMMIT, (head, era_sklearn.__file__)
    X_docs, Y_docs, X, Y = stage2_data()
    expected = {"X": X, "X_hybrid": hybrid_columns(X, Y)}
    for kind, (adapter, hybrid) in adapters().items():
        docs = hybrid_columns(X_docs, Y_docs) if hybrid else X_docs
        queries = expected["X_hybrid"] if hybrid else X
        adapter.fit_align(docs, Y_docs).fit(queries, Y)
        adapter.save(Path(out) / f"main_{kind}_{COMMIT}.safetensors")
        expected[f"{kind}_transform"] = adapter.transform(queries)
    np.savez(Path(out) / f"main_{COMMIT}_expected.npz", **expected)


if __name__ == "__main__":
    main(sys.argv[1])
