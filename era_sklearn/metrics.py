"""Ranking metrics and retrieval scoring.

The ranking metrics follow the conventions of ``trec_eval`` (as exposed by
``ir_measures`` as ``nDCG@k``, ``R@k`` and ``RR``) on dense score matrices;
:func:`ranking_score` computes them on ranked results (the ids a search
returns, with or without scores, in trec_eval's own tie order), and
:func:`retrieval_score` / :func:`make_retrieval_scorer` turn them into a
single number for model selection of query-to-document adapters.

Conventions shared by the dense ranking metrics:

* ``scores[i, j]`` is the score of document ``j`` for query ``i``; higher is
  better.
* ``qrels[i, j]`` is the graded relevance of document ``j`` for query ``i``;
  a document is relevant when its grade is > 0. Non-positive grades are
  treated as 0 (no gain).
* Ties in score are broken by the lower column index first, so results are
  deterministic (``trec_eval`` instead breaks ties by document id).
* Queries with no relevant document are excluded from the mean and are NaN in
  the per-query output. ``trec_eval`` only evaluates queries that appear in the
  qrels, so this matches it on qrels that list relevant documents.
"""


import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_array

from ._metrics import rank_kernels as kernels
from ._metrics.dense import (
    check_k,
    check_scores,
    dense_grades,
    ranking_metric,
    reduce_per_query,
    row_slices,
)
from ._metrics.ranked_results import ranked_gains
from ._stage2.corpus import match_targets
from ._utils.validation import l2_normalize

__all__ = ["make_retrieval_scorer", "mrr", "ndcg_at_k", "qrels_to_matrix", "ranking_score", "recall_at_k", "retrieval_score", "top_k"]  # fmt: skip

_METRICS = ("ndcg", "mrr", "recall")


# ----------------------------------------------------------------------------
# Top-k selection and relevance matrices
# ----------------------------------------------------------------------------


def top_k(scores, k):
    """Return the ``k`` best-scored columns of each row, best first.

    Ties in score are broken by the lower column index first. Selection uses
    a partition and only the selected ``k`` entries are sorted, in row blocks
    of bounded memory.

    Parameters
    ----------
    scores : array-like of shape (n_queries, n_docs)
        Scores, higher is better. Must not contain NaN.
    k : int
        Number of columns to return; values above ``n_docs`` are clipped.

    Returns
    -------
    indices : ndarray of shape (n_queries, min(k, n_docs))
        Column indices, best first.
    values : ndarray of shape (n_queries, min(k, n_docs))
        The matching scores.

    Examples
    --------
    >>> from era_sklearn.metrics import top_k
    >>> indices, values = top_k([[0.1, 0.9, 0.5, 0.9]], k=3)
    >>> indices
    array([[1, 3, 2]])
    >>> values
    array([[0.9, 0.9, 0.5]])
    """
    scores = check_scores(scores)
    k = min(check_k(k), scores.shape[1])
    indices = np.empty((scores.shape[0], k), dtype=np.intp)
    for rows in row_slices(*scores.shape):
        indices[rows] = kernels.top_k_block(scores[rows], k)
    return indices, np.take_along_axis(scores, indices, axis=1)


def qrels_to_matrix(qrels, query_ids, doc_ids):
    """Convert ``{query_id: {doc_id: grade}}`` relevance judgements to a matrix.

    Parameters
    ----------
    qrels : dict of {query_id: dict of {doc_id: grade}}
        Relevance judgements, as read by ``ir_measures.read_trec_qrels`` into
        a dict or by hand. Entries for documents not in ``doc_ids`` or queries
        not in ``query_ids`` are ignored; zero grades are not stored.
    query_ids : sequence
        Query id of each row.
    doc_ids : sequence
        Document id of each column.

    Returns
    -------
    matrix : scipy.sparse.csr_matrix of shape (len(query_ids), len(doc_ids))
        Graded relevance, float32.

    Examples
    --------
    >>> from era_sklearn.metrics import qrels_to_matrix
    >>> qrels = {"q1": {"d2": 2, "d9": 1}, "q2": {"d1": 1}}
    >>> qrels_to_matrix(qrels, ["q1", "q2"], ["d1", "d2", "d3"]).toarray()
    array([[0., 2., 0.],
           [1., 0., 0.]], dtype=float32)
    """
    column = {doc_id: j for j, doc_id in enumerate(doc_ids)}
    rows, cols, grades = [], [], []
    for i, query_id in enumerate(query_ids):
        for doc_id, grade in qrels.get(query_id, {}).items():
            if doc_id in column and grade != 0:
                rows.append(i)
                cols.append(column[doc_id])
                grades.append(grade)
    shape = (len(query_ids), len(doc_ids))
    return sp.csr_matrix((np.asarray(grades, dtype=np.float32), (rows, cols)), shape=shape)


