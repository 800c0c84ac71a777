"""The local encoders (model2vec, sentence-transformers) and the machinery they share:
input checks, batching, the on-disk cache, zero-row warnings, scikit-learn behaviour."""

import pickle
import re
import sqlite3
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import InvalidParameterError

pytest.importorskip("model2vec")

import _text_models

from era_sklearn import ERAAdapter
from era_sklearn._text import cache as _embedding_cache
from era_sklearn._text.cache import FILENAME, EmbeddingCache, text_key
from era_sklearn.encoders import Model2VecEncoder, SentenceTransformerEncoder

TEXTS = ["Cats purr.", "dogs bark", "fish swim", "birds sing", "the cats", "a dog"]


@pytest.fixture
def m2v():
    return _text_models.static_model()


@pytest.fixture
def calls(monkeypatch):
    """Texts per call of StaticModel.encode."""
    from model2vec import StaticModel

    seen = []
    original = StaticModel.encode

    def counted(self, sentences, **kwargs):
        seen.append(len(sentences))
        return original(self, sentences, **kwargs)

    monkeypatch.setattr(StaticModel, "encode", counted)
    return seen


# --- input checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    "X, error, message",
    [
        ("cats purr", TypeError, r"single str; wrap it in a list"),
        ([], ValueError, "no texts"),
        (["ok", None], TypeError, "item 1 is NoneType"),
        (["ok", 3.5], TypeError, "item 1 is float"),
        (np.array([["a", "b"]]), ValueError, r"1-D list of texts, got an array of shape \(1, 2\)"),
        (pd.DataFrame({"t": ["a"]}), ValueError, "pass one column"),
        (42, TypeError, "expects a list of texts, got int"),
    ],
    ids=["str", "empty", "none", "float", "2d", "dataframe", "int"],
)
def test_bad_texts_are_clear_errors(m2v, X, error, message):
    enc = Model2VecEncoder(m2v)
    with pytest.raises(error, match=message):
        enc.transform(X)
    with pytest.raises(error, match=message):
        enc.fit(X)


def test_text_containers_are_accepted(m2v):
    ref = Model2VecEncoder(m2v).transform(TEXTS)
    for X in (tuple(TEXTS), np.array(TEXTS), pd.Series(TEXTS), (t for t in TEXTS)):
        np.testing.assert_array_equal(Model2VecEncoder(m2v).transform(X), ref)


def test_bad_parameters_are_refused(m2v):
    with pytest.raises(InvalidParameterError, match="batch_size"):
        Model2VecEncoder(m2v, batch_size=0).transform(["a"])
    with pytest.raises(InvalidParameterError, match="show_progress"):
        Model2VecEncoder(m2v, show_progress="sometimes").fit(["a"])
    with pytest.raises(InvalidParameterError, match="model"):
        Model2VecEncoder(3).transform(["a"])


# --- model2vec -----------------------------------------------------------------------


def test_model2vec_matches_the_model_in_batches(m2v, calls):
    out = Model2VecEncoder(m2v, batch_size=4).transform(TEXTS)
    assert calls == [4, 2]
    assert out.dtype == np.float32 and out.shape == (6, 8)
    np.testing.assert_allclose(out, m2v.encode(TEXTS), rtol=1e-6)


def test_model2vec_from_a_saved_folder(m2v, tmp_path):
    m2v.save_pretrained(tmp_path / "m2v")
    enc = Model2VecEncoder(tmp_path / "m2v")
    np.testing.assert_allclose(enc.transform(TEXTS), m2v.encode(TEXTS), rtol=1e-6)
    # A pickle carries the path, not the loaded model, and reloads it.
    assert "_loaded" in vars(enc) and "_loaded" not in vars(pickle.loads(pickle.dumps(enc)))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(enc)).transform(TEXTS), enc.transform(TEXTS))


def test_repeated_texts_are_encoded_once(m2v, calls):
    out = Model2VecEncoder(m2v).transform(["cats", "dogs", "cats", "cats"])
    assert calls == [2]
    np.testing.assert_array_equal(out[0], out[2])


