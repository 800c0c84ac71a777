"""Tests of era_sklearn.datasets and the benchmarks.embed command."""

import csv
import json
import re
import sys
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest

from era_sklearn.datasets import (
    RetrievalDataset,
    download_beir,
    load_beir,
    load_embeddings,
    load_mair,
    qrels_to_pairs,
    query_text,
    shared_dir,
)


@pytest.fixture(scope="module")
def shared():
    try:
        return shared_dir()
    except FileNotFoundError as e:
        pytest.skip(f"shared data absent: {e}")


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _write_beir(folder, qrels_rows):
    _write_jsonl(
        folder / "corpus.jsonl",
        [
            {"_id": "d1", "title": "Cats", "text": "purr."},
            {"_id": "d2", "title": "", "text": " Dogs bark. "},
            {"_id": "d3", "title": "Fish", "text": "swim."},
        ],
    )
    _write_jsonl(
        folder / "queries.jsonl",
        [{"_id": q, "text": f"query {q}"} for q in ("q1", "q2", "q3")],
    )
    lines = ["query-id\tcorpus-id\tscore"] + ["\t".join(map(str, r)) for r in qrels_rows]
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _qrels_file_stats(path):
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if int(r["score"]) > 0]
    return len({r["query-id"] for r in rows}), len(rows)


# --- load_beir ---------------------------------------------------------------------


def test_load_beir_fixture(tmp_path):
    folder = _write_beir(tmp_path / "toy", [("q1", "d1", 1), ("q1", "d3", 2), ("q2", "d2", 0)])
    ds = load_beir(folder)
    assert ds.corpus == {"d1": "Cats purr.", "d2": "Dogs bark.", "d3": "Fish swim."}
    assert ds.qrels == {"q1": {"d1": 1, "d3": 2}}  # grade 0 dropped
    assert ds.queries == {"q1": "query q1"}
    assert ds.instructions is None
    assert list(load_beir(folder, all_queries=True).queries) == ["q1", "q2", "q3"]


def _write_qrels(folder, text, encoding="utf-8"):
    _write_beir(folder, [])
    (folder / "qrels" / "test.tsv").write_bytes(text.encode(encoding))
    return folder


def test_load_beir_reads_a_bom_before_the_qrels_header(tmp_path):
    # era_sklearn 0.1: KeyError 'query-id' (the BOM stuck to the first column name).
    folder = _write_qrels(tmp_path, "query-id\tcorpus-id\tscore\nq1\td1\t1\n", "utf-8-sig")
    assert load_beir(folder).qrels == {"q1": {"d1": 1}}


def test_load_beir_reads_a_bom_in_the_jsonl_files(tmp_path):
    folder = _write_beir(tmp_path, [("q1", "d1", 1)])
    for name in ("corpus.jsonl", "queries.jsonl"):
        text = (folder / name).read_text(encoding="utf-8")
        (folder / name).write_text(text, encoding="utf-8-sig")
    ds = load_beir(folder)
    assert ds.corpus["d1"] == "Cats purr." and ds.queries == {"q1": "query q1"}


