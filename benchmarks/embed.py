"""Encode a BEIR or MAIR data set into the shared embeddings layout.

Usage::

    python -m benchmarks.embed --data DIR --format beir|mair --encoder NAME_OR_PATH \\
        --kind sentence-transformers|model2vec --name OUTNAME --out ROOT \\
        [--dataset NAME] [--task TASK] [--split SPLIT] [--batch-size 32]

writes ``ROOT/<dataset>/corpus_ids.txt``, ``query_ids.txt`` and
``ROOT/<dataset>/<name>/corpus.npy``, ``queries.npy`` (float32, the model's own
output: no normalisation is added, so a model ending in a Normalize layer still gives
unit rows), which :func:`era_sklearn.datasets.load_embeddings` reads back.  Every file
is written atomically, and a matrix already there with the same ids is not
recomputed.  Models load offline (``HF_HUB_OFFLINE=1``) from a local folder or cache.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from era_sklearn.datasets import load_beir, load_mair

KINDS = ("sentence-transformers", "model2vec")
# (part, ids file, matrix file) of the shared layout.
PARTS = (("corpus", "corpus_ids.txt", "corpus.npy"), ("queries", "query_ids.txt", "queries.npy"))


def load_texts(data, fmt, *, split=None, task=None):
    """Corpus and query texts to encode, keyed by id.

    BEIR keeps every query of ``queries.jsonl`` unless ``split`` names a qrels file
    (the shared embeddings hold all queries).  MAIR queries carry their instruction.

    Returns
    -------
    corpus, queries : dict of str to str
    """
    if fmt == "beir":
        ds = load_beir(data, split or "test", all_queries=split is None)
    else:
        ds = load_mair(data, task, split=split or "queries", all_queries=True)
    return ds.corpus, ds.query_texts()


def load_encoder(name_or_path, kind):
    """Return ``encode(texts, batch_size) -> float32 array`` for a local model.

    Imports the model library only here, so that ``--help`` and cached runs need neither.
    """
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")
    if kind == "model2vec":
        from model2vec import StaticModel

        model = StaticModel.from_pretrained(name_or_path)
    else:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(name_or_path)

    def encode(texts, batch_size):
        out = model.encode(list(texts), batch_size=batch_size, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)

    return encode


def _atomic_write(path, write):
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def sync_ids(path, ids):
    """Write the id file, or check that the one there lists the same ids.

    A different id list is an error rather than an overwrite: other encoders'
    matrices in the same folder are indexed by the old list.
    """
    if any("\n" in i for i in ids):
        raise ValueError(f"An id for {path.name} contains a newline.")
    if path.exists():
        if path.read_text(encoding="utf-8").splitlines() != ids:
            raise ValueError(f"{path} lists other ids; use a fresh --out or --dataset.")
        return
    _atomic_write(path, lambda f: f.write("".join(f"{i}\n" for i in ids).encode("utf-8")))


def is_cached(path, n_rows):
    """Whether ``path`` already holds a matrix of ``n_rows`` rows."""
    if not path.exists():
        return False
    return np.load(path, mmap_mode="r").shape[0] == n_rows


def embed_dataset(corpus, queries, folder, name, get_encoder, batch_size=32, log=print):
    """Write ids and the ``name`` encoder's matrices under ``folder``, skipping cached ones.

    Returns
    -------
    list of str
        The parts (``"corpus"``, ``"queries"``) that were encoded.
    """
    encoded = []
    for (part, ids_file, npy_file), texts in zip(PARTS, (corpus, queries)):
        ids = list(texts)
        sync_ids(folder / ids_file, ids)
        target = folder / name / npy_file
        if is_cached(target, len(ids)):
            log(f"{target}: cached")
            continue
        start = time.perf_counter()
        matrix = get_encoder()([texts[i] for i in ids], batch_size)
        _atomic_write(target, lambda f, m=matrix: np.save(f, m))
        log(f"{target}: {matrix.shape} in {time.perf_counter() - start:.1f}s")
        encoded.append(part)
    return encoded


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.embed", description=__doc__.split("\n")[0]
    )
    p.add_argument("--data", required=True, help="BEIR folder, or MAIR folder / hub task name")
    p.add_argument("--format", required=True, choices=("beir", "mair"))
    p.add_argument("--encoder", required=True, help="model folder (or cached hub name)")
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument("--name", required=True, help="encoder subfolder name in the output")
    p.add_argument("--out", required=True, type=Path, help="root of the embeddings layout")
    p.add_argument("--dataset", help="data set subfolder name (default: task or --data's name)")
    p.add_argument("--task", help="MAIR task subfolder of --data")
    p.add_argument(
        "--split",
        help="BEIR: keep only queries judged in this qrels split (default: all queries); "
        "MAIR: query split (default: queries)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    corpus, queries = load_texts(args.data, args.format, split=args.split, task=args.task)
    dataset = args.dataset or args.task or Path(args.data).name
    # Load the model only if some matrix is missing; cached runs stay cheap.
    get_encoder = functools.cache(lambda: load_encoder(args.encoder, args.kind))
    log = functools.partial(print, file=sys.stderr)
    embed_dataset(corpus, queries, args.out / dataset, args.name, get_encoder, args.batch_size, log)


if __name__ == "__main__":
    main()
