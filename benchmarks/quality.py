"""Retrieval quality of ERA adapters on real data: the package's main benchmark.

Reproduces ERA's experiment: queries are embedded by a strong encoder
(all-mpnet-base-v2), documents were indexed once by a cheap encoder
(all-MiniLM-L6-v2 or m2v-mpnet-256) and are never re-embedded; an adapter maps
the strong query embeddings into the cheap document space. Every test query
ranks the FULL corpus (cheap encoder, L2-normalised) by cosine with
``adapter.transform(query)``; nDCG@10 and recall@100 against the graded qrels.

Rows: references (``cheap->cheap``: cheap encoder on the queries too;
``strong->strong``: re-index the corpus with the query encoder), align-only
(0 labels, 1,000 corpus documents embedded by both encoders, sampled per seed),
label-only, ERA (align then train) and hybrid (``[strong(q), cheap(q)]`` input).
Columns: number of labelled training queries (0 = fit_align alone).

Protocols: ``official`` (default) samples 8/32/128/all training queries per
seed from the official train split and tests on the official test split;
``paper`` follows ERA: all queries with qrels (every split) are shuffled per
seed into 50% test, 10% validation and a training pool from which 10/20/40%
of all queries are labelled. The validation part is held out and UNUSED:
``alpha="auto"`` selects on folds of the training queries and the torch
trainers early-stop on their own internal ``validation_fraction``.

Usage::

    python -m benchmarks.quality                       # scifact, MiniLM, official, seeds 0 1 2
    python -m benchmarks.quality --dataset nfcorpus --doc-encoder m2v-mpnet-256
    python -m benchmarks.quality --methods all         # every row (slower)
    python -m benchmarks.quality --all                 # the four data set x encoder runs
"""

from __future__ import annotations

import os

# OpenBLAS / OpenMP threads thrash on a loaded 2-core machine; respect the caller's choice.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import datetime
import json
import shlex
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np

import era_sklearn
from era_sklearn.datasets import qrels_to_pairs

from . import _quality_methods as qm
from ._data import (
    DATASETS,
    DOC_ENCODERS,
    N_ALIGN_DOCS,
    REFERENCES,
    Evaluator,
    _normalize,
    align_sample,
    load,
    official_splits,
)
from ._pool import run_tasks

PAPER_RATIOS = (0.1, 0.2, 0.4)


def paper_splits(data, ratios, seed):
    """ERA's protocol: all judged queries -> 50% test, 10% validation (unused), ratio train."""
    merged = {}
    for split in sorted(data.qrels):
        for q, docs in data.qrels[split].items():
            merged.setdefault(q, {}).update(docs)
    ids = sorted(q for q in merged if q in set(data.query_ids))
    order = [ids[i] for i in np.random.default_rng([seed, 2]).permutation(len(ids))]
    n = len(ids)
    n_test, n_val = n // 2, n // 10
    test = order[:n_test]
    pool = order[n_test + n_val:]
    out = []
    for r in ratios:
        k = min(round(r * n), len(pool))
        out.append((f"{round(100 * r)}%", k, {q: merged[q] for q in pool[:k]}))
    return out, {q: merged[q] for q in test}, {"n_queries": n, "n_test": n_test,
                                                 "n_validation_unused": n_val,
                                                 "n_train_pool": len(pool)}


def references(data, ev):
    return {
        "cheap->cheap": ev(_normalize(data.Q_cheap[ev.rows]), data.D_cheap_n),
        "strong->strong": ev(_normalize(data.Q_strong[ev.rows]), data.D_strong_n),
    }


# -- one run --------------------------------------------------------------------
_DATA = {}


def _data(dataset, doc_encoder, query_encoder):
    key = (dataset, doc_encoder, query_encoder)
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = load(dataset, doc_encoder, query_encoder)
    return _DATA[key]


def _splits(data, protocol, budgets, seed):
    if protocol == "paper":
        return paper_splits(data, PAPER_RATIOS, seed)
    return official_splits(data, budgets, seed)


