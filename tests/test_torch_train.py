"""Tests for the torch half of ERA: modules, hard negatives, training loops."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from era_sklearn._torch import train as _torch_train
from era_sklearn._torch.fit import (
    PAPER_ADAPT,
    draw_negatives,
    select_rows,
    train_adapt_torch,
    train_align_torch,
)
from era_sklearn._torch.models import (
    build_module,
    module_from_numpy,
    module_to_numpy,
    numpy_forward,
)
from era_sklearn._torch.negatives import mine_hard_negatives, sample_random_negatives
from era_sklearn._torch.train import (
    TrainingHistory,
    load_era_checkpoint,
    resolve_device,
    train_alignment,
    train_contrastive,
)

D_IN, D_OUT = 24, 8


def _normalize(A):
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def _make_task():
    """A retrieval task with a planted linear map: doc = normalize(query @ M + noise)."""
    rng = np.random.default_rng(0)
    n_docs, n_queries = 300, 120
    M = rng.normal(size=(D_IN, D_OUT)).astype(np.float32)
    Q = rng.normal(size=(n_queries, D_IN)).astype(np.float32)
    corpus = rng.normal(size=(n_docs, D_OUT)).astype(np.float32)
    # Query i's relevant documents: 1 or 2 rows of the corpus placed near Q_i @ M.
    rows, groups, positives = [], [], []
    for i in range(n_queries):
        docs = rng.choice(n_docs, size=1 + i % 2, replace=False)
        for d in docs:
            corpus[d] = Q[i] @ M + 0.3 * rng.normal(size=D_OUT)
        rows += [(i, int(d)) for d in docs]
    for i, d in rows:
        groups.append(i)
        positives.append({d2 for i2, d2 in rows if i2 == i})
    q_idx = np.array([i for i, _ in rows])
    d_idx = np.array([d for _, d in rows])
    return {
        "M": M, "X": Q[q_idx], "Y": corpus[d_idx], "corpus": corpus,
        "groups": np.array(groups), "positives": positives, "anchors": d_idx,
    }


@pytest.fixture(scope="module")
def task():
    return _make_task()


def _start(model="linear", seed=0, **kw):
    # Seeds offset from the task's, so the start is not the planted map itself.
    rng = np.random.default_rng(seed + 100)
    W0 = rng.normal(scale=0.1, size=(D_IN, D_OUT)).astype(np.float32)
    return build_module(model, W0, np.zeros(D_OUT, np.float32), **kw)


# ---------------------------------------------------------------- modules


@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_numpy_forward_matches_torch_and_roundtrips(model):
    module = _start(model, hidden_size=16, n_layers=2, dropout=0.0)
    with torch.no_grad():  # Make the MLP branch non-trivial.
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    X = np.random.default_rng(2).normal(size=(50, D_IN)).astype(np.float32)
    expected = module.eval()(torch.as_tensor(X)).detach().numpy()
    params = module_to_numpy(module)
    np.testing.assert_allclose(numpy_forward(params, X), expected, atol=1e-5)
    rebuilt = module_from_numpy(params)(torch.as_tensor(X)).detach().numpy()
    np.testing.assert_allclose(rebuilt, expected, atol=1e-6)
    assert all(v.dtype == np.float32 and isinstance(v, np.ndarray) for v in params.values())


def test_mlp_starts_equal_to_linear():
    X = torch.randn(30, D_IN)
    linear, mlp = _start("linear"), _start("mlp", hidden_size=32, n_layers=2)
    torch.testing.assert_close(mlp.eval()(X), linear(X), rtol=0, atol=0)


def test_module_to_numpy_from_trainable_params():
    module = _start("mlp", hidden_size=8)
    assert all(p.requires_grad for p in module.parameters())
    params = module_to_numpy(module)
    assert set(params) == {"coef", "intercept", "mlp_coef_0", "mlp_intercept_0",
                           "mlp_coef_1", "mlp_intercept_1"}
    assert params["coef"].shape == (D_IN, D_OUT)
    assert params["mlp_coef_0"].shape == (D_IN, 8)


def test_build_module_rejects_bad_input():
    with pytest.raises(ValueError, match="model must be"):
        build_module("rnn", np.zeros((3, 2), np.float32), None)
    with pytest.raises(ValueError, match="b0"):
        build_module("linear", np.zeros((3, 2), np.float32), np.zeros(3))


# ---------------------------------------------------------------- negatives


def test_mining_excludes_positives_and_near_positives(task):
    teacher = _normalize(task["X"] @ task["M"])
    neg = mine_hard_negatives(teacher, task["corpus"], task["positives"],
                              anchors=task["anchors"], n_negatives=5, random_state=0,
                              chunk_size=16)
    assert neg.shape == (len(task["X"]), 5)
    scores = teacher @ _normalize(task["corpus"]).T
    for r, row in enumerate(neg):
        assert len(set(row)) == 5
        assert not set(row) & task["positives"][r]
        anchor = scores[r, task["anchors"][r]]
        assert np.all(scores[r, row] < 0.95 * anchor)
    # The hardest admissible candidate is always taken (ERA keeps it fixed).
    r = 0
    masked = scores[r].copy()
    masked[list(task["positives"][r])] = -np.inf
    masked[masked >= 0.95 * scores[r, task["anchors"][r]]] = -np.inf
    assert neg[r, 0] == np.argmax(masked)


def test_mining_is_deterministic_and_accepts_a_scorer(task):
    teacher = _normalize(task["X"] @ task["M"])
    kw = {"anchors": task["anchors"], "random_state": 3}
    a = mine_hard_negatives(teacher, task["corpus"], task["positives"], **kw)
    b = mine_hard_negatives(lambda rows: teacher[rows] @ _normalize(task["corpus"]).T,
                            task["corpus"], task["positives"], **kw)
    np.testing.assert_array_equal(a, b)


def test_mining_backfills_at_random():
    # Teacher scores every document above 0.95 x the positive's: no hard candidate
    # survives, so all negatives are random non-positives.
    corpus = np.eye(10, dtype=np.float32)
    teacher_scores = np.full((3, 10), 0.9, np.float32)
    teacher_scores[:, 0] = 0.5  # the positive scores lowest
    positives = [{0, 1}, {0, 1}, {0}]
    neg = mine_hard_negatives(lambda rows: teacher_scores[rows], corpus, positives,
                              anchors=[0, 0, 0], n_negatives=6, random_state=0)
    for row, pos in zip(neg, positives):
        assert len(set(row)) == 6 and not set(row) & pos
    with pytest.raises(ValueError, match="fewer than"):
        mine_hard_negatives(lambda rows: teacher_scores[rows], corpus, positives,
                            n_negatives=9)


def test_mining_samples_rest_from_top_2n():
    # 40 docs, scores decreasing with index; positive 0 scores 1.0 so nothing is cut.
    n_docs, n_neg = 40, 3
    scores = np.linspace(1.0, 0.0, n_docs, dtype=np.float32)[None, :].repeat(50, axis=0)
    scores[:, 0] = 2.0
    neg = mine_hard_negatives(lambda rows: scores[rows], np.eye(n_docs), [{0}] * 50,
                              anchors=[0] * 50, n_negatives=n_neg, random_state=0)
    assert np.all(neg[:, 0] == 1)  # hardest
    assert set(neg[:, 1:].ravel()) <= set(range(2, 2 * n_neg + 1))  # rest of the top 2N


# ---------------------------------------------------------------- training


def _contrastive(task, seed, **kw):
    module = _start()
    neg = mine_hard_negatives(_normalize(task["X"] @ task["M"]), task["corpus"],
                              task["positives"], anchors=task["anchors"], random_state=0)
    kw = {"lr": 1e-2, "max_epochs": 6, "batch_size": 32, "patience": None} | kw
    history = train_contrastive(module, task["X"], task["Y"], groups=task["groups"],
                                corpus=task["corpus"], negatives=neg, random_state=seed, **kw)
    return module, history


def test_training_is_deterministic(task):
    a, _ = _contrastive(task, seed=0)
    b, _ = _contrastive(task, seed=0)
    c, _ = _contrastive(task, seed=1)
    pa, pb, pc = (module_to_numpy(m)["coef"] for m in (a, b, c))
    np.testing.assert_array_equal(pa, pb)
    assert not np.array_equal(pa, pc)


def test_dropout_training_is_deterministic_and_leaves_global_rng(task):
    state = torch.get_rng_state()
    coefs = []
    for _ in range(2):
        module = _start("mlp", hidden_size=16, dropout=0.5, random_state=0)
        train_alignment(module, task["X"], task["Y"], max_epochs=2, random_state=5)
        coefs.append(module_to_numpy(module)["mlp_coef_0"])
    np.testing.assert_array_equal(*coefs)
    assert torch.equal(state, torch.get_rng_state())


def _hit_rate(module, task):
    Z = numpy_forward(module_to_numpy(module), task["X"])
    top1 = np.argmax(Z @ _normalize(task["corpus"]).T, axis=1)
    return np.mean([t in p for t, p in zip(top1, task["positives"])])


def test_contrastive_learns_planted_map(task):
    # The planted map itself reaches ~0.8 top-1 here (noisy documents); chance is 1/300.
    before = _hit_rate(_start(), task)
    module, history = _contrastive(task, seed=0, lr=5e-2, max_epochs=30)
    losses = [e["train_loss"] for e in history.epochs]
    assert losses[-1] < 0.5 * losses[0]
    assert _hit_rate(module, task) > max(0.25, 5 * before)


def test_validation_split_is_by_group(task):
    # Rows of one group share X; a per-row split would leak them into validation.
    from era_sklearn._stage2.heldout import group_split

    train, valid = group_split(task["groups"], 0.25, np.random.default_rng(0))
    assert not set(task["groups"][train]) & set(task["groups"][valid])
    assert len(train) + len(valid) == len(task["groups"])


def test_early_stopping_restores_best_epoch(task):
    # Labels shuffled across groups + high lr: the model overfits the noise and
    # the validation loss rises after the first epochs.
    rng = np.random.default_rng(0)
    Y_noisy = task["Y"][rng.permutation(len(task["Y"]))]
    module = _start()
    history = train_contrastive(module, task["X"], Y_noisy, groups=task["groups"], lr=0.1,
                                warmup=0.0, max_epochs=200, batch_size=16, patience=3,
                                validation_fraction=0.3, random_state=0)
    assert history.stop_reason == "early_stopping"
    assert len(history.epochs) < 200
    assert history.restored_best
    assert history.best_epoch == history.epochs[-1]["epoch"] - 3
    valid = [e["valid_loss"] for e in history.epochs]
    assert history.best_valid_loss == min(valid)
    # Re-evaluating the restored weights on the same split gives the best loss.
    again = train_contrastive(module, task["X"], Y_noisy, groups=task["groups"], lr=0.0,
                              warmup=0.0, max_epochs=1, batch_size=16, patience=None,
                              validation_fraction=0.3, random_state=0)
    assert again.epochs[0]["valid_loss"] == pytest.approx(min(valid), rel=1e-4)


def test_alignment_reduces_loss_and_history_is_plain(task):
    module = _start()
    history = train_alignment(module, task["X"], task["Y"], loss="cosine", lr=1e-2,
                              max_epochs=15, batch_size=32, random_state=0)
    assert isinstance(history, TrainingHistory)
    assert history.epochs[-1]["valid_loss"] < history.epochs[0]["valid_loss"]
    assert history.stop_reason == "max_epochs"
    records = history.to_dict()["epochs"]
    assert set(records[0]) >= {"epoch", "train_loss", "valid_loss", "seconds"}
    for loss in ("mse", "smooth_l1"):
        train_alignment(_start(), task["X"], task["Y"], loss=loss, max_epochs=1)
    with pytest.raises(ValueError, match="loss must be"):
        train_alignment(_start(), task["X"], task["Y"], loss="l3")


# ---------------------------------------------------------------- devices, checkpoints


def test_resolve_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError):
        resolve_device("tpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_trained_on_cuda_loads_on_cpu(task):
    module, _ = _contrastive(task, seed=0, device="cuda", max_epochs=2)
    assert next(module.parameters()).device.type == "cpu"
    params = module_to_numpy(module)
    assert all(isinstance(v, np.ndarray) for v in params.values())
    expected = module(torch.as_tensor(task["X"])).detach().numpy()
    np.testing.assert_allclose(numpy_forward(params, task["X"]), expected, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_adapt_on_cuda_with_ndcg_monitor(task):
    params, history = _adapt(task, device="cuda", monitor="ndcg", max_epochs=2)
    assert all(isinstance(v, np.ndarray) and np.isfinite(v).all() for v in params.values())
    assert all(0.0 <= e["valid_loss"] <= 1.0 for e in history["epochs"])


@pytest.mark.parametrize("nest", [None, "state_dict"])
def test_load_era_checkpoint(tmp_path, nest):
    g = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(D_OUT, D_IN, generator=g), torch.randn(D_OUT, generator=g)
    state = {"proj.weight": weight, "proj.bias": bias}
    path = tmp_path / "adapter.pt"
    torch.save(state if nest is None else {nest: state}, path)
    W, b = load_era_checkpoint(path)
    assert W.shape == (D_IN, D_OUT) and W.dtype == np.float32
    x = np.random.default_rng(0).normal(size=(5, D_IN)).astype(np.float32)
    expected = torch.nn.functional.normalize(torch.as_tensor(x) @ weight.T + bias, dim=1)
    np.testing.assert_allclose(numpy_forward({"coef": W, "intercept": b}, x),
                               expected.numpy(), atol=1e-5)


def test_load_era_checkpoint_errors(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save({"weight": torch.zeros(2, 3)}, path)
    with pytest.raises(ValueError, match="missing"):
        load_era_checkpoint(path)
    torch.save({"proj.weight": torch.zeros(2, 3), "proj.bias": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="must be"):
        load_era_checkpoint(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("where", ["proj.weight", "proj.bias"])
def test_load_era_checkpoint_refuses_non_finite_weights(tmp_path, bad, where):
    state = {"proj.weight": torch.zeros(D_OUT, D_IN), "proj.bias": torch.zeros(D_OUT)}
    state[where].view(-1)[3] = bad
    path = tmp_path / "adapter.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match="non-finite"):
        load_era_checkpoint(path)


# ---------------------------------------------------------------- random negatives


def test_random_negatives_avoid_positives_and_are_uniform():
    positives = [{0, 1, 2}, {5}] * 200
    neg = sample_random_negatives(positives, 10, n_negatives=4, random_state=0)
    assert neg.shape == (400, 4)
    for row, pos in zip(neg, positives):
        assert len(set(row)) == 4 and not set(row) & pos
    # Uniform over the allowed documents: each of the 7 allowed for row type 0
    # is drawn about 4/7 of the time.
    counts = np.bincount(neg[::2].ravel(), minlength=10)[3:] / 200
    np.testing.assert_allclose(counts, 4 / 7, atol=0.12)
    np.testing.assert_array_equal(
        neg, sample_random_negatives(positives, 10, n_negatives=4, random_state=0))
    with pytest.raises(ValueError, match="fewer than"):
        sample_random_negatives([{0, 1, 2}], 6, n_negatives=4)


# ---------------------------------------------------------------- pure solvers


def _paper(**kw):
    """ERA's stage-2 recipe with a budget small enough for a test."""
    return PAPER_ADAPT | {"lr": 1e-2, "warmup": 0.0, "max_epochs": 4, "batch_size": 64,
                          "validation_fraction": 0.25} | kw


