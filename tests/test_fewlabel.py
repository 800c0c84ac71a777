"""benchmarks/fewlabel.py: oracle, paired fractions, targets, tables and the docs section.

Synthetic run records (no fits of the real data); one end-to-end run on a tiny
synthetic data set checks that the fits are filed where the tables read them.
"""

import argparse

import numpy as np
import pytest

from benchmarks import fewlabel as fl
from benchmarks import quality
from benchmarks._data import Data, _normalize, official_splits
from benchmarks.make_docs import build


def make_run(rows, budgets=("16", "32"), cheap=0.5, n_train=809):
    """A run record: ``rows[method][budget]`` = per-draw nDCG@10, draw i = seed i."""
    def draws(vs):
        return [{"seed": i, "ndcg@10": v, "recall@100": v + 0.3} for i, v in enumerate(vs)]

    seeds = {b: list(range(max(len(by[b]) for by in rows.values() if b in by)))
             for b in budgets}
    return {
        "dataset": "scifact", "doc_encoder": "all-MiniLM-L6-v2", "budgets": list(budgets),
        "n_labelled": {b: n_train if b == "all" else int(b) for b in budgets},
        "n_train_queries": n_train, "seeds": seeds, "skipped": [], "n_test_queries": 300,
        "references": {"cheap->cheap": {"ndcg@10": cheap, "recall@100": cheap + 0.3}},
        "rows": {m: {b: draws(v) for b, v in by.items()} for m, by in rows.items()},
        "wall_s": 1.0,
    }


def test_oracle_is_the_best_mean_over_draws_not_the_best_draw():
    run = make_run({
        "align-only": {"16": [0.5, 0.5]},
        "C=4": {"16": [0.70, 0.50]},   # best single draw, mean 0.60
        "C=8": {"16": [0.62, 0.62]},   # best mean
        "C=16": {"16": [0.62, 0.62]},  # tie with C=8: the smaller C is reported
    }, budgets=("16",))
    assert fl.oracle(run) == {"16": "C=8"}


def test_oracle_absent_where_no_fixed_c_was_fitted():
    run = make_run({"align-only": {"16": [0.5], "all": [0.5]}, "C=1": {"16": [0.6]}},
                   budgets=("16", "all"))
    assert fl.oracle(run) == {"16": "C=1"}
    assert fl.table(run).splitlines()[-1].endswith("| - |")


def test_falls_below_align_only_is_paired_per_draw_and_strict():
    # Paired per seed: draws 1 and 2 are 0.02 below their own align-only, draw 0 is
    # within the margin. Against align-only's mean (0.533) only draw 0 would count.
    run = make_run({"align-only": {"16": [0.40, 0.60, 0.60]},
                    "default": {"16": [0.40 - fl.MARGIN / 2, 0.58, 0.58]}}, budgets=("16",))
    assert fl.below_align(run, "16") == (2, 3)


def test_pooled_fraction_sums_counts_over_budgets():
    run = make_run({"align-only": {"16": [0.5] * 5, "32": [0.5] * 5},
                    "default": {"16": [0.4, 0.5, 0.5, 0.5, 0.5], "32": [0.4, 0.4, 0.5, 0.5, 0.5]}})
    assert fl.pooled_below_align(run) == (3, 10)
    below_row = fl.fraction_table(run).splitlines()[2]
    assert below_row.endswith("| 1/5 (20%) | 2/5 (40%) | 3/10 (30%) |")


def test_kept_stage1_counts_infinite_penalties():
    run = make_run({"align-only": {"16": [0.5] * 3}, "default": {"16": [0.5] * 3}},
                   budgets=("16",))
    for r, p in zip(run["rows"]["default"]["16"], (float("inf"), 2.0, float("inf"))):
        r["penalty"] = p
    assert fl.kept_stage1(run, "16") == (2, 3)
    assert fl.fraction_table(run).splitlines()[3].endswith("| 2/3 (67%) | 2/3 (67%) |")


def _target(targets, prefix):
    (t,) = [t for t in targets if t["target"].startswith(prefix)]
    return t


