"""Chroma embedding function of an :class:`~era_sklearn.encoders.AdaptedEncoder`.

Imported only by ``AdaptedEncoder.as_chroma`` (it needs ``chromadb``).
"""

from __future__ import annotations

from chromadb.api.types import Documents, EmbeddingFunction, Embeddings


class ChromaEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma's protocol over an AdaptedEncoder: documents plain, queries adapted.

    ``__call__`` embeds documents with the document encoder (Chroma calls it
    for ``add``/``upsert(documents=...)``); ``embed_query`` adapts queries
    (Chroma 1.0+ calls it for ``query(query_texts=...)``). The models cannot
    be rebuilt from a stored configuration, so Chroma records the function
    as "legacy" and it must be passed to ``get_collection`` in each process.

    Parameters
    ----------
    encoder : AdaptedEncoder
    """

    def __init__(self, encoder):
        self.encoder = encoder

    def __call__(self, input: Documents) -> Embeddings:
        return list(self.encoder.encode_documents(list(input)))

    def embed_query(self, input: Documents) -> Embeddings:
        return list(self.encoder.encode_queries(list(input)))

    @staticmethod
    def name() -> str:
        return "era_sklearn_adapted"

    def get_config(self):
        return NotImplemented  # models are not JSON: Chroma keeps the function in memory only

    @staticmethod
    def build_from_config(config):
        return NotImplemented

    def default_space(self):
        return "cosine"  # adapted queries are compared by angle

    def supported_spaces(self):
        return ["cosine", "ip", "l2"]
