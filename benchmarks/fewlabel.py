"""Few labels: ERAAdapter's default against fixed penalties, from 8 labelled queries to all.

Queries by all-mpnet-base-v2, documents indexed by a cheap encoder (all-MiniLM-L6-v2 or
m2v-mpnet-256); every test query ranks the full corpus (exact search, dense scores);
nDCG@10 and recall@100 on the official test split. Only the public API is used, so the
rows measure whatever the package's defaults do.

Draws: draw ``d`` is seed ``d``. It fixes the 1,000 alignment documents (the sample
``benchmarks.quality`` uses for that seed), ``random_state=d``, and, at each budget ``b``,
an independent random subset of ``b`` official training queries (seed sequence
``[d, 1, b]``). At ``all`` the labelled set is every training query, so its draws differ
in the seed only.

Rows:

* ``cheap->cheap``: the cheap encoder's own query embeddings (no adapter).
* ``align-only``: ``ERAAdapter(random_state=d).fit_align(strong(D_s), cheap(D_s))``.
* ``default``: ``ERAAdapter(random_state=d)``, fit_align, then ``fit`` on the labelled
  pairs (``sample_weight`` = grades, ``groups`` = query rows, ``corpus=Corpus(cheap)``).
* ``hybrid``: ``ERAAdapter(hybrid=True, random_state=d)`` on ``[strong, cheap]`` inputs.
* ``C=k``: ``ERAAdapter(adapt=Softmax(alpha=k / n_queries))`` after the same fit_align
  (``n_queries``: the labelled queries of the draw): a fixed penalty, no selection.
* ``oracle``: per (set, index, budget) the one fixed C whose mean over that cell's draws
  is best *on the test queries*: hindsight, not a method.

Usage::

    python -m benchmarks.fewlabel                       # both sets and indexes, 5 draws
    python -m benchmarks.fewlabel --quick               # smoke test (one set, 2 budgets, 2 draws)
    python -m benchmarks.fewlabel --draws-all 5 nfcorpus=3 --no-fixed-all
    python -m benchmarks.fewlabel --out benchmarks/results   # the committed docs tables

Writes ``fewlabel_<set>_<index>.{md,json,png}`` to ``--out`` after each set/index pair.
"""

from __future__ import annotations

import os

# One BLAS thread per worker process (as benchmarks.quality); respect the caller's choice.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import datetime
import json
import shlex
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import era_sklearn
from era_sklearn.adapt import Softmax
from era_sklearn.datasets import qrels_to_pairs

from . import _quality_methods as qm
from ._data import DATASETS, DOC_ENCODERS, N_ALIGN_DOCS, Evaluator, align_sample, official_splits
from ._pool import run_tasks
from .quality import _data, _git_state, _mean_std, references

QUERY_ENCODER = "all-mpnet-base-v2"
BUDGETS = ("8", "16", "32", "64", "128", "all")
FIXED_C = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
QUICK = {"datasets": ["scifact"], "doc_encoders": ["all-MiniLM-L6-v2"],
         "budgets": ["16", "32"], "draws": 2}
#: A draw "falls below align-only" when its nDCG@10 is lower by more than this.
MARGIN = 0.01
#: Budgets where the default must reach the oracle (target a).
ORACLE_BUDGETS = ("16", "32", "64", "128")
ORACLE_LABEL = "oracle (best fixed C on the test queries; hindsight)"
TOLERANCE = {"oracle": 0.005, "align-only": 0.003, "hybrid": 0.005, "pooled_fraction": 0.10}
MIN_POOLED_DRAWS = 25

METHODS = {
    "align-only": qm.Method(
        "align-only", "align-only", {}, labels=False,
        description="ERAAdapter(random_state=d).fit_align(strong(D_s), cheap(D_s))"),
    "default": qm.Method(
        "default", "ERA", {},
        description="ERAAdapter(random_state=d): fit_align, then fit(..., corpus=Corpus(cheap))"),
    "hybrid": qm.Method(
        "hybrid", "hybrid", {"hybrid": True}, hybrid=True,
        description="ERAAdapter(hybrid=True, random_state=d) on [strong, cheap] inputs"),
}


def c_name(C):
    return f"C={C:g}"


