"""Retrieval data: BEIR and MAIR loaders, shared embeddings, training pairs.

Text data is returned as a :class:`RetrievalDataset` of plain dictionaries keyed by
string ids; precomputed embeddings as an :class:`EmbeddingSet` whose row ``i`` belongs
to the ``i``-th id.  :func:`qrels_to_pairs` joins the two into the row indices that
an ERA adapter trains on (``X = Q[qi]``, ``Y = D[di]``, ``groups = qi``).

A package so that the public loaders read on their own: the line-by-line file
readers and their error messages live in ``_records`` (JSON lines, qrels TSV,
fields, grades) and ``_mair`` (MAIR's local and Hub rows).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._mair import _mair_labels, _mair_rows_hub, _mair_rows_local
from ._records import (
    _beir_texts,
    _dataset_root,
    _document_text,
    _grade,
    _id_field,
    _keep_judged,
    _query_text,
    _read_qrels_tsv,
    _text_field,
    _text_lines,
    _warn_fractional,
)

__all__ = [
    "BEIR_URL_TEMPLATE",
    "EmbeddingSet",
    "RetrievalDataset",
    "download_beir",
    "load_beir",
    "load_embeddings",
    "load_mair",
    "qrels_to_pairs",
    "query_text",
    "shared_dir",
]

BEIR_URL_TEMPLATE = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
SHARED_DIR_ENV = "ERA_SHARED_DIR"


@dataclass(frozen=True)
class RetrievalDataset:
    """Texts and relevance judgements of one retrieval task.

    Attributes
    ----------
    corpus : dict of str to str
        Document id to document text.
    queries : dict of str to str
        Query id to query text (without any instruction).
    qrels : dict of str to dict of str to int or float
        Query id to ``{document id: grade}``; only grades > 0 are kept. Grades
        are ints, or floats where the file gives fractional ones.
    instructions : dict of str to str or None
        Query id to its task instruction (MAIR), or None when the task has none (BEIR).

    Examples
    --------
    >>> from era_sklearn.datasets import RetrievalDataset
    >>> ds = RetrievalDataset(
    ...     corpus={"d1": "Aspirin thins blood."},
    ...     queries={"q1": "Does aspirin thin blood?"},
    ...     qrels={"q1": {"d1": 1}},
    ...     instructions={"q1": "Find medical evidence."},
    ... )
    >>> ds.query_texts()
    {'q1': 'Find medical evidence. Does aspirin thin blood?'}
    """

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    instructions: dict[str, str] | None = None

    def query_texts(self):
        """Texts a query encoder should see: instruction joined to query when present.

        Returns
        -------
        dict of str to str
            Query id to :func:`query_text` of its instruction and query.

        Examples
        --------
        >>> ds = RetrievalDataset({}, {"q": "cats?"}, {}, {"q": "Find a pet."})
        >>> ds.query_texts()
        {'q': 'Find a pet. cats?'}
        """
        if self.instructions is None:
            return dict(self.queries)
        return {
            qid: query_text(self.instructions.get(qid, ""), q) for qid, q in self.queries.items()
        }


@dataclass(frozen=True)
class EmbeddingSet:
    """Precomputed corpus and query embeddings of one data set and encoder.

    Attributes
    ----------
    corpus_ids, query_ids : list of str
        Row ``i`` of ``corpus`` (``queries``) embeds ``corpus_ids[i]`` (``query_ids[i]``).
    corpus : ndarray of shape (n_docs, dim), float32
    queries : ndarray of shape (n_queries, dim), float32

    Examples
    --------
    >>> import numpy as np
    >>> from era_sklearn.datasets import EmbeddingSet
    >>> emb = EmbeddingSet(["d1", "d2"], ["q1"], np.eye(2, dtype=np.float32),
    ...                    np.ones((1, 2), dtype=np.float32))
    >>> emb.corpus.shape, emb.query_ids
    ((2, 2), ['q1'])
    """

    corpus_ids: list[str]
    query_ids: list[str]
    corpus: np.ndarray
    queries: np.ndarray


def query_text(instruction, query):
    """Join an instruction to its query, the text an instructed query encoder sees.

    This is MAIR's convention (``f"{instruction} {query}"``); an empty instruction
    leaves the query unchanged.

    Parameters
    ----------
    instruction : str
    query : str

    Returns
    -------
    str

    Examples
    --------
    >>> query_text("Retrieve a relevant abstract.", "Does aspirin help?")
    'Retrieve a relevant abstract. Does aspirin help?'
    >>> query_text("", "Does aspirin help?")
    'Does aspirin help?'
    """
    return f"{instruction} {query}" if instruction else query



def load_beir(path, split="test", *, all_queries=False):
    """Load a data set in BEIR's layout.

    Parameters
    ----------
    path : str or path-like
        Folder holding ``corpus.jsonl`` (``_id``, ``title``, ``text``),
        ``queries.jsonl`` (``_id``, ``text``) and ``qrels/<split>.tsv``
        (header ``query-id corpus-id score``, tab-separated).
    split : str, default="test"
        Which qrels file to read.
    all_queries : bool, default=False
        Keep every query of ``queries.jsonl``; by default only those judged in
        ``split`` are kept.

    Returns
    -------
    RetrievalDataset
        Documents read as ``title + " " + text`` (stripped), grades > 0 only
        (ints, or floats where the file has fractional grades, with a warning),
        ``instructions=None``.

    Raises
    ------
    ValueError
        Naming the file and line, if a file is malformed: not UTF-8, invalid
        JSON, a missing field, an id that is neither a string nor an integer, a
        query text that is not a string (a title or document text may also be
        missing or null), a repeated id, a qrels file without its header,
        without judgements, or with a grade that is not a finite decimal number
        (``1_0``, which Python's ``float`` reads as 10, is refused). Errors, not
        conversions: each says the file is not what its format promises, and a
        guess (``5`` as the text ``"5"``, ``null`` as ``""``, ``1_0`` as 10)
        would train and evaluate on data nobody wrote.

    Examples
    --------
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp()); (d / "qrels").mkdir()
    >>> _ = (d / "corpus.jsonl").write_text(
    ...     json.dumps({"_id": "d1", "title": "Cats", "text": "purr."}) + "\\n")
    >>> _ = (d / "queries.jsonl").write_text(
    ...     json.dumps({"_id": "q1", "text": "cats?"}) + "\\n"
    ...     + json.dumps({"_id": "q2", "text": "dogs?"}) + "\\n")
    >>> _ = (d / "qrels" / "test.tsv").write_text("query-id\\tcorpus-id\\tscore\\nq1\\td1\\t1\\n")
    >>> ds = load_beir(d)
    >>> ds.corpus, ds.queries, ds.qrels
    ({'d1': 'Cats purr.'}, {'q1': 'cats?'}, {'q1': {'d1': 1}})
    >>> len(load_beir(d, all_queries=True).queries)
    2
    """
    path = Path(path)
    corpus = _beir_texts(path / "corpus.jsonl", _document_text)
    queries = _beir_texts(path / "queries.jsonl", _query_text)
    qrels = _read_qrels_tsv(path / "qrels" / f"{split}.tsv")
    return RetrievalDataset(corpus, _keep_judged(queries, qrels, all_queries), qrels)


def download_beir(name, dest, *, url_template=BEIR_URL_TEMPLATE, overwrite=False):
    """Download and unzip a BEIR data set into ``dest/name``.

    The zip is fetched and extracted inside a temporary folder in ``dest`` and only
    renamed to ``dest/name`` once complete, so an interrupted or failed download
    never leaves a partial data set behind.

    Parameters
    ----------
    name : str
        BEIR's name of the set, e.g. ``"scifact"``.
    dest : str or path-like
        Parent folder; created if missing.
    url_template : str, default=BEIR_URL_TEMPLATE
        URL with a ``{name}`` field; any scheme :mod:`urllib` opens (``file://`` too).
    overwrite : bool, default=False
        Replace an existing ``dest/name``; by default it is returned as it is.

    Returns
    -------
    pathlib.Path
        ``dest/name``, ready for :func:`load_beir`.

    Examples
    --------
    >>> import tempfile, zipfile
    >>> from pathlib import Path
    >>> src = Path(tempfile.mkdtemp())
    >>> with zipfile.ZipFile(src / "toy.zip", "w") as z:
    ...     z.writestr("toy/queries.jsonl", '{"_id": "q1", "text": "cats?"}\\n')
    >>> out = download_beir("toy", src / "data", url_template=src.as_uri() + "/{name}.zip")
    >>> sorted(p.name for p in out.iterdir())
    ['queries.jsonl']
    """
    target = Path(dest) / name
    if target.exists() and not overwrite:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        archive = work / f"{name}.zip"
        with (
            urllib.request.urlopen(url_template.format(name=name)) as resp,
            open(archive, "wb") as f,
        ):
            shutil.copyfileobj(resp, f)
        # ZipFile.extractall drops absolute paths and "..", so members stay in `work`.
        with zipfile.ZipFile(archive) as z:
            z.extractall(work / "unzipped")
        if target.exists():
            shutil.rmtree(target)
        os.replace(_dataset_root(work / "unzipped"), target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def load_mair(path_or_name, task=None, *, split="queries", all_queries=False, cache_dir=None):
    """Load one MAIR task (instructed retrieval).

    Query rows have ``qid``, ``instruction``, ``query`` and ``labels`` (a list of
    ``{"id", "score"}``); document rows have ``id`` and ``doc``.  Encode queries with
    :meth:`RetrievalDataset.query_texts`, i.e. ``query_text(instruction, query)``.

    Parameters
    ----------
    path_or_name : str or path-like
        An existing local folder, or else the name of a task on the Hugging Face hub
        (``MAIR-Bench/MAIR-Queries`` and ``MAIR-Bench/MAIR-Docs``, one config per task;
        needs the ``datasets`` package and network access).
    task : str, optional
        With a local folder: the task's subfolder, either ``<folder>/<task>/`` or the
        hub snapshot layout ``<folder>/MAIR-Queries/<task>/`` + ``<folder>/MAIR-Docs/<task>/``.
        Without it the folder itself holds the files.
    split : str, default="queries"
        Query split; its documents are ``docs`` (or ``<x>_docs`` for ``<x>_queries``).
        Local files are ``<split>.jsonl`` and the documents' ``<docs split>.jsonl``.
    all_queries : bool, default=False
        Keep queries without any positive label.
    cache_dir : str, optional
        Passed to :func:`datasets.load_dataset` for hub loading.

    Returns
    -------
    RetrievalDataset
        Ids as strings, ``queries`` without instruction, ``instructions`` filled.

    Raises
    ------
    ValueError
        Naming the file and line (for the hub: the split and row), if a record
        lacks its ``id``, ``doc``, ``qid`` or ``query``, or a label its ``id``;
        if an id is neither a string nor an integer, ``doc`` or ``query`` is not
        a string, or ``instruction`` is neither a string nor missing / null; if
        ``labels`` is not a list of objects (or that list as a JSON string, as
        early releases wrote it) or a grade is not a finite number; if a doc id
        or a qid repeats (a later record would silently replace the first); or
        if a file is not UTF-8 jsonl. Errors rather than conversions, for the
        reason given in :func:`load_beir`.
    FileNotFoundError
        If ``path_or_name`` names a folder that does not exist.

    Examples
    --------
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> q = {"qid": 1, "instruction": "Find a pet.", "query": "cats?",
    ...      "labels": [{"id": "d1", "score": 2}]}
    >>> _ = (d / "queries.jsonl").write_text(json.dumps(q) + "\\n")
    >>> _ = (d / "docs.jsonl").write_text(json.dumps({"id": "d1", "doc": "Cats purr."}) + "\\n")
    >>> ds = load_mair(d)
    >>> ds.qrels, ds.query_texts()
    ({'1': {'d1': 2}}, {'1': 'Find a pet. cats?'})
    """
    if Path(path_or_name).exists():
        query_rows, doc_rows = _mair_rows_local(path_or_name, task, split)
    elif task is None and os.sep not in str(path_or_name):
        query_rows, doc_rows = _mair_rows_hub(str(path_or_name), split, cache_dir)
    else:
        raise FileNotFoundError(f"No MAIR folder at {str(path_or_name)!r}.")
    corpus = doc_rows.id_map(
        (n, _id_field(row, "id", where), _text_field(row, "doc", where))
        for n, row, where in doc_rows.located()
    )
    fractional, qrels = [], {}
    rows = query_rows.id_map(
        (n, _id_field(row, "qid", where), (row, where)) for n, row, where in query_rows.located()
    )
    queries, instructions = {}, {}
    for qid, (row, where) in rows.items():
        queries[qid] = _text_field(row, "query", where)
        instructions[qid] = _text_field(row, "instruction", where, optional=True)
        if labels := _mair_labels(row, where, fractional):
            qrels[qid] = labels
    _warn_fractional(fractional, f"MAIR task {task or path_or_name}", stacklevel=2)
    queries = _keep_judged(queries, qrels, all_queries)
    return RetrievalDataset(corpus, queries, qrels, {q: instructions[q] for q in queries})


def shared_dir():
    """Root of the shared real data (``datasets/``, ``embeddings/``).

    Returns
    -------
    pathlib.Path
        ``$ERA_SHARED_DIR`` when set, else the ``shared`` folder beside the repository.

    Raises
    ------
    FileNotFoundError
        If that folder does not exist.

    Examples
    --------
    >>> import os, tempfile
    >>> before = os.environ.get("ERA_SHARED_DIR")
    >>> os.environ["ERA_SHARED_DIR"] = d = tempfile.mkdtemp()
    >>> str(shared_dir()) == d
    True
    >>> _ = os.environ.pop("ERA_SHARED_DIR") if before is None else os.environ.update(
    ...     ERA_SHARED_DIR=before)
    """
    env = os.environ.get(SHARED_DIR_ENV)
    # A checkout sits beside the shared folder: <work>/<checkout>/era_sklearn/datasets/.
    root = Path(env) if env else Path(__file__).resolve().parents[3] / "shared"
    if not root.is_dir():
        raise FileNotFoundError(
            f"Shared data folder {root} not found; set {SHARED_DIR_ENV} to the folder "
            "holding datasets/ and embeddings/."
        )
    return root


def _read_ids(path):
    return [line.rstrip("\n") for _, line in _text_lines(path)]


def _load_matrix(path, n_rows, ids_path):
    matrix = np.load(path, mmap_mode=None)
    if matrix.ndim != 2 or matrix.shape[0] != n_rows:
        raise ValueError(
            f"{path} has shape {matrix.shape} but {ids_path} lists {n_rows} ids; "
            "the embeddings are stale or belong to another id list."
        )
    return np.asarray(matrix, dtype=np.float32)


def load_embeddings(root, encoder, *, dataset=None):
    """Load precomputed embeddings in the shared layout.

    The layout is ``<root>/<dataset>/corpus_ids.txt``, ``query_ids.txt`` (one id a
    line) and ``<encoder>/corpus.npy``, ``<encoder>/queries.npy``.

    Parameters
    ----------
    root : str, path-like or None
        Folder of data sets; None means ``shared_dir() / "embeddings"``.
    encoder : str
        Encoder subfolder, e.g. ``"all-MiniLM-L6-v2"``.
    dataset : str, optional
        Data set subfolder of ``root``; without it ``root`` is the data set's folder.

    Returns
    -------
    EmbeddingSet

    Raises
    ------
    ValueError
        If a matrix's row count differs from its id file's length, or an id
        file is not UTF-8 (the message names its line).

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp()); (d / "toy" / "enc").mkdir(parents=True)
    >>> _ = (d / "toy" / "corpus_ids.txt").write_text("d1\\nd2\\n")
    >>> _ = (d / "toy" / "query_ids.txt").write_text("q1\\n")
    >>> np.save(d / "toy" / "enc" / "corpus.npy", np.ones((2, 3), np.float32))
    >>> np.save(d / "toy" / "enc" / "queries.npy", np.ones((1, 3), np.float32))
    >>> emb = load_embeddings(d, "enc", dataset="toy")
    >>> emb.corpus_ids, emb.corpus.shape, emb.queries.shape
    (['d1', 'd2'], (2, 3), (1, 3))
    """
    base = Path(root) if root is not None else shared_dir() / "embeddings"
    if dataset is not None:
        base = base / dataset
    ids = {part: _read_ids(base / f"{part}_ids.txt") for part in ("corpus", "query")}
    corpus, queries = (
        _load_matrix(base / encoder / f"{npy}.npy", len(ids[part]), base / f"{part}_ids.txt")
        for part, npy in (("corpus", "corpus"), ("query", "queries"))
    )
    return EmbeddingSet(ids["corpus"], ids["query"], corpus, queries)


def _row_index(ids, kind):
    index = {str(i): row for row, i in enumerate(ids)}
    if len(index) != len(ids):
        raise ValueError(f"{kind} ids are not unique.")
    return index


def qrels_to_pairs(qrels, query_ids, corpus_ids, *, skip_missing=False):
    """Turn relevance judgements into row indices of embedding matrices.

    Parameters
    ----------
    qrels : dict of str to dict of str to int or float
        Query id to ``{document id: grade}``; grades <= 0 are dropped.
    query_ids, corpus_ids : sequence of str
        Row order of the query and document matrices (e.g. from :class:`EmbeddingSet`).
    skip_missing : bool, default=False
        Drop pairs whose query or document has no row; by default raise ``KeyError``.

    Returns
    -------
    query_rows, doc_rows : ndarray of int64, shape (n_pairs,)
    grades : ndarray of shape (n_pairs,)
        int64, or float64 when a grade is fractional (never truncated).
        For training pairs ``X = Q[query_rows]``, ``Y = D[doc_rows]``,
        ``sample_weight = grades``, ``groups = query_rows``.

    Raises
    ------
    ValueError
        If a grade is not a finite number.

    Examples
    --------
    >>> qi, di, g = qrels_to_pairs({"q2": {"d1": 2, "d3": 1}}, ["q1", "q2"], ["d1", "d2", "d3"])
    >>> qi.tolist(), di.tolist(), g.tolist()
    ([1, 1], [0, 2], [2, 1])
    """
    q_index, d_index = _row_index(query_ids, "Query"), _row_index(corpus_ids, "Corpus")
    rows, grades = [], []
    for qid, docs in qrels.items():
        for doc, grade in docs.items():
            grade = _grade(grade, f"qrels[{qid!r}][{doc!r}]")
            if grade <= 0:
                continue
            qrow, drow = q_index.get(str(qid)), d_index.get(str(doc))
            if qrow is None or drow is None:
                if skip_missing:
                    continue
                raise KeyError(f"Judged pair ({qid!r}, {doc!r}) has no embedding row.")
            rows.append((qrow, drow))
            grades.append(grade)
    pairs = np.array(rows, dtype=np.int64).reshape(-1, 2)
    fractional = any(isinstance(g, float) for g in grades)
    grades = np.array(grades, dtype=np.float64 if fractional else np.int64)
    return pairs[:, 0], pairs[:, 1], grades
