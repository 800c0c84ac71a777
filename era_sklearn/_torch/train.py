"""Torch training loops for ERA's two stages, and ERA checkpoint loading.

Private module used by :class:`era_sklearn.ERAAdapter`.

Both stages share one loop (:func:`_fit`): whole-array tensors are moved to the
device once, mini-batches are index slices of those tensors, and the loss is read
back to the host once per epoch. Randomness comes from a local ``torch.Generator``
and ``numpy.random.Generator``; dropout (MLP adapter) draws from a forked global
torch RNG seeded from ``random_state``, so the caller's global RNG state is left
untouched.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from sklearn.utils import check_random_state
from torch import nn

from .._stage2.heldout import group_split

__all__ = [
    "TrainingHistory",
    "load_era_checkpoint",
    "resolve_device",
    "train_alignment",
    "train_contrastive",
]

_ALIGN_LOSSES = ("cosine", "mse", "smooth_l1")


@dataclass
class TrainingHistory:
    """Per-epoch record of a training run (plain data, picklable, JSON-able).

    Attributes
    ----------
    epochs : list of dict
        One dict per epoch: ``epoch`` (1-based), ``train_loss``, ``valid_loss``
        (None without a validation split), ``lr`` (at the epoch's end), ``seconds``.
    best_epoch : int or None
        Epoch with the lowest validation loss (None without validation).
    best_valid_loss : float or None
        That loss.
    stop_reason : str
        ``"max_epochs"`` or ``"early_stopping"``.
    restored_best : bool
        Whether the module's weights were reset to ``best_epoch``'s.
    """

    epochs: list = field(default_factory=list)
    best_epoch: int | None = None
    best_valid_loss: float | None = None
    stop_reason: str = "max_epochs"
    restored_best: bool = False

    def to_dict(self):
        """Return the whole history as a dict of plain Python objects."""
        return asdict(self)


def resolve_device(device="cpu"):
    """Turn ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"`` or a device into a torch device.

    Parameters
    ----------
    device : str or torch.device, default="cpu"
        ``"auto"`` picks CUDA when available, else CPU.

    Returns
    -------
    torch.device
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available "
            f"(torch {torch.__version__}); use device='cpu' or 'auto'."
        )
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}.")
    return dev


def _seeds(random_state):
    """Derive one int seed from ``random_state`` (int, RandomState or None)."""
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _warmup_linear_decay(optimizer, total_steps, warmup):
    """ERA's schedule: linear warmup over ``warmup`` of the steps, then linear decay to 0."""
    warmup_steps = int(total_steps * warmup)

    def factor(step):
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _progress(max_epochs, verbose, desc):
    if verbose <= 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=max_epochs, desc=desc, unit="epoch")


def _mean_loss(module, batch_loss, rows, batch_size):
    """Size-weighted mean of ``batch_loss`` over ``rows`` in fixed order, eval mode."""
    module.eval()
    total = torch.zeros((), device=rows.device)
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            idx = rows[start:start + batch_size]
            total += batch_loss(idx) * len(idx)
    module.train()
    return float(total) / len(rows)


