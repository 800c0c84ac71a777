"""A fitted adapter as the last modules of a sentence-transformers model.

``to_sentence_transformer(est, query_model)`` (``ERAAdapter.to_sentence_transformer``)
appends, after the query model's own modules:

1. ``Normalize`` when ``normalize_input`` (the adapter's input normalisation);
2. the map: a ``Dense`` layer with bias and identity activation holding
   ``coef_.T`` and ``intercept_``, or, when the adapter has a residual MLP
   branch (``module_params_``), a :class:`ResidualMLPHead` computing
   ``x @ coef_ + intercept_ + mlp(x)``;
3. ``Normalize`` when ``normalize_output``.

So ``model.encode(texts)`` equals ``est.transform(query_model.encode(texts))``
and any tool that loads a sentence-transformers model gets document-space
query vectors. A linear export uses only sentence-transformers' own modules:
``SentenceTransformer(path)`` loads it anywhere. The MLP head is this
module's class, saved as ``config.json`` + ``model.safetensors``; loading a
saved model that contains it needs era-sklearn installed and, from
sentence-transformers 6 on, ``SentenceTransformer(path, trust_remote_code=True)``
(its rule for any module class outside its own package).

Importing this module needs sentence-transformers (``pip install
"era-sklearn[embed]"``); the rest of era-sklearn does not.
"""

import json
import os
from typing import ClassVar

import numpy as np

try:
    from sentence_transformers import SentenceTransformer
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "to_sentence_transformer needs sentence-transformers: pip install 'era-sklearn[embed]' "
        "(or pip install sentence-transformers)."
    ) from exc
import torch
from safetensors.torch import load_model, save_model
from sklearn.utils.validation import check_is_fitted
from torch import nn

try:  # sentence-transformers >= 6
    from sentence_transformers.sentence_transformer.modules import Dense, Module, Normalize
except ImportError:  # pragma: no cover - older releases
    from sentence_transformers.models import Dense, Normalize

    try:  # 5.x
        from sentence_transformers.models import Module
    except ImportError:  # before 5, modules are plain torch modules
        Module = nn.Module

from .._transform.mlp import mlp_layers
from .models import copy_linear_, load_branch_, residual_branch

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def to_sentence_transformer(est, query_model):
    """``query_model`` followed by the fitted adapter ``est``, as one ``SentenceTransformer``.

    Parameters
    ----------
    est : ERAAdapter
        Fitted, not hybrid.
    query_model : SentenceTransformer
        The query encoder ``est`` was fitted on. Its modules are shared with
        the returned model, not copied (``copy.deepcopy`` it first to train
        the two separately); its prompts carry over.

    Returns
    -------
    model : SentenceTransformer
        On ``query_model``'s device, ``similarity_fn_name="cosine"``.

    Raises
    ------
    ValueError
        For a hybrid adapter (use ``era_sklearn.encoders.AdaptedEncoder``), a
        ``query_model`` whose output width is not ``est.n_features_in_``, or
        one with ``truncate_dim`` set.
    """
    check_is_fitted(est)
    if getattr(est, "hybrid", False):
        raise ValueError(
            "This adapter is hybrid (hybrid=True): its input is [query_encoder(q), "
            "document_encoder(q)], the output of two models with their own tokenizers, which one "
            "SentenceTransformer pipeline cannot hold. Use era_sklearn.encoders.AdaptedEncoder, "
            "which runs both encoders and the adapter, instead."
        )
    if not isinstance(query_model, SentenceTransformer):
        raise TypeError(f"query_model must be a sentence_transformers.SentenceTransformer, got "
                        f"{type(query_model).__name__}.")
    if getattr(query_model, "truncate_dim", None) is not None:
        raise ValueError(
            f"query_model has truncate_dim={query_model.truncate_dim}: the truncation applies to "
            "the output of the whole model, which would cut the adapted vectors. Export a "
            "query_model without truncate_dim (an adapter fitted on truncated embeddings cannot "
            "be exported)."
        )
    width = _output_width(query_model)
    if width is not None and width != est.n_features_in_:
        raise ValueError(f"query_model outputs {width}-dimensional embeddings, but this adapter "
                         f"was fitted on {est.n_features_in_}: pass the query encoder it was "
                         "fitted with.")
    head = [Normalize()] if est.normalize_input else []
    head.append(_map_module(est))
    if est.normalize_output:
        head.append(Normalize())
    device = query_model.device
    model = SentenceTransformer(
        modules=[*query_model, *(m.to(device) for m in head)],
        device=str(device),
        prompts=dict(getattr(query_model, "prompts", {}) or {}),
        default_prompt_name=getattr(query_model, "default_prompt_name", None),
        similarity_fn_name="cosine",  # as ERA ranks documents
    )
    return model.eval()


