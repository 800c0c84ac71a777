"""Benchmark HNSWIndex against exact search: recall@10, queries/s, build time.

Two corpora: SciFact's MiniLM document embeddings queried with mpnet test
queries adapted into MiniLM space, and a synthetic normalised-Gaussian corpus
(default 2e5 x 384; 1e6 needs > 15 min to build on 2 cores) queried with noisy
copies of its rows. Also checks that nDCG@10 of the adapted SciFact run is
the same (< 0.005 apart) whether the documents come from the index or from
exact search.

Usage::

    PYTHONPATH=. python benchmarks/index_bench.py [--n-synthetic 200000] [--ef 50 100 200 400]

Writes ``benchmarks/results/index.json`` and ``benchmarks/results/index.md``.
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from era_sklearn._hnsw import HNSWIndex
from era_sklearn._search import ExactIndex, search
from era_sklearn.metrics import ndcg_at_k, qrels_to_matrix

K = 10
RESULTS = Path(__file__).resolve().parent / "results"


def default_shared():
    return Path(
        os.environ.get("ERA_SHARED_DIR", Path(__file__).resolve().parents[1].parent / "shared")
    )


def read_qrels(path):
    qrels = {}
    for line in Path(path).read_text().splitlines()[1:]:
        qid, did, grade = line.split("\t")
        qrels.setdefault(qid, {})[did] = int(grade)
    return qrels


def procrustes(X, Y):
    """Orthogonal map W minimising ||Xn W - Yn|| (square dims padded by SVD shape)."""
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    Yn = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    U, _, Vt = np.linalg.svd(Xn.T @ Yn, full_matrices=False)
    return (U @ Vt).astype(np.float32)


class _LinearMap:
    """Minimal adapter: ``transform(X) = normalise(X) @ W``."""

    def __init__(self, W):
        self.W = W

    def transform(self, X):
        return (X / np.linalg.norm(X, axis=1, keepdims=True)) @ self.W


def fit_adapter(emb, qrels_train, query_ids, corpus_ids, seed):
    """ERAAdapter when the lead's code imports and fits; else Procrustes on 1,000 docs."""
    X_docs, Y_docs, X_queries = emb["mpnet_corpus"], emb["minilm_corpus"], emb["mpnet_queries"]
    try:
        from era_sklearn import ERAAdapter

        qrow = {q: i for i, q in enumerate(query_ids)}
        drow = {d: j for j, d in enumerate(corpus_ids)}
        pairs = [
            (qrow[q], drow[d])
            for q, ds in qrels_train.items()
            for d in ds
            if q in qrow and d in drow
        ]
        qi, di = map(np.asarray, zip(*pairs))
        adapter = ERAAdapter().fit_align(X_docs, Y_docs).fit(X_queries[qi], Y_docs[di])
        return adapter, "ERAAdapter"
    except (ImportError, AttributeError, TypeError, ValueError, RuntimeError) as exc:
        print(f"ERAAdapter unavailable ({type(exc).__name__}: {exc}); using Procrustes")
        rows = np.random.default_rng(seed).choice(len(X_docs), 1000, replace=False)
        return _LinearMap(procrustes(X_docs[rows], Y_docs[rows])), "procrustes-1000"


def recall_at_k(approx, exact):
    hits = [len(set(a) & set(e)) for a, e in zip(approx.tolist(), exact.tolist())]
    return float(np.mean(hits)) / exact.shape[1]


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def bench_corpus(name, docs, queries, efs, n_jobs, seed):
    """Build once, then for each ef: recall@10 vs exact and queries/s of both."""
    exact = ExactIndex(n_neighbors=K).fit(docs)
    exact_ind, exact_s = timed(exact.kneighbors, queries, return_distance=False)
    index, build_s = timed(HNSWIndex(n_neighbors=K, n_jobs=n_jobs, random_state=seed).fit, docs)
    rows = []
    for ef in efs:
        index.set_params(ef=ef)
        ind, hnsw_s = timed(index.kneighbors, queries, return_distance=False)
        rows.append(
            {
                "corpus": name,
                "n_docs": len(docs),
                "dim": docs.shape[1],
                "n_queries": len(queries),
                "ef": ef,
                "recall@10": recall_at_k(ind, exact_ind),
                "hnsw_qps": len(queries) / hnsw_s,
                "exact_qps": len(queries) / exact_s,
                "build_s": build_s,
            }
        )
        print(f"  {name} ef={ef}: recall@10={rows[-1]['recall@10']:.4f}", flush=True)
    return index, exact, rows


def ndcg_through(index, adapter, X, qrels):
    """nDCG@10 of a run whose top-10 come from ``index`` (other docs score below all)."""
    ids, scores = search(adapter, index, X, k=K)
    dense = np.full((len(X), index.n_samples_fit_), -2.0, dtype=np.float32)
    np.put_along_axis(dense, ids.astype(np.intp), scores, axis=1)
    return ndcg_at_k(dense, qrels, k=K)