def test_targets_measured_on_means_and_can_fail():
    run = make_run({
        "align-only": {"16": [0.50] * 5, "32": [0.50] * 5},
        "default": {"16": [0.52] * 5, "32": [0.495] * 5},
        "hybrid": {"16": [0.60] * 5, "32": [0.48] * 5},
        "C=1": {"16": [0.53] * 5, "32": [0.51] * 5},
        "C=2": {"16": [0.524] * 5, "32": [0.52] * 5},
    }, cheap=0.49)
    targets = fl.check_targets(run)
    a16, a32 = _target(targets, "(a) default @16"), _target(targets, "(a) default @32")
    assert "C=1" in a16["target"] and a16["measured"] == pytest.approx(-0.01) and not a16["met"]
    assert "C=2" in a32["target"] and a32["measured"] == pytest.approx(-0.025) and not a32["met"]
    assert _target(targets, "(b) default @16")["met"]
    assert not _target(targets, "(b) default @32")["met"]  # 0.005 below > 0.003
    assert _target(targets, "(d) hybrid @16 - cheap")["met"]
    assert not _target(targets, "(d) hybrid @32 - default")["met"]
    assert not _target(targets, "(d) hybrid @32 - cheap")["met"]
    pooled = _target(targets, "(c)")
    assert pooled["measured"] == 0.0 and not pooled["met"]  # 10 draws < the 25 required


def test_pooled_target_met_with_enough_draws():
    budgets = ("8", "16", "32", "64", "128")
    run = make_run({"align-only": {b: [0.5] * 5 for b in budgets},
                    "default": {b: [0.5] * 4 + [0.45 if b == "8" else 0.5] for b in budgets},
                    "C=1": {b: [0.5] * 5 for b in budgets}}, budgets=budgets)
    targets = fl.check_targets(run)
    pooled = _target(targets, "(c)")
    assert pooled["measured"] == pytest.approx(1 / 25) and pooled["met"]
    # Target (a) concerns budgets 16..128 only.
    assert [t["target"].split()[2] for t in targets if t["target"].startswith("(a)")] == [
        "@16", "@32", "@64", "@128"]


def test_table_rows_columns_and_oracle_label():
    run = make_run({"align-only": {"16": [0.5, 0.5], "all": [0.5]},
                    "default": {"16": [0.55, 0.57], "all": [0.6]},
                    "C=2": {"16": [0.58, 0.58]}}, budgets=("16", "all"))
    lines = fl.table(run).splitlines()
    assert lines[0] == "| method | 16 | all (809) |"
    assert lines[2] == "| cheap->cheap (no adapter) | 0.5000 | 0.5000 |"
    assert "| default | 0.5600 ± 0.0141 | 0.6000 ± 0.0000 |" in lines
    assert lines[-1] == f"| {fl.ORACLE_LABEL} | 0.5800 ± 0.0000 (C=2) | - |"
    assert "| C=2 | 0.8800 ± 0.0000 | - |" in fl.table(run, "recall@100").splitlines()


def test_parse_budgets_and_draws_all():
    assert fl.parse_budgets(["all", "128", "8", "16", "8"]) == ["8", "16", "128", "all"]
    with pytest.raises(ValueError, match="'0'"):
        fl.parse_budgets(["0"])
    assert fl.parse_draws_all(["3", "nfcorpus=2"]) == {"*": 3, "nfcorpus": 2}
    with pytest.raises(ValueError, match="unknown data set 'msmarco'"):
        fl.parse_draws_all(["msmarco=2"])
    with pytest.raises(ValueError, match="N >= 1"):
        fl.parse_draws_all(["nfcorpus=0"])


def test_no_fixed_all_skips_those_fits_and_says_so():
    seeds = {"16": [0, 1], "all": [0]}
    cells, skipped = fl.plan("scifact", "m2v", ["16", "all"], seeds, [1.0, 4.0], False)
    at_all = [c.method for c in cells if c.budget == "all"]
    assert sorted(at_all) == ["default", "hybrid"]
    assert sum(c.C is not None for c in cells) == 4  # 2 draws x 2 C at budget 16
    assert [c.seed for c in cells if c.method == "align-only"] == [0, 1]
    assert "--no-fixed-all" in skipped[0]
    cells, skipped = fl.plan("scifact", "m2v", ["16", "all"], seeds, [1.0, 4.0], True)
    assert sum(c.C is not None for c in cells) == 6 and not skipped


