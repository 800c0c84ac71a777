"""Pure torch solvers for ERA's two stages: arrays and settings in, arrays and a history out.

Torch is imported only here and in ``_torch_train`` / ``_torch_models``, so the
closed-form path and ``transform`` of a linear adapter never need it. Nothing
here reads or writes an estimator: the caller assigns fitted attributes.

:data:`PAPER_ALIGN` and :data:`PAPER_ADAPT` (defined in :mod:`.recipe`) hold
the official recipe; see ``benchmarks/paper_parity.py`` for the parity run
against the official code.
"""

import numpy as np
import scipy.sparse as sp
import torch

from .._metrics.dense import check_k, ranking_metric
from .._stage2.heldout import group_split, n_held_out
from .._utils.validation import l2_normalize
from .models import build_module, module_to_numpy, numpy_forward, random_linear
from .negatives import mine_hard_negatives, sample_random_negatives
from .recipe import PAPER_ADAPT, PAPER_ALIGN  # re-exported: the parity benchmark reads them here
from .train import (
    _check_xy,
    _seeds,
    resolve_device,
    train_alignment,
    train_contrastive,
)

__all__ = ["PAPER_ADAPT", "PAPER_ALIGN", "train_adapt_torch", "train_align_torch"]

_NEGATIVES = ("topk_percpos", "random")
_POSITIVES = ("all", "one")
_MONITORS = ("ndcg", "loss")
_INITS = ("procrustes", "random")


def train_align_torch(
    X, Y, *, W0=None, b0=None, loss="cosine", init="procrustes", max_epochs=10, lr=1e-3,
    weight_decay=0.01, batch_size=256, validation_fraction=0.1, random_state=None,
    device="cpu", verbose=0,
):
    """ERA's stage 1 with torch: fit ``normalize(X @ W + b) ~ Y`` on paired texts.

    Parameters
    ----------
    X : ndarray of shape (n_texts, d_in)
        Query-encoder embeddings of the alignment texts.
    Y : ndarray of shape (n_texts, d_out)
        Document-encoder embeddings of the same texts (L2-normalised inside).
    W0 : ndarray of shape (d_in, d_out), default=None
        Starting map for ``init="procrustes"`` (a closed-form solution).
    b0 : ndarray of shape (d_out,), default=None
        Starting bias for ``init="procrustes"``; zeros when None.
    loss : {"cosine", "mse", "smooth_l1"}, default="cosine"
    init : {"procrustes", "random"}, default="procrustes"
        ``"random"``: a linear layer with bias from torch's default random
        initialisation, as ERA; ``"procrustes"``: start at ``W0``/``b0``.
    max_epochs : int, default=10
        Epochs, all trained (no early stopping, as ERA's stage 1).
    lr, weight_decay : float, default=1e-3, 0.01
        AdamW settings.
    batch_size : int, default=256
    validation_fraction : float, default=0.1
        Texts held out of training, only to report a validation loss (ERA
        trains on 900 of 1,000).
    random_state : int, RandomState or None, default=None
        Seeds the random init, the split and the shuffling.
    device : {"cpu", "cuda", "auto"} or torch.device, default="cpu"
    verbose : int, default=0

    Returns
    -------
    W : ndarray of shape (d_in, d_out), float32
    b : ndarray of shape (d_out,), float32
    history : dict
        ``TrainingHistory.to_dict()`` plus ``n_train`` and ``n_valid``.
    """
    if init not in _INITS:
        raise ValueError(f"init must be one of {_INITS}, got {init!r}.")
    X, Y = _check_xy(X, Y)
    seed = _seeds(random_state)
    if init == "random":
        module = random_linear(X.shape[1], Y.shape[1], random_state=seed)
    else:
        if W0 is None:
            raise ValueError("init='procrustes' needs the starting map W0.")
        module = build_module("linear", W0, b0)
    history = train_alignment(
        module, X, Y, loss=loss, lr=lr, weight_decay=weight_decay, max_epochs=max_epochs,
        batch_size=batch_size, validation_fraction=validation_fraction, patience=None,
        random_state=seed, device=device, verbose=verbose,
    ).to_dict()
    n_valid = n_held_out(len(X), validation_fraction)
    history.update(n_train=len(X) - n_valid, n_valid=n_valid)
    params = module_to_numpy(module)
    return params["coef"], params["intercept"], history