def _fit_cell(task):
    """One (seed, method, column) fit and its test scores; runs in a worker."""
    (dataset, doc_encoder, query_encoder, protocol, budgets, seed, name, label) = task
    data = _data(dataset, doc_encoder, query_encoder)
    m = qm.BY_NAME[name]
    cells, test_qrels, _ = _splits(data, protocol, budgets, seed)
    train_qrels = None if label == "0" else {lab: tq for lab, _, tq in cells}[label]
    ev = Evaluator(data, test_qrels)
    align_docs = align_sample(data, seed)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adapter = qm.align_adapter(m, data, align_docs, seed)
        if train_qrels is not None:
            pairs = qrels_to_pairs(train_qrels, data.query_ids, data.corpus_ids)
            qm.fit_labels(adapter, m, data, pairs, seed)
    dt = time.perf_counter() - t0
    scores = ev(adapter.transform(qm.queries_of(data, ev.rows, m.hybrid)), data.D_cheap_n)
    scores["fit_s"] = dt
    scores.update(qm.fitted_choices(adapter))
    history = getattr(adapter, "history_", None) or {}
    if "epochs" in history:
        scores["epochs"] = len(history["epochs"]) - 1  # epoch 0 is the start
    return {"seed": seed, **scores}


def run_one(dataset, doc_encoder, query_encoder, seeds, budgets, methods, protocol, log, jobs):
    data = _data(dataset, doc_encoder, query_encoder)
    columns = ["0"]
    refs, n_labelled, split_info, tasks = {}, {"0": 0}, {}, []
    for seed in seeds:
        cells, test_qrels, info = _splits(data, protocol, budgets, seed)
        if info:
            split_info[seed] = info
        for label, n, _ in cells:
            if label not in columns:
                columns.append(label)
            n_labelled.setdefault(label, []).append(n)
        ev = Evaluator(data, test_qrels)
        for name, scores in references(data, ev).items():
            refs.setdefault(name, []).append(scores)
        for m in methods:
            labels = (["0"] if m.align else []) + ([c[0] for c in cells] if m.labels else [])
            tasks += [(dataset, doc_encoder, query_encoder, protocol, budgets, seed, m.name, lab)
                      for lab in labels]
    # Longest fits first (labelled columns, hybrid, torch) so two workers finish together.
    cost = {"all": 4, "40%": 4, "128": 3, "20%": 3, "32": 2, "10%": 2, "8": 1, "0": 0}
    order = sorted(range(len(tasks)), key=lambda i: -(
        cost.get(tasks[i][-1], 1) * (3 if qm.BY_NAME[tasks[i][-2]].hybrid else 1)))
    out = run_tasks(_fit_cell, tasks, order, jobs, lambda task, scores: _log_cell(log, task, scores))
    results = {m.name: {} for m in methods}
    fit_times = {m.name: [] for m in methods}
    for task, scores in zip(tasks, out):
        name, label = task[-2], task[-1]
        results[name].setdefault(label, []).append(scores)
        if label != "0" or not qm.BY_NAME[name].labels:
            fit_times[name].append(scores["fit_s"])
    for res in results.values():
        for label in res:
            res[label].sort(key=lambda r: r["seed"])
    n_labelled = {k: (v if k == "0" else int(np.mean(v))) for k, v in n_labelled.items()}
    return {
        "columns": columns, "results": results, "references": refs,
        "fit_times": fit_times, "n_labelled": n_labelled, "split_info": split_info,
        "n_test_queries": len(ev.rows),
    }


def _log_cell(log, task, scores):
    log(f"  seed {task[5]} {task[6]:34s} {task[7]:>4s}  nDCG@10 {scores['ndcg@10']:.4f}"
        f"  R@100 {scores['recall@100']:.4f}  {scores['fit_s']:6.1f}s")


# -- reporting ----------------------------------------------------------------------
def _mean_std(values):
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _fmt(values):
    m, s = _mean_std(values)
    return f"{m:.4f} ± {s:.4f}"


