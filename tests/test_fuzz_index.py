"""Fuzz HNSWIndex and ExactIndex over shapes, dtypes, magnitudes, parameters and files.

Every outcome must be a finite result or a ValueError / TypeError whose message
names the problem: never another exception, never a crash, never a silently wrong
answer (querying a stored row must find it at distance ~0). The HNSW part runs in
a child process, so that a segfault inside hnswlib fails the test instead of
killing the test run.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from era_sklearn import ExactIndex, HNSWIndex
from era_sklearn._index.hnsw_format import HEADER

ROOT = Path(__file__).resolve().parents[1]
FUZZ = settings(
    # A few seconds in CI; ERA_FUZZ_EXAMPLES=5000 ERA_FUZZ_RANDOM=1 for a long
    # adversarial run that explores new examples each time.
    max_examples=int(os.environ.get("ERA_FUZZ_EXAMPLES", "120")),
    deadline=None,
    # The same examples on every run, so CI is deterministic.
    derandomize=os.environ.get("ERA_FUZZ_RANDOM") != "1",
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
#: Row scales: zero, float64 and float32 denormals, tiny, ordinary, near and past
#: the "ip"/"l2" norm limit, near float32's maximum, past it (finite in float64 only).
SCALES = [0.0, 5e-324, 1e-310, 1e-45, 1e-40, 1e-20, 1.0, 1e3, 1e17, 1e19, 1e30, 1e38, 1e300]
DTYPES = ["float16", "float32", "float64", "int8", "int64", "bool"]
#: A refusal must say what is wrong: one of these words.
NAMES_PROBLEM = re.compile(
    r"NaN|infinity|norm|n_neighbors|features|sample|parameter|ids|dim|element|header|"
    r"label|link|entry|level|vector|metadata|meta\.json|JSON|field|params|bytes|space|HNSW graph|"
    r"version"
)


@st.composite
def matrices(draw, n_cols, max_rows=10):
    """A 2-D array of one dtype and scale, with NaN / inf / zero rows / duplicates at times."""
    n = draw(st.integers(1, max_rows))
    dtype, scale = draw(st.sampled_from(DTYPES)), draw(st.sampled_from(SCALES))
    special = draw(st.sampled_from(["none"] * 4 + ["nan", "inf", "zero_row", "zeros", "dupes"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    X = rng.standard_normal((n, n_cols)) * scale
    if special == "nan":
        X[rng.integers(n), rng.integers(n_cols)] = np.nan
    elif special == "inf":
        X[rng.integers(n), rng.integers(n_cols)] = -np.inf
    elif special == "zero_row":
        X[rng.integers(n)] = 0
    elif special == "zeros":
        X[:] = 0
    elif special == "dupes":
        X[:] = X[0]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # float16 / float32 casts overflow to inf on purpose
        if np.dtype(dtype).kind == "i":
            info = np.iinfo(dtype)
            X = np.clip(np.nan_to_num(np.rint(X)), info.min, info.max)
        return X.astype(dtype)


def ids_for(kind, n):
    return {
        "none": None,
        "str": [f"d{i}" for i in range(n)],
        "int": list(range(100, 100 + n)),
        "mixed": [i if i % 2 else f"d{i}" for i in range(n)],
        "dupes": ["same"] * n,
        "float": [float(i) + 0.5 for i in range(n)],
        "bool": [bool(i % 2) for i in range(n)],
        "short": list(range(n - 1)),
    }[kind]


IDS = st.sampled_from(["none", "str", "int", "mixed"] * 2 + ["dupes", "float", "bool", "short"])
#: Neighbour counts: a fraction of the document count mostly, at times too many or absurd.
COUNTS = st.one_of(
    st.floats(0, 1), st.floats(0, 1), st.sampled_from([None, "n+1", 0, -1, True, 2.0, np.int64(1)])
)


def pick_k(choice, n):
    if isinstance(choice, float):
        return max(1, round(choice * n))
    return n + 1 if choice == "n+1" else choice


def outcome(call):
    """``call()``, or None when it refuses with a ValueError / TypeError that names the problem.

    Any other exception propagates and fails the example.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return call()
    except (ValueError, TypeError) as e:
        assert NAMES_PROBLEM.search(str(e)), f"refusal does not name the problem: {e!r}"
        return None


