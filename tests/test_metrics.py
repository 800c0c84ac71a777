"""Tests for era_sklearn.metrics."""

import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.model_selection import cross_val_score
from sklearn.preprocessing import FunctionTransformer, normalize

from era_sklearn.metrics import (
    make_retrieval_scorer,
    mrr,
    ndcg_at_k,
    qrels_to_matrix,
    ranking_score,
    recall_at_k,
    retrieval_score,
    top_k,
)


def _shared_dir():
    env = os.environ.get("ERA_SHARED_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"


def _read_qrels(path):
    """BEIR qrels TSV as ``{query_id: {doc_id: grade}}``, read without era_sklearn."""
    qrels = {}
    for line in path.read_text().splitlines()[1:]:
        query_id, doc_id, grade = line.split("\t")
        qrels.setdefault(query_id, {})[doc_id] = int(grade)
    return qrels


# ----------------------------------------------------------------------------
# Agreement with ir_measures and pytrec_eval on the real NFCorpus test qrels
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nfcorpus_run():
    """Real NFCorpus test qrels, doc ids and a seeded continuous score matrix."""
    shared = _shared_dir()
    qrels_path = shared / "datasets" / "nfcorpus" / "qrels" / "test.tsv"
    ids_path = shared / "embeddings" / "nfcorpus" / "corpus_ids.txt"
    if not (qrels_path.is_file() and ids_path.is_file()):
        pytest.skip(f"NFCorpus shared data not found under {shared} (set ERA_SHARED_DIR)")
    qrels = _read_qrels(qrels_path)
    doc_ids = ids_path.read_text().split()
    query_ids = sorted(qrels)
    # Continuous random scores: no ties, so trec_eval's docid tie-break is moot.
    scores = np.random.default_rng(0).random((len(query_ids), len(doc_ids)))
    run = {q: dict(zip(doc_ids, scores[i].tolist())) for i, q in enumerate(query_ids)}
    matrix = qrels_to_matrix(qrels, query_ids, doc_ids)
    return qrels, run, query_ids, scores, matrix


def _ours(scores, matrix):
    return {
        "ndcg10": ndcg_at_k(scores, matrix, k=10, average=False),
        "r100": recall_at_k(scores, matrix, k=100, average=False),
        "rr": mrr(scores, matrix, average=False),
    }


def test_agrees_with_ir_measures_on_nfcorpus(nfcorpus_run):
    ir_measures = pytest.importorskip("ir_measures")
    from ir_measures import RR, R, nDCG

    qrels, run, query_ids, scores, matrix = nfcorpus_run
    ours = _ours(scores, matrix)
    names = {str(nDCG @ 10): "ndcg10", str(R @ 100): "r100", str(RR): "rr"}
    row = {q: i for i, q in enumerate(query_ids)}
    n_checked = 0
    for m in ir_measures.iter_calc([nDCG @ 10, R @ 100, RR], qrels, run):
        assert ours[names[str(m.measure)]][row[m.query_id]] == pytest.approx(m.value, abs=1e-6)
        n_checked += 1
    assert n_checked == 3 * len(query_ids)


def test_agrees_with_pytrec_eval_on_nfcorpus(nfcorpus_run):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels, run, query_ids, scores, matrix = nfcorpus_run
    ours = _ours(scores, matrix)
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "recip_rank"})
    results = evaluator.evaluate(run)
    assert len(results) == len(query_ids)
    for i, q in enumerate(query_ids):
        assert ours["ndcg10"][i] == pytest.approx(results[q]["ndcg_cut_10"], abs=1e-6)
        assert ours["r100"][i] == pytest.approx(results[q]["recall_100"], abs=1e-6)
        assert ours["rr"][i] == pytest.approx(results[q]["recip_rank"], abs=1e-6)
    # Sanity: the mean is the mean of the per-query values, and random scores are poor.
    assert ndcg_at_k(scores, matrix) == pytest.approx(np.mean(ours["ndcg10"]))
    assert ndcg_at_k(scores, matrix) < 0.2


