"""Stage 2 of ERAAdapter() (the softmax solver): stability over seeds, and speed.

With the data fixed (the same 1,000 alignment documents, every official training
query), for each set and document encoder:

* **Stability**: ``ERAAdapter(random_state=rs)`` for rs = 0..4, ``corpus=`` given;
  test nDCG@10 of each, their mean and standard deviation.
* **Speed**: ``fit_align`` + ``fit`` (the choice of ``alpha`` included), ``corpus=``
  given, ``random_state=0``; the median of ``--repeats`` runs at one BLAS thread and
  at two (threadpoolctl), and of the hybrid (``hybrid=True``, the choice of blend
  included) at one thread, rounds alternating so that load on this shared machine
  hits all alike; then one ``adapt="contrastive"`` fit at one thread, for the ratio
  (skipped without the torch extra).

Usage::

    python -m benchmarks.stage2                       # scifact + nfcorpus, MiniLM + m2v
    python -m benchmarks.stage2 --datasets scifact --doc-encoders all-MiniLM-L6-v2

Writes ``stage2.{md,json}`` to ``--out`` (default: the ignored
``benchmarks/results/local``; ``--out benchmarks/results`` for the docs).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import era_sklearn
from era_sklearn import Corpus, ERAAdapter
from era_sklearn.datasets import qrels_to_pairs

from ._data import DATASETS, DOC_ENCODERS, N_ALIGN_DOCS, Evaluator, load

SEEDS = (0, 1, 2, 3, 4)
TARGETS = {"std": 0.005, "scifact_s": 4.0, "nfcorpus_s": 30.0}


def fixed_problem(data):
    """The alignment sample (seed 0) and every official training pair."""
    align = np.random.default_rng([0, 0]).choice(len(data.corpus_ids), N_ALIGN_DOCS,
                                                 replace=False)
    train = {q: data.qrels["train"][q] for q in sorted(data.qrels["train"])}
    qi, di, grades = qrels_to_pairs(train, data.query_ids, data.corpus_ids)
    return align, (qi, di, grades)


def fit(data, align, pairs, **params):
    qi, di, grades = pairs
    adapter = ERAAdapter(**params)
    hybrid = params.get("hybrid", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adapter.fit_align(queries_of(data.D_strong, data.D_cheap, align, hybrid),
                          data.D_cheap[align])
        adapter.fit(queries_of(data.Q_strong, data.Q_cheap, qi, hybrid), data.D_cheap[di],
                    sample_weight=grades, groups=qi, corpus=Corpus(data.D_cheap))
    return adapter


def queries_of(strong, cheap, rows, hybrid):
    return np.hstack([strong[rows], cheap[rows]]) if hybrid else strong[rows]


def timed(func):
    t0 = time.perf_counter()
    func()
    return time.perf_counter() - t0


def run_pair(dataset, doc_encoder, repeats, log, with_contrastive=True):
    data = load(dataset, doc_encoder, "all-mpnet-base-v2")
    align, pairs = fixed_problem(data)
    ev = Evaluator(data, data.qrels["test"])
    queries = data.Q_strong[ev.rows]
    stability = []
    for rs in SEEDS:
        adapter = fit(data, align, pairs, random_state=rs)
        stability.append(ev(adapter.transform(queries), data.D_cheap_n)["ndcg@10"])
        log(f"  {dataset}/{doc_encoder} random_state={rs}: nDCG@10 {stability[-1]:.4f} "
            f"(penalty {adapter.penalty_:.3g})")
    times = {1: [], 2: [], "hybrid": []}
    for _ in range(repeats):
        for threads in (1, 2):
            with threadpool_limits(threads):
                times[threads].append(timed(lambda: fit(data, align, pairs, random_state=0)))
        with threadpool_limits(1):
            times["hybrid"].append(timed(lambda: fit(data, align, pairs, hybrid=True,
                                                     random_state=0)))
    contrastive = float("nan")
    if with_contrastive and importlib.util.find_spec("torch") is not None:
        with threadpool_limits(1):
            contrastive = timed(lambda: fit(data, align, pairs, adapt="contrastive",
                                            random_state=0))
    median = {t: float(np.median(v)) for t, v in times.items()}
    hybrid = fit(data, align, pairs, hybrid=True, random_state=0)
    hybrid_ndcg = ev(hybrid.transform(queries_of(data.Q_strong, data.Q_cheap, ev.rows, True)),
                     data.D_cheap_n)["ndcg@10"]
    log(f"  {dataset}/{doc_encoder}: median fit {median[1]:.2f} s (1 thread), "
        f"{median[2]:.2f} s (2 threads), hybrid {median['hybrid']:.2f} s (1 thread, blend "
        f"{hybrid.blend_:g}, nDCG@10 {hybrid_ndcg:.4f}); contrastive {contrastive:.1f} s")
    return {
        "dataset": dataset, "doc_encoder": doc_encoder,
        "n_train_queries": len(np.unique(pairs[0])), "n_docs": len(data.corpus_ids),
        "stability_ndcg@10": dict(zip(map(str, SEEDS), stability)),
        "stability_mean": float(np.mean(stability)), "stability_std": float(np.std(stability)),
        "seconds": {str(t): v for t, v in times.items()},
        "median_s": {str(t): v for t, v in median.items()},
        "hybrid_blend": hybrid.blend_, "hybrid_ndcg@10": hybrid_ndcg,
        "ratio_hybrid_to_plain_1_thread": median["hybrid"] / median[1],
        "contrastive_s_1_thread": contrastive,
        "ratio_contrastive_to_softmax": contrastive / median[1],
    }


def markdown(rows, meta):
    lines = [
        "# Stage 2 (softmax default): stability and speed", "",
        f"Command: `{meta['command']}`  ",
        (f"Date: {meta['date']}; era-sklearn {meta['version']}; BLAS: {meta['blas']}; "
        f"wall time {meta['wall_s']:.0f} s."), "",
        ("Data fixed: 1,000 alignment documents (seed 0) and every official training query; "
        "nDCG@10 on the official test queries over the whole corpus. Times: `fit_align` + "
        "`fit` with `corpus=` (the choice of `alpha` included), median of "
        f"{meta['repeats']} alternating rounds per thread count, on this shared 2-core "
        f"machine (load average at start {meta['load_start']}, at end {meta['load_end']})."),
        "",
        ("| set / index | nDCG@10 rs 0..4 | std (target <= 0.005) | fit 1 thread | "
        "fit 2 threads | 2 / 1 | hybrid (1 thread) | hybrid / plain (target <= 1.5) | "
        "contrastive (1 thread) | contrastive / softmax |"),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["stability_ndcg@10"]
        m = r["median_s"]
        lines.append(
            f"| {r['dataset']} / {r['doc_encoder']} | {' '.join(f'{v:.4f}' for v in s.values())}"
            f" | {r['stability_std']:.4f} | {m['1']:.2f} s | {m['2']:.2f} s | "
            f"{m['2'] / m['1']:.2f} | {m['hybrid']:.2f} s (blend {r['hybrid_blend']:g}) | "
            f"{r['ratio_hybrid_to_plain_1_thread']:.2f} | {_contrastive_cells(r)} |")
    return "\n".join(lines) + "\n"


def _contrastive_cells(row):
    if np.isnan(row["contrastive_s_1_thread"]):
        return "skipped | -"
    return (f"{row['contrastive_s_1_thread']:.1f} s | "
            f"{row['ratio_contrastive_to_softmax']:.1f}x")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    p.add_argument("--doc-encoders", nargs="+", choices=DOC_ENCODERS, default=list(DOC_ENCODERS))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-contrastive", action="store_true",
                   help="skip the contrastive fit (NFCorpus: about 200 s per index)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/local"))
    args = p.parse_args(argv)
    log = lambda s: print(s, file=sys.stderr, flush=True)
    t0, load_start = time.perf_counter(), os.getloadavg()[0]
    rows = []
    for d in args.datasets:
        for e in args.doc_encoders:
            rows.append(run_pair(d, e, args.repeats, log, not args.no_contrastive))
            write(args, rows, t0, load_start)  # after every pair: a stopped run keeps its rows


def write(args, rows, t0, load_start):
    blas = "; ".join(f"{i['internal_api']} {i.get('version')} ({i['num_threads']} threads by "
                     "default)" for i in threadpool_info() if i["user_api"] == "blas")
    meta = {"command": "python -m benchmarks.stage2 " + " ".join(map(shlex.quote, sys.argv[1:])),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "version": era_sklearn.__version__, "blas": blas, "repeats": args.repeats,
            "wall_s": time.perf_counter() - t0, "load_start": round(load_start, 1),
            "load_end": round(os.getloadavg()[0], 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    md = markdown(rows, meta)
    (args.out / "stage2.md").write_text(md, encoding="utf-8")
    (args.out / "stage2.json").write_text(json.dumps({**meta, "rows": rows}, indent=1),
                                          encoding="utf-8")
    print(md)


if __name__ == "__main__":
    main()
