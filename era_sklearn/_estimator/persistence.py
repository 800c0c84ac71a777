"""ERAAdapter's persistence: its own file (save / load), ERA checkpoints in, sentence-transformers out.

A mixin so the estimator module keeps to validation, orchestration and state; the
file format itself lives in :mod:`era_sklearn._io` and reads what it may store
from the class's ``_state_schema`` (:mod:`.state_schema`).
"""

from .._io.persistence import load_adapter, save_adapter
from .._utils.optional import require_torch
from .state_schema import STATE_SCHEMA


class _PersistenceMixin:
    """``save`` / ``load`` / ``from_era_checkpoint`` / ``to_sentence_transformer`` for ERAAdapter."""

    #: What the file format checks and stores of the fitted state.
    _state_schema = STATE_SCHEMA

    def save(self, path):
        """Write the fitted adapter as one safetensors file (no pickle involved).

        Arrays are tensors; parameters (solver objects by class and
        parameters) and the other fitted state are JSON in the header. The
        write is atomic, and ``load(path)`` reads the same path back.

        Parameters
        ----------
        path : str or path-like

        Returns
        -------
        path : pathlib.Path
            Where the adapter was written.
        """
        return save_adapter(self, path)

    @classmethod
    def load(cls, path):
        """Read an adapter written by :meth:`save` (no pickle involved).

        Reading is bounded in memory and validated: unknown fields, invalid
        parameters, inconsistent shapes and non-finite weights are refused.
        Files of era-sklearn 0.1 are refused with the command that converts
        them (:func:`era_sklearn.convert_legacy_adapter`).

        Parameters
        ----------
        path : str or path-like

        Returns
        -------
        adapter : ERAAdapter
            Fitted, with the saved parameters.
        """
        return load_adapter(cls, path)

    @classmethod
    def from_era_checkpoint(cls, path, **params):
        """Build a fitted adapter from a checkpoint released with ERA.

        The file is a torch state dict with ``proj.weight`` (d_d, d_q) and
        ``proj.bias`` (d_d,), read with ``torch.load(weights_only=True)``.
        The adapter computes ``normalise(x W^T + b)``, ERA's own formula, so
        ``normalize_input`` defaults to False here. Reading the file needs
        torch (``pip install "era-sklearn[torch]"``); the adapter it returns
        does not.

        Parameters
        ----------
        path : str or path-like
        **params
            Other ``ERAAdapter`` parameters.

        Returns
        -------
        adapter : ERAAdapter
            Fitted: ``transform`` works at once.
        """
        require_torch("ERAAdapter.from_era_checkpoint")  # the file is a torch state dict
        from .._torch.train import load_era_checkpoint  # imports torch: optional

        W, b = load_era_checkpoint(path)  # refuses non-finite weights
        params.setdefault("normalize_input", False)
        adapter = cls(**params)
        adapter._validate_params()
        adapter.n_features_in_ = W.shape[0]
        adapter._fit_dtype = W.dtype
        adapter._set_align(W, b, None, None)
        return adapter

    def to_sentence_transformer(self, query_model):
        """The query encoder with this adapter appended, as one ``SentenceTransformer``.

        The adapter becomes the model's last modules (input normalisation, a
        linear layer with bias, output normalisation; the residual MLP branch
        where present), so any tool that loads a sentence-transformers model
        gets document-space query vectors: ``model.encode(t)`` equals
        ``self.transform(query_model.encode(t))``. A hybrid adapter needs both
        encoders per query and is refused: use
        :class:`era_sklearn.encoders.AdaptedEncoder`.

        Parameters
        ----------
        query_model : sentence_transformers.SentenceTransformer
            The strong query encoder this adapter was fitted on.

        Returns
        -------
        model : sentence_transformers.SentenceTransformer
        """
        from .._torch.export import to_sentence_transformer  # imports torch: optional

        return to_sentence_transformer(self, query_model)
