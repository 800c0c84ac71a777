"""Parity of the paper's recipe with the official ERA code on SciFact.

Protocol (both sides): queries by all-mpnet-base-v2, documents indexed by
all-MiniLM-L6-v2 or m2v-mpnet-256, every embedding L2-normalised first (the
official code caches normalised sentence-transformers outputs). Stage 1 on 1,000
random corpus documents (10% held out); stage 2 on all 809 SciFact training
queries (919 pairs), 20% of them held out for validation; nDCG@10 of the 300
official test queries over the whole corpus (5,183 documents, cosine). Seeds 0, 1
and 2; negatives ``topk_percpos`` and ``random``.

Our side runs here (:func:`fit_paper_recipe`). The official side was run with
megagonlabs/ERA's own ``train_era`` through a thin shim kept outside this
repository; its numbers are read from ``results/era_official_scifact.json``.
Parity per cell: |mean ours - mean official| <= max(0.03, 2 standard errors of
the difference).

Usage::

    python -m benchmarks.paper_parity                 # all 12 runs, then the table
    python -m benchmarks.paper_parity --seeds 0 --models m2v-mpnet-256
    python -m benchmarks.paper_parity --table-only    # table from the saved runs

Runs are appended to ``results/paper_parity.json`` as they finish (a run already
there is skipped), so an interrupted invocation resumes.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.preprocessing import normalize
from threadpoolctl import threadpool_info

from era_sklearn._torch.fit import PAPER_ADAPT, PAPER_ALIGN, train_adapt_torch, train_align_torch
from era_sklearn._torch.models import numpy_forward
from era_sklearn.datasets import load_beir, load_embeddings, qrels_to_pairs, shared_dir
from era_sklearn.metrics import ndcg_at_k, qrels_to_matrix

RESULTS = Path(__file__).resolve().parent / "results"
OURS_JSON = RESULTS / "paper_parity.json"
OFFICIAL_JSON = RESULTS / "era_official_scifact.json"
TABLE_MD = RESULTS / "paper_parity.md"

QUERY_MODEL = "all-mpnet-base-v2"
DOC_MODELS = ("all-MiniLM-L6-v2", "m2v-mpnet-256")
SEEDS = (0, 1, 2)
STRATEGIES = ("topk_percpos", "random")
N_ALIGN = 1000
VALIDATION_FRACTION = 0.2
TOLERANCE = 0.03


# ------------------------------------------------------------------ our side


def fit_paper_recipe(align_X, align_Y, X, Y, qids, corpus, anchors, *, negatives, seed):
    """OUR implementation of the paper's recipe: the one call to switch to
    ``era_sklearn.paper_recipe()`` once it exists.

    Returns ``(stage1, final)``: two functions mapping query embeddings into the
    document space (the stage-1 adapter and the stage-2 one), and the stage-2
    training history.
    """
    W, b, _ = train_align_torch(align_X, align_Y, random_state=seed, device="cpu",
                                **PAPER_ALIGN)
    settings = PAPER_ADAPT | {"negatives": negatives}
    params, history = train_adapt_torch(
        X, Y, qids, corpus, anchors, start_W=W, start_b=b,
        validation_fraction=VALIDATION_FRACTION, random_state=seed, device="cpu", **settings,
    )
    stage1 = {"coef": W, "intercept": b}
    return (lambda Q: numpy_forward(stage1, Q)), (lambda Q: numpy_forward(params, Q)), history


# ------------------------------------------------------------------ data


def load_scifact(doc_model):
    """Normalised embeddings, training pairs and test qrels of SciFact."""
    root = shared_dir()
    data = root / "datasets" / "scifact"
    q_emb = load_embeddings(root / "embeddings", QUERY_MODEL, dataset="scifact")
    d_emb = load_embeddings(root / "embeddings", doc_model, dataset="scifact")
    train = load_beir(data, split="train")
    test = load_beir(data, split="test")
    q_rows, d_rows, _ = qrels_to_pairs(train.qrels, q_emb.query_ids, d_emb.corpus_ids)
    test_ids = list(test.qrels)
    row = {q: i for i, q in enumerate(q_emb.query_ids)}
    corpus = normalize(d_emb.corpus)
    return {
        "queries": normalize(q_emb.queries),
        "corpus": corpus,
        "align_source": normalize(q_emb.corpus),  # the query encoder on the documents
        "train_query_rows": q_rows, "train_doc_rows": d_rows,
        "test_rows": np.array([row[q] for q in test_ids]),
        "test_qrels": qrels_to_matrix(test.qrels, test_ids, d_emb.corpus_ids),
    }


def ndcg10(mapped, data):
    return float(ndcg_at_k(normalize(mapped) @ data["corpus"].T, data["test_qrels"], 10))


def _commit():
    """The checkout's commit, with ``+dirty`` when era_sklearn/ has uncommitted changes."""
    root = Path(__file__).resolve().parents[1]
    git = ["git", "-C", str(root)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, check=False,
                          text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "era_sklearn"], capture_output=True, check=False,
                           text=True).stdout.strip()
    return head + ("+dirty" if dirty else "")