def fixed_c_method(C, n_queries):
    """The fixed-penalty row ``C``: Softmax(alpha=C / n_queries) after fit_align."""
    return qm.Method(c_name(C), "fixed C", {"adapt": Softmax(alpha=C / n_queries)},
                     description=f"ERAAdapter(adapt=Softmax(alpha={C:g} / n_queries))")


# -- the fits -------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """One fit: a method (or fixed ``C``) at one budget and draw; budget None: align-only."""

    dataset: str
    doc_encoder: str
    method: str
    seed: int
    budget: str | None = None
    C: float | None = None


def label_draw(data, budget, seed):
    """(n, train_qrels) of draw ``seed`` at ``budget``: its own random subset."""
    ((_, n, train_qrels),), _, _ = official_splits(data, [budget], seed, nested=False)
    return n, train_qrels


def fit_cell(cell):
    """Fit one cell and score it on the test queries; runs in a worker process."""
    data = _data(cell.dataset, cell.doc_encoder, QUERY_ENCODER)
    ev = Evaluator(data, data.qrels["test"])
    pairs, n_queries = None, 0
    if cell.budget is not None:
        _, train_qrels = label_draw(data, cell.budget, cell.seed)
        pairs = qrels_to_pairs(train_qrels, data.query_ids, data.corpus_ids)
        n_queries = len(np.unique(pairs[0]))
    method = METHODS[cell.method] if cell.C is None else fixed_c_method(cell.C, n_queries)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        adapter = qm.align_adapter(method, data, align_sample(data, cell.seed), cell.seed)
        if pairs is not None:
            qm.fit_labels(adapter, method, data, pairs, cell.seed)
    fit_s = time.perf_counter() - t0
    scores = ev(adapter.transform(qm.queries_of(data, ev.rows, method.hybrid)), data.D_cheap_n)
    return {"seed": cell.seed, **scores, "fit_s": fit_s, "n_queries": n_queries,
            **qm.fitted_choices(adapter), "blas_threads": blas_threads(),
            "warnings": sorted({f"{w.category.__name__}: {w.message}"[:300] for w in caught})}


def blas_threads():
    from threadpoolctl import threadpool_info

    return sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})


def plan(dataset, doc_encoder, budgets, seeds, fixed_C, fixed_all):
    """The cells of one set/index pair, and what was left out (in words)."""
    cells = [Cell(dataset, doc_encoder, "align-only", s) for s in sorted(set().union(*seeds.values()))]
    skipped = []
    for b in budgets:
        for s in seeds[b]:
            cells += [Cell(dataset, doc_encoder, m, s, b) for m in ("default", "hybrid")]
            if b == "all" and not fixed_all:
                continue
            cells += [Cell(dataset, doc_encoder, c_name(C), s, b, C) for C in fixed_C]
    if "all" in budgets and fixed_C and not fixed_all:
        skipped.append("fixed-C fits at 'all' (--no-fixed-all): no fixed-C rows and no oracle "
                       "at 'all' (the targets on the oracle concern budgets 16..128)")
    return cells, skipped


def cost(cell, n_labelled):
    """Rough relative cost, to start the longest fits first."""
    if cell.budget is None:
        return 0
    return n_labelled[cell.budget] * (3 if cell.method == "hybrid" else 1)


def run_pair(dataset, doc_encoder, args, log):
    """Every fit of one set/index pair; the run record that the report reads."""
    data = _data(dataset, doc_encoder, QUERY_ENCODER)
    ev = Evaluator(data, data.qrels["test"])
    n_train = len(data.qrels["train"])
    n_labelled = {b: n_train if b == "all" else min(int(b), n_train) for b in args.budgets}
    seeds = {b: list(range(args.draws_all.get(dataset, args.draws_all["*"]) if b == "all"
                           else args.draws)) for b in args.budgets}
    cells, skipped = plan(dataset, doc_encoder, args.budgets, seeds, args.fixed_C,
                          not args.no_fixed_all)
    order = sorted(range(len(cells)), key=lambda i: -cost(cells[i], n_labelled))
    log(f"== {dataset} / {doc_encoder}: {len(cells)} fits, {args.jobs} worker process(es)")
    out = run_tasks(fit_cell, cells, order, args.jobs, lambda c, r: log_cell(log, c, r))
    return collect(cells, out, {
        "dataset": dataset, "doc_encoder": doc_encoder, "budgets": list(args.budgets),
        "n_labelled": n_labelled, "n_train_queries": n_train, "seeds": seeds,
        "skipped": skipped, "references": references(data, ev), "n_test_queries": len(ev.rows),
    })


