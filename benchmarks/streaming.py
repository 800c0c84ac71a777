"""Streaming stage 1: ``partial_fit_align`` over 1e6 x 768 -> 384 float32 pairs.

Pairs are generated chunk by chunk from seeds, so the full arrays never
exist in the streaming run. Each measurement runs in its own subprocess so
that peak RSS belongs to it alone:

- ``stream``: ``partial_fit_align`` over every chunk; time of the fit calls
  alone (generation excluded) and peak RSS of the process;
- ``floor``: the same chunks concatenated in memory (4.5 GB) and the bare
  GEMMs the statistics need (``X.T @ X`` and ``X.T @ Y`` for lstsq,
  ``X.T @ Y`` for Procrustes): the time no exact method can beat;
- ``accuracy``: on the first 1e5 pairs, the streamed map against in-memory
  ``fit_align`` (max abs difference of ``coef_``).

Both sides run the estimator: :class:`Stream` (``partial_fit_align``) and
:func:`benchmarks.speed.fit_align` (``fit_align``).

Run ``python -m benchmarks.streaming`` (``--n-rows`` for a quick try); it
prints a markdown table and writes ``benchmarks/results/streaming.{json,md}``.
"""

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

D_Q, D_D, CHUNK, SEED = 768, 384, 10_000, 0
RESULTS = Path(__file__).parent / "results"
TARGETS = {"peak_rss_gb": 1.0, "time_ratio": 1.3, "max_abs_diff": 1e-5}


def chunk(i, rows=CHUNK):
    """Pair chunk ``i``: ``Y = X R + noise`` with a fixed random ``R``."""
    R = np.random.default_rng(SEED).standard_normal((D_Q, D_D), dtype=np.float32) / D_Q**0.5
    rng = np.random.default_rng([SEED, i])
    X = rng.standard_normal((rows, D_Q), dtype=np.float32)
    Y = X @ R
    Y += 0.1 * rng.standard_normal((rows, D_D), dtype=np.float32)
    return X, Y


def _peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


class Stream:
    """``ERAAdapter(align=...).partial_fit_align`` chunk by chunk, then ``align_coef_``."""

    def __init__(self, align):
        from era_sklearn import ERAAdapter
        from era_sklearn.align import LeastSquares, Procrustes

        from .speed import ALPHA

        solver = LeastSquares(alpha=ALPHA) if align == "lstsq" else Procrustes()
        self.est = ERAAdapter(align=solver)

    def partial_fit_align(self, X, Y):
        self.est.partial_fit_align(X, Y)

    def coef(self):
        return self.est.align_coef_  # solved at the end of each chunk: a read costs nothing


def run_stream(align, n_rows):
    stream, fit_s = Stream(align), 0.0
    for i in range(n_rows // CHUNK):
        X, Y = chunk(i)
        start = time.perf_counter()
        stream.partial_fit_align(X, Y)
        fit_s += time.perf_counter() - start
    start = time.perf_counter()
    stream.coef()  # kept in the timing, as before: a read, now free
    fit_s += time.perf_counter() - start
    return {"fit_s": fit_s, "peak_rss_gb": _peak_rss_gb()}


def run_floor(align, n_rows):
    X = np.empty((n_rows, D_Q), dtype=np.float32)
    Y = np.empty((n_rows, D_D), dtype=np.float32)
    for i in range(n_rows // CHUNK):
        X[i * CHUNK:(i + 1) * CHUNK], Y[i * CHUNK:(i + 1) * CHUNK] = chunk(i)
    start = time.perf_counter()
    if align == "lstsq":
        X.T @ X
    X.T @ Y
    return {"gemm_s": time.perf_counter() - start, "peak_rss_gb": _peak_rss_gb()}


def run_accuracy(align, n_rows):
    from .speed import fit_align

    parts = [chunk(i) for i in range(n_rows // CHUNK)]
    streamed = Stream(align)
    for X, Y in parts:
        streamed.partial_fit_align(X, Y)
    full, _ = fit_align(align, np.vstack([p[0] for p in parts]), np.vstack([p[1] for p in parts]))
    return {"max_abs_diff": float(np.abs(streamed.coef() - full).max())}


WORKERS = {"stream": run_stream, "floor": run_floor, "accuracy": run_accuracy}


def _subprocess(worker, align, n_rows):
    cmd = [sys.executable, "-m", "benchmarks.streaming", "--worker", worker, "--align", align,
           "--n-rows", str(n_rows)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         cwd=Path(__file__).parent.parent)
    return json.loads(out.stdout.splitlines()[-1])


def measure(align, n_rows, n_accuracy):
    stream = _subprocess("stream", align, n_rows)
    floor = _subprocess("floor", align, n_rows)
    accuracy = _subprocess("accuracy", align, n_accuracy)
    return {
        "align": align, "n_rows": n_rows,
        "stream_fit_s": stream["fit_s"], "stream_peak_rss_gb": stream["peak_rss_gb"],
        "gemm_floor_s": floor["gemm_s"], "floor_peak_rss_gb": floor["peak_rss_gb"],
        "time_ratio": stream["fit_s"] / floor["gemm_s"],
        "n_accuracy": n_accuracy, "max_abs_diff": accuracy["max_abs_diff"],
    }


def table(rows):
    head = ("| align | rows | stream fit (s) | GEMM floor (s) | ratio (target <= 1.3) "
            "| peak RSS stream (GB, target < 1) | max abs diff vs in-memory (target <= 1e-5) |")
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        lines.append(
            f"| {r['align']} | {r['n_rows']:.0e} | {r['stream_fit_s']:.2f} "
            f"| {r['gemm_floor_s']:.2f} | {r['time_ratio']:.2f} | {r['stream_peak_rss_gb']:.3f} "
            f"| {r['max_abs_diff']:.1e} (on {r['n_accuracy']:.0e}) |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-rows", type=int, default=1_000_000)
    parser.add_argument("--n-accuracy", type=int, default=100_000)
    parser.add_argument("--align", choices=["lstsq", "procrustes"])
    parser.add_argument("--worker", choices=list(WORKERS))
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    if args.worker:  # inside a measurement subprocess
        print(json.dumps(WORKERS[args.worker](args.align, args.n_rows)))
        return
    rows = [measure(align, args.n_rows, args.n_accuracy) for align in ("lstsq", "procrustes")]
    text = table(rows)
    print(text)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        machine = {"python": platform.python_version(), "numpy": np.__version__,
                   "machine": platform.machine(), "targets": TARGETS}
        (RESULTS / "streaming.json").write_text(json.dumps({"rows": rows, **machine}, indent=1))
        (RESULTS / "streaming.md").write_text(f"{__doc__.splitlines()[0]}\n\n{text}\n")


if __name__ == "__main__":
    main()
