"""Ranked results of a search engine as rank-ordered gains.

A search (:func:`era_sklearn.search`, an HNSW or FAISS index, any engine)
returns the ids of each query's top documents, usually with their scores. This
module turns such results into what :mod:`era_sklearn._metrics.rank_kernels` scores: the
grade of each ranked document, in rank order, and the judged positive grades
of each query. Relevance comes either as a ``{query_id: {doc_id: grade}}``
dict (ids compared as strings, as trec_eval reads them) or as a
``(n_queries, n_docs)`` matrix whose columns the ids index.

The order is trec_eval's: with scores, each row is sorted by score, ties by
document id in decreasing string order; without scores, the given order is the
ranking.
"""

import numbers
import warnings
from collections import Counter
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_array


def ranked_gains(ids, qrels, *, scores, query_ids, k):
    """``(gains, judged_rows, judged_grades)`` of ranked results, in trec_eval's order.

    ``gains`` has one row per query and ``min(k, longest row)`` columns (all
    columns when ``k`` is None): the grade of the document at each rank, 0 for
    unjudged documents and ranks beyond a row's end. ``judged_grades[i]`` is a
    positive grade of query ``judged_rows[i]``.
    """
    ids, scores, valid = ranked_rows(ids, scores)
    strings = id_strings(ids, valid)
    check_unique(strings, valid)
    order = trec_order(strings, scores, valid)
    if order is not None:
        ids, strings, valid = (np.take_along_axis(a, order, axis=1) for a in (ids, strings, valid))
    n_ranks = valid.shape[1] if k is None else min(k, valid.shape[1])
    if isinstance(qrels, Mapping):
        return gains_from_dict(strings, valid, qrels, query_ids, n_ranks)
    return gains_from_matrix(ids, valid, qrels, query_ids, n_ranks)


def _padded(rows, name):
    """``rows`` (a 2-D array, or one sequence per query) as a padded 2-D array and its mask."""
    if isinstance(rows, np.ndarray) and rows.ndim == 2:
        return rows, np.ones(rows.shape, dtype=bool)
    if isinstance(rows, (str, bytes)) or not isinstance(rows, (list, tuple, np.ndarray)):
        raise TypeError(
            f"{name} must be a 2-D array or a list with one sequence per query, got "
            f"{type(rows).__name__}."
        )
    rows = [np.asarray(row) for row in rows]
    for i, row in enumerate(rows):
        if row.ndim != 1:
            raise ValueError(
                f"{name}[{i}] must be a 1-D sequence (one query's ranked results), got "
                f"shape {row.shape}; for one query pass [ids]."
            )
    lengths = np.array([len(row) for row in rows], dtype=np.intp)
    valid = np.arange(lengths.max(initial=0)) < lengths[:, None]
    out = np.empty(valid.shape, dtype=object)
    out[valid] = [value for row in rows for value in row.tolist()]
    return out, valid


