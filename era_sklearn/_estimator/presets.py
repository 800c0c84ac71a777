"""Named configurations of ERAAdapter."""

from .._torch.recipe import PAPER_ADAPT, PAPER_ALIGN, PAPER_LABEL_VALIDATION_FRACTION
from .._utils.optional import require_torch
from ..adapt import Contrastive
from ..align import TorchAlign
from .adapter import ERAAdapter


def paper_recipe(**overrides):
    """ERAAdapter configured as the ERA paper's official code (``ERAConfig`` defaults).

    Stage 1: a linear layer with bias from torch's random initialisation,
    trained with the cosine loss for 10 epochs (AdamW, lr 1e-3, weight decay
    0.01, batch 256) on 90% of the alignment texts. Stage 2: InfoNCE
    (temperature 0.05) over one random positive per query (fixed for all
    epochs) and 5 negatives mined by the stage-1 adapter (``topk_percpos``:
    top 2,000, those above 0.95 x the positive dropped, every relevant
    document of the query excluded), no in-batch negatives, AdamW lr 1e-5,
    weight decay 1e-4, 10% linear warm-up, batch 256, up to 1,000 epochs,
    early stopping on the validation InfoNCE loss with patience 5, and no
    closed-form fallback; 10% of the labelled queries validate (ERA's
    ``label_val_ratio``). (The official launch scripts override some of these,
    e.g. 100 alignment epochs.)

    Both stages train in torch: this needs ``pip install "era-sklearn[torch]"``
    and raises an ImportError that says so without it.

    Parameters
    ----------
    **overrides
        ``ERAAdapter`` parameters, nested ones included
        (``adapt__negatives="random"``, ``align__max_epochs=100``,
        ``adapt__device="cuda"``, ``random_state=0``).

    Returns
    -------
    adapter : ERAAdapter
        Unfitted.

    Examples
    --------
    >>> from era_sklearn import paper_recipe
    >>> adapter = paper_recipe(adapt__negatives="random", random_state=0)
    >>> adapter.adapt.negatives, adapter.adapt.lr, adapter.align.init
    ('random', 1e-05, 'random')
    """
    require_torch("paper_recipe()")  # both stages are torch solvers: say so now, not at fit
    adapter = ERAAdapter(
        align=TorchAlign(**PAPER_ALIGN),
        # The estimator-level choices the official code makes without naming them: stage 2
        # starts from stage 1 and keeps its own result (no closed-form fallback).
        adapt=Contrastive(**PAPER_ADAPT, validation_fraction=PAPER_LABEL_VALIDATION_FRACTION,
                          warm_start="align", fallback=False),
    )
    return adapter.set_params(**overrides)