def collect(cells, out, run):
    """File each fit's scores under ``run["rows"][method][budget]``, sorted by seed.

    align-only does not depend on the budget: its fit of seed ``d`` is filed under every
    budget whose draws include ``d``, so that comparisons with it are paired per draw.
    """
    rows, align = {}, {}
    for cell, scores in zip(cells, out):
        if cell.budget is None:
            align[cell.seed] = scores
        else:
            rows.setdefault(cell.method, {}).setdefault(cell.budget, []).append(scores)
    rows["align-only"] = {b: [align[s] for s in run["seeds"][b]] for b in run["budgets"]}
    for by_budget in rows.values():
        for draws in by_budget.values():
            draws.sort(key=lambda r: r["seed"])
    return {**run, "rows": rows}


def log_cell(log, cell, r):
    log(f"  {cell.method:10s} {cell.budget or '-':>4s} draw {cell.seed}  nDCG@10 "
        f"{r['ndcg@10']:.4f}  R@100 {r['recall@100']:.4f}  {r['fit_s']:6.2f}s")


# -- what the run shows (pure functions of the run record) ------------------------------
def values(run, method, budget, metric="ndcg@10"):
    """Per-draw values of ``method`` at ``budget`` (empty when not measured)."""
    return [r[metric] for r in run["rows"].get(method, {}).get(budget, [])]


def mean(run, method, budget, metric="ndcg@10"):
    v = values(run, method, budget, metric)
    return float(np.mean(v)) if v else None


def fixed_c_names(run):
    names = [m for m in run["rows"] if m.startswith("C=")]
    return sorted(names, key=lambda m: float(m[2:]))


def oracle(run, metric="ndcg@10"):
    """{budget: best fixed-C row name}: the best mean over the cell's draws on the test queries.

    Chosen on nDCG@10 whatever ``metric`` is shown (ties: the smaller C). Budgets
    without fixed-C fits are absent.
    """
    out = {}
    for b in run["budgets"]:
        means = {m: mean(run, m, b) for m in fixed_c_names(run)}
        means = {m: v for m, v in means.items() if v is not None}
        if means:
            out[b] = max(means, key=lambda m: (means[m], -float(m[2:])))
    return out


def below_align(run, budget, margin=MARGIN):
    """(draws of default more than ``margin`` below align-only of the same seed, draws)."""
    default = {r["seed"]: r["ndcg@10"] for r in run["rows"].get("default", {}).get(budget, [])}
    align = {r["seed"]: r["ndcg@10"] for r in run["rows"]["align-only"].get(budget, [])}
    paired = [s for s in default if s in align]
    return sum(default[s] < align[s] - margin for s in paired), len(paired)


def pooled_below_align(run, margin=MARGIN):
    counts = [below_align(run, b, margin) for b in run["budgets"]]
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def check_targets(run):
    """The issue's targets on the means over draws: [{target, measured, met}]."""
    out = []

    def add(text, measured, ok):
        out.append({"target": text, "measured": round(float(measured), 4), "met": bool(ok)})

    best, cheap = oracle(run), run["references"]["cheap->cheap"]["ndcg@10"]
    for b in run["budgets"]:
        d, a, h = (mean(run, m, b) for m in ("default", "align-only", "hybrid"))
        if b in ORACLE_BUDGETS and b in best and d is not None:
            diff = d - mean(run, best[b], b)
            add(f"(a) default @{b} - oracle ({best[b]}) >= -{TOLERANCE['oracle']}", diff,
                diff >= -TOLERANCE["oracle"])
        if d is not None:
            add(f"(b) default @{b} - align-only >= -{TOLERANCE['align-only']}", d - a,
                d - a >= -TOLERANCE["align-only"])
        if h is not None:
            for ref, value in (("default", d), ("cheap->cheap", cheap)):
                if value is not None:
                    add(f"(d) hybrid @{b} - {ref} >= -{TOLERANCE['hybrid']}", h - value,
                        h - value >= -TOLERANCE["hybrid"])
    below, n = pooled_below_align(run)
    if n:  # the target asks for a fraction over at least MIN_POOLED_DRAWS draws
        add(f"(c) pooled fraction of draws (n={n}, needs >= {MIN_POOLED_DRAWS}) with default "
            f"> {MARGIN} below align-only <= {TOLERANCE['pooled_fraction']:.0%}", below / n,
            below / n <= TOLERANCE["pooled_fraction"] and n >= MIN_POOLED_DRAWS)
    return out