def test_zero_rows_are_kept_with_one_warning(m2v):
    texts = ["cats purr", "zzz qqq", "", "dogs"]
    with pytest.warns(UserWarning, match="2 of 4 texts have an all-zero embedding") as record:
        out = Model2VecEncoder(m2v, normalize=True).transform(texts)
    assert len([w for w in record if "all-zero" in str(w.message)]) == 1
    assert not out[[1, 2]].any()
    np.testing.assert_allclose(np.linalg.norm(out[[0, 3]], axis=1), 1.0, rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Model2VecEncoder(m2v).transform(["cats purr"])  # no zero row, no warning


def test_non_finite_model_output_is_refused(tmp_path):
    class Broken:
        def encode(self, texts, **kwargs):
            return np.full((len(texts), 3), np.nan)

    with pytest.raises(ValueError, match="NaN or infinite"):
        Model2VecEncoder(Broken()).transform(["a"])

    class Short:
        def encode(self, texts, **kwargs):
            return np.ones((len(texts) - 1, 3))

    with pytest.raises(ValueError, match=r"shape \(1, 3\) for 2 texts"):
        Model2VecEncoder(Short()).transform(["a", "b"])


# --- cache ---------------------------------------------------------------------------


def test_cache_skips_the_model_and_stores_raw_float32(m2v, calls, tmp_path):
    enc = Model2VecEncoder(m2v, cache_dir=tmp_path, batch_size=4)
    first = enc.transform(TEXTS)
    assert calls == [4, 2]
    calls.clear()
    np.testing.assert_array_equal(Model2VecEncoder(m2v, cache_dir=tmp_path).transform(TEXTS), first)
    assert calls == []  # a fresh encoder of the same model reads the cache
    Model2VecEncoder(m2v, cache_dir=tmp_path).transform(TEXTS[:2] + ["birds"])
    assert calls == [1]  # only the new text
    with sqlite3.connect(tmp_path / FILENAME) as conn:
        rows = conn.execute("SELECT dim, vector FROM vectors").fetchall()
    assert len(rows) == 7
    stored = {bytes(blob) for _, blob in rows}
    assert {dim for dim, _ in rows} == {8}
    assert all(row.astype("<f4").tobytes() in stored for row in first)


def test_cache_is_keyed_by_model_identity(m2v, tmp_path):
    other = _text_models.static_model(seed=1)  # same vocabulary and shape, other weights
    a = Model2VecEncoder(m2v, cache_dir=tmp_path).transform(TEXTS)
    b = Model2VecEncoder(other, cache_dir=tmp_path).transform(TEXTS)
    np.testing.assert_allclose(b, other.encode(TEXTS), rtol=1e-6)
    assert not np.allclose(a, b)
    c = Model2VecEncoder(m2v, cache_dir=tmp_path, normalize=True).transform(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, rtol=1e-6)


_INVALID_ROW = r"cached embedding\(s\) in .*embeddings.sqlite3 are invalid"


@pytest.mark.parametrize("tamper", [
    ("UPDATE vectors SET vector = ?", [b"\x80\x04garbage"]),  # torn: 10 bytes for 8 floats
    ("UPDATE vectors SET vector = ?", [np.full(8, np.nan, "<f4").tobytes()]),
    ("UPDATE vectors SET vector = ?", [np.r_[np.inf, np.zeros(7)].astype("<f4").tobytes()]),
    ("UPDATE vectors SET dim = 2, vector = ?", [np.ones(2, "<f4").tobytes()]),  # another width
], ids=["torn", "nan", "inf", "other_width"])
def test_invalid_cache_rows_are_recomputed_with_a_warning(m2v, calls, tmp_path, tamper):
    # Issue 17: NaN rows came back NaN, and rows of another width changed the output's (8 -> 2).
    ref = Model2VecEncoder(m2v, cache_dir=tmp_path).transform(TEXTS)
    with sqlite3.connect(tmp_path / FILENAME) as conn:
        conn.execute(*tamper)
    calls.clear()
    with pytest.warns(UserWarning, match=f"{len(TEXTS)} {_INVALID_ROW}.*model's 8-d vectors"):
        out = Model2VecEncoder(m2v, cache_dir=tmp_path).transform(TEXTS)
    np.testing.assert_array_equal(out, ref)
    assert calls == [len(TEXTS)]
    calls.clear()  # the rows were replaced: a fresh read is clean and needs no model call
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(Model2VecEncoder(m2v, cache_dir=tmp_path).transform(TEXTS), ref)
    assert calls == []


def test_cache_rows_of_a_file_without_recorded_width_are_checked_by_the_commonest(m2v, calls,
                                                                                  tmp_path):
    """A file whose width record is gone keeps its good rows: the commonest width is the model's."""
    ref = Model2VecEncoder(m2v, cache_dir=tmp_path).transform(TEXTS)
    with sqlite3.connect(tmp_path / FILENAME) as conn:
        conn.execute("DELETE FROM widths")
        (key,) = conn.execute("SELECT key FROM vectors LIMIT 1").fetchone()
        conn.execute("UPDATE vectors SET dim = 2, vector = ? WHERE key = ?",
                     [np.ones(2, "<f4").tobytes(), key])
    calls.clear()
    with pytest.warns(UserWarning, match=f"1 {_INVALID_ROW}"):
        np.testing.assert_array_equal(Model2VecEncoder(m2v, cache_dir=tmp_path).transform(TEXTS), ref)
    assert calls == [1]


def _damage(path):
    """Overwrite every page of the SQLite file after the first (its schema) with junk."""
    data = bytearray(path.read_bytes())
    data[4096:] = b"\xa5" * (len(data) - 4096)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"these are not the bytes of an SQLite file\n" * 100),
     "file is not a database"),
    (_damage, "malformed"),
    (lambda p: sqlite3.connect(p).execute("CREATE TABLE vectors (x)").connection.commit(),
     "no such column"),
], ids=["not_sqlite", "damaged", "other_schema"])
def test_unusable_cache_file_is_a_value_error_naming_it(m2v, tmp_path, make, message):
    # Issue 17: a raw sqlite3.DatabaseError that did not say which file.
    if make is _damage:
        Model2VecEncoder(m2v, cache_dir=tmp_path).transform([f"cats {i}" for i in range(300)])
        assert (tmp_path / FILENAME).stat().st_size > 3 * 4096
    make(tmp_path / FILENAME)
    file = re.escape(str(tmp_path / FILENAME))
    with pytest.raises(ValueError, match=f"embedding cache {file} cannot be used: .*{message}"
                                         ".*delete it or pass another cache_dir"):
        Model2VecEncoder(m2v, cache_dir=tmp_path).transform(TEXTS)