def run_ours(doc_model, seed, negatives, data):
    rng = np.random.default_rng(seed)
    align = rng.choice(len(data["corpus"]), size=N_ALIGN, replace=False)
    q, d = data["train_query_rows"], data["train_doc_rows"]
    tic = time.perf_counter()
    stage1, final, history = fit_paper_recipe(
        data["align_source"][align], data["corpus"][align], data["queries"][q],
        data["corpus"][d], q, data["corpus"], d, negatives=negatives, seed=seed,
    )
    seconds = time.perf_counter() - tic
    test_Q = data["queries"][data["test_rows"]]
    epochs = [e for e in history["epochs"] if e["epoch"] > 0]
    return {
        "doc_model": doc_model, "seed": seed, "negatives": negatives,
        "stage1_ndcg10": ndcg10(stage1(test_Q), data), "final_ndcg10": ndcg10(final(test_Q), data),
        "n_test_queries": len(test_Q), "label_epochs_run": len(epochs),
        "best_epoch": history["best_epoch"], "stop_reason": history["stop_reason"],
        "n_train_queries": history["n_train_queries"],
        "n_valid_queries": history["n_valid_queries"], "seconds": round(seconds, 1),
        "commit": _commit(),
    }


# ------------------------------------------------------------------ table


def _cells(runs, doc_model):
    """Per cell, the per-seed values: stage 1 (once per seed) and both finals."""
    out = {"stage 1": {}, "final topk_percpos": [], "final random": []}
    for r in runs:
        if r["doc_model"] != doc_model:
            continue
        out["stage 1"].setdefault(r["seed"], r["stage1_ndcg10"])
        out[f"final {r['negatives']}"].append(r["final_ndcg10"])
    out["stage 1"] = list(out["stage 1"].values())
    return out


def _stats(values):
    v = np.asarray(values, dtype=float)
    std = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
    return float(v.mean()) if len(v) else float("nan"), std, len(v)


def verdict(ours, official):
    """Parity if |difference of means| <= max(0.03, 2 standard errors of it)."""
    (m1, s1, n1), (m2, s2, n2) = _stats(ours), _stats(official)
    if not n1 or not n2:
        return None
    se = float(np.sqrt((s1**2 / n1 if n1 > 1 else 0) + (s2**2 / n2 if n2 > 1 else 0)))
    tol = max(TOLERANCE, 2 * se)
    diff = m1 - m2
    return {"ours_mean": m1, "ours_std": s1, "ours_n": n1, "official_mean": m2,
            "official_std": s2, "official_n": n2, "difference": diff, "standard_error": se,
            "tolerance": tol, "parity": bool(abs(diff) <= tol)}


def table(ours_runs, official):
    rows, cells = [], {}
    for doc_model in DOC_MODELS:
        mine, theirs = _cells(ours_runs, doc_model), _cells(official["runs"], doc_model)
        for cell in mine:
            v = verdict(mine[cell], theirs[cell])
            if v is None:
                continue
            cells[f"{doc_model} | {cell}"] = v
            rows.append(
                f"| {doc_model} | {cell} | {v['ours_mean']:.3f} ± {v['ours_std']:.3f} "
                f"(n={v['ours_n']}) | {v['official_mean']:.3f} ± {v['official_std']:.3f} "
                f"(n={v['official_n']}) | {v['difference']:+.3f} | "
                f"{v['difference'] / v['standard_error']:+.1f} | {v['tolerance']:.3f} | "
                f"{'parity' if v['parity'] else 'DIFFERS'} |"
            )
    return rows, cells


