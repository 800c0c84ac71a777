"""Glue between ERAAdapter and the torch trainers: settings in, numpy weights out.

Torch is imported only here (and in the trainer modules), so the closed-form
path and ``transform`` of a linear adapter never need it.
"""

import numpy as np
from sklearn.utils import check_random_state

from ._negatives import match_rows, mine_hard_negatives
from ._queries import unique_rows
from ._torch_models import build_module, module_to_numpy
from ._torch_train import train_alignment, train_contrastive


def _seed(random_state):
    """An int seed for torch from any sklearn ``random_state``."""
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def train_align(est, X, Y, W, b):
    """ERA's stage 1 with torch: a linear layer with bias from the closed-form map."""
    settings = est._torch_settings("align")
    module = build_module("linear", W.astype(np.float32), np.asarray(b, np.float32))
    history = train_alignment(
        module, X, Y, loss=est.align, random_state=_seed(est.random_state),
        device=est.device, verbose=est.verbose, **settings,
    )
    params = module_to_numpy(module)
    return params["coef"], params["intercept"], history.to_list()


def train_adapt(est, X, Y, qids, corpus):
    """ERA's stage 2 with torch, started from ``est``'s current map.

    Hard negatives are mined from ``corpus`` (or, without one, from the
    distinct targets in ``Y``) with the starting map as the teacher.
    """
    settings = est._torch_settings("adapt")
    mining = {k: settings.pop(k) for k in ("n_negatives", "top_k", "threshold")}
    seed = _seed(est.random_state)
    if corpus is None:
        corpus = Y[unique_rows(Y)[0]]
    negatives = _mine(est, X, Y, qids, corpus, seed=seed, **mining)
    module = build_module(
        est.model, est.coef_.astype(np.float32), est.intercept_.astype(np.float32),
        random_state=seed, **est._torch_settings("module"),
    )
    history = train_contrastive(
        module, X, Y, groups=qids, corpus=corpus, negatives=negatives, random_state=seed,
        device=est.device, verbose=est.verbose, **settings,
    )
    params = module_to_numpy(module)
    dtype = est.coef_.dtype
    est.coef_ = params.pop("coef").astype(dtype)
    est.intercept_ = params.pop("intercept").astype(dtype)
    est.module_params_ = params or None  # only the MLP branch is left
    est.history_ = history.to_list()


def _mine(est, X, Y, qids, corpus, *, seed, n_negatives, top_k, threshold):
    """Hard negatives per row; a query's positives are all of its rows' targets."""
    if n_negatives == 0:
        return None
    anchors = match_rows(Y, corpus)
    positives_of_query = {}
    for q, doc in zip(qids, anchors):
        positives_of_query.setdefault(q, set()).add(int(doc))
    positives = [positives_of_query[q] for q in qids]
    teacher = X @ est.coef_.astype(X.dtype) + est.intercept_.astype(X.dtype)
    return mine_hard_negatives(
        teacher, corpus, positives, anchors=anchors, n_negatives=n_negatives,
        top_k=top_k, threshold=threshold, random_state=seed,
    )
