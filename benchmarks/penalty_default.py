"""Where the default softmax penalty comes from: fixed ``C`` on *training* queries only.

``python -m benchmarks.penalty_default [--out DIR]``

The penalty rule (era_sklearn/_stage2/softmax_search.py) lands on a default ``C``
when held-out scores cannot tell the grid's values apart. That default may
not be read off test queries, so this study never touches them: for each
shared set and index, the train split's queries are split once per draw into
an *evaluation* part (``N_EVAL`` queries) and a pool; a budget of labelled
queries is drawn from the pool, ``ERAAdapter(adapt=Softmax(alpha=C / n))`` is
fitted for each ``C`` of the grid after the usual ``fit_align``, and scored
(nDCG@10) on the evaluation part. The table gives, per budget, the mean gain
of each ``C`` over stage 1 across sets, indexes and draws, and the best ``C``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from era_sklearn import Corpus, ERAAdapter
from era_sklearn.adapt import Softmax
from era_sklearn.datasets import qrels_to_pairs
from era_sklearn.metrics import ndcg_at_k, qrels_to_matrix

from ._data import DATASETS, DOC_ENCODERS, _query_rows, align_sample, load
from ._pool import run_tasks

QUERY_ENCODER = "all-mpnet-base-v2"
BUDGETS = (8, 16, 32, 64, 128)
GRID = (4, 8, 16, 32, 64)
N_EVAL = 300
DRAWS = 2
DEFAULT_OUT = Path(__file__).parent / "results" / "local"


def study(task):
    """Gains of each fixed C over stage 1, one set / index / draw, all budgets."""
    dataset, doc_encoder, draw = task
    data = load(dataset, doc_encoder, QUERY_ENCODER)
    train = data.qrels["train"]
    ids = sorted(set(train) & set(data.query_ids))
    order = np.random.default_rng([draw, 7]).permutation(len(ids))
    eval_ids, pool = [ids[i] for i in order[:N_EVAL]], [ids[i] for i in order[N_EVAL:]]
    rows = _query_rows(data, eval_ids)
    R = qrels_to_matrix({q: train[q] for q in eval_ids}, eval_ids, data.corpus_ids)
    docs = align_sample(data, draw)

    def score(adapter):
        S = adapter.transform(data.Q_strong[rows]) @ data.D_cheap_n.T
        return float(ndcg_at_k(S, R, 10))

    out = []
    with threadpool_limits(1, "blas"):
        aligned = ERAAdapter(random_state=draw).fit_align(data.D_strong[docs],
                                                          data.D_cheap[docs])
        base = score(aligned)
        for b in BUDGETS:
            labelled = {q: train[q] for q in pool[:b]}
            qi, di, g = qrels_to_pairs(labelled, data.query_ids, data.corpus_ids)
            n = len(np.unique(qi))
            gains = {}
            for C in GRID:
                adapter = ERAAdapter(adapt=Softmax(alpha=C / n), random_state=draw)
                adapter.fit_align(data.D_strong[docs], data.D_cheap[docs])
                adapter.fit(data.Q_strong[qi], data.D_cheap[di], sample_weight=g, groups=qi,
                            corpus=Corpus(data.D_cheap))
                gains[C] = score(adapter) - base
            out.append({"dataset": dataset, "doc_encoder": doc_encoder, "draw": draw,
                        "budget": b, "n_queries": n, "align_only": base, "gain": gains})
    return out


def summarise(rows):
    lines = ["| budget | " + " | ".join(f"C={C}" for C in GRID) + " | best C |",
             "|---" * (len(GRID) + 2) + "|"]
    best = {}
    for b in BUDGETS:
        mean = {C: float(np.mean([r["gain"][C] for r in rows if r["budget"] == b]))
                for C in GRID}
        best[b] = max(mean, key=mean.get)
        lines.append(f"| {b} | " + " | ".join(f"{mean[C]:+.4f}" for C in GRID) +
                     f" | {best[b]} |")
    return "\n".join(lines), best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=DRAWS)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    tasks = [(d, e, s) for d in DATASETS for e in DOC_ENCODERS for s in range(args.draws)]
    t0 = time.time()
    rows = [r for result in run_tasks(study, tasks, range(len(tasks)), args.jobs)
            for r in result]
    table, best = summarise(rows)
    text = (f"# Default penalty: fixed C on training queries only\n\n"
            f"Command: `python -m benchmarks.penalty_default --draws {args.draws}`; "
            f"{len(tasks)} set/index/draw runs, {N_EVAL} evaluation queries each (train split), "
            f"one BLAS thread per worker, {time.time() - t0:.0f} s.\n\n"
            f"Mean nDCG@10 gain of `Softmax(alpha=C / n)` over stage 1 (SciFact and NFCorpus, "
            f"MiniLM and m2v indexes, {args.draws} draws):\n\n{table}\n")
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "penalty_default.md").write_text(text)
    (args.out / "penalty_default.json").write_text(json.dumps(
        {"rows": rows, "best_C": best, "grid": GRID, "budgets": BUDGETS}, indent=1))


if __name__ == "__main__":
    main()
