"""Shared data of the benchmarks: the shared BEIR sets, their embeddings and splits.

No thread settings here: each benchmark chooses its own (``quality`` pins one
BLAS thread per worker; ``stage2`` compares one and two threads).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from era_sklearn.datasets import load_beir, load_embeddings, shared_dir
from era_sklearn.metrics import ndcg_at_k, qrels_to_matrix, recall_at_k

DATASETS = ("scifact", "nfcorpus")
DOC_ENCODERS = ("all-MiniLM-L6-v2", "m2v-mpnet-256")
N_ALIGN_DOCS = 1000
REFERENCES = ("cheap->cheap", "strong->strong")


@dataclass
class Data:
    name: str
    query_ids: list
    corpus_ids: list
    Q_strong: np.ndarray
    Q_cheap: np.ndarray
    D_strong: np.ndarray
    D_cheap: np.ndarray
    D_strong_n: np.ndarray
    D_cheap_n: np.ndarray
    qrels: dict  # split -> qrels


def _normalize(A):
    return A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-12)


def load(dataset, doc_encoder, query_encoder):
    strong = load_embeddings(None, query_encoder, dataset=dataset)
    cheap = load_embeddings(None, doc_encoder, dataset=dataset)
    assert strong.corpus_ids == cheap.corpus_ids and strong.query_ids == cheap.query_ids
    root = shared_dir() / "datasets" / dataset
    splits = [p.stem for p in sorted((root / "qrels").glob("*.tsv"))]
    qrels = {s: load_beir(root, split=s).qrels for s in splits}
    return Data(
        dataset, strong.query_ids, strong.corpus_ids, strong.queries, cheap.queries,
        strong.corpus, cheap.corpus, _normalize(strong.corpus), _normalize(cheap.corpus), qrels,
    )


# -- splits -----------------------------------------------------------------
def _query_rows(data, qids):
    index = {q: i for i, q in enumerate(data.query_ids)}
    return np.array([index[q] for q in qids if q in index], dtype=np.int64)


def _sub_qrels(qrels, rows, data):
    keep = {data.query_ids[r] for r in rows}
    return {q: d for q, d in qrels.items() if q in keep}


def align_sample(data, seed):
    """Row indices of the N_ALIGN_DOCS corpus documents that stage 1 sees for ``seed``."""
    return np.random.default_rng([seed, 0]).choice(len(data.corpus_ids), N_ALIGN_DOCS,
                                                   replace=False)


def official_splits(data, budgets, seed, nested=True):
    """[(label, n_train, train_qrels)], test_qrels for one seed.

    ``nested``: the budgets are prefixes of one permutation per seed (8 ⊂ 32 ⊂ ...);
    else each budget draws its own subset (seed sequence ``[seed, 1, n]``).
    """
    train = data.qrels["train"]
    train_ids = sorted(train)
    out = []
    for b in budgets:
        n = len(train_ids) if b == "all" else min(int(b), len(train_ids))
        order = np.random.default_rng([seed, 1] if nested else [seed, 1, n]).permutation(
            len(train_ids))
        # Sorted ids: the pair order must not depend on Python's string hashing
        # (the held-out selection of alpha/blend is sensitive to row order).
        chosen = sorted(train_ids[i] for i in order[:n])
        out.append((str(b), n, {q: train[q] for q in chosen}))
    return out, data.qrels["test"], None


# -- evaluation ---------------------------------------------------------------
class Evaluator:
    def __init__(self, data, test_qrels):
        self.rows = _query_rows(data, sorted(test_qrels))
        self.R = qrels_to_matrix(test_qrels, [data.query_ids[r] for r in self.rows],
                                 data.corpus_ids)
        self.data = data

    def __call__(self, Z, D_n):
        S = np.asarray(Z, dtype=np.float32) @ D_n.T
        return {"ndcg@10": float(ndcg_at_k(S, self.R, 10)),
                "recall@100": float(recall_at_k(S, self.R, 100))}