# ----------------------------------------------------------------------------
# Ranking metrics on hand-made cases
# ----------------------------------------------------------------------------


def test_ndcg_hand_computed():
    # Ranking d0, d1, d2 (k=3) has gains 0, 2, 0: DCG = 2 / log2(3).
    # Ideal ranking of the judged grades (2, 1): IDCG = 2 / log2(2) + 1 / log2(3).
    # nDCG = (2 / log2 3) / (2 + 1 / log2 3) = 2 / (2 log2 3 + 1) ~= 0.47963.
    scores = [[0.9, 0.8, 0.7, 0.6]]
    qrels = [[0, 2, 0, 1]]
    expected = 2 / (2 * math.log2(3) + 1)
    assert ndcg_at_k(scores, qrels, k=3) == pytest.approx(expected, abs=1e-12)
    assert ndcg_at_k(scores, qrels, k=3) == pytest.approx(0.47963, abs=1e-5)
    assert recall_at_k(scores, qrels, k=3) == 0.5
    assert mrr(scores, qrels) == 0.5


def test_dense_and_sparse_qrels_agree():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(20, 50))
    qrels = rng.integers(0, 3, size=(20, 50)) * (rng.random((20, 50)) < 0.1)
    for metric in (ndcg_at_k, recall_at_k, mrr):
        dense = metric(scores, qrels, average=False)
        sparse = metric(scores, sp.csr_matrix(qrels), average=False)
        np.testing.assert_allclose(dense, sparse)


def test_queries_without_relevant_docs_are_excluded():
    scores = [[0.9, 0.1], [0.9, 0.1], [0.1, 0.9]]
    qrels = [[1, 0], [0, 0], [1, 0]]
    per_query = mrr(scores, qrels, average=False)
    np.testing.assert_array_equal(per_query, [1.0, np.nan, 0.5])
    assert mrr(scores, qrels) == 0.75
    with pytest.warns(UndefinedMetricWarning):
        assert math.isnan(ndcg_at_k(scores, np.zeros((3, 2))))


def test_mrr_cutoff():
    scores = [[0.9, 0.8, 0.7]]
    qrels = [[0, 0, 1]]
    assert mrr(scores, qrels) == pytest.approx(1 / 3)
    assert mrr(scores, qrels, k=2) == 0.0


def test_ties_broken_by_lower_column_index():
    scores = [[0.5, 0.5, 0.5, 0.5]]
    indices, _ = top_k(scores, 2)
    np.testing.assert_array_equal(indices, [[0, 1]])
    # The relevant doc is the third of four tied docs: rank 3.
    assert mrr(scores, [[0, 0, 1, 0]]) == pytest.approx(1 / 3)
    assert recall_at_k(scores, [[0, 0, 1, 0]], k=2) == 0.0


def test_top_k_matches_stable_full_sort():
    # Small integer scores produce many ties, including across the cut at k.
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 5, size=(30, 40)).astype(float)
    for k in (1, 7, 40, 100):
        indices, values = top_k(scores, k)
        expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(indices, expected)
        np.testing.assert_array_equal(values, np.take_along_axis(scores, expected, axis=1))


def test_qrels_to_matrix_ignores_unknown_ids():
    qrels = {"q1": {"d1": 1, "zz": 2, "d3": 0}, "q9": {"d1": 1}}
    matrix = qrels_to_matrix(qrels, ["q1", "q2"], ["d1", "d2", "d3"])
    assert sp.issparse(matrix) and matrix.format == "csr"
    assert matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix.toarray(), [[1, 0, 0], [0, 0, 0]])