def _adapt(task, seed=0, **kw):
    W0 = np.random.default_rng(100).normal(scale=0.1, size=(D_IN, D_OUT)).astype(np.float32)
    return train_adapt_torch(task["X"], task["Y"], task["groups"], task["corpus"],
                             task["anchors"], start_W=W0, start_b=np.zeros(D_OUT),
                             random_state=seed, **_paper(**kw))


def test_adapt_is_deterministic_and_seeded(task):
    a, ha = _adapt(task, seed=0)
    b, hb = _adapt(task, seed=0)
    c, _ = _adapt(task, seed=1)
    assert set(a) == {"coef", "intercept"}
    np.testing.assert_array_equal(a["coef"], b["coef"])
    assert ha["train_rows"] == hb["train_rows"]
    assert not np.array_equal(a["coef"], c["coef"])


def test_one_positive_per_query_is_fixed_across_epochs(task, monkeypatch):
    # Spy on the rows the loss sees in training mode; one batch per epoch.
    seen = []
    original = _torch_train._infonce

    def spy(module, Xt, Yt, *args):
        inner = original(module, Xt, Yt, *args)

        def batch_loss(idx):
            if module.training:
                seen.append(sorted(tuple(np.round(y, 5)) for y in Yt[idx].detach().numpy()))
            return inner(idx)

        return batch_loss

    monkeypatch.setattr(_torch_train, "_infonce", spy)
    _, history = _adapt(task, positives="one", batch_size=1000, max_epochs=5, patience=None)
    assert len(seen) == 5 and all(epoch == seen[0] for epoch in seen)
    rows = np.array(history["train_rows"])
    groups = task["groups"][rows]
    assert len(np.unique(groups)) == len(rows) == history["n_train_queries"] == len(seen[0])
    Y = _normalize(task["Y"][rows])
    assert seen[0] == sorted(tuple(np.round(y, 5)) for y in Y)
    # The positive is drawn at random: of the two-positive queries, some train on
    # their second row (a "first row" rule would never do so).
    first = {g: r for r, g in reversed(list(enumerate(task["groups"])))}
    assert sum(first[g] != r for g, r in zip(groups, rows)) > 5