def _one_row_per_group(rows, groups, rng):
    """One row drawn at random per group among ``rows``, returned sorted."""
    rows = np.asarray(rows)
    _, inverse = np.unique(groups[rows], return_inverse=True)
    order = rng.permutation(len(rows))
    # After a random permutation, the first row met of each group is a uniform draw.
    _, first = np.unique(inverse[order], return_index=True)
    return np.sort(rows[order[first]])


def select_rows(qids, validation_fraction, positives, rng):
    """Split queries into train / validation and pick the rows each side uses.

    Parameters
    ----------
    qids : ndarray of shape (n_rows,)
        Query id of each (query, positive) row.
    validation_fraction : float
        Fraction of queries held out (at least one query each side when > 0).
    positives : {"all", "one"}
        ``"one"``: one row per query drawn once (ERA: one random positive per
        query, fixed for all epochs); ``"all"``: every row.
    rng : numpy.random.Generator

    Returns
    -------
    train_rows, valid_rows : ndarray of int64
        Rows used for training and for the validation loss.
    valid_query_rows : ndarray of int64
        All rows of the validation queries (for scoring them against all
        their relevant documents).
    """
    train_rows, valid_query_rows = group_split(qids, validation_fraction, rng)
    if positives == "one":
        return (_one_row_per_group(train_rows, qids, rng),
                _one_row_per_group(valid_query_rows, qids, rng), valid_query_rows)
    return train_rows, valid_query_rows, valid_query_rows


def draw_negatives(rows, X, qids, corpus, anchors, *, start_W, start_b, strategy,
                   n_negatives, top_k, threshold, rng):
    """Negatives of each row in ``rows``; none is relevant to the row's query.

    A query's relevant documents are the ``anchors`` of ALL its rows (its
    qrels), whichever rows are trained on. ``"topk_percpos"`` mines with the
    starting map as teacher; ``"random"`` samples uniformly.

    Returns
    -------
    negatives : ndarray of shape (len(rows), n_negatives), int64
    """
    relevant = {}
    for q, doc in zip(qids, anchors):
        relevant.setdefault(q, set()).add(int(doc))
    positives = [relevant[q] for q in qids[rows]]
    seed = int(rng.integers(np.iinfo(np.int32).max))
    if strategy == "random":
        return sample_random_negatives(positives, len(corpus), n_negatives=n_negatives,
                                       random_state=seed)
    teacher = l2_normalize(X[rows] @ start_W + start_b, zero_rows="ignore")
    return mine_hard_negatives(teacher, corpus, positives, anchors=anchors[rows],
                               n_negatives=n_negatives, top_k=top_k, threshold=threshold,
                               random_state=seed)


def _relevance(rows, qids, anchors, n_docs):
    """(first row of each query, binary query x document csr matrix) of ``rows``."""
    _, first, local = np.unique(qids[rows], return_index=True, return_inverse=True)
    rel = sp.csr_matrix((np.ones(len(rows)), (local.ravel(), anchors[rows])),
                        shape=(len(first), n_docs))
    rel.data[:] = 1.0
    return np.asarray(rows)[first], rel


def _ndcg_loss(X, qids, corpus, anchors, valid_query_rows, device, k=10):
    """``module -> 1 - nDCG@10`` of the validation queries over the whole corpus."""
    query_rows, rel = _relevance(valid_query_rows, qids, anchors, len(corpus))
    dev = resolve_device(device)
    Qt = torch.as_tensor(X[query_rows], device=dev)
    Ct = torch.nn.functional.normalize(torch.as_tensor(corpus, device=dev), dim=1)

    def loss(module):
        with torch.no_grad():
            scores = (module(Qt) @ Ct.T).cpu().numpy()
        return 1.0 - ranking_metric("ndcg", scores, rel, check_k(k), True)

    return loss


def _ndcg(params, X, rel, corpus):
    """nDCG@10 of ``numpy_forward(params, X)`` (one row per query) over the corpus."""
    return ranking_metric("ndcg", numpy_forward(params, X) @ l2_normalize(corpus, zero_rows="ignore").T, rel, 10, True)


