"""Cost per query of each piece of an adapted search, on CPU, with real models.

Times, on the SciFact test claims (``shared/datasets/scifact``):

* each encoder one query at a time (``batch_size=1``: the latency a user waits
  for) and in batches of 32 (throughput), through ``era_sklearn.encoders``;
* ``ERAAdapter.transform`` of one query (768 -> 384, fitted on the shared
  embeddings) and the hybrid adapter's (768 + 384 -> 384);
* one query against the SciFact index: FAISS ``IndexFlatIP`` and a Chroma HNSW
  collection (``ef_search=200``) of the 5,183 all-MiniLM-L6-v2 vectors.

Encoders (local folders; nothing is downloaded):

* ``--mpnet DIR``: all-mpnet-base-v2 (the strong query encoder),
* ``--minilm DIR``: all-MiniLM-L6-v2 (the cheap document encoder),
* a static model with all-mpnet-base-v2's tokenizer and 256-d vectors: the shape
  of the distilled ``m2v-mpnet-256`` model (its cost does not depend on the
  vector values, which are random here; the distilled model itself is not shipped).

Each figure is the median of ``--repeats`` timed runs after one warm-up run.
The machine's load average and BLAS threads are printed with the table: on a
shared machine the figures are upper bounds.

Usage::

    PYTHONPATH=. python -m benchmarks.encoder_cost --mpnet DIR --minilm DIR [--queries 100] [--repeats 5] \\
        [--threads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from functools import partial

import numpy as np

from era_sklearn import ERAAdapter
from era_sklearn.datasets import load_beir, shared_dir
from era_sklearn.encoders import Model2VecEncoder, SentenceTransformerEncoder


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


def static_like_m2v(mpnet_dir, dim=256):
    from model2vec import StaticModel
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(os.path.join(mpnet_dir, "tokenizer.json"))
    vectors = np.random.default_rng(0).normal(size=(tokenizer.get_vocab_size(), dim))
    return StaticModel(vectors.astype(np.float32), tokenizer)


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
    rows = np.random.default_rng(0).choice(len(docs), 1000, replace=False)
    plain = ERAAdapter(random_state=0).fit_align(strong_docs[rows], docs[rows])
    hybrid = ERAAdapter(hybrid=True, random_state=0).fit_align(
        np.hstack([strong_docs[rows], docs[rows]]), docs[rows])
    q1, qh = queries[:1], np.hstack([queries[:1], np.load(emb / "all-MiniLM-L6-v2" / "queries.npy")[:1]])
    out = [("ERAAdapter.transform, 1 query (768 -> 384)", per_query_ms(lambda: plain.transform(q1), 1, repeats)),
           ("hybrid ERAAdapter.transform, 1 query (1152 -> 384)", per_query_ms(lambda: hybrid.transform(qh), 1, repeats))]
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
    from threadpoolctl import threadpool_info

    blas = [f"{i['internal_api']} {i['num_threads']} threads" for i in threadpool_info()]
    import torch

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2), "blas": blas,
            "torch_threads": torch.get_num_threads()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mpnet", required=True)
    parser.add_argument("--minilm", required=True)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="cap BLAS and torch threads (default: their own defaults)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads is not None:
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)

    root = shared_dir()
    claims = load_beir(root / "datasets" / "scifact", split="test").queries
    texts = list(claims.values())[:args.queries]
    encoders = {
        "all-mpnet-base-v2 (768-d)": SentenceTransformerEncoder(args.mpnet, device="cpu", show_progress=False),
        "all-MiniLM-L6-v2 (384-d)": SentenceTransformerEncoder(args.minilm, device="cpu", show_progress=False),
        "static, m2v-mpnet-256 shape (256-d)": Model2VecEncoder(static_like_m2v(args.mpnet), show_progress=False),
    }
    env = environment()
    enc = encoder_rows(encoders, texts, args.repeats)
    adapt, docs, adapted = adapter_rows(root, args.repeats)
    search = search_rows(docs, adapted, args.repeats)

    print(f"SciFact test claims: {len(texts)} (mean {np.mean([len(t) for t in texts]):.0f} characters)")
    print(f"environment: {env}\n")
    print("| encoder | ms per query, one at a time | ms per query, batches of 32 |")
    print("|---|---:|---:|")
    for name, one, batch in enc:
        print(f"| {name} | {one:.2f} | {batch:.2f} |")
    print("\n| step | ms per query |")
    print("|---|---:|")
    for name, ms in adapt + search:
        print(f"| {name} | {ms:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "n_queries": len(texts), "repeats": args.repeats,
                       "encoders": enc, "steps": adapt + search}, f, indent=2)


if __name__ == "__main__":
    main()
