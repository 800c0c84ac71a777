"""Writes the era-sklearn 0.2 Softmax files that tests/test_persistence.py loads.

Softmax named its penalty ``lam`` / ``lams`` in 0.2 (``alpha`` / ``alphas`` since
0.3), and files saved by 0.2 hold those names. Run with the 0.2 code first on the
path (commit 0991e06), never with the current code::

    git worktree add /tmp/era02 0991e06
    PYTHONPATH=/tmp/era02 python tests/data/make_softmax_0_2_files.py tests/data

It writes ``softmax_lam_0.2.0.safetensors`` (a given ``lam``),
``softmax_lams_0.2.0.safetensors`` (``lam="auto"`` over a ``lams`` grid) and
``softmax_0.2.0_expected.npz``: the queries ``X`` and what the 0.2 adapters'
``transform`` gave for them.
"""

import inspect
import sys
from pathlib import Path

import numpy as np

import era_sklearn
from era_sklearn import ERAAdapter
from era_sklearn.adapt import Softmax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for _few_labels
from _few_labels import stage2_data


def main(out):
    assert era_sklearn.__version__ == "0.2.0", era_sklearn.__file__
    assert "lam" in inspect.signature(Softmax).parameters, "not the 0.2 Softmax"
    X_docs, Y_docs, X, Y = stage2_data()
    solvers = {"lam": Softmax(lam=0.05, temperature=0.1, max_iter=30),
               "lams": Softmax(lams=[0.5, 0.05], max_iter=30)}
    expected = {"X": X}
    for name, solver in solvers.items():
        adapter = ERAAdapter(adapt=solver, random_state=0).fit_align(X_docs, Y_docs)
        adapter.fit(X, Y)
        adapter.save(Path(out) / f"softmax_{name}_0.2.0.safetensors")
        expected[f"{name}_transform"] = adapter.transform(X)
        expected[f"{name}_coef"] = adapter.coef_
        expected[f"{name}_penalty"] = adapter.penalty_
    np.savez(Path(out) / "softmax_0.2.0_expected.npz", **expected)


if __name__ == "__main__":
    main(sys.argv[1])