def _check_adapt_inputs(X, Y, qids, corpus, anchors):
    X = np.asarray(X, dtype=np.float32)
    Y = np.asarray(Y, dtype=np.float32)
    corpus = np.asarray(corpus, dtype=np.float32)
    qids = np.asarray(qids)
    anchors = np.asarray(anchors, dtype=np.int64)
    if X.ndim != 2 or Y.ndim != 2 or corpus.ndim != 2 or len(X) != len(Y):
        raise ValueError(f"X, Y and corpus must be 2-D with len(X) == len(Y), got "
                         f"{X.shape}, {Y.shape} and {corpus.shape}.")
    if corpus.shape[1] != Y.shape[1]:
        raise ValueError(f"corpus has {corpus.shape[1]} features, Y has {Y.shape[1]}.")
    if qids.shape != (len(X),) or anchors.shape != (len(X),):
        raise ValueError(f"qids and anchors must have shape ({len(X)},), got "
                         f"{qids.shape} and {anchors.shape}.")
    if anchors.size and (anchors.min() < 0 or anchors.max() >= len(corpus)):
        raise ValueError("anchors holds indices outside the corpus.")
    return X, Y, qids, corpus, anchors


def _check_choice(name, value, options):
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}.")


def train_adapt_torch(
    X, Y, qids, corpus, anchors, *, start_W, start_b, model="linear", hidden_size=512,
    n_layers=1, dropout=0.1, lr=1e-3, weight_decay=1e-4, max_epochs=1000, batch_size=256,
    patience=20, warmup=0.1, temperature=0.05, n_negatives=5, negatives="topk_percpos",
    top_k=2000, threshold=0.95, in_batch_negatives=True, positives="all",
    validation_fraction=0.1, monitor="ndcg", min_valid_queries=10, start_as_candidate=True,
    random_state=None, device="cpu", verbose=0, fallback=None,
):
    """ERA's stage 2 with torch: InfoNCE on (query, relevant document) rows from a start map.

    The defaults are the package's (in-batch negatives, nDCG monitor, patience
    20, lr 1e-3); ``**PAPER_ADAPT`` gives ERA's recipe exactly.

    Parameters
    ----------
    X : ndarray of shape (n_rows, d_in)
        Query embeddings, one row per (query, relevant document) pair.
    Y : ndarray of shape (n_rows, d_out)
        The relevant document's embedding of each row.
    qids : ndarray of shape (n_rows,)
        Query id of each row; a query's rows fall on one side of the split.
    corpus : ndarray of shape (n_docs, d_out)
        Documents negatives are drawn from (and the nDCG monitor ranks).
    anchors : ndarray of shape (n_rows,) of int
        Corpus index of each row's document. A query's relevant documents are
        the anchors of all its rows: none is ever its negative.
    start_W, start_b : ndarray of shape (d_in, d_out) and (d_out,)
        Starting linear map (ERA: the stage-1 adapter), also the teacher of
        ``"topk_percpos"`` mining.
    model : {"linear", "mlp"}, default="linear"
    hidden_size, n_layers, dropout : int, int, float, default=512, 1, 0.1
        The residual MLP branch of ``model="mlp"``.
    lr, weight_decay : float, default=1e-3, 1e-4
        AdamW settings (ERA: 1e-5, 1e-4).
    max_epochs : int, default=1000
    batch_size : int, default=256
    patience : int or None, default=20
        Early stopping patience in epochs (ERA: 5); None trains all epochs.
    warmup : float, default=0.1
        Linear warmup over this fraction of the planned steps, then linear decay.
    temperature : float, default=0.05
    n_negatives : int, default=5
        Negatives per row, drawn once before training; 0 = in-batch only.
    negatives : {"topk_percpos", "random"}, default="topk_percpos"
        ERA's strategies (see ``era_sklearn._torch.negatives``).
    top_k, threshold : int, float, default=2000, 0.95
        ``"topk_percpos"``: candidates from the teacher's top ``top_k``, those
        scoring ``>= threshold`` x the positive's score dropped.
    in_batch_negatives : bool, default=True
        Also contrast with the other rows' positives in the batch (ERA: False).
    positives : {"all", "one"}, default="all"
        ``"one"``: one random row per query, drawn once and fixed for all
        epochs (ERA); ``"all"``: every row.
    validation_fraction : float, default=0.1
        Fraction of queries held out for early stopping.
    monitor : {"ndcg", "loss"}, default="ndcg"
        Early stopping on ``1 - nDCG@10`` of the validation queries over the
        corpus, or on their InfoNCE loss (ERA).
    min_valid_queries : int, default=10
        With early stopping, hold out at least this many queries; with fewer
        than twice as many queries in all, skip training (ERA: 0, no rule).
    start_as_candidate : bool, default=True
        The starting map competes as epoch 0 for the best epoch (ERA: False).
    random_state : int, RandomState or None, default=None
    device : {"cpu", "cuda", "auto"} or torch.device, default="cpu"
    verbose : int, default=0
    fallback : callable or None, default=None
        ``fallback(valid_rows) -> (coef, intercept)``: a closed-form map fitted
        without ``valid_rows`` (all rows of the validation queries). When it
        scores a higher nDCG@10 on those queries than the trained map, the
        trained map is discarded (ERA: None).

    Returns
    -------
    params : dict of ndarray or None
        ``coef``, ``intercept`` and, for ``model="mlp"``, ``mlp_coef_i`` /
        ``mlp_intercept_i`` (see ``era_sklearn._torch.models``). None when no
        trained map should be used: training skipped (too few queries) or the
        fallback won; ``history["stop_reason"]`` says which, and the caller
        keeps its own map.
    history : dict
        ``TrainingHistory.to_dict()`` plus ``n_train_queries``,
        ``n_valid_queries``, ``train_rows`` (the rows of ``X`` trained on) and
        ``kept_fallback``.
    """
    X, Y, qids, corpus, anchors = _check_adapt_inputs(X, Y, qids, corpus, anchors)
    _check_choice("negatives", negatives, _NEGATIVES)
    _check_choice("positives", positives, _POSITIVES)
    _check_choice("monitor", monitor, _MONITORS)
    start_W = np.asarray(start_W, dtype=np.float32)
    start_b = np.asarray(start_b, dtype=np.float32)
    n_queries = len(np.unique(qids))
    if patience is not None and n_queries < 2 * min_valid_queries:
        # Early stopping on a handful of validation queries is noise, and
        # training without it drifts: the caller keeps its map.
        return None, {"epochs": [], "best_epoch": None, "best_valid_loss": None,
                      "stop_reason": "too_few_queries", "restored_best": False,
                      "n_train_queries": n_queries, "n_valid_queries": 0,
                      "train_rows": [], "kept_fallback": False}
    if patience is not None and min_valid_queries:
        validation_fraction = max(validation_fraction, min_valid_queries / n_queries)
    seed = _seeds(random_state)
    rng = np.random.default_rng(seed)
    train_rows, valid_rows, valid_query_rows = select_rows(qids, validation_fraction,
                                                           positives, rng)
    rows = np.concatenate([train_rows, valid_rows])
    negs = None
    if n_negatives:
        negs = draw_negatives(rows, X, qids, corpus, anchors, start_W=start_W,
                              start_b=start_b, strategy=negatives, n_negatives=n_negatives,
                              top_k=top_k, threshold=threshold, rng=rng)
    module = build_module(model, start_W, start_b, hidden_size=hidden_size,
                          n_layers=n_layers, dropout=dropout, random_state=seed)
    valid_loss = None
    if monitor == "ndcg" and len(valid_rows):
        valid_loss = _ndcg_loss(X, qids, corpus, anchors, valid_query_rows, device)
    n_train = len(train_rows)
    history = train_contrastive(
        module, X[rows], Y[rows], groups=qids[rows], corpus=corpus, negatives=negs,
        split=(np.arange(n_train), np.arange(n_train, len(rows))),
        temperature=temperature, lr=lr, weight_decay=weight_decay, warmup=warmup,
        max_epochs=max_epochs, batch_size=batch_size, patience=patience,
        in_batch_negatives=in_batch_negatives, valid_loss=valid_loss,
        start_as_candidate=start_as_candidate, random_state=seed, device=device,
        verbose=verbose,
    ).to_dict()
    history.update(n_train_queries=len(np.unique(qids[train_rows])),
                   n_valid_queries=len(np.unique(qids[valid_query_rows])),
                   train_rows=train_rows.tolist(), kept_fallback=False)
    params = module_to_numpy(module)
    if fallback is not None and len(valid_query_rows):
        query_rows, rel = _relevance(valid_query_rows, qids, anchors, len(corpus))
        coef, intercept = fallback(valid_query_rows)
        closed = {"coef": np.asarray(coef, np.float32),
                  "intercept": np.asarray(intercept, np.float32)}
        if _ndcg(params, X[query_rows], rel, corpus) < _ndcg(closed, X[query_rows], rel, corpus):
            history["stop_reason"] += "; closed-form map kept (better on validation)"
            history["kept_fallback"] = True
            return None, history
    return params, history
