"""Where MAIR's rows come from (a local copy or the Hugging Face Hub) and their labels.

Private to :mod:`era_sklearn.datasets` (:func:`~era_sklearn.datasets.load_mair`).
"""

from __future__ import annotations

import json
from pathlib import Path

from ._records import _grade, _id_field, _read_jsonl, _Records


def _mair_docs_split(split):
    # MAIR pairs the query split "queries" with "docs", and "<x>_queries" with "<x>_docs".
    return "docs" if split == "queries" else split.removesuffix("queries") + "docs"


def _mair_local_dirs(root, task):
    """Folders holding the query and the document files of ``task`` under ``root``."""
    if task is None:
        return root, root
    if (root / "MAIR-Queries" / task).is_dir():  # snapshot of both hub repositories
        return root / "MAIR-Queries" / task, root / "MAIR-Docs" / task
    return root / task, root / task


def _mair_rows_local(root, task, split):
    qdir, ddir = _mair_local_dirs(Path(root), task)
    query_file, docs_file = qdir / f"{split}.jsonl", ddir / f"{_mair_docs_split(split)}.jsonl"
    return (
        _Records(str(query_file), "line", _read_jsonl(query_file)),
        _Records(str(docs_file), "line", _read_jsonl(docs_file)),
    )


def _mair_rows_hub(task, split, cache_dir):
    try:
        from datasets import load_dataset
    except ImportError as e:
        raise ImportError(
            "Loading MAIR from the Hugging Face hub needs the `datasets` package "
            "(pip install datasets); or pass a local folder of MAIR's jsonl files."
        ) from e
    out = []
    for repo, part in (("MAIR-Queries", split), ("MAIR-Docs", _mair_docs_split(split))):
        rows = load_dataset(f"MAIR-Bench/{repo}", task, split=part, cache_dir=cache_dir)
        out.append(_Records(f"MAIR-Bench/{repo} {task}/{part}", "row", enumerate(rows, 1)))
    return tuple(out)


def _mair_labels(row, where, fractional):
    """``{doc id: grade > 0}`` of a query's ``labels``: a list of ``{"id", "score"}`` objects."""
    labels = row.get("labels")
    if labels is None:
        return {}
    if isinstance(labels, str):  # early MAIR releases: the list as a JSON string
        try:
            labels = json.loads(labels)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: 'labels' is a string but not valid JSON ({e}).") from None
    if not isinstance(labels, list):
        raise ValueError(  # noqa: TRY004 (bad file content)
            f"{where}: 'labels' must be a list of {{\"id\", \"score\"}} objects, "
            f"got {type(labels).__name__} {labels!r:.60}."
        )
    grades = {}
    for i, label in enumerate(labels):
        at = f"{where} labels[{i}]"
        if not isinstance(label, dict):
            raise ValueError(f"{at} is not an object with an 'id' and a 'score'.")  # noqa: TRY004
        grade = _grade(label.get("score", label.get("relevance", 1)), at)  # early: "relevance"
        if isinstance(grade, float):
            fractional.append(f"{at}: {grade}")
        grades[_id_field(label, "id", at)] = grade
    return {doc: g for doc, g in grades.items() if g > 0}