# ----------------------------------------------------------------------------
# Public ranking metrics (dense: _metrics/dense.py, kernels: _metrics/rank_kernels.py)
# ----------------------------------------------------------------------------


def ndcg_at_k(scores, qrels, k=10, *, average=True):
    """Normalised discounted cumulative gain at rank ``k`` (trec_eval ``ndcg_cut``).

    The gain of a document is its grade, discounted by ``log2(rank + 1)``.
    The ideal DCG is computed from all judged relevant documents of the query
    (grades sorted in decreasing order, cut at ``k``), whether or not they are
    retrieved. Queries without a relevant document are excluded from the mean.
    Ties in score are broken by the lower column index first.

    Parameters
    ----------
    scores : array-like of shape (n_queries, n_docs)
        Scores, higher is better. Must not contain NaN.
    qrels : {array-like, sparse matrix} of shape (n_queries, n_docs)
        Graded relevance; grade > 0 means relevant.
    k : int, default=10
        Rank cutoff.
    average : bool, default=True
        If True return the mean over queries with a relevant document,
        otherwise the per-query values (NaN for excluded queries).

    Returns
    -------
    score : float or ndarray of shape (n_queries,)
        nDCG@k.

    Examples
    --------
    >>> from era_sklearn.metrics import ndcg_at_k
    >>> scores = [[0.9, 0.8, 0.1], [0.2, 0.4, 0.3]]
    >>> qrels = [[0, 1, 0], [0, 0, 0]]
    >>> round(ndcg_at_k(scores, qrels, k=2), 4)
    0.6309
    >>> ndcg_at_k(scores, qrels, k=2, average=False).round(4)
    array([0.6309,    nan])
    """
    return ranking_metric("ndcg", scores, qrels, check_k(k), average)


def recall_at_k(scores, qrels, k=100, *, average=True):
    """Recall at rank ``k`` (trec_eval ``recall_k``, ir_measures ``R@k``).

    The fraction of the query's relevant documents (grade > 0) found in the
    top ``k``. Queries without a relevant document are excluded from the mean.
    Ties in score are broken by the lower column index first.

    Parameters
    ----------
    scores : array-like of shape (n_queries, n_docs)
        Scores, higher is better. Must not contain NaN.
    qrels : {array-like, sparse matrix} of shape (n_queries, n_docs)
        Graded relevance; grade > 0 means relevant.
    k : int, default=100
        Rank cutoff.
    average : bool, default=True
        If True return the mean over queries with a relevant document,
        otherwise the per-query values (NaN for excluded queries).

    Returns
    -------
    score : float or ndarray of shape (n_queries,)
        Recall@k.

    Examples
    --------
    >>> from era_sklearn.metrics import recall_at_k
    >>> scores = [[0.9, 0.8, 0.1, 0.5]]
    >>> qrels = [[0, 1, 2, 0]]
    >>> recall_at_k(scores, qrels, k=2)
    0.5
    """
    return ranking_metric("recall", scores, qrels, check_k(k), average)


