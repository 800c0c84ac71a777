"""Tests for the torch half of ERA: modules, hard negatives, training loops."""

import numpy as np
import pytest
import torch

from era_sklearn._negatives import match_rows, mine_hard_negatives
from era_sklearn._torch_models import (
    build_module,
    module_from_numpy,
    module_to_numpy,
    numpy_forward,
)
from era_sklearn._torch_train import (
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


def test_match_rows_finds_the_rows(task):
    perm = np.random.default_rng(0).permutation(len(task["corpus"]))[:40]
    np.testing.assert_array_equal(match_rows(3 * task["corpus"][perm], task["corpus"],
                                             chunk_size=7), perm)


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
    from era_sklearn._torch_train import _group_split

    train, valid = _group_split(task["groups"], 0.25, np.random.default_rng(0))
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
    records = history.to_list()
    assert set(records[0]) >= {"epoch", "train_loss", "valid_loss", "seconds"}
    for loss in ("mse", "smooth_l1"):
        train_alignment(_start(), task["X"], task["Y"], loss=loss, max_epochs=1)
    with pytest.raises(ValueError, match="loss must be"):
        train_alignment(_start(), task["X"], task["Y"], loss="l3")


# ---------------------------------------------------------------- devices, checkpoints


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
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