def test_cache_is_safe_under_concurrent_use(m2v, tmp_path):
    texts = [f"cats dogs {i}" for i in range(300)] + TEXTS
    ref = Model2VecEncoder(m2v).transform(texts)
    rng = np.random.default_rng(0)
    jobs = [list(rng.permutation(texts)[:200]) for _ in range(8)]

    def run(job):
        return job, Model2VecEncoder(m2v, cache_dir=tmp_path, batch_size=7).transform(job)

    with ThreadPoolExecutor(4) as pool:
        for job, out in pool.map(run, jobs):
            index = {t: i for i, t in enumerate(texts)}
            np.testing.assert_array_equal(out, ref[[index[t] for t in job]])
    with sqlite3.connect(tmp_path / FILENAME) as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM vectors").fetchone()
    assert n == len({t for job in jobs for t in job})


def _locked_for(n_refusals, monkeypatch):
    """sqlite3.connect whose first ``n_refusals`` connections answer "database is locked" at once.

    SQLite does that, without waiting its busy timeout, where waiting could deadlock
    (WAL set-up and recovery, a checkpoint on close): the CI failure of
    test_cache_is_safe_under_concurrent_use, 4 rounds in 300 here.
    """
    real, calls = sqlite3.connect, []

    def connect(*args, **kwargs):
        calls.append(kwargs["timeout"])
        if len(calls) <= n_refusals:
            raise sqlite3.OperationalError("database is locked")
        return real(*args, **kwargs)

    monkeypatch.setattr(_embedding_cache.sqlite3, "connect", connect)
    return calls


def test_cache_retries_a_lock_sqlite_refuses_without_waiting(tmp_path, monkeypatch):
    calls = _locked_for(3, monkeypatch)
    cache = EmbeddingCache(tmp_path, "ns")
    keys = [text_key("a"), text_key("b")]
    cache.put_many(keys, np.eye(2, dtype=np.float32))
    np.testing.assert_array_equal(cache.get_many(keys)[keys[1]], [0, 1])
    assert len(calls) == 3 + 1 + 1 + 1
    # Each retry waits only the time left before the one deadline.
    assert calls[0] <= _embedding_cache.TIMEOUT and calls[2] < calls[0]


def test_cache_lock_error_comes_after_the_deadline_only(tmp_path, monkeypatch):
    monkeypatch.setattr(_embedding_cache, "TIMEOUT", 0.3)
    calls = _locked_for(10**6, monkeypatch)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="stayed locked by another process for over 0.3 s"):
        EmbeddingCache(tmp_path, "ns")
    assert time.monotonic() - start >= 0.3 - 0.1  # the last pause is cut short by the deadline
    assert len(calls) > 3


def test_progress_bar_auto_shows_on_long_runs(m2v, capsys):
    Model2VecEncoder(m2v, batch_size=1).transform([f"cats {i}" for i in range(10)])
    assert capsys.readouterr().err == ""
    Model2VecEncoder(m2v, batch_size=1).transform([f"cats {i}" for i in range(11)])
    assert "11/11" in capsys.readouterr().err
    Model2VecEncoder(m2v, batch_size=1, show_progress=False).transform([f"dogs {i}" for i in range(11)])
    assert capsys.readouterr().err == ""


