"""The ERA paper's recipe as settings, defined once (no torch import: presets read it).

The ``ERAConfig`` defaults of megagonlabs/ERA at commit 9a7b4d6
(``src/adapter/era_training.py`` lines 52-80). :func:`era_sklearn.paper_recipe`
builds its solvers from these dictionaries and the torch fits
(:mod:`era_sklearn._torch.fit`) are measured against the official code with them
(``benchmarks/paper_parity.py``), so the two cannot drift apart.
"""

__all__ = ["PAPER_ADAPT", "PAPER_ALIGN", "PAPER_LABEL_VALIDATION_FRACTION"]

#: ERA's stage 1 (``ERAConfig.alignment_*``, era_training.py:53-58; ``batch_size``
#: :80): a linear layer with bias from torch's random init, trained 10 epochs
#: with the cosine loss on 90% of the alignment texts, no early stopping
#: (``alignment_early_stopping=False``, :87). The launch script
#: ``scripts/train_era_adapter.sh`` overrides ``--alignment-epochs 100``.
PAPER_ALIGN = {
    "loss": "cosine",
    "init": "random",
    "max_epochs": 10,
    "lr": 1e-3,
    "weight_decay": 0.01,
    "batch_size": 256,
    "validation_fraction": 0.1,
}

#: ERA's stage 2 (``ERAConfig.label_*``, era_training.py:61-76): InfoNCE at
#: temperature 0.05 over one fixed random positive per query and 5 negatives
#: drawn once (no in-batch negatives), AdamW lr 1e-5 wd 1e-4 with 10% linear
#: warmup then linear decay, batch 256, up to 1,000 epochs, early stopping on
#: the validation InfoNCE loss with patience 5 (epoch 1 is the first candidate),
#: best epoch restored, no closed-form fallback. ``validation_fraction`` is the
#: caller's (ERA's ``label_val_ratio``, default 0.1 of all queries).
PAPER_ADAPT = {
    "model": "linear",
    "lr": 1e-5,
    "weight_decay": 1e-4,
    "max_epochs": 1000,
    "batch_size": 256,
    "patience": 5,
    "warmup": 0.1,
    "temperature": 0.05,
    "n_negatives": 5,
    "negatives": "topk_percpos",
    "top_k": 2000,
    "threshold": 0.95,
    "in_batch_negatives": False,
    "positives": "one",
    "monitor": "loss",
    "min_valid_queries": 0,
    "start_as_candidate": False,
}

#: ERA's ``label_val_ratio``: the share of labelled queries that validate stage 2.
PAPER_LABEL_VALIDATION_FRACTION = 0.1
