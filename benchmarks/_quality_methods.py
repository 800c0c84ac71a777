"""Methods (table rows) of ``benchmarks.quality``: how each one is fitted.

Each method is a :class:`Method` whose ``fit(data, train_rows, align_rows, seed)``
returns a fitted adapter and the query matrix to transform for evaluation
(strong query embeddings, or ``[strong, cheap]`` for the hybrid rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from era_sklearn import ERAAdapter


@dataclass(frozen=True)
class Method:
    name: str
    group: str  # "reference", "align-only", "label-only", "ERA", "hybrid"
    params: dict = field(default_factory=dict)
    align: bool = True  # run fit_align on the sampled corpus documents first
    labels: bool = True  # run fit on labelled pairs (False: 0-label row only)
    hybrid: bool = False
    description: str = ""


METHODS = [
    Method("align-only procrustes", "align-only", {"align": "procrustes"}, labels=False,
           description="ERAAdapter(align='procrustes').fit_align(strong(D_s), cheap(D_s))"),
    Method("align-only lstsq", "align-only", {"align": "lstsq"}, labels=False,
           description="ERAAdapter(align='lstsq').fit_align(...)"),
    Method("align-only cosine (torch)", "align-only", {"align": "cosine"}, labels=False,
           description="ERAAdapter(align='cosine').fit_align(...)"),
    Method("label-only ridge", "label-only", {}, align=False,
           description="ERAAdapter().fit(X, y, ...) without fit_align (closed-form ridge, alpha='auto')"),
    Method("label-only contrastive (torch)", "label-only", {"adapt": "contrastive"}, align=False,
           description="ERAAdapter(adapt='contrastive') without fit_align (the paper's Embedding Adapter)"),
    Method("ERA default (procrustes+ridge)", "ERA", {},
           description="ERAAdapter() defaults after fit_align; the 0 column is fit_align alone"),
    Method("ERA procrustes+contrastive", "ERA", {"adapt": "contrastive"},
           description="ERAAdapter(adapt='contrastive') after fit_align"),
    Method("ERA cosine+contrastive (paper)", "ERA", {"align": "cosine", "adapt": "contrastive"},
           description="ERAAdapter(align='cosine', adapt='contrastive'): torch stage 1 + torch stage 2"),
    Method("ERA procrustes+contrastive mlp", "ERA", {"adapt": "contrastive", "model": "mlp"},
           description="ERAAdapter(adapt='contrastive', model='mlp') after fit_align"),
    Method("hybrid default", "hybrid", {"hybrid": True}, hybrid=True,
           description="ERAAdapter(hybrid=True) on [strong(q), cheap(q)]; 0 column is fit_align alone"),
    Method("hybrid contrastive", "hybrid", {"hybrid": True, "adapt": "contrastive"}, hybrid=True,
           description="ERAAdapter(hybrid=True, adapt='contrastive') after fit_align"),
]
BY_NAME = {m.name: m for m in METHODS}
#: Short command-line names.
ALIASES = {
    "procrustes": "align-only procrustes",
    "lstsq": "align-only lstsq",
    "cosine": "align-only cosine (torch)",
    "ridge": "label-only ridge",
    "label-contrastive": "label-only contrastive (torch)",
    "era": "ERA default (procrustes+ridge)",
    "era-contrastive": "ERA procrustes+contrastive",
    "era-cosine-contrastive": "ERA cosine+contrastive (paper)",
    "era-mlp": "ERA procrustes+contrastive mlp",
    "hybrid": "hybrid default",
    "hybrid-contrastive": "hybrid contrastive",
}
#: The default set, sized to finish the default run in < 5 min on 2 cores.
DEFAULT_METHODS = [
    "procrustes", "ridge", "label-contrastive", "era", "era-contrastive", "era-mlp", "hybrid",
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


def queries_of(data, rows, hybrid):
    """The query-side input: strong embeddings, or [strong, cheap] for hybrid."""
    if hybrid:
        return np.hstack([data.Q_strong[rows], data.Q_cheap[rows]])
    return data.Q_strong[rows]


def align_adapter(method, data, align_docs, seed):
    """A fresh adapter of ``method``, stage 1 run on ``align_docs`` when it aligns."""
    adapter = ERAAdapter(random_state=seed, **method.params)
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
        groups=qi, corpus=data.D_cheap,
    )