# --- scikit-learn behaviour ----------------------------------------------------------


def test_sklearn_conventions(m2v):
    enc = Model2VecEncoder(m2v, batch_size=2)
    twin = clone(enc)
    assert twin.get_params().keys() == enc.get_params().keys()
    assert twin.batch_size == 2 and type(twin.model) is type(m2v)
    np.testing.assert_array_equal(twin.transform(TEXTS), enc.transform(TEXTS))
    assert enc.fit(TEXTS) is enc
    np.testing.assert_array_equal(enc.fit_transform(TEXTS), enc.transform(TEXTS))
    np.testing.assert_array_equal(enc.fit_transform(t for t in TEXTS), enc.transform(TEXTS))
    assert enc.__sklearn_tags__().requires_fit is False
    assert "batch_size=2" in repr(enc)


def test_encoder_opens_a_pipeline_with_an_adapter(m2v):
    corpus = [f"{a} {b}" for a in _text_models.WORDS[2:] for b in _text_models.WORDS[2:]]
    enc, doc_enc = Model2VecEncoder(m2v), Model2VecEncoder(_text_models.static_model(dim=5, seed=3))
    adapter = ERAAdapter(random_state=0).fit_align(enc.transform(corpus), doc_enc.transform(corpus))
    out = make_pipeline(enc, adapter).transform(TEXTS)
    assert out.shape == (6, 5)
    np.testing.assert_array_equal(out, adapter.transform(enc.transform(TEXTS)))


# --- sentence-transformers -----------------------------------------------------------


@pytest.fixture(scope="module")
def st_model():
    pytest.importorskip("sentence_transformers")
    return _text_models.sentence_transformer()


def test_sentence_transformer_matches_the_model(st_model):
    enc = SentenceTransformerEncoder(st_model, batch_size=4, device="cpu")
    out = enc.transform(TEXTS)
    assert out.dtype == np.float32 and out.shape == (6, 8)
    np.testing.assert_allclose(out, st_model.encode(TEXTS), rtol=1e-5, atol=1e-6)
    unit = SentenceTransformerEncoder(st_model, normalize=True).transform(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)


def test_sentence_transformer_from_a_saved_folder(st_model, tmp_path):
    st_model.save(str(tmp_path / "st"))
    enc = SentenceTransformerEncoder(str(tmp_path / "st"), device="cpu")
    np.testing.assert_allclose(enc.transform(TEXTS), st_model.encode(TEXTS), rtol=1e-5, atol=1e-6)


def test_sentence_transformer_prompt_name(st_model):
    st_model.prompts = {"query": "query: "}
    try:
        out = SentenceTransformerEncoder(st_model, prompt_name="query").transform(["cats"])
        np.testing.assert_allclose(out, st_model.encode(["query: cats"]), rtol=1e-5)
        assert not np.allclose(out, st_model.encode(["cats"]))
    finally:
        st_model.prompts = {}


def test_sentence_transformer_cache_is_keyed_by_weights(st_model, tmp_path):
    other = _text_models.sentence_transformer(seed=1)
    a = SentenceTransformerEncoder(st_model, cache_dir=tmp_path).transform(TEXTS)
    b = SentenceTransformerEncoder(other, cache_dir=tmp_path).transform(TEXTS)
    np.testing.assert_allclose(b, other.encode(TEXTS), rtol=1e-5, atol=1e-6)
    assert not np.allclose(a, b)
    with sqlite3.connect(tmp_path / FILENAME) as conn:
        (namespaces,) = conn.execute("SELECT COUNT(DISTINCT namespace) FROM vectors").fetchone()
    assert namespaces == 2

    def refuse(*args, **kwargs):
        raise AssertionError("a cache hit must not run the model")

    original, st_model.encode = st_model.encode, refuse
    try:
        np.testing.assert_array_equal(
            SentenceTransformerEncoder(st_model, cache_dir=tmp_path).transform(TEXTS), a)
    finally:
        st_model.encode = original


def test_threads_can_share_one_encoder(m2v):
    enc = Model2VecEncoder(m2v, batch_size=3)
    ref = enc.transform(TEXTS)
    barrier = threading.Barrier(4)

    def run(_):
        barrier.wait()
        return enc.transform(TEXTS)

    with ThreadPoolExecutor(4) as pool:
        for out in pool.map(run, range(4)):
            np.testing.assert_array_equal(out, ref)
