"""Prefixed torch settings of ERAAdapter (skorch style).

Torch training has many knobs; listing them all in ``__init__`` would bury
the closed-form ones. Instead ``ERAAdapter(adapt__lr=1e-4)`` style keyword
arguments are stored verbatim as attributes, returned by ``get_params`` and
accepted by ``set_params``, so ``clone`` and ``GridSearchCV`` treat them like
any other parameter (``param_grid={"adapt__lr": [1e-4, 1e-3]}``).
"""

#: Every accepted setting with its default. ``adapt__warm_start`` picks the
#: starting map of torch stage 2: ``"ridge"`` (the closed-form stage-2 map,
#: which is the stage-1 map whenever held-out queries prefer it) or ``"align"``
#: (the stage-1 map itself, as in ERA's paper). ``adapt__min_valid_queries``:
#: early stopping holds out at least this many labelled queries, and with
#: fewer than twice as many the torch stage is skipped (the closed-form map
#: stays, ``history_["stop_reason"] == "too_few_queries"``). ``adapt__monitor``:
#: early stopping on ``"ndcg"`` (1 - nDCG@10 of the validation queries over
#: the corpus) or on ``"loss"`` (their InfoNCE loss, as ERA does). ``align__*`` follow ERA's stage 1,
#: ``adapt__*`` ERA's stage 2 (lr 1e-3 rather than the paper's 1e-5, which
#: has not converged after 1,000 epochs on 809 SciFact queries; see the docs), ``module__*`` shape the residual MLP of ``model="mlp"``.
DEFAULTS = {
    "module": {"hidden_size": 512, "n_layers": 1, "dropout": 0.1},
    "align": {
        "lr": 1e-3,
        "weight_decay": 0.01,
        "max_epochs": 10,
        "batch_size": 256,
        "validation_fraction": 0.1,
    },
    "adapt": {
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "max_epochs": 1000,
        "batch_size": 256,
        # 20, not ERA's 5: the monitored nDCG@10 plateaus for several epochs
        # where a loss would still move (SciFact: patience 5 stopped too early).
        "patience": 20,
        "warmup": 0.1,
        "temperature": 0.05,
        "n_negatives": 5,
        "top_k": 2000,
        "threshold": 0.95,
        "validation_fraction": 0.1,
        "in_batch_negatives": True,
        "warm_start": "align",
        "min_valid_queries": 10,
        "monitor": "ndcg",
    },
}


def prefixed(params):
    """The entries of ``params`` whose name has one of the known prefixes."""
    return {k: v for k, v in params.items() if k.partition("__")[0] in DEFAULTS and "__" in k}


def check_names(params):
    """Raise TypeError for an unknown keyword, as a normal signature would."""
    for name in params:
        group, sep, key = name.partition("__")
        if not sep or group not in DEFAULTS or key not in DEFAULTS[group]:
            known = sorted(f"{g}__{k}" for g, keys in DEFAULTS.items() for k in keys)
            raise TypeError(
                f"ERAAdapter got an unexpected keyword argument {name!r}; torch settings are "
                f"one of: {', '.join(known)}."
            )


def settings(group, attributes):
    """Defaults of ``group`` overridden by the prefixed attributes set."""
    out = dict(DEFAULTS[group])
    for name, value in prefixed(attributes).items():
        g, _, key = name.partition("__")
        if g == group:
            out[key] = value
    return out