def table(run, methods, metric):
    cols = run["columns"]
    head = ["method", *[f"{c} ({run['n_labelled'][c]})" if c.endswith("%") else c for c in cols],
            "fit s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in REFERENCES:
        cells = [_fmt([r[metric] for r in run["references"][name]])] + ["" for _ in cols[1:]]
        lines.append(f"| {name} (reference) | " + " | ".join(cells) + " | - |")
    for m in methods:
        res = run["results"][m.name]
        cells = [_fmt([r[metric] for r in res[c]]) if c in res else "-" for c in cols]
        ft = run["fit_times"][m.name]
        lines.append(f"| {m.name} | " + " | ".join(cells) + f" | {np.mean(ft):.1f} |")
    return "\n".join(lines)


def plot(run, methods, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = run["columns"]
    xs = {c: max(run["n_labelled"][c], 1) if c != "0" else 1 for c in cols}
    fig, ax = plt.subplots(figsize=(8, 5.5))
    # tab20 plus a marker per method: the default 10-colour cycle repeats
    # colours once more than 10 methods are drawn.
    colors = plt.get_cmap("tab20").colors
    markers = "osD^vP*Xph<>"
    for i, name in enumerate(REFERENCES):
        m, _ = _mean_std([r["ndcg@10"] for r in run["references"][name]])
        ax.axhline(m, ls="--", color=("0.4", "0.1")[i % 2], label=f"{name} (reference)")
    for i, m in enumerate(methods):
        res = run["results"][m.name]
        pts = [(xs[c], *_mean_std([r["ndcg@10"] for r in res[c]])) for c in cols if c in res]
        color, marker = colors[(2 * i) % 20 + (2 * i) // 20], markers[i % len(markers)]
        if not m.labels:  # 0-label method: flat dotted line across the budgets
            ax.axhline(pts[0][1], ls=":", color=color, lw=1)
        x, y, e = zip(*pts)
        ax.errorbar(x, y, yerr=e, marker=marker, capsize=3, color=color,
                    ls="-" if m.labels else "none", label=m.name)
    ax.set_xscale("log")
    ax.set_xticks(sorted(set(xs.values())))
    ax.set_xticklabels([("0" if c == "0" else f"{c}\n({run['n_labelled'][c]})"
                         if c in ("all",) or c.endswith("%") else c)
                        for c in sorted(cols, key=lambda c: xs[c])])
    ax.set_xlabel("labelled training queries (log scale; 0 = fit_align only)")
    ax.set_ylabel("nDCG@10 (test)")
    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


#: Issue 10's quality targets for ERAAdapter() defaults with all labels, by (set, index).
ALL_LABEL_TARGETS = {
    ("scifact", "all-MiniLM-L6-v2"): {"corpus": 0.785, "no corpus": 0.765, "hybrid": 0.835},
    ("scifact", "m2v-mpnet-256"): {"corpus": 0.695, "no corpus": 0.69, "hybrid": 0.73},
    ("nfcorpus", "all-MiniLM-L6-v2"): {"corpus": 0.318},
    ("nfcorpus", "m2v-mpnet-256"): {"corpus": 0.265},
}


def check_targets(run, methods, dataset, doc_encoder, protocol):
    """The benchmark's quality targets, measured (official protocol only)."""
    if protocol != "official":
        return []
    res = run["results"]
    mean = lambda name, col, metric="ndcg@10": (
        _mean_std([r[metric] for r in res[name][col]])[0]
        if name in res and col in res[name] else None)
    cheap = _mean_std([r["ndcg@10"] for r in run["references"]["cheap->cheap"]])[0]
    era, nocorpus = qm.ALIASES["era"], qm.ALIASES["era-nocorpus"]
    label_only, proc, hyb = qm.ALIASES["label-softmax"], qm.ALIASES["procrustes"], qm.ALIASES["hybrid"]
    out = []

    def add(text, value, ok):
        if value is not None:
            out.append({"target": text, "measured": value, "met": bool(ok)})

    goals = ALL_LABEL_TARGETS.get((dataset, doc_encoder), {})
    for key, name in (("corpus", era), ("no corpus", nocorpus), ("hybrid", hyb)):
        value = mean(name, "all")
        if key in goals and value is not None:
            add(f"{name} @all >= {goals[key]}", round(value, 4), value >= goals[key])
    p0 = mean(proc, "0")
    for name in (era, nocorpus):
        for c in ("8", "32", "128"):
            e = mean(name, c)
            if e is not None and p0 is not None:
                add(f"{name} @{c} - align-only procrustes >= -0.005", round(e - p0, 4),
                    e - p0 >= -0.005)
    e32, l32 = mean(era, "32"), mean(label_only, "32")
    if e32 is not None and l32 is not None:
        add(f"{era} @32 - {label_only} @32 >= 0.05", round(e32 - l32, 4), e32 - l32 >= 0.05)
    for c in run["columns"]:
        h = mean(hyb, c)
        if h is not None:
            add(f"{hyb} @{c} - cheap->cheap >= -0.005", round(h - cheap, 4), h - cheap >= -0.005)
    return out


#: Hybrid rows' extra cost lives in its own benchmark, with the real cheap encoder.
HYBRID_COST_NOTE = ("Hybrid rows run the cheap document encoder on every query as well as the "
                    "strong one (input [strong(q), cheap(q)]); that cost per query is measured "
                    "by `python -m benchmarks.encoder_cost`, not here.")


def measure(dataset, doc_encoder, query_encoder, args, methods, log):
    t0 = time.perf_counter()
    budgets = args.budgets if args.protocol == "official" else None
    log(f"== {dataset}: queries {query_encoder} -> documents {doc_encoder}, protocol "
        f"{args.protocol}, seeds {args.seeds}, {args.jobs} worker process(es)")
    git = _git_state()
    run = run_one(dataset, doc_encoder, query_encoder, args.seeds, budgets, methods,
                  args.protocol, log, args.jobs)
    run["git"] = git
    return run, time.perf_counter() - t0


def _git_state():
    """HEAD commit and uncommitted changes of the package, for the record."""
    import subprocess

    root = Path(era_sklearn.__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10, check=False).stdout.strip() or None
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "era_sklearn"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=False).stdout.split("\n")
        return {"commit": head, "era_sklearn_uncommitted": [d.strip() for d in dirty if d.strip()]}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "era_sklearn_uncommitted": None}


def report(dataset, doc_encoder, query_encoder, args, methods, out_dir, skipped, run, wall):
    budgets = args.budgets if args.protocol == "official" else None
    seeds = args.seeds
    stem = f"quality_{dataset}_{doc_encoder}" + ("" if args.protocol == "official" else "_paper")
    title = (f"{dataset}: {query_encoder} queries -> {doc_encoder} index "
             f"({args.protocol} protocol, seeds {', '.join(map(str, seeds))}; "
             f"{run['n_test_queries']} test queries)")
    t_nd, t_rc = table(run, methods, "ndcg@10"), table(run, methods, "recall@100")
    targets = check_targets(run, methods, dataset, doc_encoder, args.protocol)
    command = "python -m benchmarks.quality " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    default_note = ("Methods: " + ("the default set (a subset sized for < 5 min on 2 cores; "
                                    "`--methods all` adds align-only lstsq/cosine, ERA "
                                    "cosine+contrastive and hybrid contrastive)"
                                    if args.methods is None else ", ".join(m.name for m in methods))
                    + ("" if not skipped else "; not run, as torch is not installed: "
                       + ", ".join(m.name for m in skipped)))
    cols_note = ("Columns: labelled training queries sampled per seed from the official train "
                 f"split (nested: 8 ⊂ 32 ⊂ 128 ⊂ all = {run['n_labelled'].get('all', '?')}); "
                 "0 = fit_align on 1,000 corpus documents alone (no labels)."
                 if args.protocol == "official" else
                 "Columns: ERA's protocol: all judged queries shuffled per seed into 50% test, "
                 "10% validation (held out and UNUSED: alpha='auto' selects on folds of the "
                 "training queries, torch early-stops on its own internal split) and training "
                 "ratios 10/20/40% of all judged queries (mean count in parentheses).")
    md = [
        f"# Retrieval quality: {title}", "",
        f"Command: `{command}`  ",
        (f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}; era-sklearn "
        f"{era_sklearn.__version__}; wall time {wall:.1f} s (this data set / encoder)."), "",
        ("Every test query ranks the full corpus (cheap encoder, L2-normalised) by cosine with "
        "`adapter.transform(query)`. Cells: mean ± std over seeds. `fit s`: mean seconds per "
        "fit (fit_align + fit) over the labelled cells (over the seeds for 0-label rows), "
        f"measured in {args.jobs} single-threaded worker process(es) running side by side. "
        "Every fit gets `random_state=seed` and `corpus=Corpus(cheap corpus)` unless its row says "
        "no corpus."), "",
        cols_note, "", default_note + ".", "", HYBRID_COST_NOTE, "",
        "## nDCG@10", "", t_nd, "", "## recall@100", "", t_rc, "",
    ]
    if targets:
        md += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
        md += [f"| {t['target']} | {t['measured']:+.4f} | {'yes' if t['met'] else 'NO'} |"
               for t in targets]
        md += [""]
    md += [f"![nDCG@10 vs labels]({stem}.png)", ""]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.md").write_text("\n".join(md), encoding="utf-8")
    plot(run, methods, out_dir / f"{stem}.png", title)
    payload = {
        "command": command,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "package_version": era_sklearn.__version__,
        "git": run.get("git"),
        "wall_time_s": wall,
        "settings": {
            "dataset": dataset, "doc_encoder": doc_encoder, "query_encoder": query_encoder,
            "protocol": args.protocol, "seeds": seeds, "budgets": budgets,
            "paper_ratios": list(PAPER_RATIOS) if args.protocol == "paper" else None,
            "n_align_docs": N_ALIGN_DOCS, "n_test_queries": run["n_test_queries"],
            "n_labelled": run["n_labelled"], "split_info": run["split_info"] or None,
            "methods": {m.name: {"params": m.params, "fit_align": m.align,
                                 "description": m.description} for m in methods},
            "default_method_set": args.methods is None,
            "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
            "worker_processes": args.jobs,
        },
        "references": run["references"],
        "results": run["results"],
        "fit_time_mean_s": {k: float(np.mean(v)) for k, v in run["fit_times"].items()},
        "skipped_without_torch": [m.name for m in skipped],
        "targets": targets,
    }
    (out_dir / f"{stem}.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    print(f"\n### {title}\n\nnDCG@10\n\n{t_nd}\n\nrecall@100\n\n{t_rc}\n")
    print(default_note + ".")
    for t in targets:
        print(f"  target: {t['target']}: {t['measured']:+.4f} -> {'met' if t['met'] else 'MISSED'}")
    print(f"wall time {wall:.1f} s; wrote {out_dir / stem}.md/.json/.png\n", flush=True)
    return wall


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=DATASETS, default="scifact")
    p.add_argument("--doc-encoder", choices=DOC_ENCODERS, default="all-MiniLM-L6-v2")
    p.add_argument("--query-encoder", default="all-mpnet-base-v2")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budgets", nargs="+", default=["8", "32", "128", "all"])
    p.add_argument("--methods", nargs="+", default=None,
                   help=f"'all' or any of: {', '.join(qm.ALIASES)} "
                        f"(default: {' '.join(qm.DEFAULT_METHODS)})")
    p.add_argument("--protocol", choices=("official", "paper"), default="official")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/local"),
                   help="where results go (default: an ignored folder; "
                        "--out benchmarks/results regenerates the committed docs tables)")
    p.add_argument("--all", action="store_true", help="run scifact/nfcorpus x MiniLM/m2v")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="worker processes (each single-threaded); default min(2, cores)")
    args = p.parse_args(argv)
    for b in args.budgets:
        if b != "all" and not b.isdigit():
            p.error(f"--budgets takes positive integers or 'all', not {b!r}")
    methods, skipped = qm.runnable(qm.resolve(args.methods))
    if skipped:
        print(f"torch is not installed: skipping {len(skipped)} torch-based method(s) "
              f"({', '.join(m.name for m in skipped)}); pip install \"era-sklearn[torch]\" "
              "runs them.", flush=True)
    if not methods:
        raise SystemExit("Every method asked for needs torch: pip install \"era-sklearn[torch]\".")
    t0 = time.perf_counter()
    log = lambda s: print(s, file=sys.stderr, flush=True)
    runs = ([(d, e) for d in DATASETS for e in DOC_ENCODERS] if args.all
            else [(args.dataset, args.doc_encoder)])
    measured = [(d, e, *measure(d, e, args.query_encoder, args, methods, log)) for d, e in runs]
    for dataset, doc_encoder, run, wall in measured:
        report(dataset, doc_encoder, args.query_encoder, args, methods, args.out, skipped, run,
               wall)
    print(f"total wall time {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