def mrr(scores, qrels, *, k=None, average=True):
    """Mean reciprocal rank of the first relevant document (trec_eval ``recip_rank``).

    A query whose first relevant document is at rank ``r`` scores ``1 / r``,
    or 0 if none is ranked within ``k``. Queries without a relevant document
    are excluded from the mean. Ties in score are broken by the lower column
    index first.

    Parameters
    ----------
    scores : array-like of shape (n_queries, n_docs)
        Scores, higher is better. Must not contain NaN.
    qrels : {array-like, sparse matrix} of shape (n_queries, n_docs)
        Graded relevance; grade > 0 means relevant.
    k : int or None, default=None
        Rank cutoff; None ranks all documents (ir_measures ``RR``).
    average : bool, default=True
        If True return the mean over queries with a relevant document,
        otherwise the per-query values (NaN for excluded queries).

    Returns
    -------
    score : float or ndarray of shape (n_queries,)
        (Mean) reciprocal rank.

    Examples
    --------
    >>> from era_sklearn.metrics import mrr
    >>> scores = [[0.9, 0.8, 0.1], [0.1, 0.2, 0.3]]
    >>> qrels = [[0, 1, 0], [0, 0, 1]]
    >>> mrr(scores, qrels)
    0.75
    >>> mrr(scores, qrels, k=1, average=False)
    array([0., 1.])
    """
    return ranking_metric("mrr", scores, qrels, check_k(k, allow_none=True), average)


# ----------------------------------------------------------------------------
# Ranked results of a search
# ----------------------------------------------------------------------------


def ranking_score(ids, qrels, *, scores=None, query_ids=None, k=10, metric="ndcg", average=True):
    """Score ranked results (document ids per query, best first) against relevance judgements.

    This is the metric of a search's output: :func:`era_sklearn.search`, an
    :class:`~era_sklearn.HNSWIndex`, FAISS or any engine that returns the top
    documents of each query. On the same run it equals ``ir_measures``'
    ``nDCG@k``, ``R@k`` and ``RR`` (trec_eval's definitions and tie order), and
    :func:`ndcg_at_k` / :func:`recall_at_k` / :func:`mrr` when given their own
    top ``k`` (from :func:`top_k`, without ``scores``).

    Order: with ``scores``, each row is ranked by score, ties broken as
    trec_eval breaks them: by document id, in decreasing string order. Without
    ``scores``, the order given is the ranking. ``metric="mrr"`` with ``k`` is
    that reciprocal rank counted only within rank ``k`` (``ir_measures``
    computes ``RR@k`` with the MS MARCO script instead, which breaks ties by
    increasing id: on tied scores the two can differ). A row shorter than
    ``k`` counts its missing ranks as not relevant; a row that lists a
    document twice is an error.

    Parameters
    ----------
    ids : array-like of shape (n_queries, n_ranked) or list of sequences
        Ranked document ids of each query (rows may differ in length). With a
        ``qrels`` dict they are document ids, compared as strings (``12`` and
        ``"12"`` are one document); with a relevance matrix, its column
        positions.
    qrels : dict or {array-like, sparse matrix} of shape (n_queries, n_docs)
        Graded relevance; grade > 0 means relevant. Either
        ``{query_id: {doc_id: grade}}`` (as :func:`era_sklearn.datasets.load_beir`
        reads it; ``query_ids`` then names each row of ``ids``), or a matrix
        whose row ``i`` judges row ``i`` of ``ids`` (e.g. from
        :func:`qrels_to_matrix`).
    scores : array-like of the shape of ``ids``, default=None
        Score of each ranked document, higher is better; must not be NaN.
    query_ids : sequence of length n_queries, default=None
        Query id of each row of ``ids``; required with a ``qrels`` dict.
    k : int or None, default=10
        Rank cutoff; None (``metric="mrr"`` only) uses every ranked document.
    metric : {"ndcg", "mrr", "recall"}, default="ndcg"
        nDCG@k, reciprocal rank of the first relevant document within ``k``,
        or recall@k (relevant documents found / judged relevant documents).
    average : bool, default=True
        If True return the mean over queries with a relevant document,
        otherwise the per-query values (NaN for queries without one, which
        are left out of the mean as trec_eval leaves out unjudged queries).

    Returns
    -------
    score : float or ndarray of shape (n_queries,)
        The metric.

    Warns
    -----
    UserWarning
        With a ``qrels`` dict, when no ranked id is a judged document of any of
        the queries: the ids are probably of another kind (row positions of
        an index fitted without ``ids=``).

    Examples
    --------
    >>> from era_sklearn.metrics import ranking_score
    >>> qrels = {"q1": {"d2": 1}, "q2": {"d7": 2, "d1": 1}}
    >>> ids = [["d1", "d2", "d3"], ["d7", "d1", "d9"]]
    >>> ranking_score(ids, qrels, query_ids=["q1", "q2"], k=3, metric="mrr")
    0.75
    >>> ranking_score(ids, qrels, query_ids=["q1", "q2"], metric="recall", average=False)
    array([1., 1.])

    Scores rank the results; equal scores go to the greater id first:

    >>> ranking_score([["d1", "d2"]], qrels, query_ids=["q1"], scores=[[0.5, 0.5]], metric="mrr")
    1.0
    """
    _check_metric(metric)
    k = check_k(k, allow_none=metric == "mrr")
    gains, rows, grades = ranked_gains(ids, qrels, scores=scores, query_ids=query_ids, k=k)
    n_relevant = np.bincount(rows, minlength=gains.shape[0])
    if metric == "ndcg":
        values = kernels.ndcg(gains, kernels.ideal_dcg(rows, grades, gains.shape[0], k))
    elif metric == "recall":
        values = kernels.recall(gains, n_relevant)
    else:
        values = kernels.reciprocal_rank(gains)
    return reduce_per_query(np.where(n_relevant > 0, values, np.nan), average)