def test_all_positives_trains_on_every_row_of_the_train_queries(task):
    _, history = _adapt(task, positives="all", max_epochs=1)
    rows = np.array(history["train_rows"])
    train_queries = set(task["groups"][rows])
    assert set(np.flatnonzero(np.isin(task["groups"], list(train_queries)))) == set(rows)


@pytest.mark.parametrize("strategy", ["topk_percpos", "random"])
def test_negatives_never_include_a_querys_qrels(task, strategy):
    rng = np.random.default_rng(0)
    rows = select_rows(task["groups"], 0.2, "one", rng)[0]
    neg = draw_negatives(rows, task["X"], task["groups"], task["corpus"], task["anchors"],
                         start_W=task["M"], start_b=np.zeros(D_OUT), strategy=strategy,
                         n_negatives=5, top_k=2000, threshold=0.95, rng=rng)
    assert neg.shape == (len(rows), 5)
    # Positives of the query, including those of rows not trained on.
    for r, row in zip(rows, neg):
        assert not set(row) & task["positives"][r]
    assert any(len(task["positives"][r]) == 2 for r in rows)


@pytest.mark.parametrize("strategy, n_negatives", [("topk_percpos", 2), ("random", 8)])
def test_negatives_exclude_the_querys_other_positives(strategy, n_negatives):
    # Query q has positives 2q and 2q+1; only its row for 2q is trained on. The
    # teacher scores 2q+1 at 0.9 x 2q (below the 0.95 cut): the hardest
    # candidate if it were not excluded, and with 8 of 9 documents drawn at
    # random it would be drawn too.
    n_docs, n_queries = 10, 5
    X = np.full((2 * n_queries, n_docs), 0.05, np.float32)
    qids, anchors = np.repeat(np.arange(n_queries), 2), np.arange(2 * n_queries)
    for q in range(n_queries):
        X[2 * q : 2 * q + 2, 2 * q] += 1.0
        X[2 * q : 2 * q + 2, 2 * q + 1] += 0.9
    corpus = np.eye(n_docs, dtype=np.float32)
    rows = np.arange(0, 2 * n_queries, 2)
    neg = draw_negatives(rows, X, qids, corpus, anchors, start_W=np.eye(n_docs),
                         start_b=np.zeros(n_docs), strategy=strategy, n_negatives=n_negatives,
                         top_k=2000, threshold=0.95, rng=np.random.default_rng(0))
    for q, row in enumerate(neg):
        assert not set(row) & {2 * q, 2 * q + 1}


