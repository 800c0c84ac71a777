"""Tiny text models built in the tests (never downloaded): word-level tokenizer, random vectors.

Imported by the encoder tests as a plain module (pytest puts ``tests/`` on
``sys.path``); each builder imports its model library only when called.
"""

import numpy as np

WORDS = ["[UNK]", "[PAD]", "cats", "purr", "dogs", "bark", "fish", "swim", "birds", "sing",
         "query", "document", "the", "a"]


def word_tokenizer(words=WORDS):
    """A lower-casing, whitespace-and-punctuation word-level tokenizer over ``words``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, "[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


def random_vectors(n_rows, dim, seed):
    return np.random.default_rng(seed).normal(size=(n_rows, dim)).astype(np.float32)


def static_model(dim=8, seed=0, words=WORDS):
    """A model2vec StaticModel; texts with no known word get all-zero vectors."""
    from model2vec import StaticModel

    return StaticModel(random_vectors(len(words), dim, seed), word_tokenizer(words))


def sentence_transformer(dim=8, seed=0, words=WORDS):
    """A sentence-transformers model with one StaticEmbedding module (mean of word vectors)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    module = StaticEmbedding(word_tokenizer(words), embedding_weights=random_vectors(len(words), dim, seed))
    return SentenceTransformer(modules=[module], device="cpu")