@pytest.mark.parametrize("metric", [ndcg_at_k, recall_at_k, mrr])
def test_ranking_metric_errors(metric):
    with pytest.raises(ValueError, match="same shape"):
        metric(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        metric([[np.nan, 1.0]], [[1, 0]])
    with pytest.raises(ValueError, match="k must be a positive integer"):
        metric([[0.0, 1.0]], [[1, 0]], k=0)


# ----------------------------------------------------------------------------
# retrieval_score and make_retrieval_scorer
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["ndcg", "mrr", "recall"])
def test_retrieval_score_perfect_and_permuted(metric):
    Y = np.random.default_rng(3).normal(size=(200, 16))
    assert retrieval_score(Y, Y, k=10, metric=metric) == pytest.approx(1.0)
    shuffled = Y[np.random.default_rng(4).permutation(200)]
    assert retrieval_score(shuffled, Y, k=10, metric=metric) < 0.2


def test_retrieval_score_groups_identical_query_rows():
    # One query q with two relevant docs: d1 at rank 1, d2 at rank 2.
    d1, d2 = [1.0, 0.0], [0.0, 1.0]
    q = [1.0, 0.1]
    Q, Y = np.array([q, q]), np.array([d1, d2])
    # As ONE query, the first relevant doc is at rank 1.
    assert retrieval_score(Q, Y, k=2, metric="mrr") == 1.0
    assert retrieval_score(Q, Y, groups=["a", "a"], k=2, metric="mrr") == 1.0
    # As two queries, the row paired with d2 has its hit at rank 2: (1 + 1/2) / 2.
    assert retrieval_score(Q, Y, groups=[0, 1], k=2, metric="mrr") == 0.75


def test_retrieval_score_with_corpus_matches_explicit_metrics():
    rng = np.random.default_rng(5)
    corpus = rng.normal(size=(60, 8))
    doc_of_row = rng.integers(0, 60, size=40)
    Y = 3.0 * corpus[doc_of_row]  # scaled: still matched to its corpus row by cosine
    Q = rng.normal(size=(40, 8))
    scores = normalize(Q) @ normalize(corpus).T
    qrels = np.zeros((40, 60))
    qrels[np.arange(40), doc_of_row] = 1
    assert retrieval_score(Q, Y, corpus=corpus, groups=np.arange(40), k=5) == pytest.approx(
        ndcg_at_k(scores, qrels, k=5)
    )
    assert retrieval_score(Q, Y, corpus=corpus, k=5, metric="recall") == pytest.approx(
        recall_at_k(scores, qrels, k=5)
    )
    assert retrieval_score(Y, Y, corpus=corpus, k=1) == 1.0


def test_retrieval_score_zero_rows_give_no_nan():
    Y = np.eye(3)
    Q = np.vstack([np.zeros(3), Y[1:]])
    value = retrieval_score(Q, Y, k=3, metric="mrr")
    assert np.isfinite(value)
    assert value < 1.0