def _output_width(model):
    # get_embedding_dimension since sentence-transformers 6; the older name warns there.
    method = getattr(model, "get_embedding_dimension", None)
    return (method or model.get_sentence_embedding_dimension)()


def _map_module(est):
    """The fitted map as a torch module reading and writing ``sentence_embedding``."""
    coef = torch.from_numpy(np.array(est.coef_, dtype=np.float32))
    intercept = torch.from_numpy(np.array(est.intercept_, dtype=np.float32))
    d_in, d_out = coef.shape
    if est.module_params_ is None:
        return Dense(d_in, d_out, bias=True, activation_function=nn.Identity(),
                     init_weight=coef.T.contiguous(), init_bias=intercept)
    layers = mlp_layers(est.module_params_)
    head = ResidualMLPHead(d_in, d_out, [c.shape[1] for c, _ in layers[:-1]])
    copy_linear_(head.linear, est.coef_, est.intercept_)
    load_branch_(head.mlp, est.module_params_)
    return head


class ResidualMLPHead(Module):
    """``x @ W + b + mlp(x)``: an adapter's linear map plus its residual MLP branch.

    The branch is ``Linear -> GELU`` per hidden layer, then a last ``Linear``
    (``era_sklearn._torch.models.ResidualMLPAdapter`` in eval mode, before its
    normalisation). Reads and writes ``features["sentence_embedding"]``.

    Parameters
    ----------
    in_features : int
    out_features : int
    hidden_sizes : list of int
        Width of each hidden layer of the branch (at least one).
    """

    config_keys: ClassVar[list] = ["in_features", "out_features", "hidden_sizes"]

    def __init__(self, in_features, out_features, hidden_sizes):
        super().__init__()
        widths = [int(in_features), *map(int, hidden_sizes), int(out_features)]
        if len(widths) < 3 or min(widths) < 1:
            raise ValueError(f"ResidualMLPHead needs positive widths and at least one hidden "
                             f"layer, got {in_features}, {hidden_sizes}, {out_features}.")
        self.in_features, self.out_features = widths[0], widths[-1]
        self.hidden_sizes = widths[1:-1]
        self.linear = nn.Linear(widths[0], widths[-1])
        self.mlp = residual_branch(widths)

    def forward(self, features, **kwargs):
        x = features["sentence_embedding"]
        features["sentence_embedding"] = self.linear(x) + self.mlp(x)
        return features

    def get_embedding_dimension(self):
        return self.out_features

    get_sentence_embedding_dimension = get_embedding_dimension  # sentence-transformers < 6

    def get_config_dict(self):
        return {key: getattr(self, key) for key in self.config_keys}

    def save(self, output_path, *args, safe_serialization=True, **kwargs):
        with open(os.path.join(output_path, CONFIG_NAME), "w", encoding="utf-8") as f:
            json.dump(self.get_config_dict(), f, indent=2)
        save_model(self, os.path.join(output_path, WEIGHTS_NAME))  # always safetensors

    @classmethod
    def load(cls, model_name_or_path, subfolder="", token=None, cache_folder=None, revision=None,
             local_files_only=False, **kwargs):
        """Read a head written by :meth:`save` (a local folder, or a Hub repository on
        sentence-transformers >= 5)."""
        hub = {"subfolder": subfolder, "token": token, "cache_folder": cache_folder,
               "revision": revision, "local_files_only": local_files_only}
        paths = [_file_path(model_name_or_path, name, hub) for name in (CONFIG_NAME, WEIGHTS_NAME)]
        with open(paths[0], encoding="utf-8") as f:
            config = json.load(f)
        if not isinstance(config, dict) or set(config) != set(cls.config_keys):
            raise ValueError(f"{paths[0]}: a ResidualMLPHead config has exactly the keys "
                             f"{cls.config_keys}.")
        head = cls(**config)
        load_model(head, paths[1], strict=True, device="cpu")
        if not all(torch.isfinite(p).all() for p in head.parameters()):
            raise ValueError(f"{paths[1]}: the weights contain NaN or infinity.")
        return head


def _file_path(model_name_or_path, filename, hub):
    if hasattr(Module, "load_file_path"):  # sentence-transformers >= 5: local or Hub
        path = Module.load_file_path(model_name_or_path, filename=filename, **hub)
    else:  # pragma: no cover - older releases pass a local folder
        path = os.path.join(model_name_or_path, hub["subfolder"], filename)
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(f"No {filename} for a ResidualMLPHead in {model_name_or_path}.")
    return path