def ranked_rows(ids, scores):
    """Validated ``(ids, scores or None, valid)``, padded to one row per query."""
    ids, valid = _padded(ids, "ids")
    if scores is None:
        return ids, None, valid
    padded, scores_valid = _padded(scores, "scores")
    if not np.array_equal(scores_valid, valid):
        raise ValueError(
            "scores must hold one score per id: ids and scores differ in shape "
            f"(ids {_shape(valid)}, scores {_shape(scores_valid)})."
        )
    values = np.zeros(valid.shape)
    try:
        values[valid] = np.asarray(padded[valid], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("scores must be real numbers.") from None
    if np.isnan(values).any():
        row = np.flatnonzero(np.isnan(values).any(axis=1))[0]
        raise ValueError(f"scores contains NaN (first in row {row}); a NaN score has no rank.")
    return ids, values, valid


def _shape(valid):
    lengths = valid.sum(axis=1)
    if lengths.size and (lengths == valid.shape[1]).all():
        return str(valid.shape)
    return f"rows of lengths {lengths.tolist()[:5]}{'...' if len(lengths) > 5 else ''}"


def id_strings(ids, valid):
    """Each id as the string trec_eval compares; ``None`` where ``valid`` is False."""
    strings = np.empty(ids.shape, dtype=object)
    strings[valid] = [str(value) for value in ids[valid].tolist()]
    return strings


def trec_order(strings, scores, valid):
    """Column order of each row: valid entries first, by score, ties by decreasing id."""
    if scores is None:
        return None
    codes = np.zeros(strings.shape, dtype=np.intp)
    codes[valid] = np.unique(strings[valid].astype(str), return_inverse=True)[1].ravel()
    # lexsort sorts by its last key first.
    return np.lexsort((-codes, -scores, ~valid), axis=-1)


def check_unique(strings, valid):
    """Refuse a row that lists one document twice: it would count its gain twice."""
    for i in range(strings.shape[0]):
        row = strings[i][valid[i]].tolist()
        if len(set(row)) != len(row):
            twice = next(doc for doc, n in Counter(row).items() if n > 1)
            raise ValueError(
                f"ids row {i} lists document {twice!r} more than once; a ranking holds "
                "each document at most once."
            )


def _check_grades(grades, where):
    try:
        values = np.asarray(grades, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where} holds a grade that is not a number.") from None
    if not np.isfinite(values).all():
        raise ValueError(f"{where} holds a grade that is not finite.")
    return values


def gains_from_dict(strings, valid, qrels, query_ids, n_ranks):
    """Ranked gains and judged positive grades from ``{query_id: {doc_id: grade}}``."""
    if query_ids is None:
        raise ValueError(
            "query_ids is required with a qrels dict: the query id of each row of ids."
        )
    query_ids = np.asarray(query_ids, dtype=object).ravel()
    if len(query_ids) != strings.shape[0]:
        raise ValueError(
            f"query_ids has {len(query_ids)} entries but ids has {strings.shape[0]} rows; "
            "give one query id per row."
        )
    by_id = {str(q): docs for q, docs in qrels.items()}
    gains = np.zeros((strings.shape[0], n_ranks))
    rows, values, judged = [], [], set()
    for i, query_id in enumerate(query_ids.tolist()):
        docs = by_id.get(str(query_id))
        if not docs:
            continue
        if not isinstance(docs, Mapping):
            raise TypeError(f"qrels[{query_id!r}] must be a {{doc_id: grade}} dict, got {docs!r}.")
        grades = _check_grades(list(docs.values()), f"qrels[{query_id!r}]")
        positive = {str(d): g for d, g in zip(docs, grades.tolist()) if g > 0}
        judged.update(positive)
        rows.extend([i] * len(positive))
        values.extend(positive.values())
        top = strings[i, :n_ranks]
        gains[i] = [positive.get(doc, 0.0) for doc in top.tolist()]
    _warn_if_disjoint(strings[valid], judged)
    return gains, np.asarray(rows, dtype=np.intp), np.asarray(values, dtype=np.float64)


def _warn_if_disjoint(retrieved, judged):
    """Warn when no retrieved id is a judged document of any query: ids of another kind."""
    if retrieved.size and judged and judged.isdisjoint(retrieved.tolist()):
        warnings.warn(
            f"None of the {retrieved.size} ranked ids is a judged relevant document of any "
            f"of these queries (ranked e.g. {retrieved[0]!r}; judged e.g. {next(iter(judged))!r}). "
            "Check that ids are document ids (an index fitted with ids=...), not row positions.",
            UserWarning,
            stacklevel=5,  # this, gains_from_dict, ranked_gains, ranking_score, caller
        )


def gains_from_matrix(ids, valid, qrels, query_ids, n_ranks):
    """Ranked gains and judged positive grades from a relevance matrix (ids are columns)."""
    if query_ids is not None:
        raise ValueError(
            "query_ids is only used with a qrels dict; with a relevance matrix, row i of "
            "qrels belongs to row i of ids."
        )
    qrels = check_array(qrels, accept_sparse="csr", dtype=np.float64, input_name="qrels")
    if qrels.shape[0] != ids.shape[0]:
        raise ValueError(
            f"qrels has {qrels.shape[0]} rows but ids has {ids.shape[0]}; row i of a "
            "relevance matrix judges the documents of row i of ids."
        )
    columns = _column_positions(ids, valid, qrels.shape[1])
    top_valid = valid[:, :n_ranks]
    rows = np.nonzero(top_valid)[0]
    gains = np.zeros(top_valid.shape)
    picked = qrels[rows, columns[:, :n_ranks][top_valid]]
    gains[top_valid] = np.maximum(np.asarray(picked).ravel(), 0.0)
    if sp.issparse(qrels):
        judged = qrels.tocoo()
        judged.sum_duplicates()
        keep = judged.data > 0
        return gains, judged.row[keep].astype(np.intp), judged.data[keep]
    pos_rows, pos_cols = np.nonzero(qrels > 0)
    return gains, pos_rows, qrels[pos_rows, pos_cols]


def _column_positions(ids, valid, n_docs):
    """Ids as column positions of a relevance matrix (invalid entries: 0)."""
    values = ids[valid]
    if values.dtype.kind not in "iu":
        bad = [v for v in values.tolist() if not _is_int(v)]
        if bad:
            raise ValueError(
                "With a relevance matrix, ids must be its column positions (ints); got "
                f"{bad[0]!r}. To score by document id, pass qrels as a "
                "{query_id: {doc_id: grade}} dict with query_ids."
            )
    values = np.asarray(values.tolist(), dtype=np.int64)
    outside = (values < 0) | (values >= n_docs)
    if outside.any():
        raise ValueError(
            f"ids holds column {values[outside][0]}, outside qrels' 0 .. {n_docs - 1}; drop "
            "padding such as FAISS's -1 (rows may have different lengths)."
        )
    columns = np.zeros(ids.shape, dtype=np.intp)
    columns[valid] = values
    return columns


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
