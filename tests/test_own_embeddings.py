"""docs/own_embeddings.md runs as a test: embedding files on disk to a scored HNSW search.

Its ``python`` blocks run in order in one namespace, in a temporary working directory
(the page saves its adapter and index there), on the shared SciFact files.
"""

import numpy as np
import pytest
from sklearn.preprocessing import normalize
from test_docs import python_blocks

from era_sklearn.datasets import shared_dir
from era_sklearn.metrics import ndcg_at_k, qrels_to_matrix, ranking_score

PAGE = "own_embeddings.md"


def test_own_embeddings_page_runs(monkeypatch, tmp_path):
    try:
        root = shared_dir()
    except FileNotFoundError as exc:
        pytest.skip(f"shared data absent: {exc}")
    if not (root / "embeddings" / "scifact" / "all-mpnet-base-v2" / "corpus.npy").exists():
        pytest.skip(f"SciFact embeddings absent under {root}")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "docs_own_embeddings"}
    blocks = python_blocks(PAGE)
    assert len(blocks) == 4
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/{PAGE}[python block {i}]", "exec"), namespace)  # noqa: S102

    # What the page says, checked on what it computed.
    ns = namespace
    assert sorted(p.name for p in (tmp_path / "era-scifact").iterdir()) == [
        "adapter.safetensors", "index"]
    assert list(tmp_path.iterdir()) == [tmp_path / "era-scifact"]  # nothing written elsewhere
    assert ns["adapter"].penalty_ < np.inf  # stage 2 moved the map: the labels were used
    ndcg = {name: ranking_score(ids, ns["test"].qrels, scores=scores, query_ids=ns["test_ids"])
            for name, (scores, ids) in ns["runs"].items()}
    assert ndcg["strong encoder, adapted"] > ndcg["cheap encoder alone"] + 0.02

    # The HNSW run scores as exact search does, up to the few documents HNSW misses
    # (none on this run with hnswlib 0.8): the dense metric against every document.
    Q = ns["adapter"].transform(ns["strong"].queries[ns["rows"]])
    qrels = qrels_to_matrix(ns["test"].qrels, ns["test_ids"], ns["cheap"].corpus_ids)
    exact = ndcg_at_k(Q @ normalize(ns["D"]).T, qrels, k=10)
    assert ndcg["strong encoder, adapted"] == pytest.approx(exact, abs=0.01)
