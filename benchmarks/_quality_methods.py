"""Methods (table rows) of ``benchmarks.quality``: how each one is fitted.

Each method is a :class:`Method` whose ``fit(data, train_rows, align_rows, seed)``
returns a fitted adapter and the query matrix to transform for evaluation
(strong query embeddings, or ``[strong, cheap]`` for the hybrid rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from era_sklearn import Corpus, ERAAdapter
from era_sklearn._utils.optional import torch_available
from era_sklearn.adapt import ADAPT_SOLVERS, Contrastive
from era_sklearn.align import ALIGN_SOLVERS


@dataclass(frozen=True)
class Method:
    name: str
    group: str  # "align-only", "label-only", "ERA", "hybrid"
    params: dict = field(default_factory=dict)
    align: bool = True  # run fit_align on the sampled corpus documents first
    labels: bool = True  # run fit on labelled pairs (False: 0-label row only)
    hybrid: bool = False
    corpus: bool = True  # pass the cheap corpus to fit as era_sklearn.Corpus
    description: str = ""


METHODS = [
    Method("align-only procrustes", "align-only", {"align": "procrustes"}, labels=False,
           description="ERAAdapter().fit_align(strong(D_s), cheap(D_s))"),
    Method("align-only lstsq", "align-only", {"align": "lstsq"}, labels=False,
           description="ERAAdapter(align='lstsq').fit_align(...)"),
    Method("align-only torch cosine", "align-only", {"align": "torch"}, labels=False,
           description="ERAAdapter(align=TorchAlign()).fit_align(...)"),
    Method("label-only softmax", "label-only", {}, align=False,
           description="ERAAdapter().fit(X, y, corpus=...) without fit_align (same solver)"),
    Method("label-only ridge", "label-only", {"adapt": "ridge"}, align=False,
           description="ERAAdapter(adapt='ridge').fit(...) without fit_align"),
    Method("label-only contrastive", "label-only", {"adapt": "contrastive"}, align=False,
           description="ERAAdapter(adapt='contrastive') without fit_align (the paper's "
                       "Embedding Adapter)"),
    Method("ERA default (procrustes+softmax)", "ERA", {},
           description="ERAAdapter() defaults after fit_align, corpus= given; the 0 column is "
                       "fit_align alone"),
    Method("ERA default, no corpus", "ERA", {}, corpus=False,
           description="ERAAdapter() defaults after fit_align, fit(X, y) without corpus= "
                       "(candidates: align_docs_ + positives)"),
    Method("ERA procrustes+ridge", "ERA", {"adapt": "ridge"},
           description="ERAAdapter(adapt='ridge') after fit_align (0.1.0's default)"),
    Method("ERA procrustes+contrastive", "ERA", {"adapt": "contrastive"},
           description="ERAAdapter(adapt='contrastive') after fit_align"),
    Method("ERA torch cosine+contrastive", "ERA", {"align": "torch", "adapt": "contrastive"},
           description="ERAAdapter(align='torch', adapt='contrastive'): torch stage 1 + 2"),
    Method("ERA procrustes+contrastive mlp", "ERA", {"adapt": Contrastive(model="mlp")},
           description="ERAAdapter(adapt=Contrastive(model='mlp')) after fit_align"),
    Method("hybrid default (softmax)", "hybrid", {"hybrid": True}, hybrid=True,
           description="ERAAdapter(hybrid=True) on [strong(q), cheap(q)]; 0 column is "
                       "fit_align alone"),
    Method("hybrid ridge", "hybrid", {"hybrid": True, "adapt": "ridge"}, hybrid=True,
           description="ERAAdapter(hybrid=True, adapt='ridge') (0.1.0's hybrid default)"),
    Method("hybrid contrastive", "hybrid", {"hybrid": True, "adapt": "contrastive"},
           hybrid=True, description="ERAAdapter(hybrid=True, adapt='contrastive')"),
]
BY_NAME = {m.name: m for m in METHODS}
#: Short command-line names.
ALIASES = {
    "procrustes": "align-only procrustes",
    "lstsq": "align-only lstsq",
    "cosine": "align-only torch cosine",
    "label-softmax": "label-only softmax",
    "ridge": "label-only ridge",
    "label-contrastive": "label-only contrastive",
    "era": "ERA default (procrustes+softmax)",
    "era-nocorpus": "ERA default, no corpus",
    "era-ridge": "ERA procrustes+ridge",
    "era-contrastive": "ERA procrustes+contrastive",
    "era-cosine-contrastive": "ERA torch cosine+contrastive",
    "era-mlp": "ERA procrustes+contrastive mlp",
    "hybrid": "hybrid default (softmax)",
    "hybrid-ridge": "hybrid ridge",
    "hybrid-contrastive": "hybrid contrastive",
}
#: The default set: the issue-10 comparison, sized for the main job on 2 cores.
DEFAULT_METHODS = [
    "procrustes", "label-softmax", "era", "era-nocorpus", "era-ridge", "era-contrastive",
    "hybrid", "hybrid-ridge",
]


def resolve(names):
    """Command-line method names (aliases, full names or "all") to Methods."""
    if names is None:
        names = DEFAULT_METHODS
    if "all" in names:
        return list(METHODS)
    out = []
    for n in names:
        full = ALIASES.get(n, n)
        if full not in BY_NAME:
            raise SystemExit(f"unknown method {n!r}; choose from: all, {', '.join(ALIASES)}")
        out.append(BY_NAME[full])
    return out


def needs_torch(method):
    """Whether a stage of ``method`` is a torch solver (the ``era-sklearn[torch]`` extra)."""
    named = {"align": ALIGN_SOLVERS, "adapt": ADAPT_SOLVERS}
    return any(getattr(named[key].get(value) if isinstance(value, str) else value,
                       "needs_torch", False)
               for key, value in method.params.items() if key in named)


def runnable(methods):
    """``(methods to run, methods skipped)``: the torch ones are skipped where torch is absent."""
    if torch_available():
        return list(methods), []
    return ([m for m in methods if not needs_torch(m)], [m for m in methods if needs_torch(m)])


def queries_of(data, rows, hybrid):
    """The query-side input: strong embeddings, or [strong, cheap] for hybrid."""
    if hybrid:
        return np.hstack([data.Q_strong[rows], data.Q_cheap[rows]])
    return data.Q_strong[rows]


def align_adapter(method, data, align_docs, seed):
    """A fresh adapter of ``method``, stage 1 run on ``align_docs`` when it aligns."""
    adapter = ERAAdapter(random_state=seed, **clone_params(method.params))
    if method.align:
        Xa = data.D_strong[align_docs]
        if method.hybrid:
            Xa = np.hstack([Xa, data.D_cheap[align_docs]])
        adapter.fit_align(Xa, data.D_cheap[align_docs])
    return adapter


def fit_labels(adapter, method, data, pairs, seed):
    """Stage 2 on the labelled pairs ``(query_rows, doc_rows, grades)``."""
    qi, di, g = pairs
    return adapter.fit(
        queries_of(data, qi, method.hybrid), data.D_cheap[di], sample_weight=g,
        groups=qi, corpus=Corpus(data.D_cheap) if method.corpus else None,
    )


def fitted_choices(adapter):
    """What the adapter chose in fit (``penalty``, ``blend``), where it has them."""
    out = {}
    for attr, key in (("penalty_", "penalty"), ("blend_", "blend")):
        if getattr(adapter, attr, None) is not None:
            out[key] = float(getattr(adapter, attr))
    return out


def clone_params(params):
    """Fresh solver objects per fit (a Method is shared by every cell)."""
    from sklearn.base import clone

    return {k: clone(v) if hasattr(v, "get_params") else v for k, v in params.items()}