def test_random_and_topk_percpos_differ(task):
    rng_args = {"start_W": task["M"], "start_b": np.zeros(D_OUT), "n_negatives": 5, "top_k": 2000,
                    "threshold": 0.95}
    rows = np.arange(len(task["X"]))
    negs = {s: draw_negatives(rows, task["X"], task["groups"], task["corpus"], task["anchors"],
                              strategy=s, rng=np.random.default_rng(0), **rng_args)
            for s in ("topk_percpos", "random")}
    scores = _normalize(task["X"] @ task["M"]) @ _normalize(task["corpus"]).T
    hard = np.take_along_axis(scores, negs["topk_percpos"], axis=1).mean()
    easy = np.take_along_axis(scores, negs["random"], axis=1).mean()
    assert hard > easy + 0.3  # mined negatives are the teacher's near misses
    a, _ = _adapt(task, negatives="topk_percpos")
    b, _ = _adapt(task, negatives="random")
    assert not np.allclose(a["coef"], b["coef"])


def test_early_stopping_on_validation_loss_with_patience(task):
    # Shuffled labels and a high lr: the validation InfoNCE loss rises early.
    rng = np.random.default_rng(0)
    noisy = dict(task, Y=task["Y"][rng.permutation(len(task["Y"]))],
                 anchors=task["anchors"][rng.permutation(len(task["Y"]))])
    _params, history = _adapt(noisy, lr=0.1, max_epochs=200, batch_size=16, patience=3,
                             monitor="loss", start_as_candidate=False)
    epochs = history["epochs"]
    assert history["stop_reason"] == "early_stopping" and len(epochs) < 200
    assert epochs[0]["epoch"] == 1  # ERA: the start map is no candidate
    assert history["best_epoch"] == epochs[-1]["epoch"] - 3
    valid = [e["valid_loss"] for e in epochs]
    assert history["best_valid_loss"] == min(valid)
    assert max(valid) > 1.0  # an InfoNCE loss over 6 logits, not 1 - nDCG
    _, with_start = _adapt(noisy, lr=0.1, max_epochs=200, batch_size=16, patience=3,
                           monitor="loss", start_as_candidate=True)
    assert with_start["epochs"][0]["epoch"] == 0