def _run_epoch(module, batch_loss, rows, batch_size, optimizer, scheduler, generator):
    """One shuffled pass over ``rows``; returns the size-weighted mean train loss."""
    perm = torch.randperm(len(rows), generator=generator).to(rows.device)
    total = torch.zeros((), device=rows.device)
    for start in range(0, len(rows), batch_size):
        idx = rows[perm[start:start + batch_size]]
        loss = batch_loss(idx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.detach() * len(idx)
    # The single host sync of the epoch.
    return float(total) / len(rows)


def _fit(module, batch_loss, train_rows, valid_rows, *, seed, **kwargs):
    """Shared epoch loop with validation, early stopping and best-weight restore.

    Runs in a fork of the global torch RNG, seeded from ``seed``: dropout draws
    from the global RNG, and the caller's RNG state must be left untouched.
    """
    device = train_rows.device
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return _epochs(module, batch_loss, train_rows, valid_rows, seed=seed, **kwargs)


def _epochs(module, batch_loss, train_rows, valid_rows, *, optimizer, scheduler, batch_size,
            max_epochs, patience, seed, verbose, desc, monitor=None,
            start_as_candidate=True):
    """The epoch loop of :func:`_fit`."""
    history = TrainingHistory()
    if monitor is None:
        def valid_fn():
            return _mean_loss(module, batch_loss, valid_rows, batch_size)
    else:
        def valid_fn():
            module.eval()
            try:
                return float(monitor(module))
            finally:
                module.train()
    generator = torch.Generator().manual_seed(seed)
    best_state = None
    bad_epochs = 0
    if patience is not None and len(valid_rows) and start_as_candidate:
        # Epoch 0, the starting map, is a candidate too: training that never
        # beats it on validation gives the start back instead of drifting away.
        # (ERA's own loop does not do this: its first candidate is epoch 1.)
        start_loss = valid_fn()
        history.epochs.append({"epoch": 0, "train_loss": None, "valid_loss": start_loss,
                               "lr": 0.0, "seconds": 0.0})
        history.best_epoch, history.best_valid_loss = 0, start_loss
        best_state = copy.deepcopy(module.state_dict())
    bar = _progress(max_epochs, verbose, desc)
    module.train()
    for epoch in range(1, max_epochs + 1):
        tic = time.perf_counter()
        train_loss = _run_epoch(module, batch_loss, train_rows, batch_size, optimizer,
                                scheduler, generator)
        valid_loss = valid_fn() if len(valid_rows) else None
        history.epochs.append({
            "epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss,
            "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - tic,
        })
        if bar is not None:
            bar.update(1)
            bar.set_postfix(train=f"{train_loss:.4f}",
                            valid="-" if valid_loss is None else f"{valid_loss:.4f}")
        if valid_loss is None:
            continue
        if history.best_valid_loss is None or valid_loss < history.best_valid_loss:
            history.best_epoch, history.best_valid_loss = epoch, valid_loss
            bad_epochs = 0
            if patience is not None:
                best_state = copy.deepcopy(module.state_dict())
        else:
            bad_epochs += 1
            if patience is not None and bad_epochs >= patience:
                history.stop_reason = "early_stopping"
                break
    if bar is not None:
        bar.close()
    if best_state is not None:
        module.load_state_dict(best_state)
        history.restored_best = True
    module.eval()
    return history


def _check_xy(X, Y):
    X = np.asarray(X, dtype=np.float32)
    Y = np.asarray(Y, dtype=np.float32)
    if X.ndim != 2 or Y.ndim != 2 or len(X) != len(Y):
        raise ValueError(f"X and Y must be 2-D with equal rows, got {X.shape} and {Y.shape}.")
    return X, Y


def _alignment_loss(name):
    if name == "cosine":
        return lambda pred, target: 1.0 - (pred * target).sum(dim=1).mean()
    if name == "mse":
        return nn.functional.mse_loss
    if name == "smooth_l1":
        return nn.functional.smooth_l1_loss
    raise ValueError(f"loss must be one of {_ALIGN_LOSSES}, got {name!r}.")


def train_alignment(
    module, X, Y, *, loss="cosine", lr=1e-3, weight_decay=0.01, max_epochs=10,
    batch_size=256, validation_fraction=0.1, patience=None, random_state=None,
    device="cpu", verbose=0,
):
    """Stage 1: fit ``module(X) ~ Y`` on embeddings of the same texts (no labels).

    Parameters
    ----------
    module : torch.nn.Module
        Adapter from :func:`era_sklearn._torch.models.build_module`; trained in
        place and returned on CPU.
    X : array-like of shape (n_samples, d_in)
        Query-encoder embeddings of the texts.
    Y : array-like of shape (n_samples, d_out)
        Document-encoder embeddings of the same texts; rows are L2-normalised here
        (the adapter's output is unit-norm, so MSE/smooth-L1 compare unit vectors).
    loss : {"cosine", "mse", "smooth_l1"}, default="cosine"
        ``1 - cos(f(x), y)`` averaged, or the element-wise mean losses.
    lr, weight_decay : float, default=1e-3, 0.01
        AdamW settings (ERA's; no scheduler, as ERA's stage 1).
    max_epochs : int, default=10
    batch_size : int, default=256
    validation_fraction : float, default=0.1
        Rows held out to report (and, with ``patience``, early-stop on) the loss.
    patience : int or None, default=None
        Early-stopping patience in epochs; None trains all ``max_epochs``.
    random_state : int, RandomState or None, default=None
    device : {"cpu", "cuda", "auto"}, default="cpu"
    verbose : int, default=0
        > 0 shows a tqdm bar over epochs.

    Returns
    -------
    history : TrainingHistory
    """
    X, Y = _check_xy(X, Y)
    loss_fn = _alignment_loss(loss)
    dev = resolve_device(device)
    seed = _seeds(random_state)
    train_rows, valid_rows = group_split(np.arange(len(X)), validation_fraction,
                                          np.random.default_rng(seed))
    Xt = torch.as_tensor(X, device=dev)
    Yt = nn.functional.normalize(torch.as_tensor(Y, device=dev), dim=1)
    module.to(dev)
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    history = _fit(
        module, lambda idx: loss_fn(module(Xt[idx]), Yt[idx]),
        torch.as_tensor(train_rows, device=dev), torch.as_tensor(valid_rows, device=dev),
        optimizer=optimizer, scheduler=None, batch_size=batch_size,
        max_epochs=max_epochs, patience=patience, seed=seed, verbose=verbose, desc="align",
    )
    module.to("cpu")
    return history


def _infonce(module, Xt, Yt, Ct, negt, gt, temperature, in_batch):
    """Build ``idx -> InfoNCE loss`` over in-batch positives and hard negatives."""

    def batch_loss(idx):
        q = module(Xt[idx])
        parts = []
        if in_batch:
            pos = Yt[idx]
            logits = q @ pos.T
            # Rows of the same query (group) are never each other's negatives,
            # and neither is another query's copy of this row's positive.
            same = (gt[idx][:, None] == gt[idx][None, :]) | (pos @ pos.T > 1 - 1e-6)
            same.fill_diagonal_(False)
            parts.append(logits.masked_fill(same, float("-inf")))
        else:
            parts.append((q * Yt[idx]).sum(dim=1, keepdim=True))
        if negt is not None:
            parts.append(torch.einsum("bd,bkd->bk", q, Ct[negt[idx]]))
        logits = torch.cat(parts, dim=1) / temperature
        target = (torch.arange(len(idx), device=q.device) if in_batch
                  else torch.zeros(len(idx), dtype=torch.long, device=q.device))
        return nn.functional.cross_entropy(logits, target)

    return batch_loss


def _check_negatives(corpus, negatives, n_rows):
    if negatives is None:
        return None, None
    if corpus is None:
        raise ValueError("negatives are corpus indices: corpus is required with them.")
    corpus = np.asarray(corpus, dtype=np.float32)
    negatives = np.asarray(negatives, dtype=np.int64)
    if negatives.ndim != 2 or len(negatives) != n_rows:
        raise ValueError(f"negatives must have shape ({n_rows}, k), got {negatives.shape}.")
    if negatives.size and (negatives.min() < 0 or negatives.max() >= len(corpus)):
        raise ValueError("negatives holds indices outside the corpus.")
    return corpus, negatives


def train_contrastive(
    module, X, Y, *, groups, corpus=None, negatives=None, temperature=0.05, lr=1e-5,
    weight_decay=1e-4, warmup=0.1, max_epochs=1000, batch_size=256, patience=5,
    validation_fraction=0.1, split=None, in_batch_negatives=True, valid_loss=None,
    start_as_candidate=True, random_state=None, device="cpu", verbose=0,
):
    """Stage 2: refine the adapter with InfoNCE on (query, relevant document) rows.

    Parameters
    ----------
    module : torch.nn.Module
        Adapter (typically the stage-1 one); trained in place, returned on CPU
        with the best validation epoch's weights when early stopping is on.
    X : array-like of shape (n_rows, d_in)
        Query embeddings, one row per (query, positive) pair.
    Y : array-like of shape (n_rows, d_out)
        The positive document's embedding for each row (L2-normalised here).
    groups : array-like of shape (n_rows,)
        Query id of each row. Rows of one group are never each other's negatives
        and fall on the same side of the validation split.
    corpus : array-like of shape (n_docs, d_out), default=None
        Document embeddings that ``negatives`` index (L2-normalised here).
    negatives : array-like of shape (n_rows, k), default=None
        Hard-negative corpus indices per row (see
        :func:`era_sklearn._torch.negatives.mine_hard_negatives`).
    temperature : float, default=0.05
    lr, weight_decay : float, default=1e-5, 1e-4
        AdamW settings.
    warmup : float, default=0.1
        Fraction of the planned ``max_epochs`` steps with a linear warmup; the
        learning rate then decays linearly to 0 at ``max_epochs`` (ERA's schedule).
    max_epochs : int, default=1000
    batch_size : int, default=256
    patience : int or None, default=5
        Early stopping on validation loss; None disables it.
    validation_fraction : float, default=0.1
        Fraction of groups held out (ignored when ``split`` is given).
    split : (train_rows, valid_rows) of int arrays, default=None
        Explicit rows to train on and to validate on, instead of a random
        group split.
    in_batch_negatives : bool, default=True
        Also use the other queries' positives in the batch as negatives. ERA's
        released loss uses only the hard negatives (``False``).
    valid_loss : callable, default=None
        ``valid_loss(module) -> float`` (module in eval mode), lower is better,
        monitored instead of the validation rows' InfoNCE loss.
    start_as_candidate : bool, default=True
        With early stopping, the starting weights compete as epoch 0 for the
        best epoch (ERA: False, its first candidate is epoch 1).
    random_state : int, RandomState or None, default=None
    device : {"cpu", "cuda", "auto"}, default="cpu"
    verbose : int, default=0

    Returns
    -------
    history : TrainingHistory
    """
    X, Y = _check_xy(X, Y)
    groups = np.asarray(groups)
    if groups.shape != (len(X),):
        raise ValueError(f"groups must have shape ({len(X)},), got {groups.shape}.")
    corpus, negatives = _check_negatives(corpus, negatives, len(X))
    if negatives is None and not in_batch_negatives:
        raise ValueError("Without in-batch negatives, hard negatives are required.")
    dev = resolve_device(device)
    seed = _seeds(random_state)
    if split is None:
        train_rows, valid_rows = group_split(groups, validation_fraction,
                                              np.random.default_rng(seed))
    else:
        train_rows, valid_rows = (np.asarray(r, dtype=np.int64) for r in split)
    Xt = torch.as_tensor(X, device=dev)
    Yt = nn.functional.normalize(torch.as_tensor(Y, device=dev), dim=1)
    gt = torch.as_tensor(np.unique(groups, return_inverse=True)[1], device=dev)
    Ct = negt = None
    if negatives is not None:
        Ct = nn.functional.normalize(torch.as_tensor(corpus, device=dev), dim=1)
        negt = torch.as_tensor(negatives, device=dev)
    module.to(dev)
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    steps = max_epochs * -(-len(train_rows) // batch_size)
    scheduler = _warmup_linear_decay(optimizer, steps, warmup)
    batch_loss = _infonce(module, Xt, Yt, Ct, negt, gt, temperature, in_batch_negatives)
    history = _fit(
        module, batch_loss, torch.as_tensor(train_rows, device=dev),
        torch.as_tensor(valid_rows, device=dev), optimizer=optimizer,
        scheduler=scheduler, batch_size=batch_size, max_epochs=max_epochs,
        patience=patience, seed=seed, verbose=verbose, desc="contrastive",
        monitor=valid_loss, start_as_candidate=start_as_candidate,
    )
    module.to("cpu")
    return history


def _find_state_dict(obj):
    """ERA saves a bare ``state_dict``; also accept one nested under a common key."""
    if isinstance(obj, dict) and "proj.weight" not in obj:
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                return obj[key]
    return obj


def load_era_checkpoint(path):
    """Read an ERA linear-adapter checkpoint (``proj.weight``, ``proj.bias``).

    Loaded with ``weights_only=True``: arbitrary pickled objects are refused.

    Parameters
    ----------
    path : str or path-like
        File written by ``torch.save(adapter.state_dict(), path)`` in ERA.

    Returns
    -------
    W : ndarray of shape (d_q, d_d), float32
        ``proj.weight.T``; the adapter is ``normalize(x @ W + b)``.
    b : ndarray of shape (d_d,), float32
    """
    state = _find_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    if not isinstance(state, dict):
        raise TypeError(f"{path}: expected a state dict, got {type(state).__name__}.")
    missing = [k for k in ("proj.weight", "proj.bias") if k not in state]
    if missing:
        raise ValueError(
            f"{path}: not an ERA linear adapter checkpoint, missing {missing}; "
            f"keys are {sorted(state)[:10]}."
        )
    weight, bias = state["proj.weight"], state["proj.bias"]
    if weight.ndim != 2 or bias.shape != (weight.shape[0],):
        raise ValueError(
            f"{path}: proj.weight must be (d_d, d_q) and proj.bias (d_d,), got "
            f"{tuple(weight.shape)} and {tuple(bias.shape)}."
        )
    W = weight.detach().to(torch.float32).numpy().T
    b = bias.detach().to(torch.float32).numpy()
    if not (np.isfinite(W).all() and np.isfinite(b).all()):
        raise ValueError(f"{path}: the checkpoint holds non-finite (NaN or inf) weights.")
    return np.ascontiguousarray(W), b.copy()
