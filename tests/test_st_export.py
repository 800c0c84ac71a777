"""ERAAdapter -> sentence-transformers export (``era_sklearn._torch.export``), with tiny models
built in the test (no download)."""

import copy
from itertools import pairwise

import numpy as np
import pytest

sentence_transformers = pytest.importorskip("sentence_transformers")
torch = pytest.importorskip("torch")
from sentence_transformers import SentenceTransformer
from tokenizers import Tokenizer, models, pre_tokenizers

from era_sklearn import ERAAdapter
from era_sklearn._torch.export import ResidualMLPHead, _output_width, to_sentence_transformer

WORDS = [f"w{i}" for i in range(60)]
VOCAB = ["[UNK]", "[PAD]", "[CLS]", "[SEP]", *WORDS]
TOL = 1e-5  # issue 12's target for encode == transform(query_model.encode)


try:  # sentence-transformers >= 6; the older path still works there, with a warning
    from sentence_transformers.sentence_transformer import modules as st_modules
except ImportError:
    from sentence_transformers import models as st_modules


def _tokenizer():
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def _texts(n, seed):
    """Texts of known words only (a text of unknown words embeds to a zero vector)."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(2, 7))) for _ in range(n)]


@pytest.fixture(scope="module")
def static_model():
    """A static-embedding query encoder (model2vec-like), 24 dimensions."""
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(len(VOCAB), 24)).astype(np.float32)
    return SentenceTransformer(modules=[st_modules.StaticEmbedding(_tokenizer(), embedding_weights=weights)],
                               device="cpu")


@pytest.fixture(scope="module")
def bert_model(tmp_path_factory):
    """A transformer query encoder (random 1-layer BERT + mean pooling + Normalize)."""
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=24, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=16)
    BertModel(config).save_pretrained(path)
    PreTrainedTokenizerFast(tokenizer_object=_tokenizer(), unk_token="[UNK]", pad_token="[PAD]",
                            cls_token="[CLS]", sep_token="[SEP]").save_pretrained(path)
    return SentenceTransformer(modules=[st_modules.Transformer(str(path)), st_modules.Pooling(24),
                                        st_modules.Normalize()],
                               device="cpu")


def _adapter(query_model, d_d=8, mlp_hidden=(), **params):
    """An adapter fitted on query_model's embeddings (closed form), optionally given a random
    residual MLP branch: short training leaves that branch near zero, which would test little."""
    rng = np.random.default_rng(1)
    X = query_model.encode(_texts(200, seed=2))
    Y = X @ rng.normal(size=(X.shape[1], d_d)) + 0.3 * rng.normal(size=(len(X), d_d))
    est = ERAAdapter(**params).fit_align(X, Y.astype(np.float32))
    if mlp_hidden:
        widths = [X.shape[1], *mlp_hidden, d_d]
        est.module_params_ = {}
        for i, (a, b) in enumerate(pairwise(widths)):
            # Scaled as torch initialises a layer: outputs of order 1, like a trained adapter's.
            coef = rng.normal(size=(a, b)) / np.sqrt(a)
            est.module_params_[f"mlp_coef_{i}"] = coef.astype(np.float32)
            est.module_params_[f"mlp_intercept_{i}"] = rng.normal(size=b).astype(np.float32)
    return est


def _lstsq(center=True):
    """Least-squares stage 1 (centred: a nonzero intercept)."""
    from era_sklearn.align import LeastSquares

    return {"align": LeastSquares(center=center)}


CASES = {
    "lstsq_centered": _lstsq(),
    "procrustes": {},
    "raw_output": {**_lstsq(), "normalize_output": False},
    "raw_input": {**_lstsq(), "normalize_input": False},
    "mlp_1_layer": {**_lstsq(), "mlp_hidden": (16,)},
    "mlp_2_layers": {**_lstsq(center=False), "normalize_output": False, "mlp_hidden": (16, 12)},
}


def _max_error(model, est, query_model, texts):
    return float(np.abs(model.encode(texts) - est.transform(query_model.encode(texts))).max())


@pytest.mark.parametrize("case", CASES)
def test_encode_equals_transform_of_query_encoding(static_model, case):
    est = _adapter(static_model, **CASES[case])
    model = to_sentence_transformer(est, static_model)
    texts = _texts(50, seed=3)
    assert model.encode(texts).shape == (50, 8)
    assert _output_width(model) == 8
    assert _max_error(model, est, static_model, texts) < TOL
    if est.module_params_ is not None:  # the branch matters: without it the output differs
        est_linear = copy.deepcopy(est)
        est_linear.module_params_ = None
        assert np.abs(est_linear.transform(static_model.encode(texts))
                      - model.encode(texts)).max() > 100 * TOL


def test_transformer_query_model(bert_model, tmp_path):
    est = _adapter(bert_model, **_lstsq(), mlp_hidden=(16,))
    model = to_sentence_transformer(est, bert_model)
    texts = _texts(40, seed=4)
    assert _max_error(model, est, bert_model, texts) < TOL
    model.save(str(tmp_path / "st"))
    loaded = SentenceTransformer(str(tmp_path / "st"), device="cpu", trust_remote_code=True)
    np.testing.assert_allclose(loaded.encode(texts), model.encode(texts), rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", ["lstsq_centered", "mlp_2_layers"])
def test_save_load_round_trip(static_model, case, tmp_path):
    est = _adapter(static_model, **CASES[case])
    model = to_sentence_transformer(est, static_model)
    model.save(str(tmp_path / "st"))
    mlp = est.module_params_ is not None
    # A linear export holds only sentence-transformers' own modules: it loads without
    # trust_remote_code. The MLP head is era-sklearn's class: sentence-transformers >= 6
    # imports it only with trust_remote_code=True.
    loaded = SentenceTransformer(str(tmp_path / "st"), device="cpu", trust_remote_code=mlp)
    if mlp and int(sentence_transformers.__version__.split(".")[0]) >= 6:
        with pytest.raises(ValueError, match="trust_remote_code=True"):
            SentenceTransformer(str(tmp_path / "st"), device="cpu")
    assert any(isinstance(m, ResidualMLPHead) for m in loaded) == mlp
    texts = _texts(30, seed=5)
    np.testing.assert_allclose(loaded.encode(texts), model.encode(texts), rtol=0, atol=1e-6)
    assert _max_error(loaded, est, static_model, texts) < TOL
    assert loaded.similarity_fn_name == "cosine"


def test_saved_mlp_head_is_safetensors(static_model, tmp_path):
    model = to_sentence_transformer(_adapter(static_model, mlp_hidden=(16,)), static_model)
    model.save(str(tmp_path / "st"))
    (folder,) = tmp_path.glob("st/*_ResidualMLPHead")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]


def test_query_model_is_left_unchanged(static_model):
    texts = _texts(10, seed=6)
    before, n_modules = static_model.encode(texts), len(static_model)
    to_sentence_transformer(_adapter(static_model, **_lstsq()), static_model)
    assert len(static_model) == n_modules
    np.testing.assert_array_equal(static_model.encode(texts), before)


def test_prompts_carry_over(static_model):
    prompted = SentenceTransformer(modules=list(static_model), device="cpu",
                                   prompts={"query": "w1 w2 "}, default_prompt_name="query")
    est = _adapter(static_model, **_lstsq())
    model = to_sentence_transformer(est, prompted)
    texts = _texts(10, seed=7)
    assert _max_error(model, est, prompted, texts) < TOL
    assert np.abs(model.encode(texts) - est.transform(static_model.encode(texts))).max() > 1e-3


def test_hybrid_adapter_is_refused_pointing_to_the_adapted_encoder(static_model):
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(60, 24)), rng.normal(size=(60, 8))
    est = ERAAdapter(hybrid=True).fit_align(np.hstack([X, Y]), Y)
    with pytest.raises(ValueError, match="hybrid=True.*era_sklearn.encoders.AdaptedEncoder"):
        to_sentence_transformer(est, static_model)


def test_wrong_width_query_model_is_refused(static_model):
    rng = np.random.default_rng(0)
    est = ERAAdapter().fit_align(rng.normal(size=(60, 10)), rng.normal(size=(60, 4)))
    with pytest.raises(ValueError, match="outputs 24-dimensional embeddings, but this adapter "
                                         "was fitted on 10"):
        to_sentence_transformer(est, static_model)


def test_truncated_query_model_is_refused(static_model):
    truncated = SentenceTransformer(modules=list(static_model), device="cpu", truncate_dim=12)
    with pytest.raises(ValueError, match="truncate_dim=12"):
        to_sentence_transformer(_adapter(static_model), truncated)


def test_unfitted_and_non_model_inputs_are_refused(static_model):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        to_sentence_transformer(ERAAdapter(), static_model)
    with pytest.raises(TypeError, match="must be a sentence_transformers.SentenceTransformer"):
        to_sentence_transformer(_adapter(static_model), "all-MiniLM-L6-v2")


def test_mlp_head_load_refuses_non_finite_weights(static_model, tmp_path):
    from safetensors.torch import load_file, save_file

    model = to_sentence_transformer(_adapter(static_model, mlp_hidden=(16,)), static_model)
    model.save(str(tmp_path / "st"))
    (weights,) = tmp_path.glob("st/*_ResidualMLPHead/model.safetensors")
    tensors = load_file(weights)
    tensors["linear.weight"][0, 0] = float("nan")
    save_file(tensors, weights)
    with pytest.raises(ValueError, match="the weights contain NaN or infinity"):
        SentenceTransformer(str(tmp_path / "st"), device="cpu", trust_remote_code=True)