def test_load_beir_keeps_fractional_grades(tmp_path):
    # era_sklearn 0.1: int(0.5) == 0, so the pair was silently dropped.
    folder = _write_qrels(tmp_path, "query-id\tcorpus-id\tscore\nq1\td1\t0.5\nq1\td2\t2\n")
    with pytest.warns(UserWarning, match=r"1 fractional grade\(s\) \(first: line 2: 0.5\)"):
        ds = load_beir(folder)
    assert ds.qrels == {"q1": {"d1": 0.5, "d2": 2}}
    assert isinstance(ds.qrels["q1"]["d2"], int)
    _qi, _di, grades = qrels_to_pairs(ds.qrels, ["q1"], ["d1", "d2", "d3"])
    assert grades.dtype == np.float64 and grades.tolist() == [0.5, 2.0]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "must start with the tab-separated header.*an empty file"),
        ("query-id\tcorpus-id\tscore\n", "has a header but no judgements"),
        ("query-id\tcorpus-id\tscore\nq1\td1\t0\n", "no judgement with a grade > 0"),
        ("q1\td1\t1\n", "must start with the tab-separated header.*found 'q1"),
        ("query-id,corpus-id,score\nq1,d1,1\n", "must start with the tab-separated header"),
        ("query-id\tcorpus-id\tscore\nq1\td1\n", "line 2 has 2 tab-separated fields, not 3"),
        ("query-id\tcorpus-id\tscore\nq1\td1\tone\n", "line 2: grade 'one' is not a number"),
        ("query-id\tcorpus-id\tscore\nq1\td1\tnan\n", "line 2: grade 'nan' is not finite"),
        # Issue 17: Python's float() reads "1_0" as 10 and "١" (Arabic-Indic one) as 1.
        ("query-id\tcorpus-id\tscore\nq1\td1\t1_0\n", "line 2: grade '1_0' is not a number"),
        ("query-id\tcorpus-id\tscore\nq1\td1\t\u0661\n", "line 2: grade '\u0661' is not a number"),
    ],
)
def test_load_beir_refuses_qrels_it_cannot_read(tmp_path, text, message):
    # era_sklearn 0.1 returned {} for an empty file, without a word.
    with pytest.raises(ValueError, match=message):
        load_beir(_write_qrels(tmp_path, text))


def test_load_beir_does_not_treat_quotes_as_csv_quoting(tmp_path):
    # era_sklearn 0.1 read the TSV with CSV quoting: '"q1' opened a quoted field that
    # ran to 'q2"', so both rows became one judgement of the id 'q1\td1\t1\nq2'.
    text = 'query-id\tcorpus-id\tscore\n"q1\td1\t1\nq2"\td2\t1\n'
    assert load_beir(_write_qrels(tmp_path, text), all_queries=True).qrels == {
        '"q1': {"d1": 1},
        'q2"': {"d2": 1},
    }


def test_load_beir_reads_crlf_and_blank_lines(tmp_path):
    text = "query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\n\r\nq2\td2\t2\r\n"
    assert load_beir(_write_qrels(tmp_path, text)).qrels == {"q1": {"d1": 1}, "q2": {"d2": 2}}


def test_load_beir_warns_about_conflicting_grades(tmp_path):
    text = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td1\t1\nq1\td1\t2\n"
    with pytest.warns(UserWarning, match=r"1 \(query, document\) pair\(s\) twice.*lines 3 and 4"):
        assert load_beir(_write_qrels(tmp_path, text)).qrels == {"q1": {"d1": 2}}


@pytest.mark.parametrize(
    "name, rows, message",
    [
        (
            "corpus.jsonl",
            [{"_id": "d1", "text": "a"}, {"_id": "d1", "text": "b"}],
            "repeats the id",
        ),
        ("corpus.jsonl", [{"title": "no id"}], "line 1 has no '_id' field"),
        ("queries.jsonl", [{"_id": "q1"}], "line 1 has no 'text' field"),
        ("queries.jsonl", [["q1", "text"]], "line 1 is not a JSON object"),
        # Issue 17: these were kept as they were (a query text 5 or None) or as "None".
        ("queries.jsonl", [{"_id": "q1", "text": 5}], "line 1: 'text' must be a string, got int"),
        ("queries.jsonl", [{"_id": "q1", "text": None}], "line 1: 'text' must be a string, got No"),
        ("queries.jsonl", [{"_id": None, "text": "a"}], "line 1: '_id' must be a string or an int"),
        ("corpus.jsonl", [{"_id": "d1", "title": 5, "text": "a"}], "line 1: 'title' must be a str"),
        ("corpus.jsonl", [{"_id": 1.5, "text": "a"}], "line 1: '_id' must be a string or an integ"),
    ],
)
def test_load_beir_refuses_malformed_jsonl(tmp_path, name, rows, message):
    folder = _write_beir(tmp_path, [("q1", "d1", 1)])
    _write_jsonl(folder / name, rows)
    with pytest.raises(ValueError, match=message):
        load_beir(folder)