def bench_scifact(shared, efs, n_jobs, seed):
    emb_dir = shared / "embeddings" / "scifact"
    emb = {
        "minilm_corpus": np.load(emb_dir / "all-MiniLM-L6-v2" / "corpus.npy"),
        "mpnet_corpus": np.load(emb_dir / "all-mpnet-base-v2" / "corpus.npy"),
        "mpnet_queries": np.load(emb_dir / "all-mpnet-base-v2" / "queries.npy"),
    }
    corpus_ids = (emb_dir / "corpus_ids.txt").read_text().split()
    query_ids = (emb_dir / "query_ids.txt").read_text().split()
    qrels_dir = shared / "datasets" / "scifact" / "qrels"
    adapter, adapter_name = fit_adapter(
        emb, read_qrels(qrels_dir / "train.tsv"), query_ids, corpus_ids, seed
    )
    test = read_qrels(qrels_dir / "test.tsv")
    test_rows = [i for i, q in enumerate(query_ids) if q in test]
    X_test = emb["mpnet_queries"][test_rows]
    queries = np.asarray(adapter.transform(emb["mpnet_queries"]), dtype=np.float32)
    index, exact, rows = bench_corpus(
        "scifact-minilm", emb["minilm_corpus"], queries, efs, n_jobs, seed
    )
    qrels = qrels_to_matrix(test, [query_ids[i] for i in test_rows], corpus_ids)
    ndcg = {
        "adapter": adapter_name,
        "n_test_queries": len(test_rows),
        "ndcg@10_exact": ndcg_through(exact, adapter, X_test, qrels),
    }
    for row in rows:
        index.set_params(ef=row["ef"])
        ndcg[f"ndcg@10_hnsw_ef{row['ef']}"] = ndcg_through(index, adapter, X_test, qrels)
    ndcg["max_abs_diff"] = max(
        abs(v - ndcg["ndcg@10_exact"]) for k, v in ndcg.items() if k.startswith("ndcg@10_hnsw")
    )
    return rows, ndcg


def synthetic(n, dim, n_queries, noise, seed):
    """Normalised Gaussian rows; queries are noisy copies of random rows."""
    rng = np.random.default_rng(seed)
    docs = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # chunks keep float64 temporaries small
        block = rng.standard_normal((min(100_000, n - start), dim), dtype=np.float32)
        docs[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    src = rng.choice(n, n_queries, replace=False)
    eps = rng.standard_normal((n_queries, dim), dtype=np.float32)
    queries = docs[src] + noise * eps / np.linalg.norm(eps, axis=1, keepdims=True)
    return docs, queries


def markdown(rows, ndcg):
    lines = [
        "| corpus | n_docs | dim | n_queries | ef | recall@10 | HNSW q/s | exact q/s | build s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['corpus']} | {r['n_docs']:,} | {r['dim']} | {r['n_queries']:,} | {r['ef']} | "
        f"{r['recall@10']:.4f} | {r['hnsw_qps']:,.0f} | {r['exact_qps']:,.0f} | "
        f"{r['build_s']:.1f} |"
        for r in rows
    ]
    lines += [
        "",
        f"SciFact test nDCG@10 ({ndcg['adapter']} adapter, "
        f"{ndcg['n_test_queries']} queries): exact {ndcg['ndcg@10_exact']:.4f}; "
        + "; ".join(
            f"{k.split('_')[-1]} {v:.4f}" for k, v in ndcg.items() if k.startswith("ndcg@10_hnsw")
        )
        + f"; max |diff| {ndcg['max_abs_diff']:.4f} (must be < 0.005)",
    ]
    return "\n".join(lines)


def write(rows, ndcg, args):
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "n_jobs": args.n_jobs,
        "python": platform.python_version(),
    }
    payload = {
        "rows": rows,
        "ndcg": ndcg,
        "env": env,
        "args": {**vars(args), "shared": str(args.shared)},
    }
    (RESULTS / "index.json").write_text(json.dumps(payload, indent=2))
    table = markdown(rows, ndcg)
    (RESULTS / "index.md").write_text(
        "# HNSWIndex vs exact search\n\n`python benchmarks/index_bench.py "
        f"--n-synthetic {args.n_synthetic}` on {env['cpus']} CPUs (n_jobs={args.n_jobs}).\n\n"
        f"{table}\n"
    )
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=default_shared())
    # 1e6 x 384 takes > 15 min to build on 2 cores (~1,000 inserts/s at ef_construction=200),
    # so the default is 2e5; pass --n-synthetic 1000000 on a bigger machine.
    parser.add_argument("--n-synthetic", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--n-queries", type=int, default=1000)
    parser.add_argument(
        "--noise",
        type=float,
        default=0.5,
        help="norm of the noise added to a unit corpus row to make a query",
    )
    parser.add_argument("--ef", type=int, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument("--n-jobs", type=int, default=-1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rows, ndcg = bench_scifact(args.shared, args.ef, args.n_jobs, args.seed)
    write(rows, ndcg, args)  # SciFact results survive a killed synthetic run
    docs, queries = synthetic(args.n_synthetic, args.dim, args.n_queries, args.noise, args.seed)
    rows += bench_corpus(
        f"synthetic-{args.n_synthetic:.0e}", docs, queries, args.ef, args.n_jobs, args.seed
    )[2]
    print(write(rows, ndcg, args))


if __name__ == "__main__":
    main()