# -- tables ------------------------------------------------------------------------------
def budget_header(run, b):
    return f"all ({run['n_labelled'][b]})" if b == "all" else b


def _cell(v, suffix=""):
    if not v:
        return "-"
    m, s = _mean_std(v)
    return f"{m:.4f} ± {s:.4f}{suffix}"


def table(run, metric="ndcg@10"):
    """Rows: methods, fixed C and the oracle; columns: budgets; mean ± std over draws."""
    budgets = run["budgets"]
    head = ["method", *(budget_header(run, b) for b in budgets)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    cheap = run["references"]["cheap->cheap"][metric]
    lines.append("| cheap->cheap (no adapter) | " + " | ".join(f"{cheap:.4f}" for _ in budgets)
                 + " |")
    for m in ("align-only", "default", "hybrid", *fixed_c_names(run)):
        lines.append(f"| {m} | " + " | ".join(_cell(values(run, m, b, metric)) for b in budgets)
                     + " |")
    best = oracle(run)
    cells = [_cell(values(run, best[b], b, metric), f" ({best[b]})") if b in best else "-"
             for b in budgets]
    lines.append(f"| {ORACLE_LABEL} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def kept_stage1(run, budget):
    """(draws where the default kept stage 1, i.e. ``penalty_ = inf``, draws)."""
    draws = run["rows"].get("default", {}).get(budget, [])
    return sum(r.get("penalty") == float("inf") for r in draws), len(draws)


def fraction_table(run):
    """Per budget and pooled: draws below align-only, and draws where stage 1 was kept."""
    budgets = run["budgets"]
    head = ["", *(budget_header(run, b) for b in budgets), "pooled"]

    def row(label, counts):
        counts = counts + [tuple(map(sum, zip(*counts)))]
        return f"| {label} | " + " | ".join(f"{k}/{n} ({k / n:.0%})" if n else "-"
                                           for k, n in counts) + " |"

    return "\n".join([
        "| " + " | ".join(head) + " |", "|" + "---|" * len(head),
        row(f"draws with default > {MARGIN} below align-only",
            [below_align(run, b) for b in budgets]),
        row("draws where default kept stage 1 (`penalty_ = inf`)",
            [kept_stage1(run, b) for b in budgets])])


def warnings_note(run):
    """The warnings raised during the fits, with how many fits raised each."""
    counts = Counter(w for rows in run["rows"].values() for draws in rows.values()
                     for r in draws for w in r.get("warnings", []))
    if not counts:
        return "Warnings during the fits: none."
    return "Warnings during the fits (fits that raised each):\n\n" + "\n".join(
        f"- {n} x {w}" for w, n in counts.most_common())


def draws_note(run):
    n = {b: len(run["seeds"][b]) for b in run["budgets"]}
    note = (f"Draws per budget: {', '.join(f'{b}: {k}' for b, k in n.items())}. Each draw of a "
            "numbered budget labels its own random subset of the official training queries.")
    if "all" in n:
        note += (f" 'all' labels every one of the {run['n_train_queries']} training queries, so "
                 "its draws differ in the seed only (random_state and the alignment sample).")
    if "all" in n and any(k > n["all"] for k in n.values()):
        note += (f" Fewer draws at 'all' ({n['all']}) than at the other budgets "
                 "(--draws-all), to bound the cost of the largest fits.")
    return note


def targets_lines(targets):
    return [f"target: {t['target']}: {t['measured']:+.4f} -> {'met' if t['met'] else 'MISSED'}"
            for t in targets]


# -- outputs -------------------------------------------------------------------------------
def stem_of(run):
    return f"fewlabel_{run['dataset']}_{run['doc_encoder']}"


def title_of(run):
    return (f"{run['dataset']}: {QUERY_ENCODER} queries -> {run['doc_encoder']} index, "
            f"{run['n_test_queries']} test queries")


def markdown(run, meta, targets):
    skipped = run["skipped"] or ["nothing"]
    return "\n".join([
        f"# Few labels: {title_of(run)}", "",
        f"Command: `{meta['command']}`  ",
        (f"Date: {meta['date']}; era-sklearn {meta['version']}; git {meta['git'].get('commit')}; "
         f"{meta['jobs']} worker process(es), BLAS threads per worker "
         f"{meta['blas_threads_workers']}; load average {meta['load_start']} at start, "
         f"{meta['load_end']} at end; wall time {run['wall_s']:.0f} s."), "",
        ("Every test query ranks the full corpus (cheap encoder, L2-normalised, exact search) "
         "by cosine with `adapter.transform(query)`. Cells: mean ± std over draws. "
         f"Stage 1 always sees {N_ALIGN_DOCS} corpus documents sampled per draw. `C=k` is "
         "`ERAAdapter(adapt=Softmax(alpha=k / n_queries))` after the same fit_align (no "
         f"selection). The {ORACLE_LABEL} row is the fixed-C row (named in the cell) with "
         "the best nDCG@10 mean over the cell's draws, chosen on the TEST queries; its "
         "recall@100 cells use the same C."), "",
        draws_note(run), "", f"Skipped: {'; '.join(skipped)}.", "",
        "## nDCG@10", "", table(run), "",
        "## recall@100", "", table(run, "recall@100"), "",
        "## Draws where the default falls below align-only", "",
        ("Paired per draw (the same seed, so the same alignment sample), nDCG@10."), "",
        fraction_table(run), "", warnings_note(run), "",
        "## Targets", "", "| target | measured | met |", "|---|---|---|",
        *(f"| {t['target']} | {t['measured']:+.4f} | {'yes' if t['met'] else 'NO'} |"
          for t in targets), "",
        f"![nDCG@10 against labelled queries]({stem_of(run)}.png)", "",
    ])


def plot(run, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = run["budgets"]
    xs = [run["n_labelled"][b] for b in budgets]
    fig, ax = plt.subplots(figsize=(10, 5.5))
    ax.axhline(run["references"]["cheap->cheap"]["ndcg@10"], color="0.4", ls=":",
               label="cheap->cheap (no adapter)")
    styles = {"align-only": {"color": "0.2", "ls": "-.", "marker": "s"},
              "default": {"color": "tab:blue", "lw": 2.2, "marker": "o"},
              "hybrid": {"color": "tab:orange", "lw": 1.8, "marker": "D"}}
    for m, style in styles.items():
        _line(ax, xs, [mean(run, m, b) for b in budgets], m, **style)
    colors = plt.get_cmap("viridis")(np.linspace(0.1, 0.9, max(len(fixed_c_names(run)), 1)))
    for m, color in zip(fixed_c_names(run), colors):
        _line(ax, xs, [mean(run, m, b) for b in budgets], m, color=color, lw=0.9, alpha=0.6)
    best = oracle(run)
    _line(ax, xs, [mean(run, best[b], b) if b in best else None for b in budgets],
          ORACLE_LABEL, color="black", ls="--", marker="x")
    ax.set_xscale("log")
    ax.set_xticks(xs, [budget_header(run, b) for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel("labelled training queries (log scale)")
    ax.set_ylabel("nDCG@10 (test), mean over draws")
    ax.set_title(title_of(run), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside, not over, lines
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _line(ax, xs, ys, label, **style):
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
    if pts:
        ax.plot(*zip(*pts), label=label, **style)


def write(run, meta, out_dir):
    """The pair's Markdown, JSON (per-draw values included) and plot; returns the targets."""
    targets = check_targets(run)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / stem_of(run)
    stem.with_suffix(".md").write_text(markdown(run, meta, targets), encoding="utf-8")
    payload = {**meta, "settings": {**meta["settings"], "dataset": run["dataset"],
                                    "doc_encoder": run["doc_encoder"]},
               **{k: v for k, v in run.items() if k not in ("dataset", "doc_encoder")},
               "oracle_nDCG@10": oracle(run),
               "below_align_only": {b: below_align(run, b) for b in run["budgets"]}
               | {"pooled": pooled_below_align(run)},
               "targets": targets}
    Path(f"{stem}.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    plot(run, Path(f"{stem}.png"))
    return targets


def print_report(run, targets, out_dir):
    print(f"\n### {title_of(run)}\n\nnDCG@10\n\n{table(run)}\n\nrecall@100\n\n"
          f"{table(run, 'recall@100')}\n\n{fraction_table(run)}\n")
    print(draws_note(run))
    print(f"Skipped: {'; '.join(run['skipped'] or ['nothing'])}.")
    print(warnings_note(run))
    print("\n".join(targets_lines(targets)))
    print(f"wall time {run['wall_s']:.1f} s; wrote {out_dir / stem_of(run)}.md/.json/.png\n",
          flush=True)


# -- command line ----------------------------------------------------------------------------
def parse_budgets(tokens):
    """Budgets as strings, ascending, 'all' last; a ValueError names a bad one."""
    bad = [t for t in tokens if t != "all" and not (t.isdigit() and int(t) > 0)]
    if bad:
        raise ValueError(f"--budgets takes positive integers or 'all', not {bad[0]!r}")
    return sorted(set(tokens), key=lambda t: (t == "all", int(t) if t != "all" else 0))


def parse_draws_all(tokens, datasets=DATASETS):
    """``["5", "nfcorpus=3"]`` -> ``{"*": 5, "nfcorpus": 3}`` (draws at the 'all' budget)."""
    out = {"*": 5}
    for t in tokens:
        name, _, count = t.rpartition("=")
        if name and name not in datasets:
            raise ValueError(f"--draws-all: unknown data set {name!r} in {t!r}; choose from "
                             f"{', '.join(datasets)}")
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"--draws-all takes N or SET=N with N >= 1, not {t!r}")
        out[name or "*"] = int(count)
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    p.add_argument("--doc-encoders", nargs="+", choices=DOC_ENCODERS, default=list(DOC_ENCODERS))
    p.add_argument("--budgets", nargs="+", default=list(BUDGETS))
    p.add_argument("--draws", type=int, default=5, help="draws per budget below 'all'")
    p.add_argument("--draws-all", nargs="+", default=["5"], metavar="N|SET=N",
                   help="draws at the 'all' budget, e.g. '5 nfcorpus=3' (default 5)")
    p.add_argument("--fixed-C", nargs="*", type=float, default=list(FIXED_C),
                   help="the fixed-penalty grid (alpha = C / n_queries); empty: no fixed-C rows")
    p.add_argument("--no-fixed-all", action="store_true",
                   help="skip the fixed-C fits at 'all' (the costly ones; no oracle there)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="worker processes (each one BLAS thread); default min(2, cores)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: scifact / MiniLM, budgets 16 32, 2 draws")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/local"),
                   help="default: an ignored folder; --out benchmarks/results for the docs")
    args = p.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
    try:
        args.budgets = parse_budgets(args.budgets)
        args.draws_all = parse_draws_all(args.draws_all)
    except ValueError as exc:
        p.error(str(exc))
    if args.draws < 1 or args.jobs < 1 or any(C <= 0 for C in args.fixed_C):
        p.error("--draws and --jobs take integers >= 1 and --fixed-C positive numbers")
    return args


def main(argv=None):
    args = parse_args(argv)
    from threadpoolctl import threadpool_info

    log = lambda s: print(s, file=sys.stderr, flush=True)
    t_start, load_start = time.perf_counter(), round(os.getloadavg()[0], 2)
    for dataset in args.datasets:
        for doc_encoder in args.doc_encoders:
            t0 = time.perf_counter()
            run = run_pair(dataset, doc_encoder, args, log)
            run["wall_s"] = time.perf_counter() - t0
            meta = {
                "command": "python -m benchmarks.fewlabel "
                           + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                "date": datetime.datetime.now().isoformat(timespec="seconds"),
                "version": era_sklearn.__version__, "git": _git_state(), "jobs": args.jobs,
                "blas_main": [{k: i.get(k) for k in ("internal_api", "version", "num_threads")}
                              for i in threadpool_info() if i["user_api"] == "blas"],
                "blas_threads_workers": sorted({t for rows in run["rows"].values()
                                                for draws in rows.values() for r in draws
                                                for t in r["blas_threads"]}),
                "load_start": load_start, "load_end": round(os.getloadavg()[0], 2),
                "settings": {"query_encoder": QUERY_ENCODER, "n_align_docs": N_ALIGN_DOCS,
                             "draws": args.draws, "draws_all": args.draws_all,
                             "fixed_C": args.fixed_C, "fixed_all": not args.no_fixed_all,
                             "margin": MARGIN, "tolerance": TOLERANCE,
                             "methods": {m.name: m.description for m in METHODS.values()}},
            }
            print_report(run, write(run, meta, args.out), args.out)
    print(f"total wall time {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