def test_load_beir_reads_null_or_missing_titles_as_empty(tmp_path):
    folder = _write_beir(tmp_path, [("q1", "d1", 1)])
    _write_jsonl(folder / "corpus.jsonl", [{"_id": "d1", "title": None, "text": "a"},
                                           {"_id": 2, "text": None}, {"_id": "d3", "title": "t"}])
    assert load_beir(folder).corpus == {"d1": "a", "2": "", "d3": "t"}


@pytest.mark.parametrize("name", ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"])
def test_load_beir_names_the_line_of_bytes_that_are_not_utf8(tmp_path, name):
    # Issue 17: a UnicodeDecodeError that named neither the file nor the line.
    folder = _write_beir(tmp_path, [("q1", "d1", 1), ("q1", "d3", 1)])
    lines = (folder / name).read_bytes().split(b"\n")
    lines[1] = lines[1][:-2] + b"\xff" + lines[1][-2:]  # a Latin-1 byte in line 2's last field
    (folder / name).write_bytes(b"\n".join(lines))
    with pytest.raises(ValueError, match=f"{name} line 2 is not UTF-8 text \\(byte 0xff at "):
        load_beir(folder)


def test_load_embeddings_names_the_line_of_bytes_that_are_not_utf8(tmp_path):
    (tmp_path / "corpus_ids.txt").write_bytes(b"d1\nd\xe92\n")
    (tmp_path / "query_ids.txt").write_text("q1\n")
    with pytest.raises(ValueError, match=r"corpus_ids.txt line 2 is not UTF-8 text \(byte 0xe9 at "
                                         r"character 2\)"):
        load_embeddings(tmp_path, "enc")


def test_load_beir_names_the_line_of_invalid_json(tmp_path):
    folder = _write_beir(tmp_path, [("q1", "d1", 1)])
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "a"}\n{"_id": \n')
    with pytest.raises(ValueError, match="queries.jsonl line 2 is not valid JSON"):
        load_beir(folder)


@pytest.mark.parametrize("split, n_queries, n_pairs", [("train", 809, 919), ("test", 300, 339)])
def test_load_beir_scifact(shared, split, n_queries, n_pairs):
    folder = shared / "datasets" / "scifact"
    ds = load_beir(folder, split)
    assert len(ds.corpus) == 5183
    assert (len(ds.queries), sum(map(len, ds.qrels.values()))) == (n_queries, n_pairs)
    assert _qrels_file_stats(folder / "qrels" / f"{split}.tsv") == (n_queries, n_pairs)
    assert set(ds.queries) == set(ds.qrels)
    assert all(d in ds.corpus for docs in ds.qrels.values() for d in docs)
    assert {g for docs in ds.qrels.values() for g in docs.values()} == {1}


def test_load_beir_nfcorpus_graded(shared):
    folder = shared / "datasets" / "nfcorpus"
    ds = load_beir(folder, "test")
    assert len(ds.corpus) == 3633
    assert (len(ds.queries), sum(map(len, ds.qrels.values()))) == _qrels_file_stats(
        folder / "qrels" / "test.tsv"
    )
    assert len(ds.queries) == 323
    assert {g for docs in ds.qrels.values() for g in docs.values()} == {1, 2}


# --- download_beir -----------------------------------------------------------------


def _zip_beir(tmp_path, name):
    folder = _write_beir(tmp_path / "src" / name, [("q1", "d1", 1)])
    archive = tmp_path / "zips" / f"{name}.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as z:
        for p in folder.rglob("*"):
            z.write(p, p.relative_to(folder.parent))
    return archive.parent.as_uri() + "/{name}.zip"


def test_download_beir_file_url(tmp_path):
    url = _zip_beir(tmp_path, "toy")
    dest = tmp_path / "data"
    out = download_beir("toy", dest, url_template=url)
    assert out == dest / "toy"
    assert load_beir(out).qrels == {"q1": {"d1": 1}}
    assert [p.name for p in dest.iterdir()] == ["toy"]  # no temporary leftovers
    (out / "marker").touch()
    assert (download_beir("toy", dest, url_template=url) / "marker").exists()  # kept
    assert not (download_beir("toy", dest, url_template=url, overwrite=True) / "marker").exists()


@pytest.mark.parametrize(
    "bad, error", [("missing", urllib.error.URLError), ("corrupt", zipfile.BadZipFile)]
)
def test_download_beir_failure_leaves_nothing(tmp_path, bad, error):
    url = _zip_beir(tmp_path, "toy")
    (tmp_path / "zips" / "corrupt.zip").write_bytes(b"not a zip")
    dest = tmp_path / "data"
    with pytest.raises(error):
        download_beir(bad, dest, url_template=url)
    assert list(dest.iterdir()) == []


# --- load_mair ---------------------------------------------------------------------

MAIR_QUERIES = [
    {
        "qid": "q1",
        "instruction": "Find a pet.",
        "query": "cats?",
        "labels": [{"id": "d1", "score": 1}, {"id": "d2", "score": 2}],
    },
    {"qid": 7, "instruction": "Find a fish.", "query": "trout?", "labels": [{"id": 3, "score": 1}]},
    {"qid": "q3", "instruction": "Find a pet.", "query": "none?", "labels": []},
]
MAIR_DOCS = [
    {"id": "d1", "doc": "Cats purr."},
    {"id": "d2", "doc": "Cats sleep."},
    {"id": 3, "doc": "Trout swim."},
]


def test_load_mair_fixture(tmp_path):
    _write_jsonl(tmp_path / "queries.jsonl", MAIR_QUERIES)
    _write_jsonl(tmp_path / "docs.jsonl", MAIR_DOCS)
    ds = load_mair(tmp_path)
    assert ds.corpus == {"d1": "Cats purr.", "d2": "Cats sleep.", "3": "Trout swim."}
    assert ds.qrels == {"q1": {"d1": 1, "d2": 2}, "7": {"3": 1}}
    assert ds.queries == {"q1": "cats?", "7": "trout?"}
    assert ds.instructions == {"q1": "Find a pet.", "7": "Find a fish."}
    assert ds.query_texts() == {"q1": "Find a pet. cats?", "7": "Find a fish. trout?"}
    assert list(load_mair(tmp_path, all_queries=True).queries) == ["q1", "7", "q3"]


def test_load_mair_keeps_fractional_grades(tmp_path):
    rows = [{"qid": "q1", "query": "x", "labels": [{"id": "d1", "score": 0.5}]}]
    _write_jsonl(tmp_path / "queries.jsonl", rows)
    _write_jsonl(tmp_path / "docs.jsonl", MAIR_DOCS[:1])
    with pytest.warns(UserWarning, match="1 fractional grade"):
        assert load_mair(tmp_path).qrels == {"q1": {"d1": 0.5}}


def _one_label(**fields):
    return [{"qid": "q1", "query": "cats?", "labels": [{"id": "d1", "score": 1}], **fields}]


@pytest.mark.parametrize("queries, docs, message", [
    # Issue 17: each gave a raw KeyError / TypeError, or was kept.
    (MAIR_QUERIES, [{"doc": "no id"}], r"docs.jsonl line 1 has no 'id' field"),
    (MAIR_QUERIES, [{"id": "d1"}], r"docs.jsonl line 1 has no 'doc' field"),
    (MAIR_QUERIES, [{"id": "d1", "doc": None}], r"docs.jsonl line 1: 'doc' must be a string"),
    (MAIR_QUERIES, [{"id": None, "doc": "x"}], r"docs.jsonl line 1: 'id' must be a string or"),
    ([{"query": "cats?"}], MAIR_DOCS, r"queries.jsonl line 1 has no 'qid' field"),
    ([{"qid": "q1"}], MAIR_DOCS, r"queries.jsonl line 1 has no 'query' field"),
    (_one_label(query=None), MAIR_DOCS, r"queries.jsonl line 1: 'query' must be a string"),
    (_one_label(instruction=5), MAIR_DOCS, r"queries.jsonl line 1: 'instruction' must be a str"),
    (_one_label(labels=[{"score": 1}]), MAIR_DOCS,
     r"queries.jsonl line 1 labels\[0\] has no 'id' field"),
    (_one_label(labels={"d1": 1}), MAIR_DOCS,
     r"queries.jsonl line 1: 'labels' must be a list of \{\"id\", \"score\"\} objects, got dict"),
    (_one_label(labels=["d1"]), MAIR_DOCS, r"queries.jsonl line 1 labels\[0\] is not an object"),
    (_one_label(labels="[{"), MAIR_DOCS, r"queries.jsonl line 1: 'labels' is a string but not"),
    (_one_label(labels=[{"id": "d1", "score": "1_0"}]), MAIR_DOCS,
     r"queries.jsonl line 1 labels\[0\]: grade '1_0' is not a number"),
    (MAIR_QUERIES, [*MAIR_DOCS, {"id": "d2", "doc": "again"}],
     r"docs.jsonl line 4 repeats the id 'd2' of line 2; ids must be unique"),
    ([*MAIR_QUERIES, {"qid": 7, "query": "again?"}], MAIR_DOCS,
     r"queries.jsonl line 4 repeats the id '7' of line 2; ids must be unique"),
], ids=["doc_no_id", "no_doc", "doc_null", "doc_id_null", "no_qid", "no_query", "query_null",
        "instruction_int", "label_no_id", "labels_dict", "label_not_object", "labels_bad_json",
        "grade_underscore", "duplicate_doc_id", "duplicate_qid"])  # fmt: skip
def test_load_mair_refuses_malformed_records(tmp_path, queries, docs, message):
    _write_jsonl(tmp_path / "queries.jsonl", queries)
    _write_jsonl(tmp_path / "docs.jsonl", docs)
    with pytest.raises(ValueError, match=f"{re.escape(str(tmp_path))}/{message}"):
        load_mair(tmp_path)


def test_load_mair_reads_labels_written_as_json_text(tmp_path):
    """Early MAIR releases: labels as a JSON string, grades named "relevance"."""
    _write_jsonl(tmp_path / "queries.jsonl",
                 _one_label(labels=json.dumps([{"id": "d1", "relevance": 2}]), instruction=None))
    _write_jsonl(tmp_path / "docs.jsonl", MAIR_DOCS)
    ds = load_mair(tmp_path)
    assert ds.qrels == {"q1": {"d1": 2}} and ds.instructions == {"q1": ""}


def test_load_mair_task_layouts(tmp_path):
    # Hub snapshot layout, with a non-default split paired to its docs split.
    _write_jsonl(tmp_path / "MAIR-Queries" / "T" / "dev_queries.jsonl", MAIR_QUERIES[:1])
    _write_jsonl(tmp_path / "MAIR-Docs" / "T" / "dev_docs.jsonl", MAIR_DOCS[:2])
    assert load_mair(tmp_path, "T", split="dev_queries").qrels == {"q1": {"d1": 1, "d2": 2}}
    # Per-task folders.
    _write_jsonl(tmp_path / "U" / "queries.jsonl", MAIR_QUERIES[1:2])
    _write_jsonl(tmp_path / "U" / "docs.jsonl", MAIR_DOCS[2:])
    assert load_mair(tmp_path, "U").corpus == {"3": "Trout swim."}
    with pytest.raises(FileNotFoundError):
        load_mair(tmp_path / "absent", "T")


def test_load_mair_hub_needs_datasets(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes the import fail
    with pytest.raises(ImportError, match="pip install datasets"):
        load_mair("CliniDS_2016")


def test_query_text():
    assert query_text("Do X.", "y") == "Do X. y"
    assert RetrievalDataset({}, {"q": "y"}, {}).query_texts() == {"q": "y"}


# --- load_embeddings ---------------------------------------------------------------


@pytest.mark.parametrize(
    "dataset, encoder, shape_c, shape_q",
    [
        ("scifact", "all-MiniLM-L6-v2", (5183, 384), (1109, 384)),
        ("nfcorpus", "m2v-mpnet-256", (3633, 256), (3237, 256)),
    ],
)
def test_load_embeddings_shared(shared, dataset, encoder, shape_c, shape_q):
    emb = load_embeddings(shared / "embeddings", encoder, dataset=dataset)
    assert emb.corpus.shape == shape_c and emb.queries.shape == shape_q
    assert emb.corpus.dtype == emb.queries.dtype == np.float32
    assert isinstance(emb.corpus, np.ndarray) and not isinstance(emb.corpus, np.memmap)
    assert (len(emb.corpus_ids), len(emb.query_ids)) == (shape_c[0], shape_q[0])
    # Every judged pair of the set has rows.
    ds = load_beir(shared / "datasets" / dataset, "test")
    qi, _, _ = qrels_to_pairs(ds.qrels, emb.query_ids, emb.corpus_ids)
    assert len(np.unique(qi)) == len(ds.queries)


def test_load_embeddings_default_root(shared):
    emb = load_embeddings(None, "all-MiniLM-L6-v2", dataset="scifact")
    assert emb.corpus.shape == (5183, 384)


def test_load_embeddings_row_mismatch(tmp_path):
    (tmp_path / "enc").mkdir()
    (tmp_path / "corpus_ids.txt").write_text("d1\nd2\n")
    (tmp_path / "query_ids.txt").write_text("q1\n")
    np.save(tmp_path / "enc" / "corpus.npy", np.zeros((3, 2), np.float32))
    np.save(tmp_path / "enc" / "queries.npy", np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match=r"corpus_ids.txt lists 2 ids"):
        load_embeddings(tmp_path, "enc")


def test_load_embeddings_reads_a_bom_in_the_id_files(tmp_path):
    (tmp_path / "enc").mkdir()
    (tmp_path / "corpus_ids.txt").write_text("d1\nd2\n", encoding="utf-8-sig")
    (tmp_path / "query_ids.txt").write_text("q1\n", encoding="utf-8-sig")
    np.save(tmp_path / "enc" / "corpus.npy", np.zeros((2, 2), np.float32))
    np.save(tmp_path / "enc" / "queries.npy", np.zeros((1, 2), np.float32))
    emb = load_embeddings(tmp_path, "enc")
    assert emb.corpus_ids == ["d1", "d2"] and emb.query_ids == ["q1"]


def test_shared_dir_default_is_beside_the_checkout(monkeypatch):
    # The folder layout of the brief: ../shared next to the repository. Broken once when
    # datasets became a package (one level deeper), hidden wherever ERA_SHARED_DIR was set.
    monkeypatch.delenv("ERA_SHARED_DIR", raising=False)
    expected = Path(__file__).resolve().parents[2] / "shared"
    if expected.is_dir():
        assert shared_dir() == expected
    else:
        with pytest.raises(FileNotFoundError, match=re.escape(str(expected))):
            shared_dir()


def test_shared_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ERA_SHARED_DIR", str(tmp_path))
    assert shared_dir() == tmp_path
    monkeypatch.setenv("ERA_SHARED_DIR", str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="ERA_SHARED_DIR"):
        shared_dir()


# --- qrels_to_pairs ----------------------------------------------------------------


def test_qrels_to_pairs():
    qrels = {"q2": {"d3": 2, "d1": 1, "d2": 0}, "q1": {"d2": 1}}
    qi, di, g = qrels_to_pairs(qrels, ["q1", "q2"], ["d1", "d2", "d3"])
    assert qi.dtype == di.dtype == g.dtype == np.int64
    assert list(zip(qi, di, g)) == [(1, 2, 2), (1, 0, 1), (0, 1, 1)]
    with pytest.raises(KeyError, match="d9"):
        qrels_to_pairs({"q1": {"d9": 1}}, ["q1"], ["d1"])
    qi, di, g = qrels_to_pairs({"q1": {"d9": 1}}, ["q1"], ["d1"], skip_missing=True)
    assert qi.shape == di.shape == g.shape == (0,)
    with pytest.raises(ValueError, match="grade nan is not finite"):
        qrels_to_pairs({"q1": {"d1": float("nan")}}, ["q1"], ["d1"])


# --- benchmarks.embed --------------------------------------------------------------


@pytest.fixture
def tiny_model2vec(tmp_path):
    """A model2vec StaticModel over a ten-word vocabulary with random vectors."""
    model2vec = pytest.importorskip("model2vec")
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[UNK]", "[PAD]", "cats", "purr", "dogs", "bark", "fish", "swim", "query", "q1"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, "[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    vectors = np.random.default_rng(0).normal(size=(len(words), 8)).astype(np.float32)
    model = model2vec.StaticModel(vectors, tokenizer)
    model.save_pretrained(tmp_path / "m2v")
    return tmp_path / "m2v", model


@pytest.fixture
def count_encodes(monkeypatch):
    from model2vec import StaticModel

    calls = []
    original = StaticModel.encode

    def counted(self, sentences, **kwargs):
        calls.append(len(sentences))
        return original(self, sentences, **kwargs)

    monkeypatch.setattr(StaticModel, "encode", counted)
    return calls


def _embed_args(data, fmt, model_dir, out, *extra):
    opts = {"data": data, "format": fmt, "encoder": model_dir, "kind": "model2vec"}
    opts.update(name="tiny", out=out)
    return [s for key, value in opts.items() for s in (f"--{key}", str(value))] + list(extra)


def test_embed_beir_end_to_end_and_cache(tmp_path, tiny_model2vec, count_encodes):
    from benchmarks.embed import main

    model_dir, model = tiny_model2vec
    data = _write_beir(tmp_path / "toy", [("q1", "d1", 1)])
    out = tmp_path / "emb"
    main(_embed_args(data, "beir", model_dir, out))
    assert count_encodes == [3, 3]  # corpus, then all queries (shared layout)
    emb = load_embeddings(out, "tiny", dataset="toy")
    assert emb.corpus_ids == ["d1", "d2", "d3"] and emb.query_ids == ["q1", "q2", "q3"]
    assert emb.corpus.dtype == np.float32 and emb.corpus.shape == (3, 8)
    np.testing.assert_allclose(emb.corpus, model.encode(["Cats purr.", "Dogs bark.", "Fish swim."]))
    np.testing.assert_allclose(emb.queries[:1], model.encode(["query q1"]))

    count_encodes.clear()
    main(_embed_args(data, "beir", model_dir, out))
    assert count_encodes == []  # both matrices cached
    written = sorted(p.name for p in (out / "toy").rglob("*"))  # no temporary leftovers
    assert written == ["corpus.npy", "corpus_ids.txt", "queries.npy", "query_ids.txt", "tiny"]

    (out / "toy" / "tiny" / "queries.npy").unlink()
    main(_embed_args(data, "beir", model_dir, out))
    assert count_encodes == [3]  # only the missing matrix

    # A different query list must not silently reuse the folder.
    with pytest.raises(ValueError, match="other ids"):
        main(_embed_args(data, "beir", model_dir, out, "--split", "test"))


def test_embed_mair_uses_instructions(tmp_path, tiny_model2vec, count_encodes):
    from benchmarks.embed import main

    model_dir, model = tiny_model2vec
    _write_jsonl(tmp_path / "mair" / "T" / "queries.jsonl", MAIR_QUERIES)
    _write_jsonl(tmp_path / "mair" / "T" / "docs.jsonl", MAIR_DOCS)
    out = tmp_path / "emb"
    main(_embed_args(tmp_path / "mair", "mair", model_dir, out, "--task", "T"))
    emb = load_embeddings(out / "T", "tiny")
    assert emb.query_ids == ["q1", "7", "q3"]
    texts = ["Find a pet. cats?", "Find a fish. trout?", "Find a pet. none?"]
    np.testing.assert_allclose(emb.queries, model.encode(texts))
