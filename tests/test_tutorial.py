"""docs/tutorial.md runs as a test: raw SciFact texts to FAISS, Chroma and LangChain queries.

Its ``python`` blocks run in order in one namespace (``py`` blocks show real-model
commands and are not run), with the page's cache folder in a temporary directory so
that every run builds its stand-in models from scratch.
"""

import pytest
from test_docs import python_blocks

from era_sklearn.datasets import shared_dir

PAGE = "tutorial.md"


def test_tutorial_runs(monkeypatch, tmp_path):
    for module in ("faiss", "chromadb", "langchain_core", "model2vec"):
        pytest.importorskip(module)
    try:
        data = shared_dir() / "datasets" / "scifact"
    except FileNotFoundError as exc:
        pytest.skip(f"shared data absent: {exc}")
    if not (data / "corpus.jsonl").exists():
        pytest.skip(f"SciFact texts absent: {data}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ERA_TUTORIAL_CACHE", str(tmp_path / "cache"))
    namespace = {"__name__": "docs_tutorial"}
    blocks = python_blocks(PAGE)
    assert len(blocks) >= 10
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/{PAGE}[python block {i}]", "exec"), namespace)  # noqa: S102

    # What the page says, checked on what it computed.
    ndcg = namespace["ndcg"]
    assert ndcg["strong encoder, adapted"] > ndcg["cheap encoder alone"]
    # A second run loads the saved stand-in models instead of building them again.
    for saved, built in zip(namespace["stand_in_models"](tmp_path / "cache"),
                            (namespace["strong_model"], namespace["cheap_model"])):
        assert saved is not built and (saved.embedding == built.embedding).all()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "chroma", "embeddings", "stand-in-384", "stand-in-64"]
    assert list(tmp_path.iterdir()) == [tmp_path / "cache"]  # nothing written elsewhere