def _timings(runs):
    lines = []
    for r in sorted(runs, key=lambda r: (r["doc_model"], r["seed"], r["negatives"])):
        lines.append(f"| {r['doc_model']} | {r['seed']} | {r['negatives']} | "
                     f"{r['stage1_ndcg10']:.3f} | {r['final_ndcg10']:.3f} | "
                     f"{r['label_epochs_run']} | {r['best_epoch']} | {r['seconds']:.0f} |")
    return lines


def _diagnostics(official):
    """Extra official-vs-ours checks stored with the official numbers, if any."""
    notes = official.get("diagnostics", [])
    if not notes:
        return []
    return ["## Diagnostics", "", *[f"- {n}" for n in notes], ""]


def write_table(ours):
    official = json.loads(OFFICIAL_JSON.read_text())
    rows, cells = table(ours["runs"], official)
    head = "| run | seed | negatives | stage 1 | final | stage-2 epochs | best epoch | seconds |"
    sep = "|---|---|---|---|---|---|---|---|"
    md = [
        "# Paper recipe vs the official ERA code (SciFact)",
        "",
        (f"Command: `{ours['command']}` (our side); official side: `{official['command']}` "
        f"on megagonlabs/ERA {official['era_commit'][:7]}."),
        "",
        ("nDCG@10 of the 300 SciFact test queries over the whole corpus; queries by "
        "all-mpnet-base-v2, documents by the named model; mean ± standard deviation over "
        "seeds 0, 1, 2. Stage 1: 1,000 random corpus documents, 10% held out, linear layer "
        "from random init, cosine loss, 10 epochs. Stage 2: the 809 training queries, 20% "
        "held out for early stopping on the InfoNCE loss (patience 5), lr 1e-5, one fixed "
        "positive and 5 negatives per query. Parity: |difference| <= max(0.03, 2 standard "
        "errors of the difference)."),
        "",
        "| documents | cell | ours | official | difference | difference / SE | tolerance | verdict |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "## Our runs",
        "",
        head, sep, *_timings(ours["runs"]),
        "",
        "## Official runs",
        "",
        head, sep, *_timings(official["runs"]),
        "",
        *_diagnostics(official),
        (f"Ours: torch {ours['torch']}, {ours['torch_threads']} torch thread, "
        f"{ours['blas']}; official: torch {official['torch']}, "
        f"{official['torch_threads']} torch thread. Machine shared with other jobs: "
        "seconds are indicative only."),
        "",
    ]
    TABLE_MD.write_text("\n".join(md))
    ours["parity"] = cells
    OURS_JSON.write_text(json.dumps(ours, indent=1))
    print("\n".join(md))


def _blas():
    return ", ".join(f"{i['internal_api']} {i['num_threads']} threads" for i in threadpool_info())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DOC_MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the official runs: one torch thread
    ours = json.loads(OURS_JSON.read_text()) if OURS_JSON.exists() else {"runs": []}
    import era_sklearn

    ours.update(command="python -m benchmarks.paper_parity", torch=torch.__version__,
                era_sklearn=str(Path(era_sklearn.__file__).parent),
                torch_threads=torch.get_num_threads(), blas=_blas(),
                python=platform.python_version(), paper_align=PAPER_ALIGN,
                paper_adapt=PAPER_ADAPT, validation_fraction=VALIDATION_FRACTION)
    done = {(r["doc_model"], r["seed"], r["negatives"]) for r in ours["runs"]}
    if not args.table_only:
        for doc_model in args.models:
            data = load_scifact(doc_model)
            for seed in args.seeds:
                for negatives in STRATEGIES:
                    if (doc_model, seed, negatives) in done:
                        continue
                    record = run_ours(doc_model, seed, negatives, data)
                    print(json.dumps(record), flush=True)
                    ours["runs"].append(record)
                    OURS_JSON.write_text(json.dumps(ours, indent=1))
    if OFFICIAL_JSON.exists():
        write_table(ours)
    else:
        print(f"{OFFICIAL_JSON} not found: no table.")


if __name__ == "__main__":
    main()