# ----------------------------------------------------------------------------
# Retrieval scoring of embeddings
# ----------------------------------------------------------------------------


def _check_metric(metric):
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}.")


def _check_embeddings(Q, Y, corpus):
    Q = check_array(Q, dtype=(np.float64, np.float32), input_name="Q")
    Y = check_array(Y, dtype=(np.float64, np.float32), input_name="Y")
    if Q.shape[0] != Y.shape[0]:
        raise ValueError(
            f"Q and Y must have the same number of rows, got {Q.shape[0]} and {Y.shape[0]}."
        )
    if Q.shape[1] != Y.shape[1]:
        raise ValueError(f"Q and Y must have the same width, got {Q.shape[1]} and {Y.shape[1]}.")
    if corpus is not None:
        corpus = check_array(corpus, dtype=(np.float64, np.float32), input_name="corpus")
        if corpus.shape[1] != Q.shape[1]:
            raise ValueError(
                f"corpus must have the same width as Q, got {corpus.shape[1]} and {Q.shape[1]}."
            )
    return Q, Y, corpus


def _unit(A):
    # Retrieval ranks by cosine; an all-zero embedding stays zero and scores 0.
    return l2_normalize(A, zero_rows="ignore")


def _first_rows(labels, n_labels):
    """Index of the first row carrying each label 0..n_labels-1."""
    first = np.full(n_labels, labels.shape[0], dtype=np.intp)
    np.minimum.at(first, labels, np.arange(labels.shape[0]))
    return first