def test_retrieval_score_errors():
    Y = np.eye(3)
    with pytest.raises(ValueError, match="same number of rows"):
        retrieval_score(Y[:2], Y)
    with pytest.raises(ValueError, match="same width"):
        retrieval_score(Y[:, :2], Y)
    with pytest.raises(ValueError, match="corpus must have the same width"):
        retrieval_score(Y, Y, corpus=np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        retrieval_score(np.full((3, 3), np.nan), Y)
    with pytest.raises(ValueError, match="metric must be one of"):
        retrieval_score(Y, Y, metric="map")
    with pytest.raises(ValueError, match="groups must have"):
        retrieval_score(Y, Y, groups=[0, 1])


def test_make_retrieval_scorer_in_cross_val_score():
    rng = np.random.default_rng(6)
    corpus = rng.normal(size=(30, 6))
    X = corpus[rng.integers(0, 30, size=60)]
    scorer = make_retrieval_scorer(corpus, k=5)
    identity = cross_val_score(FunctionTransformer(), X, X, scoring=scorer, cv=3)
    np.testing.assert_allclose(identity, 1.0)
    flipped = cross_val_score(FunctionTransformer(np.negative), X, X, scoring=scorer, cv=3)
    assert np.all(flipped < 0.5)
    # Picklable, so it works with n_jobs > 1.
    assert pickle.loads(pickle.dumps(scorer)).k == 5
    with pytest.raises(ValueError, match="metric must be one of"):
        make_retrieval_scorer(corpus, metric="map")


# ----------------------------------------------------------------------------
# ranking_score: ranked results (ids, optionally scores) of a real SciFact run
# ----------------------------------------------------------------------------

#: (metric, k, the dense function, the ir_measures measure's name)
RANKED_CASES = [("ndcg", 10, ndcg_at_k, "nDCG@10"), ("recall", 100, recall_at_k, "R@100"),
                ("mrr", 10, mrr, "RR@10"), ("mrr", None, mrr, "RR")]


@pytest.fixture(scope="module")
def scifact_run():
    """SciFact test queries against the corpus, both by all-MiniLM-L6-v2 (the shared files)."""
    shared = _shared_dir()
    emb = shared / "embeddings" / "scifact"
    qrels_path = shared / "datasets" / "scifact" / "qrels" / "test.tsv"
    if not (qrels_path.is_file() and (emb / "all-MiniLM-L6-v2" / "queries.npy").is_file()):
        pytest.skip(f"SciFact shared data not found under {shared} (set ERA_SHARED_DIR)")
    qrels = _read_qrels(qrels_path)
    doc_ids = np.array((emb / "corpus_ids.txt").read_text().split())
    all_query_ids = (emb / "query_ids.txt").read_text().split()
    rows = [i for i, q in enumerate(all_query_ids) if q in qrels]
    queries = np.load(emb / "all-MiniLM-L6-v2" / "queries.npy")[rows]
    corpus = np.load(emb / "all-MiniLM-L6-v2" / "corpus.npy")
    scores = normalize(queries) @ normalize(corpus).T  # float32 cosine similarities
    query_ids = [all_query_ids[i] for i in rows]
    return qrels, query_ids, doc_ids, scores, qrels_to_matrix(qrels, query_ids, doc_ids)


@pytest.mark.parametrize("decimals", [None, 2])
def test_ranking_score_equals_dense_path_on_its_top_k(scifact_run, decimals):
    # decimals=2 rounds the scores: many ties, which the dense path breaks by the
    # lower column; its own top-k list carries that order (no scores are passed).
    qrels, query_ids, doc_ids, scores, matrix = scifact_run
    if decimals is not None:
        scores = scores.round(decimals)
        assert (np.diff(np.sort(scores[:, :500], axis=1), axis=1) == 0).mean() > 0.5
    for metric, k, dense_metric, _ in RANKED_CASES:
        dense = dense_metric(scores, matrix, k=k, average=False)
        columns, _ = top_k(scores, k or 100)
        by_column = ranking_score(columns, matrix, k=k, metric=metric, average=False)
        by_id = ranking_score(doc_ids[columns], qrels, query_ids=query_ids, k=k,
                              metric=metric, average=False)
        if k is None:  # RR over the whole ranking: equal where the first hit is in the top 100
            found = by_column > 0
            assert found.mean() > 0.9
            dense, by_column, by_id = dense[found], by_column[found], by_id[found]
        np.testing.assert_allclose(by_column, dense, rtol=0, atol=1e-6)
        np.testing.assert_allclose(by_id, dense, rtol=0, atol=1e-6)
    assert 0.5 < ranking_score(columns[:, :10], matrix) < 0.8  # MiniLM's SciFact nDCG@10


@pytest.mark.parametrize("decimals", [None, 2])
def test_ranking_score_equals_ir_measures_on_scifact_run(scifact_run, decimals):
    ir_measures = pytest.importorskip("ir_measures")
    qrels, query_ids, doc_ids, scores, _ = scifact_run
    columns, values = top_k(scores, 100)
    values = values.astype(np.float64)
    if decimals is not None:  # ties, which ir_measures breaks by decreasing document id
        values = values.round(decimals)
        assert (np.diff(values, axis=1) == 0).mean() > 0.5
    ids = doc_ids[columns]
    # The order given does not matter when scores are given: shuffle each row.
    shuffle = np.random.default_rng(0).permuted(np.tile(np.arange(100), (len(ids), 1)), axis=1)
    ids, values = (np.take_along_axis(a, shuffle, axis=1) for a in (ids, values))
    run = {q: dict(zip(ids[i].tolist(), values[i].tolist())) for i, q in enumerate(query_ids)}
    row = {q: i for i, q in enumerate(query_ids)}

    def theirs_of(measure):
        values = np.full(len(query_ids), np.nan)
        for m in ir_measures.iter_calc([ir_measures.parse_measure(measure)], qrels, run):
            values[row[m.query_id]] = m.value
        assert not np.isnan(values).any()
        return values

    for metric, k, _, measure in RANKED_CASES:
        ours = ranking_score(ids, qrels, scores=values, query_ids=query_ids, k=k,
                             metric=metric, average=False)
        if measure == "RR@10" and decimals is not None:
            # ir_measures computes RR@k with the MS MARCO script, which breaks ties by
            # increasing id (trec_eval, its provider of nDCG@k, R@k and RR: decreasing).
            # Under trec_eval's order, RR@k is RR where the first hit is within rank k.
            rr = theirs_of("RR")
            theirs = np.where(rr >= 1 / k, rr, 0.0)
        else:
            theirs = theirs_of(measure)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
        assert ranking_score(ids, qrels, scores=values, query_ids=query_ids, k=k,
                             metric=metric) == pytest.approx(theirs.mean(), abs=1e-6)


def test_ranking_score_hand_computed_and_ragged():
    qrels = {"q1": {"a": 2, "b": 1, "z": 0}, "q2": {"c": 1}, "q3": {"x": -1}}
    ids = [["b", "x", "a"], ["c"], ["a", "b"]]  # rows of different lengths
    # q1: gains 1, 0, 2 -> DCG = 1 + 2 / log2(4) = 2; ideal 2 + 1 / log2(3).
    expected = [2 / (2 + 1 / math.log2(3)), 1.0, np.nan]
    got = ranking_score(ids, qrels, query_ids=["q1", "q2", "q3"], k=3, average=False)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert ranking_score(ids, qrels, query_ids=["q1", "q2", "q3"], k=3) == pytest.approx(
        np.nanmean(expected), abs=1e-12)
    # Recall@1 of q1: one of its two relevant documents is ranked first.
    assert ranking_score(ids[:1], qrels, query_ids=["q1"], k=1, metric="recall") == 0.5
    # A row shorter than k: its missing ranks are simply not relevant.
    assert ranking_score([["x", "c"]], qrels, query_ids=["q2"], k=10, metric="mrr") == 0.5
    # Integer document ids match string ids of the same text.
    assert ranking_score([[7, 3]], {"q": {"3": 1}}, query_ids=["q"], metric="mrr") == 0.5


def test_ranking_score_ties_by_decreasing_id_as_trec_eval():
    # Scores rank a row whatever order it arrives in; equal scores put the greater
    # string first ("9" > "10" > "1"), as trec_eval does.
    qrels = {"q": {"1": 1}}
    tied = ranking_score([["1", "10", "9"]], qrels, query_ids=["q"], scores=[[1.0, 1.0, 1.0]],
                         metric="mrr")
    assert tied == 1 / 3
    ranked = ranking_score([["9", "1", "10"]], qrels, query_ids=["q"], scores=[[0.1, 0.2, 0.9]],
                           metric="mrr")
    assert ranked == 0.5
    # Without scores, the given order is the ranking.
    assert ranking_score([["1", "10", "9"]], qrels, query_ids=["q"], metric="mrr") == 1.0
    assert ranking_score([["9", "1", "10"]], qrels, query_ids=["q"], metric="mrr") == 0.5


def test_ranking_score_relevance_matrix_forms_agree():
    rng = np.random.default_rng(7)
    grades = rng.integers(0, 3, size=(12, 30)) * (rng.random((12, 30)) < 0.2)
    grades[0] = 0  # a query without relevant documents
    columns = np.argsort(-rng.random((12, 30)), axis=1)[:, :8]
    for metric in ("ndcg", "recall", "mrr"):
        dense = ranking_score(columns, grades, metric=metric, k=5, average=False)
        sparse = ranking_score(columns, sp.csr_matrix(grades), metric=metric, k=5, average=False)
        np.testing.assert_array_equal(dense, sparse)
        assert np.isnan(dense[0]) and not np.isnan(dense[1:]).any()


def test_ranking_score_errors():
    qrels = {"q": {"a": 1}}
    with pytest.raises(ValueError, match="query_ids is required"):
        ranking_score([["a"]], qrels)
    with pytest.raises(ValueError, match="query_ids has 2 entries but ids has 1 rows"):
        ranking_score([["a"]], qrels, query_ids=["q", "r"])
    with pytest.raises(ValueError, match="query_ids is only used with a qrels dict"):
        ranking_score([[0]], [[1, 0]], query_ids=["q"])
    with pytest.raises(ValueError, match="lists document 'a' more than once"):
        ranking_score([["a", "b", "a"]], qrels, query_ids=["q"])
    with pytest.raises(ValueError, match="scores contains NaN"):
        ranking_score([["a", "b"]], qrels, query_ids=["q"], scores=[[np.nan, 1.0]])
    with pytest.raises(ValueError, match="one score per id"):
        ranking_score([["a", "b"]], qrels, query_ids=["q"], scores=[[1.0]])
    with pytest.raises(ValueError, match=r"ids\[0\] must be a 1-D sequence.*\[ids\]"):
        ranking_score(["a", "b"], qrels, query_ids=["q"])
    with pytest.raises(ValueError, match="column positions .ints.; got 'a'"):
        ranking_score([["a"]], [[1, 0]])
    with pytest.raises(ValueError, match="column -1, outside qrels' 0 .. 1.*FAISS"):
        ranking_score([[0, -1]], [[1, 0]])
    with pytest.raises(ValueError, match="qrels has 1 rows but ids has 2"):
        ranking_score([[0], [1]], [[1, 0]])
    with pytest.raises(TypeError, match=r"qrels\[.q.\] must be a \{doc_id: grade\} dict"):
        ranking_score([["a"]], {"q": ["a"]}, query_ids=["q"])
    with pytest.raises(ValueError, match="grade that is not a number"):
        ranking_score([["a"]], {"q": {"a": "high"}}, query_ids=["q"])
    with pytest.raises(ValueError, match="k must be a positive integer"):
        ranking_score([["a"]], qrels, query_ids=["q"], k=None)  # None is for mrr only
    with pytest.raises(ValueError, match="metric must be one of"):
        ranking_score([["a"]], qrels, query_ids=["q"], metric="map")
    with pytest.warns(UndefinedMetricWarning, match="No query has a relevant document"):
        assert math.isnan(ranking_score([["a"]], qrels, query_ids=["other"]))


def test_ranking_score_warns_when_ids_are_of_another_kind():
    # Row positions scored against document ids: nothing can match.
    qrels = {"q1": {"doc3": 1}, "q2": {"doc8": 1}}
    with pytest.warns(UserWarning, match="None of the 4 ranked ids is a judged") as caught:
        assert ranking_score([[3, 1], [8, 0]], qrels, query_ids=["q1", "q2"]) == 0.0
    assert caught[0].filename == __file__  # the warning points at the caller
