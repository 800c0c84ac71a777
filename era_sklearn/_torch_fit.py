"""Glue between ERAAdapter and the torch trainers: settings in, numpy weights out.

Torch is imported only here (and in the trainer modules), so the closed-form
path and ``transform`` of a linear adapter never need it.
"""

import numpy as np

from ._negatives import match_rows, mine_hard_negatives
from ._queries import unique_rows
from ._torch_models import build_module, module_to_numpy, numpy_forward
from ._torch_train import _group_split, _seeds, train_alignment, train_contrastive
from .metrics import retrieval_score


def train_align(est, X, Y, W, b):
    """ERA's stage 1 with torch: a linear layer with bias from the closed-form map."""
    settings = est._torch_settings("align")
    module = build_module("linear", W.astype(np.float32), np.asarray(b, np.float32))
    history = train_alignment(
        module, X, Y, loss=est.align, random_state=_seeds(est.random_state),
        device=est.device, verbose=est.verbose, **settings,
    )
    params = module_to_numpy(module)
    return params["coef"], params["intercept"], history.to_dict()


def train_adapt(est, X, Y, qids, corpus, start, ridge_without):
    """ERA's stage 2 with torch, from ``start``; keeps ``est``'s closed-form map if better.

    ``est.coef_`` holds the closed-form stage-2 map on entry. Hard negatives
    are mined from ``corpus`` (or, without one, from the distinct targets in
    ``Y``) with ``start`` as the teacher. After training, the trained map and
    the closed-form one refitted without the validation queries
    (``ridge_without(rows)``) are compared on those queries (nDCG@10 over the
    corpus); when ridge wins, the closed-form map fitted on all rows stays.
    """
    settings = est._torch_settings("adapt")
    settings.pop("warm_start")  # already applied: it chose ``start``
    mining = {k: settings.pop(k) for k in ("n_negatives", "top_k", "threshold")}
    min_valid = settings.pop("min_valid_queries")
    monitor = settings.pop("monitor")
    n_queries = len(np.unique(qids))
    if settings["patience"] is not None and n_queries < 2 * min_valid:
        # Early stopping on a handful of validation queries is noise, and
        # training without it drifts: keep the closed-form map.
        est.history_ = {"epochs": [], "best_epoch": None, "best_valid_loss": None,
                        "stop_reason": "too_few_queries", "restored_best": False}
        return
    if settings["patience"] is not None:
        settings["validation_fraction"] = max(settings["validation_fraction"],
                                              min_valid / n_queries)
    seed = _seeds(est.random_state)
    if corpus is None:
        corpus = Y[unique_rows(Y)[0]]
    anchors = match_rows(Y, corpus)
    intercept = est.intercept_.astype(np.float32)
    negatives = _mine(X @ start + intercept, qids, corpus, anchors, seed=seed, **mining)
    module = build_module(est.model, start.astype(np.float32), intercept,
                          random_state=seed, **est._torch_settings("module"))
    history = train_contrastive(
        module, X, Y, groups=qids, corpus=corpus, negatives=negatives,
        targets=anchors if monitor == "ndcg" else None,
        random_state=seed, device=est.device, verbose=est.verbose, **settings,
    ).to_dict()
    params = module_to_numpy(module)
    # The same split train_contrastive drew from this seed.
    rng = np.random.default_rng(_seeds(seed))
    valid = _group_split(qids, settings["validation_fraction"], rng)[1]
    closed_form = X[valid] @ ridge_without(valid) + est.intercept_
    if len(valid) and _valid_ndcg(numpy_forward(params, X[valid]), Y[valid], qids[valid], corpus) \
            < _valid_ndcg(closed_form, Y[valid], qids[valid], corpus):
        history["stop_reason"] += "; closed-form map kept (better on validation)"
        est.history_ = history
        return
    dtype = est.coef_.dtype
    est.coef_ = params.pop("coef").astype(dtype)
    est.intercept_ = params.pop("intercept").astype(dtype)
    est.module_params_ = params or None  # only the MLP branch is left
    est.history_ = history


def _valid_ndcg(Q, Y, groups, corpus):
    return retrieval_score(Q, Y, corpus=corpus, groups=groups, k=10, metric="ndcg")


def _mine(teacher, qids, corpus, anchors, *, seed, n_negatives, top_k, threshold):
    """Hard negatives per row; a query's positives are all of its rows' targets."""
    if n_negatives == 0:
        return None
    positives_of_query = {}
    for q, doc in zip(qids, anchors):
        positives_of_query.setdefault(q, set()).add(int(doc))
    positives = [positives_of_query[q] for q in qids]
    return mine_hard_negatives(
        teacher, corpus, positives, anchors=anchors, n_negatives=n_negatives,
        top_k=top_k, threshold=threshold, random_state=seed,
    )