def test_ndcg_monitor_records_one_minus_ndcg(task):
    _, history = _adapt(task, monitor="ndcg", patience=None, max_epochs=3)
    valid = [e["valid_loss"] for e in history["epochs"]]
    assert all(0.0 <= v <= 1.0 for v in valid)


def test_fallback_keeps_the_better_closed_form_map(task):
    planted = lambda rows: (task["M"], np.zeros(D_OUT))
    useless = lambda rows: (np.zeros((D_IN, D_OUT)), np.ones(D_OUT))
    calls = []
    params, history = _adapt(task, fallback=lambda rows: calls.append(rows) or planted(rows),
                             max_epochs=1, lr=1e-4)
    assert params is None and history["kept_fallback"]
    assert "closed-form map kept" in history["stop_reason"]
    # The fallback got every row of the validation queries and none of the others.
    valid = calls[0]
    trained = set(task["groups"][history["train_rows"]])
    assert not trained & set(task["groups"][valid])
    assert len(np.unique(task["groups"][valid])) == history["n_valid_queries"]
    params, history = _adapt(task, fallback=useless, max_epochs=1)
    assert params is not None and not history["kept_fallback"]


def test_too_few_queries_skips_training(task):
    params, history = _adapt(task, min_valid_queries=100)
    assert params is None and history["stop_reason"] == "too_few_queries"