def check_result(result, n_queries, k, ids):
    dist, ind = result
    assert dist.shape == ind.shape == (n_queries, k)
    assert np.isfinite(dist).all(), dist
    assert set(np.asarray(ind).ravel().tolist()) <= set(np.asarray(ids).tolist())


def check_finds_itself(index, D):
    """Querying a stored non-zero row returns a document at distance ~0 (cosine / l2).

    For HNSW only where its search is exhaustive (ef >= n_docs, a graph of degree
    >= 4): with ef=1 a greedy search may legitimately stop at a local minimum.
    """
    if index.space == "ip":
        return
    if isinstance(index, HNSWIndex) and (index.ef < len(D) or index.M < 4):
        return
    Q = np.asarray(D, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", Q, Q, dtype=np.float64))
    r = int(np.argmax(norms))
    if not norms[r] > 0:
        return  # zero in float32 (e.g. underflowed float64 denormals): no direction
    dist = index.kneighbors(Q[r : r + 1], n_neighbors=1)[0][0, 0]
    scale = 1.0 if index.space == "cosine" else norms[r]
    assert dist <= 1e-3 * scale, (dist, scale)


def run_case(index, D, ids, Q, k_choice):
    """Fit, query, add; return the fitted index or None when fitting was refused."""
    fitted = outcome(lambda: index.fit(D, ids=ids))
    if fitted is None:
        return None
    n = len(D)
    check_finds_itself(fitted, D)
    k = pick_k(k_choice, n)
    result = outcome(lambda: fitted.kneighbors(Q, n_neighbors=k, return_ids=True))
    if result is not None:
        n_queries = n if Q is None else len(Q)
        check_result(result, n_queries, fitted.n_neighbors if k is None else k, fitted.ids_)
    new_ids = None if ids is None else [f"new{i}" for i in range(n)]
    added = outcome(lambda: fitted.add(D, ids=new_ids))
    if added is not None:
        assert added.n_samples_fit_ == 2 * n
    return fitted


# --- ExactIndex: in process ------------------------------------------------------------


@FUZZ
@given(
    D=matrices(n_cols=4),
    Q=st.one_of(st.none(), matrices(n_cols=4), matrices(n_cols=3)),
    k=COUNTS,
    space=st.sampled_from(["cosine", "l2", "ip"] * 2 + ["bogus"]),
    n_neighbors=st.one_of(st.integers(1, 4), st.integers(1, 4), st.sampled_from([0, True, 1.0])),
    ids=IDS,
)
def test_exact_index_fuzz(D, Q, k, space, n_neighbors, ids):
    run_case(ExactIndex(n_neighbors=n_neighbors, space=space), D, ids_for(ids, len(D)), Q, k)


# --- HNSWIndex: in a child process ----------------------------------------------------

#: One parameter set to a value hnswlib must never see (M=0 segfaulted in era_sklearn 0.1).
BAD_PARAMS = [
    ("M", 0), ("M", 1), ("M", True), ("M", 2.0), ("M", 10_001), ("ef", 0), ("ef", True),
    ("ef", -1), ("ef", 2**40), ("ef_construction", 0), ("ef_construction", 2**70),
    ("n_jobs", 0), ("n_jobs", True), ("random_state", -1), ("random_state", True),
    ("n_neighbors", True), ("n_neighbors", 0), ("space", "manhattan"),
]  # fmt: skip
META_FIELDS = [
    "format_version", "dim", "space", "element_count", "max_elements", "positional_ids",
    "ids_dtype", "ids", "params", "params.M", "params.ef", "params.space", "params.n_neighbors",
    "params.ef_construction", "params.random_state", "params.n_jobs", "ids.0",
]  # fmt: skip
JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([4096, 10**6, 2**64, -(2**63), "<U1", "<i1", "<f8", "object"]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.lists(st.integers(0, 3), max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)
WORDS = st.one_of(
    st.integers(0, 2**32 - 1),
    # small counts and ids, -1, the sign bit, float32 inf and NaN
    st.sampled_from([0, 1, 2, 3, 12, 24, 0xFFFFFFFF, 0x80000000, 0x7F800000, 0x7FC00000]),
)
TAMPER = st.one_of(
    st.none(),
    st.tuples(st.just("meta"), st.sampled_from(META_FIELDS), JSON_VALUES),
    st.tuples(
        st.sampled_from(["header", "links", "vector", "label", "upper", "truncate", "append"]),
        st.integers(0, 2**16),
        WORDS,
    ),
)


def tamper(path, edit):
    """Edit one meta.json field, or one 4-byte word of a region of the hnswlib file."""
    if edit is None:
        return
    kind, where, value = edit
    if kind == "meta":
        meta = json.loads((path / "meta.json").read_text())
        target, key = meta, where
        if "." in where:
            head, key = where.split(".")
            target = meta[head]
            key = int(key) if isinstance(target, list) else key
        target[key] = value
        (path / "meta.json").write_text(json.dumps(meta))
        return
    data = bytearray((path / "index.hnsw").read_bytes())
    header = np.frombuffer(data[: HEADER.itemsize], dtype=HEADER)[0]
    n, size = int(header["cur_element_count"]), int(header["size_data_per_element"])
    start, end = {  # byte range of each field of record `where % n`, or of a region
        "header": (0, HEADER.itemsize),
        "links": (0, int(header["offset_data"])),
        "vector": (int(header["offset_data"]), int(header["label_offset"])),
        "label": (int(header["label_offset"]), size),
        "upper": (HEADER.itemsize + n * size, len(data)),
    }.get(kind, (0, len(data)))
    if kind in ("links", "vector", "label"):
        record = HEADER.itemsize + (where % n) * size
        start, end, where = record + start, record + end, where // n
    if kind == "truncate":
        del data[where % len(data) :]
    elif kind == "append":
        data += value.to_bytes(4, "little")
    elif end - start >= 4:
        pos = start + 4 * (where % ((end - start) // 4))
        data[pos : pos + 4] = value.to_bytes(4, "little")
    (path / "index.hnsw").write_bytes(bytes(data))


@FUZZ
@given(
    D=matrices(n_cols=5, max_rows=12),
    Q=st.one_of(st.none(), matrices(n_cols=5)),
    k=COUNTS,
    params=st.fixed_dictionaries(
        {
            "space": st.sampled_from(["cosine", "l2", "ip"]),
            "M": st.integers(2, 16),
            "ef": st.integers(1, 50),
            "ef_construction": st.integers(1, 30),
            "n_jobs": st.sampled_from([None, 1, 2, -1, 10**6]),
        }
    ),
    bad_param=st.one_of(st.none(), st.none(), st.none(), st.sampled_from(BAD_PARAMS)),
    ids=IDS,
    edit=TAMPER,
)
def _hnsw_fuzz(D, Q, k, params, bad_param, ids, edit):
    params = {**params, "random_state": 0}
    if bad_param is not None:
        params[bad_param[0]] = bad_param[1]
    fitted = run_case(HNSWIndex(**params), D, ids_for(ids, len(D)), Q, k)
    if fitted is None:
        return
    query = fitted._stored_vectors()[:3]
    with tempfile.TemporaryDirectory() as tmp:
        path = fitted.save(Path(tmp) / "idx")
        clean = HNSWIndex.load(path)
        for a, b in zip(fitted.kneighbors(query, 1), clean.kneighbors(query, 1)):
            np.testing.assert_array_equal(a, b)
        tamper(path, edit)
        loaded = outcome(lambda: HNSWIndex.load(path))
    if loaded is None:
        return
    k = min(3, loaded.n_samples_fit_)
    result = outcome(lambda: loaded.kneighbors(query, n_neighbors=k, return_ids=True))
    if result is not None:
        check_result(result, len(query), k, loaded.ids_)
    new_ids = None if loaded._positional_ids else [f"x{i}" for i in range(len(query))]
    outcome(lambda: loaded.add(query, ids=new_ids).kneighbors(query, n_neighbors=1))


def test_hnsw_index_fuzz_in_child_process():
    code = "import sys; sys.path.insert(0, 'tests'); import test_fuzz_index as t; t._hnsw_fuzz()"
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, (
        f"HNSW fuzz child exited with {done.returncode} (negative: killed by that signal)\n"
        f"{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
    )