class _Train:
    """The part of Data that official_splits reads."""

    def __init__(self, n):
        self.qrels = {"train": {f"q{i:03d}": {"d": 1} for i in range(n)}, "test": {}}


def test_label_draws_are_independent_per_budget_and_draw():
    data = _Train(200)
    _, q8 = fl.label_draw(data, "8", 0)
    _, q16 = fl.label_draw(data, "16", 0)
    _, q8b = fl.label_draw(data, "8", 1)
    assert len(q8) == 8 and len(q16) == 16 and set(q8) != set(q8b)
    assert not set(q8) <= set(q16)  # not nested, unlike benchmarks.quality's budgets
    assert fl.label_draw(data, "all", 3) == (200, data.qrels["train"])
    nested = [set(t) for _, _, t in official_splits(data, ["8", "16"], 0)[0]]
    assert nested[0] <= nested[1]  # quality's protocol unchanged


def _tiny_data(rng, n_docs=1100, n_queries=40, n_train=12):
    """A small set where the query encoders see the documents' topics through noise."""
    D_s = rng.normal(size=(n_docs, 24)).astype(np.float32)
    D_c = (D_s[:, :16] + 0.3 * rng.normal(size=(n_docs, 16))).astype(np.float32)
    rel = rng.choice(n_docs, n_queries, replace=False)
    Q_s = (D_s[rel] + 2.0 * rng.normal(size=(n_queries, 24))).astype(np.float32)
    Q_c = (D_c[rel] + 2.0 * rng.normal(size=(n_queries, 16))).astype(np.float32)
    qids, dids = [f"q{i}" for i in range(n_queries)], [f"d{i}" for i in range(n_docs)]
    qrels = {f"q{i}": {f"d{rel[i]}": 1} for i in range(n_queries)}
    items = list(qrels.items())
    split = {"train": dict(items[:n_train]), "test": dict(items[n_train:])}
    return Data("scifact", qids, dids, Q_s, Q_c, D_s, D_c, _normalize(D_s), _normalize(D_c),
                split)


def test_end_to_end_on_tiny_data_feeds_the_docs(tmp_path, monkeypatch):
    data = _tiny_data(np.random.default_rng(0))
    key = ("scifact", "tiny", fl.QUERY_ENCODER)
    monkeypatch.setattr(quality, "_DATA", {key: data})
    args = argparse.Namespace(budgets=["8", "all"], draws=2, draws_all={"*": 1},
                              fixed_C=[1.0, 8.0], no_fixed_all=False, jobs=1)
    run = fl.run_pair("scifact", "tiny", args, lambda s: None)
    assert run["n_labelled"] == {"8": 8, "all": 12} and run["seeds"]["all"] == [0]
    assert [r["seed"] for r in run["rows"]["default"]["8"]] == [0, 1]
    assert [r["n_queries"] for r in run["rows"]["C=8"]["all"]] == [12]
    # align-only does not depend on the budget: the same fit is filed under each one.
    assert run["rows"]["align-only"]["all"][0] == run["rows"]["align-only"]["8"][0]
    assert set(fl.oracle(run)) == {"8", "all"}
    run["wall_s"] = 0.0
    meta = {"command": "python -m benchmarks.fewlabel --test", "date": "today",
            "version": "0", "git": {"commit": "abc"}, "jobs": 1, "blas_threads_workers": [1],
            "load_start": 0.0, "load_end": 0.0, "settings": {}}
    results, docs = tmp_path / "results", tmp_path / "docs"
    fl.write(run, meta, results)
    (results / "quality_scifact_tiny.md").write_text("# Q\n\nquality table\n", encoding="utf-8")
    page = build(results, docs).read_text(encoding="utf-8")
    assert page.index("## Retrieval quality: scifact") < page.index(
        "## Few labels: scifact, documents by tiny")
    assert "python -m benchmarks.fewlabel --test" in page
    assert "(img/fewlabel_scifact_tiny.png)" in page and (docs / "img" /
                                                          "fewlabel_scifact_tiny.png").exists()
    assert fl.ORACLE_LABEL in page and "| (c) pooled fraction" in page