@pytest.mark.parametrize("name, value", [("negatives", "hard"), ("positives", "two"),
                                         ("monitor", "recall")])
def test_adapt_rejects_unknown_choices(task, name, value):
    with pytest.raises(ValueError, match=name):
        _adapt(task, **{name: value})


def test_align_init_random_differs_from_procrustes_init(task):
    rng = np.random.default_rng(0)
    W0 = rng.normal(size=(D_IN, D_OUT)).astype(np.float32)
    b0 = rng.normal(size=D_OUT).astype(np.float32)
    kw = {"max_epochs": 0, "random_state": 0}
    W, b, _history = train_align_torch(task["X"], task["Y"], W0=W0, b0=b0, **kw)
    np.testing.assert_array_equal(W, W0)
    np.testing.assert_array_equal(b, b0)
    Wr, br, _ = train_align_torch(task["X"], task["Y"], init="random", **kw)
    again, _, _ = train_align_torch(task["X"], task["Y"], init="random", **kw)
    other, _, _ = train_align_torch(task["X"], task["Y"], init="random",
                                    max_epochs=0, random_state=1)
    np.testing.assert_array_equal(Wr, again)
    assert not np.array_equal(Wr, other)
    # torch's nn.Linear init: uniform within 1/sqrt(d_in), bias too.
    bound = 1 / np.sqrt(D_IN)
    assert np.abs(Wr).max() <= bound and np.abs(br).max() <= bound
    assert np.abs(Wr).max() > 0.8 * bound and np.abs(br).max() > 0
    # Trained from either start, the maps differ.
    kw = {"max_epochs": 3, "lr": 1e-2, "random_state": 0}
    Wp, _, _ = train_align_torch(task["X"], task["Y"], W0=W0, b0=b0, **kw)
    Wr, _, hr = train_align_torch(task["X"], task["Y"], init="random", **kw)
    assert not np.allclose(Wp, Wr, atol=1e-2)
    assert hr["n_train"] == round(0.9 * len(task["X"])) and len(hr["epochs"]) == 3
    with pytest.raises(ValueError, match="W0"):
        train_align_torch(task["X"], task["Y"], init="procrustes")
    with pytest.raises(ValueError, match="init"):
        train_align_torch(task["X"], task["Y"], init="zeros")