def retrieval_score(Q, Y, *, corpus=None, groups=None, k=10, metric="ndcg"):
    """Retrieval quality of mapped query embeddings against document embeddings.

    Each row pairs a query embedding ``Q[i]`` with the embedding ``Y[i]`` of
    one relevant document. Rows of the same query (same value in ``groups``,
    or identical ``Q`` rows when ``groups`` is None) form ONE query with
    several relevant documents; its embedding is the one of its first row.
    Candidates are ranked by cosine similarity (zero vectors have similarity
    0) and ``metric`` is computed at ``k`` with binary relevance, then averaged
    over queries.

    Parameters
    ----------
    Q : array-like of shape (n_pairs, n_features)
        Query embeddings, already mapped into the document space.
    Y : array-like of shape (n_pairs, n_features)
        Embedding of a relevant document for each row of ``Q``.
    corpus : array-like of shape (n_docs, n_features), default=None
        Candidate documents. Each ``Y`` row must be a corpus row (cosine >=
        0.999, else a ValueError says how many are missing). When None, the
        candidates are the distinct rows of ``Y`` (exact match).
    groups : array-like of shape (n_pairs,), default=None
        Query id of each row. When None, identical ``Q`` rows share a query.
    k : int, default=10
        Rank cutoff.
    metric : {"ndcg", "mrr", "recall"}, default="ndcg"
        nDCG@k, reciprocal rank within ``k`` or recall@k.

    Returns
    -------
    score : float
        Mean of ``metric`` over queries.

    Examples
    --------
    >>> import numpy as np
    >>> from era_sklearn.metrics import retrieval_score
    >>> Y = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> retrieval_score(Y, Y, k=1)
    1.0
    >>> retrieval_score(Y[::-1], Y, k=2, metric="mrr")  # each hit at rank 2
    0.5
    """
    _check_metric(metric)
    k = check_k(k)
    Q, Y, corpus = _check_embeddings(Q, Y, corpus)
    key = Q if groups is None else np.asarray(groups)
    if key.shape[0] != Q.shape[0]:
        raise ValueError(f"groups must have {Q.shape[0]} entries, got {key.shape[0]}.")
    _, query_of_row = np.unique(key, axis=0 if groups is None else None, return_inverse=True)
    query_of_row = query_of_row.ravel()
    n_queries = query_of_row.max() + 1
    if corpus is None:
        candidates, doc_of_row = np.unique(Y, axis=0, return_inverse=True)
        candidates, doc_of_row = _unit(candidates), doc_of_row.ravel()
    else:
        candidates = _unit(corpus)
        doc_of_row = match_targets(Y, corpus)
    relevance = sp.csr_matrix(
        (np.ones(Q.shape[0]), (query_of_row, doc_of_row)), shape=(n_queries, len(candidates))
    )
    relevance.data[:] = 1.0  # binary: a document paired twice with a query counts once
    queries = _unit(Q[_first_rows(query_of_row, n_queries)])
    values = np.empty(n_queries)
    for rows in row_slices(n_queries, len(candidates)):
        values[rows] = kernels.metric_block(
            metric, queries[rows] @ candidates.T, dense_grades(relevance, rows), k
        )
    return float(values.mean())


class _RetrievalScorer:
    """Picklable ``scorer(estimator, X, Y)`` built by :func:`make_retrieval_scorer`."""

    def __init__(self, corpus, k, metric):
        self.corpus = corpus
        self.k = k
        self.metric = metric

    def __call__(self, estimator, X, Y):
        Q = estimator.transform(X)
        return retrieval_score(Q, Y, corpus=self.corpus, k=self.k, metric=self.metric)

    def __repr__(self):
        return f"make_retrieval_scorer(corpus=..., k={self.k}, metric={self.metric!r})"


def make_retrieval_scorer(corpus, *, k=10, metric="ndcg"):
    """Build a scorer ``scorer(estimator, X, Y)`` for model selection.

    The scorer maps ``X`` with ``estimator.transform`` and returns
    :func:`retrieval_score` of the result against ``Y`` (higher is better),
    so it can be passed as ``scoring=`` to
    :class:`~sklearn.model_selection.GridSearchCV` or
    :func:`~sklearn.model_selection.cross_val_score`.

    Parameters
    ----------
    corpus : array-like of shape (n_docs, n_features) or None
        Candidate documents; None ranks the distinct rows of each fold's ``Y``.
    k : int, default=10
        Rank cutoff.
    metric : {"ndcg", "mrr", "recall"}, default="ndcg"
        Metric passed to :func:`retrieval_score`.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, Y) -> float``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.preprocessing import FunctionTransformer
    >>> from era_sklearn.metrics import make_retrieval_scorer
    >>> corpus = np.eye(4)
    >>> scorer = make_retrieval_scorer(corpus, k=2)
    >>> identity = FunctionTransformer().fit(corpus)
    >>> scorer(identity, corpus, corpus)
    1.0
    """
    _check_metric(metric)
    check_k(k)
    if corpus is not None:
        corpus = check_array(corpus, dtype=(np.float64, np.float32), input_name="corpus")
    return _RetrievalScorer(corpus, k, metric)
